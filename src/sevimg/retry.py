"""Retry with backoff: one policy and one clock for every loop that tries again.

Waiting goes through an injectable :class:`Clock`, so tests can run through
minutes of backoff and rate limiting without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    """What the client needs of time: the current epoch seconds, and a way to wait."""

    def time(self) -> float:
        """Seconds since the epoch."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait this long."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        """Wait for real."""
        time.sleep(seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts for 5xx and network errors, backoff, and rate-limit waits."""

    attempts: int = 6  # 5xx and network errors: the first try and five retries
    backoff: float = 2.0  # seconds before the first retry, doubling
    backoff_cap: float = 60.0
    secondary_backoff: float = 60.0  # GitHub: "wait at least one minute", then longer
    max_wait: float = 3900.0  # a primary limit resets within the hour
    max_rate_limit_waits: int = 8

    def delay(self, attempt: int) -> float:
        """Backoff before retry number `attempt` (0 for the first retry)."""
        return float(min(self.backoff_cap, self.backoff * 2**attempt))


class Backoff:
    """The retries of one operation under a :class:`RetryPolicy`: count them, wait between them.

    The loop decides what is worth retrying; this keeps the count and the
    waits, so every loop backs off the same way::

        backoff = Backoff(policy, clock)
        while True:
            try:
                return attempt()
            except SomeError:
                if backoff.exhausted:
                    raise
                backoff.wait()
    """

    def __init__(self, policy: RetryPolicy, clock: Clock) -> None:
        self.policy = policy
        self.clock = clock
        self.retries = 0  # made so far

    @property
    def exhausted(self) -> bool:
        """True when the attempt just made was the last the policy allows."""
        return self.retries + 1 >= self.policy.attempts

    def wait(self, log: Callable[[str], None] | None = None, why: str = "") -> None:
        """Wait the backoff before the next retry (saying `why`, if logged) and count it."""
        delay = self.policy.delay(self.retries)
        if log is not None:
            log(f"{why}; retrying in {delay:g} s")
        self.clock.sleep(delay)
        self.retries += 1

    def count(self) -> None:
        """Count a retry made without waiting (the failure needed no backoff)."""
        self.retries += 1
