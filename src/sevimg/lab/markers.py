"""Rewriting only the marked part of a hand-written document (`sevimg matrix --update FILE`).

The part between `<!-- sevimg-matrix:start -->` and `<!-- sevimg-matrix:end -->`
(each on a line of its own) is replaced; every byte outside it stays. A
document without exactly one of each, in that order, is refused with the
file and line, and the write is atomic.
"""

from __future__ import annotations

from pathlib import Path

from sevimg.atomic import write_file_atomic
from sevimg.lab.markdown import END, START
from sevimg.problems import SevimgError


def replace_marked(document: str, content: str, *, where: str) -> str:
    """`document` with the marked part replaced by `content`; SevimgError naming `where`."""
    lines = document.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == START]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    hint = f"put {START} and {END} on lines of their own where the matrix goes"
    for marker, found in ((START, starts), (END, ends)):
        if not found:
            raise SevimgError(f"{where}: no {marker} line", hint=hint)
        if len(found) > 1:
            at = ", ".join(str(i + 1) for i in found)
            raise SevimgError(
                f"{where}: lines {at}: {marker} appears {len(found)} times", hint=hint
            )
    start, end = starts[0], ends[0]
    if end < start:
        raise SevimgError(f"{where}:{end + 1}: {END} comes before {START} (line {start + 1})")
    newline = "\r\n" if lines[start].endswith("\r\n") else "\n"
    inner = content if content.endswith("\n") else content + "\n"
    if newline != "\n":
        inner = inner.replace("\n", newline)
    return "".join([*lines[: start + 1], inner, *lines[end:]])


def planned_update(path: Path, content: str) -> tuple[str, str]:
    """(the document now, the document with its marked part replaced); nothing is written yet."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SevimgError(f"--update {path}: {exc.strerror or exc}") from None
    try:
        document = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SevimgError(f"--update {path}: not UTF-8 text (byte {exc.start})") from None
    return document, replace_marked(document, content, where=str(path))


def update_file(path: Path, content: str) -> bool:
    """Rewrite the marked part of `path` (atomically); True when the file changed."""
    document, updated = planned_update(path, content)
    if updated == document:
        return False
    write_file_atomic(path, updated.encode("utf-8"))
    return True
