"""One sevimg at a time per output folder and per build cache.

A run that writes a folder (render's build/, build's out/, the build cache)
holds ``fcntl.flock`` on the folder itself: there is no lock file to leave
behind, and the kernel drops the lock when its holder exits, however it
exits. A second run waits up to :data:`WAIT` seconds, then fails naming the
holder's pid (from /proc/locks). Locks are re-entrant within one process, so
`build -o build` does not wait for itself.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sevimg import interrupt
from sevimg.problems import SevimgError

WAIT = 3.0  # seconds a second run waits before it gives up
_POLL = 0.1
PROC_LOCKS = Path("/proc/locks")

_held: dict[tuple[int, int], int] = {}  # (device, inode) of a locked folder -> nesting


def holder(folder: Path, locks: Path = PROC_LOCKS) -> str:
    """Who holds the flock on `folder`: 'pid 1234 (sevimg)', or 'another process'."""
    try:
        st = folder.stat()
        table = locks.read_text()
    except OSError:
        return "another process"
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5349750 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            pid = fields[4]
            try:
                # Only the program name: the command line may carry a token.
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                return f"pid {pid}"
            return f"pid {pid} ({name})"
    return "another process"


@contextmanager
def hold(folder: Path, what: str, *, wait: float = WAIT, option: str = "-o DIR") -> Iterator[None]:
    """Hold the lock on `folder` (created if missing) for the block; SevimgError when busy.

    `option` is the command-line option that picks another folder, for the hint.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise SevimgError(f"cannot write under {folder}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if key not in _held:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise SevimgError(
                            f"{what} {folder} is in use by another sevimg run ({holder(folder)}); "
                            f"waited {wait:g} s",
                            hint=f"let that run finish, or write somewhere else ({option})",
                        ) from None
                    interrupt.check()
                    time.sleep(_POLL)
        _held[key] = _held.get(key, 0) + 1
        try:
            yield
        finally:
            _held[key] -= 1
            if not _held[key]:
                del _held[key]
    finally:
        os.close(fd)  # closing the last descriptor of the folder drops the lock
