"""What makes every run end in a written, framed result: its deadline, SIGTERM, and a fallback.

The run's budget (DEADLINE) sits well below its systemd unit's
TimeoutStartSec (tests/test_harness.py reads the unit and checks that they
agree, the countdown after the report included). Before anything talks to a
peer a provisional `error` result is on disk, so even a run killed outright
leaves one. SIGTERM (systemd stopping the unit) becomes an `error` result
that is still written and framed. If the full result cannot be rendered
(JSON, Markdown, summary), a minimal framed `error` result takes its place.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType

from sevimg_cert import result
from sevimg_cert.outputs import Log, now_utc, summary, write_atomic, write_results
from sevimg_cert.result import CertResult, Environment, Identity

# The whole run, the report to dispatch included (sevimg_cert.dispatch bounds
# each of its exchanges by DELIVER_BUDGET, 2 minutes). The countdown after
# the report (sevimg_cert.after, at most MAX_GRACE) comes on top of it.
DEADLINE = 15 * 60.0
# Telling dispatch the host booted may take this much of the run at most...
BOOT_BUDGET = 2 * 60.0
# ...and this much is kept back from the checks for the report.
REPORT_BUDGET = 2 * 60.0
# What the report of a run stopped by SIGTERM may take: systemd kills a unit
# TimeoutStopSec (90 s by default) after its SIGTERM.
STOPPED_REPORT_BUDGET = 20.0


def boot_budget(deadline: float) -> float:
    """Seconds `booted` may take out of a run of `deadline` seconds."""
    return min(BOOT_BUDGET, deadline / 8)


def report_budget(deadline: float) -> float:
    """Seconds kept for the report out of a run of `deadline` seconds."""
    return min(REPORT_BUDGET, deadline / 4)


class Terminated(BaseException):
    """SIGTERM arrived: the run ends now with an `error` result."""


class Stop:
    """Whether SIGTERM came, and whether it may interrupt what runs now."""

    def __init__(self) -> None:
        self.came = threading.Event()
        self.armed = True


@contextlib.contextmanager
def sigterm_ends_run() -> Iterator[Stop]:
    """Within the block the first SIGTERM raises Terminated while `armed`; later ones only count.

    Writing the final result disarms it, so the signal cannot cut that
    short. Only in the main thread (Python delivers signals there).
    """
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        first = not stop.came.is_set()
        stop.came.set()
        if first and stop.armed:
            raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def bare(started: str, error: str, identity: Identity | None = None) -> CertResult:
    """An `error` result with nothing but its times and why."""
    return CertResult(
        started, now_utc(), (), Environment(), identity or Identity(None, None, None), error=error
    )


def provisional(state_dir: Path, started: str, identity: Identity, log: Log) -> None:
    """Write an `error` result that says the run has not finished; the real one replaces it."""
    placeholder = bare(
        started, "the run did not finish (this result was written when it began)", identity
    )
    try:
        write_atomic(state_dir / "result.json", result.to_json(placeholder))
    except Exception as exc:  # a read-only /run is reported with the final result
        log(f"cannot write the provisional result in {state_dir}: {exc}")


def _minimal_json(outcome: CertResult, why: str) -> bytes:
    """The smallest result: from the result module if it can, else built here by hand."""
    fallback = bare(outcome.started_at, why, outcome.identity)
    try:
        return result.to_json(fallback)
    except Exception:  # the identity itself may be what cannot be rendered
        doc = {
            "schema_version": result.SCHEMA_VERSION,
            "result": "error",
            "certified_level": None,
            "started_at": outcome.started_at,
            "completed_at": now_utc(),
            "error": why,
        }
        return (json.dumps(doc, indent=2, ensure_ascii=True) + "\n").encode()


def finish(
    state_dir: Path,
    outcome: CertResult,
    log: Log,
    echo: Callable[[str], None],
    show_frame: Callable[[bytes], None] | None = None,
) -> tuple[CertResult, bytes]:
    """Write the result files, frame them (`show_frame`), print the summary; the result and its JSON.

    The summary comes after the framed result, so the console (a BMC's
    serial-over-LAN) ends with the verdict.

    A result that cannot be rendered becomes a minimal `error` result, still
    written and returned; this never raises for the result's content.
    """
    try:
        try:
            outcome = write_results(state_dir, outcome, log)
        except OSError as exc:  # still frame it on the console: that is the copy people see
            log(f"cannot write the result files in {state_dir}: {exc}")
            outcome = replace(outcome, log=log.text())
        data = result.to_json(outcome)
        lines = summary(outcome)
    except Exception as exc:
        why = f"cannot render the result ({type(exc).__name__}: {exc!r})"
        with contextlib.suppress(Exception):
            log(why)
        data = _minimal_json(outcome, why)
        with contextlib.suppress(Exception):
            write_atomic(state_dir / "result.json", data)
        outcome = bare(outcome.started_at, why, Identity(None, None, None))
        lines = ["=" * 72, "sevimg certification: ERROR", f"  harness error: {why}", "=" * 72]
    if show_frame is not None:
        show_frame(data)
    for line in lines:
        echo(line)
    return outcome, data
