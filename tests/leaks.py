"""What a command may leave behind: child processes, files holding a secret, debris."""

from __future__ import annotations

import os
from pathlib import Path


def child_pids() -> set[int]:
    """Processes whose parent is this test process (read from /proc)."""
    me = os.getpid()
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == me:
            found.add(int(entry.name))
    return found


def files_containing(root: Path, needle: str) -> list[Path]:
    """Every regular file below `root` whose bytes contain `needle` (symlinks not followed)."""
    hits = []
    data = needle.encode()
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        try:
            if data in path.read_bytes():
                hits.append(path)
        except OSError:
            continue
    return hits
