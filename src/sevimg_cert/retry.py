"""How hard sevimg_cert tries a peer (AMD KDS, a dispatch server): one retry policy.

Attempts, a per-request timeout, and an exponential backoff between attempts
with a cap on any one pause. A server that says how long to wait (KDS's
Retry-After) is believed, up to the same cap: a hostile or confused peer
cannot stall a certification run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Retry:
    """How hard to try one server: attempts, and the backoff between them (seconds)."""

    attempts: int = 4
    first_delay: float = 2.0
    factor: float = 2.0
    max_delay: float = 30.0
    timeout: float = 30.0

    def delay(self, attempt: int, asked: float | None = None) -> float:
        """The pause after failed attempt number `attempt` (0-based).

        `asked` is the server's own wish (Retry-After), taken instead of the
        backoff but never beyond `max_delay`.
        """
        wanted = self.first_delay * self.factor**attempt if asked is None else asked
        return min(max(wanted, 0.0), self.max_delay)
