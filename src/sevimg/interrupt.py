"""SIGINT, SIGTERM and SIGHUP end sevimg cleanly, whenever they arrive.

Two phases. During start-up (importing the command line, parsing options)
sevimg has started nothing and written nothing, so a signal ends it at once:
one line on stderr, exit 128 + N. Raising an exception there is not safe —
an exception raised inside a class body's ``__set_name__`` comes out as a
RuntimeError, and some import-time code swallows exceptions.

Once a command runs (:func:`running`), the handler raises
:class:`Interrupted` in the main thread: a ``SystemExit`` carrying the
shell's code (130, 143, 129), so ``except Exception`` does not swallow it
while every ``finally`` block and context manager still runs — child process
groups are stopped (:mod:`sevimg.proc`), scratch folders removed,
half-written trees discarded. Should the exception still get lost (turned
into another one, or swallowed by library code), :func:`check` raises it
again at the next safe point: the loops that wait for children or write
trees call it, and the command wrapper turns any exception that follows a
signal into :class:`Interrupted`.

A signal that arrives inside a :func:`deferred` block (stopping a child,
swapping a tree into place) is held until the block ends, so cleanup is
never cut in half; later signals hurry the cleanup along instead (the
hooks: SIGKILL to the children). Python runs signal handlers in the main
thread only, so only the main thread's blocks hold a signal: a block in
another thread (``serve`` writing results.json while answering a host)
cannot be cut by the handler, and must not keep the main thread running.
Other threads see a signal at their own safe points and stop there.

This module imports nothing heavy: the entry point installs it before the
command line (click, rich, Jinja2, httpx…) is imported.
"""

from __future__ import annotations

import os
import signal
import threading
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
    raised = False  # Interrupted has been raised for it at least once
    starting = True  # start-up: nothing to clean up, a signal ends the process at once
    finishing = False  # on the way out: record signals, raise nothing
    local = threading.local()  # .depth: nesting of deferred() blocks, per thread
    hooks: list[Hook] = []  # noqa: RUF012 - process-wide on purpose


def _depth() -> int:
    return int(getattr(_State.local, "depth", 0))


def _in_main() -> bool:
    return threading.current_thread() is threading.main_thread()


def _handle(signum: int, _frame: FrameType | None) -> None:
    if _State.starting:
        say(message(signum))
        os._exit(128 + signum)
    first = _State.received is None
    if first:
        _State.received = signum
    if _State.raised or _State.finishing or not first:
        for hook in list(_State.hooks):  # cleanup is under way: hurry it up, never cut it short
            hook(signum)
    if not _State.raised and not _State.finishing and _depth() == 0:
        _State.raised = True
        raise Interrupted(signum)


def install() -> None:
    """Route SIGINT, SIGTERM and SIGHUP here (main thread only); start-up phase."""
    for signum in SIGNALS:
        signal.signal(signum, _handle)


def running() -> None:
    """The command starts: from now on a signal raises :class:`Interrupted`."""
    _State.starting = False


def received() -> int | None:
    """The signal that interrupted this run, if one did."""
    return _State.received


def check() -> None:
    """A safe point: raise :class:`Interrupted` if a signal came and has not ended the run yet."""
    if _State.received is not None and _depth() == 0 and not _State.finishing:
        if _in_main():  # another thread stopping says nothing about the main one
            _State.raised = True
        raise Interrupted(_State.received)


def on_repeat(hook: Hook) -> None:
    """Call `hook(signum)` for every signal that arrives while sevimg already stops."""
    _State.hooks.append(hook)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold a signal that arrives in this block until its end, then raise it (main thread)."""
    _State.local.depth = _depth() + 1
    try:
        yield
    finally:
        _State.local.depth = _depth() - 1
    # Only the main thread's blocks held the signal; another thread goes on to its next check().
    if (
        _in_main()
        and _depth() == 0
        and _State.received is not None
        and not _State.raised
        and not _State.finishing
    ):
        _State.raised = True
        raise Interrupted(_State.received)


def finishing() -> None:
    """From now on, record signals without raising (sevimg is on its way out)."""
    _State.finishing = True


def message(signum: int) -> str:
    """The one line sevimg prints when a signal ended it."""
    return f"sevimg: interrupted by {signal.Signals(signum).name}\n"


def say(text: str) -> None:
    """Write to stderr unbuffered; a closed terminal (SIGHUP) is not an error."""
    with suppress(OSError):
        os.write(2, text.encode(errors="replace"))
