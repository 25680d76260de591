"""Retry with backoff: every loop that tries again counts and waits through sevimg.retry."""

from __future__ import annotations

import pytest

from sevimg.retry import Backoff, RetryPolicy
from tests.fakegithub import FakeClock


@pytest.mark.parametrize(
    ("attempts", "backoff", "cap"),
    [(1, 2.0, 60.0), (2, 2.0, 60.0), (6, 2.0, 60.0), (6, 0.5, 3.0), (10, 1.0, 60.0), (3, 0.0, 1.0)],
)
def test_backoff_tries_as_often_as_the_policy_says_and_doubles_up_to_the_cap(
    attempts: int, backoff: float, cap: float
) -> None:
    clock = FakeClock()
    state = Backoff(RetryPolicy(attempts=attempts, backoff=backoff, backoff_cap=cap), clock)
    tried = 0
    while True:
        tried += 1
        if state.exhausted:
            break
        state.wait()
    assert tried == attempts
    expected = [min(cap, backoff * 2**n) for n in range(attempts - 1)]
    assert clock.sleeps == expected
    assert all(b <= a * 2 or a == 0 for a, b in zip(clock.sleeps, clock.sleeps[1:], strict=False))


@pytest.mark.parametrize("counted", [0, 1, 2, 4])
def test_a_retry_counted_without_waiting_uses_up_an_attempt_and_no_time(counted: int) -> None:
    clock = FakeClock()
    state = Backoff(RetryPolicy(attempts=6), clock)
    for _ in range(counted):
        state.count()
    logged: list[str] = []
    state.wait(logged.append, "uploading x failed (503)")
    assert clock.sleeps == [RetryPolicy().delay(counted)]
    assert logged == [f"uploading x failed (503); retrying in {RetryPolicy().delay(counted):g} s"]
    assert state.retries == counted + 1
    assert state.exhausted is (counted + 2 >= 6)
