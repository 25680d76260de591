"""Child processes that never outlive sevimg.

Every tool sevimg starts (mkosi, QEMU, the script and unit checkers) runs in
a process group of its own. A signal meant for sevimg therefore does not hit
the tool half-way through sevimg's own handling; sevimg alone stops it:
SIGTERM to the whole group, a short grace period, then SIGKILL, and only
then is the leader reaped (so its group id cannot be reused while we still
signal it). Members left behind by a leader that exited are killed too: a
straggler would otherwise hold the output pipe open, or keep running under
PID 1.

Live children are registered; :func:`stop_all` stops whatever is left, and
a repeated signal SIGKILLs them all at once.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from sevimg import interrupt

GRACE = 5.0  # seconds between SIGTERM and SIGKILL
_POLL = 0.05

_live: dict[int, Child] = {}
_lock = threading.Lock()


class Child:
    """One running child, leader of its own process group; a context manager that stops it."""

    def __init__(self, popen: subprocess.Popen[str], grace: float) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.grace = grace

    @property
    def stdout(self) -> IO[str]:
        """The child's output (when started with stdout=PIPE)."""
        assert self.popen.stdout is not None
        return self.popen.stdout

    def exited(self) -> bool:
        """True once the leader has exited (it stays a zombie, its group id reserved, until reaped)."""
        if self.popen.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _signal_group(self, signum: int) -> None:
        if self.popen.returncode is not None:
            return  # reaped: the id may belong to someone else now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def kill_group(self) -> None:
        """SIGKILL every process of the group (leader included, if still running)."""
        self._signal_group(signal.SIGKILL)

    def wait(self) -> int:
        """Wait for the leader, kill what it left in its group, reap it; its exit status."""
        while not self.exited():
            interrupt.check()
            time.sleep(_POLL)
        return self._reap()

    def _reap(self) -> int:
        with interrupt.deferred():
            self.kill_group()
            code = self.popen.wait()
            with _lock:
                _live.pop(self.pid, None)
        return code

    def stop(self) -> int:
        """SIGTERM the group, SIGKILL it after the grace period, reap the leader."""
        with interrupt.deferred():
            if self.popen.returncode is None:
                if not self.exited():
                    self._signal_group(signal.SIGTERM)
                    deadline = time.monotonic() + self.grace
                    while not self.exited() and time.monotonic() < deadline:
                        time.sleep(_POLL)
                code = self._reap()
            else:
                code = self.popen.returncode
        return code

    def lines(self) -> Iterator[str]:
        """The child's output, line by line, until the leader exits and the pipe drains.

        A reader thread feeds a queue, so the main thread stays responsive to
        signals and notices when the leader exits while a leftover member of
        its group still holds the pipe open (it is killed, which closes it).
        """
        feed: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            try:
                for line in self.stdout:
                    feed.put(line)
            except (OSError, ValueError):  # the pipe broke or was closed
                pass
            feed.put(None)

        threading.Thread(target=pump, name=f"output of {self.pid}", daemon=True).start()
        while True:
            interrupt.check()
            try:
                line = feed.get(timeout=0.5)
            except queue.Empty:
                if self.exited():
                    self.kill_group()
                continue
            if line is None:
                return
            yield line

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.stop()
        # The group is gone, so the pipes are at EOF: close them rather than leave
        # them to the garbage collector (a ResourceWarning, an error in the tests).
        for pipe in (self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def start(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.STDOUT,
    grace: float = GRACE,
) -> Child:
    """Start `argv` as the leader of a new process group, output as text; OSError if it cannot run."""
    with interrupt.deferred():  # a signal now would leave a child nobody knows about
        popen = subprocess.Popen(
            [str(a) for a in argv],
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            text=True,
            errors="replace",
            process_group=0,
        )
        child = Child(popen, grace)
        with _lock:
            _live[child.pid] = child
    return child


class TimedOut(Exception):
    """`run` gave up waiting; the child has been stopped."""

    def __init__(self, argv: Sequence[str | Path], timeout: float) -> None:
        super().__init__(f"{argv[0]} did not finish within {timeout:g} s")
        self.timeout = timeout


def run(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    merge_output: bool = False,
    grace: float = GRACE,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` to completion in its own process group, capturing its output.

    Raises OSError when it cannot be started and :class:`TimedOut` (after
    stopping it) when it runs longer than `timeout` seconds.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    with start(
        argv,
        cwd=cwd,
        env=env,
        stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
        grace=grace,
    ) as child:
        while True:
            interrupt.check()
            try:
                out, err = child.popen.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if child.exited():
                    child.kill_group()  # what it left behind holds the pipes open
                elif deadline is not None and time.monotonic() > deadline:
                    child.stop()
                    raise TimedOut(argv, timeout or 0) from None
        code = child.wait()
    return subprocess.CompletedProcess(
        [str(a) for a in argv], code, out or "", "" if merge_output else (err or "")
    )


def stop_all() -> None:
    """Stop every child still running (the last thing sevimg does on its way out)."""
    with _lock:
        children = list(_live.values())
    for child in children:
        child.stop()


def live_pids() -> list[int]:
    """Process ids of the children still registered."""
    with _lock:
        return sorted(_live)


def _kill_all(_signum: int) -> None:
    """A repeated signal: no more grace."""
    for child in list(_live.values()):
        child.kill_group()


interrupt.on_repeat(_kill_all)
