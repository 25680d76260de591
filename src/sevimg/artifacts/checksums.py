"""SHA256SUMS: the `sha256sum -c` file that lists every image and manifest of a folder."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from sevimg.artifacts.names import ARTIFACT_SUFFIX, MANIFEST_SUFFIX, is_plain_name
from sevimg.atomic import write_file_atomic
from sevimg.problems import Problem, SevimgError, error, read_utf8

SHA256SUMS = "SHA256SUMS"
# 64 lowercase hex digits, as sha256sum writes them.
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SUMS_LINE = re.compile(r"(?P<sha>[0-9a-f]{64})  (?P<name>[^\n]+)")
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file as 64 lowercase hex digits, read in chunks (never all at once)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def iter_chunks(path: Path, size: int = _CHUNK) -> Iterator[bytes]:
    """The bytes of a file in chunks, for streaming uploads."""
    with path.open("rb") as handle:
        while chunk := handle.read(size):
            yield chunk


def publishable_names(folder: Path) -> list[str]:
    """Names of the images and manifests in `folder` (what SHA256SUMS must cover), sorted."""
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file() and p.name.endswith((ARTIFACT_SUFFIX, MANIFEST_SUFFIX))
    )


def format_sha256sums(sums: Mapping[str, str]) -> bytes:
    """The text of a SHA256SUMS file for name → sha256, sorted by name."""
    for name, sha in sums.items():
        if not is_plain_name(name):
            raise SevimgError(f"{name!r} is not a plain file name; SHA256SUMS lists files by name")
        if not SHA256_HEX.fullmatch(sha):
            raise SevimgError(f"{sha!r} (for {name}) is not a SHA-256 in lowercase hex")
    return "".join(f"{sums[name]}  {name}\n" for name in sorted(sums)).encode()


def write_sha256sums(folder: Path, names: Iterable[str] | None = None) -> Path:
    """Write `folder/SHA256SUMS` for `names` (default: every image and manifest in `folder`).

    Each line is `<sha256>  <name>` (two spaces, text mode), sorted by name,
    exactly what `sha256sum -c SHA256SUMS` checks. Written atomically.
    """
    chosen = publishable_names(folder) if names is None else list(dict.fromkeys(names))
    sums: dict[str, str] = {}
    for name in chosen:
        if not is_plain_name(name) or name == SHA256SUMS:
            raise SevimgError(
                f"cannot list {name!r} in {folder / SHA256SUMS}: not a plain file name"
            )
        path = folder / name
        if not path.is_file():
            raise SevimgError(f"cannot list {name} in {folder / SHA256SUMS}: {path} is not a file")
        sums[name] = sha256_file(path)
    target = folder / SHA256SUMS
    write_file_atomic(target, format_sha256sums(sums))
    return target


def parse_sha256sums(text: str, *, display: str) -> tuple[dict[str, str], list[Problem]]:
    """name → sha256 from the text of a SHA256SUMS file, and a problem per bad line."""
    sums: dict[str, str] = {}
    problems: list[Problem] = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    for number, line in enumerate(lines, 1):

        def bad(message: str, line_no: int = number) -> None:
            problems.append(error(display, message, line=line_no, column=1))

        if "\r" in line:
            bad("carriage return in line; SHA256SUMS uses Unix line endings")
            continue
        match = _SUMS_LINE.fullmatch(line)
        if not match:
            if line.startswith("\\"):
                bad("escaped file names are not accepted; names are plain file names")
            elif re.match(r"^[0-9a-fA-F]{64} \*", line):
                bad("binary-mode line (`<sha256> *<name>`); expected `<sha256>  <name>`")
            else:
                bad("expected `<64 lowercase hex digits>  <file name>`")
            continue
        name = match["name"]
        if not is_plain_name(name):
            bad(f"{name!r} is not a plain file name (no folders, no `..`, no spaces)")
            continue
        if name == SHA256SUMS:
            bad("SHA256SUMS cannot list itself")
            continue
        if name in sums:
            bad(f"{name} is listed twice")
            continue
        sums[name] = match["sha"]
    return sums, problems


def read_sha256sums(path: Path) -> dict[str, str]:
    """name → sha256 from a SHA256SUMS file; SevimgError naming the file and line if it is malformed."""
    text = read_utf8(path)
    sums, problems = parse_sha256sums(text, display=str(path))
    if problems:
        raise SevimgError(f"{path} is not a valid SHA256SUMS file", problems)
    return sums
