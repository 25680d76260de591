"""SIGINT, SIGTERM and SIGHUP end sevimg cleanly, whenever they arrive.

The handler raises :class:`Interrupted` in the main thread: a ``SystemExit``
carrying the shell's code (130, 143, 129), so ``except Exception`` never
swallows it while every ``finally`` block and context manager still runs —
child process groups are stopped (:mod:`sevimg.proc`), scratch folders
removed, half-written trees discarded.

Only the first signal raises. A signal that arrives inside a
:func:`deferred` block (stopping a child, swapping a tree into place) is
held until the block ends, so cleanup is never cut in half; later signals
only hurry the cleanup along (the hooks, e.g. SIGKILL to the children).

This module imports nothing heavy: the entry point installs it before the
command line (click, rich, Jinja2, httpx…) is imported, so Ctrl-C during
start-up also ends with one line and no traceback.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

Hook = Callable[[int], None]


class Interrupted(SystemExit):
    """A signal asked sevimg to stop; exits with 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    @property
    def name(self) -> str:
        """SIGINT, SIGTERM or SIGHUP."""
        return signal.Signals(self.signum).name


class _State:
    received: int | None = None  # the first signal, once one came
    raised = False  # Interrupted has been raised for it
    depth = 0  # nesting of deferred() blocks
    hooks: list[Hook] = []  # noqa: RUF012 - process-wide on purpose


def _handle(signum: int, _frame: FrameType | None) -> None:
    first = _State.received is None
    if first:
        _State.received = signum
    if _State.raised or not first:  # cleanup is under way: hurry it up, do not cut it short
        for hook in list(_State.hooks):
            hook(signum)
    if not _State.raised and _State.depth == 0:
        _State.raised = True
        raise Interrupted(signum)


def install() -> None:
    """Route SIGINT, SIGTERM and SIGHUP to :class:`Interrupted` (main thread only)."""
    for signum in SIGNALS:
        signal.signal(signum, _handle)


def received() -> int | None:
    """The signal that interrupted this run, if one did."""
    return _State.received


def on_repeat(hook: Hook) -> None:
    """Call `hook(signum)` for every signal after the first (e.g. to SIGKILL children)."""
    _State.hooks.append(hook)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold a signal that arrives in this block until its end, then raise it."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
    if _State.depth == 0 and _State.received is not None and not _State.raised:
        _State.raised = True
        raise Interrupted(_State.received)


def finishing() -> None:
    """From now on, record signals without raising (sevimg is on its way out)."""
    _State.raised = True


def message(signum: int) -> str:
    """The one line sevimg prints when a signal ended it."""
    return f"sevimg: interrupted by {signal.Signals(signum).name}\n"


def say(text: str) -> None:
    """Write to stderr unbuffered; a closed terminal (SIGHUP) is not an error."""
    with suppress(OSError):
        os.write(2, text.encode(errors="replace"))
