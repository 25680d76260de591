"""Write files and trees to disk, atomically, and clear what interrupted runs left.

Every stage writes through this module (rendered trees, manifests, logs,
results, downloads), so it imports nothing of sevimg but :mod:`sevimg.interrupt`.

Each tree is written into a hidden staging folder next to its destination
(`.NAME.new-XXXXXXXX`) and swapped in with renames (the old tree moves to
`.NAME.old-XXXXXXXX` and is removed), so a reader sees the old tree or the
new one, never a mix; an error or a signal while writing leaves the old tree
untouched. Single files go through `.NAME.tmp-XXXXXXXX`. A run killed
outright (SIGKILL, power loss) can leave such names behind:
:func:`remove_stale` clears them, called by the next run while it holds the
folder's lock (:mod:`sevimg.lock`). All trees are rendered in memory before
the first is written, so bad input never produces output at all.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Protocol

from sevimg import interrupt


class TreeFile(Protocol):
    """One file of a tree (:class:`sevimg.render.trees.File` is one)."""

    @property
    def path(self) -> PurePosixPath: ...
    @property
    def content(self) -> bytes: ...
    @property
    def mode(self) -> int: ...


class Tree(Protocol):
    """A tree of files named for an image (:class:`sevimg.render.trees.Tree` is one).

    A protocol, so this low floor never imports the renderer (or its templates).
    """

    @property
    def image_id(self) -> str: ...
    @property
    def files(self) -> Sequence[TreeFile]: ...


# sevimg's own temporary names (tempfile adds 8 characters of [a-z0-9_]).
_STALE = re.compile(r"^\..+\.(?:(?:new|old|tmp)-[a-z0-9_]{8}|partial)$")


def write_tree(tree: Tree, dest: Path) -> Path:
    """Replace `dest` with the files of `tree`; returns `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging: Path | None = None
    try:
        # A signal inside mkdtemp, after the folder exists but before its name is
        # returned, would leave a staging folder no one knows of: hold it.
        with interrupt.deferred():
            staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.new-", dir=dest.parent))
        for f in tree.files:
            target = staging.joinpath(*f.path.parts)
            _make_folders(staging, target.parent)
            target.write_bytes(f.content)
            target.chmod(f.mode)
        staging.chmod(0o755)
        with interrupt.deferred():  # the swap and its cleanup happen whole, or not at all
            _swap(staging, dest)
    except BaseException:
        if staging is not None:
            with interrupt.deferred():
                shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _make_folders(root: Path, folder: Path) -> None:
    """Create `folder` below `root` with mode 0755 whatever the umask: mkosi copies
    these trees into images, whose bytes must not depend on who rendered them."""
    path = root
    for part in folder.relative_to(root).parts:
        path = path / part
        if not path.is_dir():
            path.mkdir()
            path.chmod(0o755)


def _swap(new: Path, dest: Path) -> None:
    """Put `new` at `dest`, moving any old tree aside first and removing it after."""
    if not dest.exists() and not dest.is_symlink():
        new.rename(dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    old.rmdir()
    dest.rename(old)
    try:
        new.rename(dest)
    except BaseException:
        old.rename(dest)  # put the previous tree back
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()


def replace_folder(new: Path, dest: Path) -> Path:
    """Put the finished folder `new` (a staging folder beside `dest`) at `dest`; returns `dest`.

    A reader sees the old folder or the new one, never a mix; the old one is removed.
    """
    with interrupt.deferred():
        _swap(new, dest)
    return dest


def write_trees(trees: Iterable[Tree], out_dir: Path) -> list[Path]:
    """Write every tree under `out_dir/<image id>/`; returns the written folders."""
    written = []
    for tree in trees:
        interrupt.check()  # between trees: a signal that got lost still ends the run here
        written.append(write_tree(tree, out_dir / tree.image_id))
    return written


def write_file_atomic(path: Path, content: bytes, mode: int = 0o644) -> None:
    """Write one file via a temporary file and rename, never leaving half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        with interrupt.deferred():  # the name must be known before a signal can end the run
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
            tmp = Path(name)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        if tmp is not None:
            with interrupt.deferred():
                tmp.unlink(missing_ok=True)
        raise


def create_new(path: Path, mode: int = 0o644) -> int:
    """A file descriptor for writing a fresh file at `path` (a log, a `.partial` copy).

    Whatever was at `path` is unlinked first and the new file is created
    exclusively without following links: a symlink planted in an output
    folder (`out/logs/x.log -> /etc/shadow`) is replaced, never written
    through.
    """
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def is_stale(name: str) -> bool:
    """True for the temporary names sevimg's writers use (`.X.new-*`, `.X.old-*`, `.X.tmp-*`, `.X.partial`)."""
    return bool(_STALE.match(name))


def remove_stale(folder: Path) -> list[str]:
    """Remove the temporary files and folders interrupted runs left in `folder`; their names.

    Call it only while holding the folder's lock, so no live run's staging
    folder is taken away from under it.
    """
    removed: list[str] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not is_stale(entry.name):
            continue
        with interrupt.deferred():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        removed.append(entry.name)
    return removed


@contextlib.contextmanager
def scratch_folder(prefix: str) -> Iterator[Path]:
    """A temporary folder (in $TMPDIR) removed at the end, even when a signal ends the block."""
    with interrupt.deferred():
        path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        with interrupt.deferred():
            shutil.rmtree(path, ignore_errors=True)
