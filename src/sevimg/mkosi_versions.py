"""The mkosi versions sevimg supports: the one home of that fact.

Rendering targets the oldest by default, `sevimg build` and `doctor` refuse
anything older, CI's workflow installs the oldest, and the tests judge every
tree with each. The noxfile imports this module; the shell tools keep a
commented copy that tests/test_facts.py compares with it.
"""

from __future__ import annotations

import re

# Every tree (golden trees included) is judged by each of these.
MKOSI_VERSIONS: tuple[str, ...] = ("25.3", "27.1")
OLDEST_MKOSI = MKOSI_VERSIONS[0]
_VERSION = re.compile(r"([0-9]{1,4})(?:\.([0-9]{1,4}))?")


def parse_mkosi_version(text: str) -> tuple[int, ...]:
    """'25.3' → (25, 3), '26' → (26,); a ValueError for anything else."""
    match = _VERSION.fullmatch(text)
    if not match:
        raise ValueError(f"not an mkosi version: {text!r}")
    return tuple(int(x) for x in match.groups() if x is not None)


# Older mkosi is refused: the templates need what 25.3 brought.
MIN_MKOSI: tuple[int, ...] = parse_mkosi_version(OLDEST_MKOSI)
