"""Pinned payload tools: downloaded once, checked by SHA-256, staged for mkosi.

A pin names an exact file (URL and SHA-256), never "latest". Downloads land
in the cache under their hash, so a second build, or a second image, reads
them from disk; `--tools-dir` (or `tools_dir` in sevimg.local.yaml) supplies
them for machines without network access.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import shutil
import tarfile
from collections.abc import Iterable
from pathlib import Path

import httpx
import zstandard

from sevimg.config import ToolPin
from sevimg.output import write_file_atomic
from sevimg.problems import SevimgError

DOWNLOAD_TIMEOUT = 60.0
_AR_MAGIC = b"!<arch>\n"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(
    pin: ToolPin, cache_dir: Path, tools_dir: Path | None = None, proxy: str | None = None
) -> bytes:
    """The pinned file's bytes, from `tools_dir`, the cache, or its URL (then cached); verified."""
    cached = cache_dir / "downloads" / pin.sha256 / pin.file_name
    candidates = ([tools_dir / pin.file_name] if tools_dir else []) + [cached]
    for path in candidates:
        if path.is_file():
            data = path.read_bytes()
            if _sha256(data) == pin.sha256:
                return data
            if path != cached:
                raise SevimgError(
                    f"{path} does not match the pinned SHA-256 of {pin.name} {pin.version}",
                    hint=f"expected {pin.sha256}, found {_sha256(data)}",
                )
    if tools_dir is not None:
        raise SevimgError(
            f"{pin.name} {pin.version} is not in {tools_dir} (expected a file named {pin.file_name})"
        )
    try:
        with httpx.Client(timeout=DOWNLOAD_TIMEOUT, follow_redirects=True, proxy=proxy) as client:
            response = client.get(pin.url)
    except httpx.HTTPError as exc:
        raise SevimgError(
            f"cannot download {pin.name} {pin.version} from {pin.url}: {exc}",
            hint="supply it with --tools-dir DIR (or tools_dir in sevimg.local.yaml), or build --without-tools",
        ) from None
    if response.status_code != 200:
        raise SevimgError(
            f"cannot download {pin.name} {pin.version}: {pin.url} answered HTTP {response.status_code}",
            hint="supply it with --tools-dir DIR, or build --without-tools",
        )
    data = response.content
    if _sha256(data) != pin.sha256:
        raise SevimgError(
            f"{pin.url} does not match the pinned SHA-256 of {pin.name} {pin.version}; not used",
            hint=f"expected {pin.sha256}, downloaded {_sha256(data)}",
        )
    write_file_atomic(cached, data)
    return data


def program(pin: ToolPin, data: bytes) -> bytes:
    """The program itself: the file, or the member of a Debian package."""
    if pin.format == "binary":
        return data
    assert pin.member is not None
    return _deb_member(data, pin.member, what=f"{pin.name} {pin.version}")


def _deb_member(deb: bytes, member: str, *, what: str) -> bytes:
    """One file out of a .deb (an ar archive holding data.tar.{xz,zst,gz})."""
    if not deb.startswith(_AR_MAGIC):
        raise SevimgError(f"{what}: not a Debian package")
    offset = len(_AR_MAGIC)
    while offset + 60 <= len(deb):
        header = deb[offset : offset + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        body = deb[offset + 60 : offset + 60 + size]
        offset += 60 + size + (size & 1)
        if not name.startswith("data.tar"):
            continue
        if name.endswith(".zst"):
            body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
        elif name.endswith(".xz"):
            body = lzma.decompress(body)
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            for info in tar.getmembers():
                if info.name.lstrip(".").lstrip("/") == member.lstrip("/") and info.isfile():
                    extracted = tar.extractfile(info)
                    assert extracted is not None
                    return extracted.read()
        raise SevimgError(f"{what}: the package has no {member}")
    raise SevimgError(f"{what}: the package has no data archive")


def stage(
    pins: Iterable[ToolPin],
    role: str,
    cache_dir: Path,
    dest: Path,
    tools_dir: Path | None,
    proxy: str | None,
) -> dict[str, ToolPin]:
    """Put every pinned tool for `role` into the extra tree `dest`; returns name → pin staged."""
    shutil.rmtree(dest, ignore_errors=True)
    staged: dict[str, ToolPin] = {}
    for pin in pins:
        if role not in pin.roles:
            continue
        target = dest / pin.target.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(program(pin, fetch(pin, cache_dir, tools_dir, proxy)))
        target.chmod(0o755)
        staged[pin.name] = pin
    return staged
