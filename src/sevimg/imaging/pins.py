"""Pinned payload tools: downloaded once, checked by SHA-256, staged for mkosi.

A pin names an exact file (URL and SHA-256), never "latest". Downloads land
in the cache under their hash, so a second build, or a second image, reads
them from disk; `--tools-dir` (or `tools_dir` in sevimg.local.yaml) supplies
them for machines without network access.

A pinned file is trusted only as far as its hash, and unpacked by
:mod:`sevimg.imaging.unpack`, which refuses a damaged or hostile one.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx

from sevimg.atomic import write_file_atomic, write_tree
from sevimg.imaging import unpack
from sevimg.problems import SevimgError
from sevimg.render.trees import File, Tree
from sevimg.settings import ToolPin, install_problem

DOWNLOAD_TIMEOUT = 60.0
MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024  # a tool or its package; far above any real one


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_name(pin: ToolPin) -> str:
    if not pin.has_file_name:
        raise SevimgError(
            f"{pin.name} {pin.version}: {pin.url} does not end in a file name",
            hint="pin the URL of the file itself (its last part names it in the cache)",
        )
    return pin.file_name


def fetch(
    pin: ToolPin, cache_dir: Path, tools_dir: Path | None = None, proxy: str | None = None
) -> bytes:
    """The pinned file's bytes, from `tools_dir`, the cache, or its URL (then cached); verified."""
    name = _file_name(pin)
    cached = cache_dir / "downloads" / pin.sha256 / name
    candidates = ([tools_dir / name] if tools_dir else []) + [cached]
    for path in candidates:
        if path.is_file():
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise SevimgError(f"cannot read {path}: {exc.strerror or exc}") from None
            if _sha256(data) == pin.sha256:
                return data
            if path != cached:
                raise SevimgError(
                    f"{path} does not match the pinned SHA-256 of {pin.name} {pin.version}",
                    hint=f"expected {pin.sha256}, found {_sha256(data)}",
                )
    if tools_dir is not None:
        raise SevimgError(
            f"{pin.name} {pin.version} is not in {tools_dir} (expected a file named {name})"
        )
    data = _download(pin, proxy)
    if _sha256(data) != pin.sha256:
        raise SevimgError(
            f"{pin.url} does not match the pinned SHA-256 of {pin.name} {pin.version}; not used",
            hint=f"expected {pin.sha256}, downloaded {_sha256(data)}",
        )
    try:
        write_file_atomic(cached, data)
    except OSError as exc:
        raise SevimgError(f"cannot write {cached}: {exc.strerror or exc}") from None
    return data


def _download(pin: ToolPin, proxy: str | None) -> bytes:
    what = f"{pin.name} {pin.version}"
    hint = "supply it with --tools-dir DIR (or tools_dir in sevimg.local.yaml), or build --without-tools"
    try:
        with (
            httpx.Client(timeout=DOWNLOAD_TIMEOUT, follow_redirects=True, proxy=proxy) as client,
            client.stream("GET", pin.url) as response,
        ):
            if response.status_code != 200:
                raise SevimgError(
                    f"cannot download {what}: {pin.url} answered HTTP {response.status_code}",
                    hint=hint,
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise SevimgError(
                        f"cannot download {what}: {pin.url} is larger than "
                        f"{MAX_DOWNLOAD_BYTES // 2**20} MiB; not a pinned tool"
                    )
                chunks.append(chunk)
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:  # idna: a bad host name
        raise SevimgError(f"cannot download {what} from {pin.url}: {exc}", hint=hint) from None
    return b"".join(chunks)


@dataclass(frozen=True)
class Staged:
    """One file a pin puts into the image: its path below the pin's target, bytes and mode."""

    path: PurePosixPath  # relative to the image root
    content: bytes
    mode: int


def files(pin: ToolPin, data: bytes) -> list[Staged]:
    """Every file `pin` installs, from its verified download `data`, sorted by path."""
    target = PurePosixPath(pin.target.lstrip("/"))
    if pin.is_library:
        return [
            Staged(target / name, content, 0o644)
            for name, content in sorted(unpack.wheel_files(pin, data).items())
        ]
    return [Staged(target, unpack.program(pin, data), 0o755)]


def stage(
    pins: Iterable[ToolPin],
    role: str,
    cache_dir: Path,
    dest: Path,
    tools_dir: Path | None,
    proxy: str | None,
) -> dict[str, ToolPin]:
    """Put every pinned tool for `role` into the extra tree `dest`; returns name → pin staged.

    All or nothing: when one tool fails, `dest` is removed, so no build takes a
    partial set of tools.
    """
    shutil.rmtree(dest, ignore_errors=True)
    staged: dict[str, ToolPin] = {}
    try:
        for pin in pins:
            if role not in pin.roles:
                continue
            if reason := install_problem(pin.target, library=pin.is_library):
                raise SevimgError(f"{pin.name}: install path {pin.target!r} {reason}")
            try:
                for staged_file in files(pin, fetch(pin, cache_dir, tools_dir, proxy)):
                    target = dest / staged_file.path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    write_file_atomic(target, staged_file.content, mode=staged_file.mode)
            except OSError as exc:
                raise SevimgError(
                    f"cannot stage {pin.name} at {pin.target}: {exc.strerror or exc}",
                    hint="no two tools may share a path, or sit one inside the other",
                ) from None
            staged[pin.name] = pin
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return staged


def python_libraries(
    pins: Iterable[ToolPin], cache_dir: Path, tools_dir: Path | None, proxy: str | None
) -> Path | None:
    """A folder holding every pinned wheel's package, unpacked from the pin cache; None without.

    The build machine imports the same pinned files the hosts carry (for the
    expected measurement): the folder is named by the wheels' hashes, so a
    different pin never reuses another's files.
    """
    wheels = sorted((p for p in pins if p.is_library), key=lambda p: p.name)
    if not wheels:
        return None
    key = hashlib.sha256(" ".join(p.sha256 for p in wheels).encode()).hexdigest()[:16]
    folder = cache_dir / "python" / key
    if (folder / ".complete").is_file():
        return folder
    tree_files: list[File] = []
    for pin in wheels:
        base = PurePosixPath(pin.package)
        for name, content in unpack.wheel_files(
            pin, fetch(pin, cache_dir, tools_dir, proxy)
        ).items():
            tree_files.append(File(base / name, content, 0o644))
    tree_files.append(File(PurePosixPath(".complete"), b"", 0o644))
    try:
        write_tree(Tree(key, tuple(sorted(tree_files, key=lambda f: f.path))), folder)
    except OSError as exc:
        raise SevimgError(f"cannot unpack the pinned wheels into {folder}: {exc}") from None
    return folder
