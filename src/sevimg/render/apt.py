"""apt's deb822 sources: the one writer of a `Types: deb` stanza.

Both the rendered trees (extra suites, archived releases) and the build's
sandbox (this machine's mirrors from sevimg.local.yaml) write apt sources;
they share this so the format has one home.
"""

from __future__ import annotations

from collections.abc import Sequence


def deb822(url: str, suites: Sequence[str], components: Sequence[str], signed_by: str) -> str:
    """One deb822 stanza, its lines joined by newlines (no newline after the last)."""
    return "\n".join(
        (
            "Types: deb",
            f"URIs: {url}",
            f"Suites: {' '.join(suites)}",
            f"Components: {' '.join(components)}",
            f"Signed-By: {signed_by}",
        )
    )
