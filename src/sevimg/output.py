"""Write rendered trees to disk, atomically.

Each tree is written into a temporary folder next to its destination and
swapped in with renames, so a reader sees the old tree or the new one, never a
mix; an error (or Ctrl-C) while writing leaves the old tree untouched. All
trees are rendered in memory before the first is written, so bad input never
produces output at all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: writing files must not load the templates
    from sevimg.render import Tree


def write_tree(tree: Tree, dest: Path) -> Path:
    """Replace `dest` with the files of `tree`; returns `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.new-", dir=dest.parent))
    try:
        for f in tree.files:
            target = staging.joinpath(*f.path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.content)
            target.chmod(f.mode)
        staging.chmod(0o755)
        _swap(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


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


def write_trees(trees: Iterable[Tree], out_dir: Path) -> list[Path]:
    """Write every tree under `out_dir/<image id>/`; returns the written folders."""
    return [write_tree(tree, out_dir / tree.image_id) for tree in trees]


def write_file_atomic(path: Path, content: bytes, mode: int = 0o644) -> None:
    """Write one file via a temporary file and rename, never leaving half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
