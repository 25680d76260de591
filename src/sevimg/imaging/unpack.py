"""What a pinned file holds: the program out of a Debian package, the package out of a wheel.

A pinned file is trusted only as far as its hash: a package that is
truncated, not an ar archive, compressed in a way we cannot read, or whose
member is a link or escapes the package root is refused with a message, never
a crash. Sizes are bounded so a hostile pin cannot exhaust memory.
"""

from __future__ import annotations

import bz2
import io
import lzma
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath

import zstandard

from sevimg.problems import SevimgError
from sevimg.settings import ToolPin

MAX_UNPACKED_BYTES = 1024 * 1024 * 1024  # a package's data.tar, uncompressed
_AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60
_AR_SIZE = re.compile(rb"[0-9]{1,10} *")
MAX_WHEEL_MEMBER = 16 * 1024 * 1024  # one file of a pure-Python wheel; real ones are KiB
MAX_WHEEL_MEMBERS = 4096
_WHEEL_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}")
_LICENSE = re.compile(r"(LICEN[CS]E|COPYING|NOTICE)[A-Za-z0-9._-]*")


def wheel_files(pin: ToolPin, data: bytes) -> dict[str, bytes]:
    """The wheel's package folder `pin.member` (relative names) and its license files.

    Pure Python only: entry-point scripts and metadata stay out; the license
    files land beside the modules as `LICENSES/<name>`, and `PIN` records
    which wheel they came from. A member that is absolute, has a `..` part, is
    a link or is too large, a duplicate name, or a version other than the
    pinned one is refused with a message naming it.
    """
    what = f"{pin.name} {pin.version}"
    package = pin.package
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise SevimgError(f"{what}: not a wheel (zip archive): {exc}") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_WHEEL_MEMBERS:
            raise SevimgError(f"{what}: the wheel has {len(infos)} members; not a small library")
        found: dict[str, bytes] = {}
        seen: set[str] = set()
        version: str | None = None
        for info in infos:
            name = info.filename
            parts = name.split("/")
            if (
                name.startswith("/")
                or "\\" in name
                or ".." in parts
                or (name and not all(_WHEEL_PART.fullmatch(p) for p in parts if p))
            ):
                raise SevimgError(
                    f"{what}: the wheel holds {name!r}, not a plain path inside it; not used"
                )
            if name in seen:
                raise SevimgError(f"{what}: the wheel holds {name!r} twice; not used")
            seen.add(name)
            kind = stat.S_IFMT(info.external_attr >> 16)
            if info.is_dir():
                continue
            if kind not in (0, stat.S_IFREG):
                raise SevimgError(
                    f"{what}: {name} is {'a link' if kind == stat.S_IFLNK else 'not a regular file'}"
                    " in the wheel; not used"
                )
            if info.file_size > MAX_WHEEL_MEMBER:
                raise SevimgError(f"{what}: {name} is larger than {MAX_WHEEL_MEMBER // 2**20} MiB")
            top = parts[0]
            dist_info = top.endswith(".dist-info") and len(parts) > 1
            wanted = top == package and len(parts) > 1
            license_file = dist_info and (parts[1] == "licenses" or _LICENSE.fullmatch(parts[-1]))
            metadata = dist_info and parts[1:] == ["METADATA"]
            if not (wanted or license_file or metadata):
                continue
            content = _read_member(archive, info, what)
            if metadata:
                version = _metadata_version(content)
            elif wanted:
                found["/".join(parts[1:])] = content
            else:
                found[f"LICENSES/{parts[-1]}"] = content
    if not any(n.endswith(".py") and not n.startswith("LICENSES/") for n in found):
        raise SevimgError(f"{what}: the wheel has no Python package {package}/")
    if version != pin.version:
        raise SevimgError(
            f"{what}: the wheel is version {version or '(none in its METADATA)'}, "
            f"not the pinned {pin.version}"
        )
    if not any(n.startswith("LICENSES/") for n in found):
        raise SevimgError(f"{what}: the wheel carries no license file; it is not shipped without")
    found["PIN"] = f"{pin.name} {pin.version} {pin.sha256} {pin.url}\n".encode()
    return found


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> bytes:
    """One member's bytes, read no further than its bound (its header may lie)."""
    try:
        with archive.open(info) as handle:
            content = handle.read(MAX_WHEEL_MEMBER + 1)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as exc:
        raise SevimgError(f"{what}: {info.filename} is damaged in the wheel ({exc})") from None
    if len(content) > MAX_WHEEL_MEMBER:
        raise SevimgError(f"{what}: {info.filename} is larger than {MAX_WHEEL_MEMBER // 2**20} MiB")
    return content


def _metadata_version(metadata: bytes) -> str | None:
    """The `Version:` header of a wheel's METADATA."""
    for line in metadata.decode("utf-8", "replace").splitlines():
        if not line.strip():
            break  # the headers end at the first blank line
        key, _, value = line.partition(":")
        if key.strip().lower() == "version":
            return value.strip()
    return None


def program(pin: ToolPin, data: bytes) -> bytes:
    """The program itself: the file, or the member of a Debian package."""
    if pin.is_library:
        raise SevimgError(f"{pin.name} {pin.version}: a wheel is a library, not a program")
    if pin.format == "binary":
        return data
    if not pin.member:
        raise SevimgError(f"{pin.name} {pin.version}: format deb needs `member:`")
    return _deb_member(data, pin.member, what=f"{pin.name} {pin.version}")


def _ar_members(deb: bytes, what: str) -> Iterator[tuple[str, bytes]]:
    """(name, body) of each member of an ar archive, checked against its headers."""
    if not deb.startswith(_AR_MAGIC):
        raise SevimgError(f"{what}: not a Debian package (no ar archive header)")
    offset = len(_AR_MAGIC)
    while offset < len(deb):
        header = deb[offset : offset + _AR_HEADER]
        if len(header) < _AR_HEADER or header[58:60] != b"`\n":
            raise SevimgError(f"{what}: the package is damaged (bad ar member header)")
        if not _AR_SIZE.fullmatch(header[48:58]):
            raise SevimgError(f"{what}: the package is damaged (bad ar member size)")
        size = int(header[48:58])
        body = deb[offset + _AR_HEADER : offset + _AR_HEADER + size]
        if len(body) != size:
            raise SevimgError(f"{what}: the package is truncated")
        yield header[:16].decode("ascii", "replace").strip().rstrip("/"), body
        offset += _AR_HEADER + size + (size & 1)


def _too_large(label: str) -> SevimgError:
    return SevimgError(f"{label} unpacks to more than {MAX_UNPACKED_BYTES // 2**20} MiB")


def _bounded(decompress: Callable[[bytes, int], bytes], body: bytes, label: str) -> bytes:
    data = decompress(body, MAX_UNPACKED_BYTES + 1)
    if len(data) > MAX_UNPACKED_BYTES:
        raise _too_large(label)
    return data


def _finished(
    decompressor: lzma.LZMADecompressor | bz2.BZ2Decompressor | zstandard.ZstdDecompressionObj,
    label: str,
) -> None:
    if not decompressor.eof:
        raise SevimgError(f"{label} is truncated")


def _unpack(name: str, body: bytes, what: str) -> bytes:
    """The uncompressed data.tar of a package (dpkg's compressions: none, gz, xz, zst, bz2, lzma)."""
    label = f"{what}: the package's {name}"
    suffix = name.removeprefix("data.tar")
    if suffix == "":
        return body
    if suffix == ".gz":
        gz = zlib.decompressobj(16 + zlib.MAX_WBITS)
        data = _bounded(gz.decompress, body, label)
        if not gz.eof:
            raise SevimgError(f"{label} is truncated")
        return data
    if suffix in (".xz", ".lzma"):
        xz = lzma.LZMADecompressor(format=lzma.FORMAT_XZ if suffix == ".xz" else lzma.FORMAT_ALONE)
        data = _bounded(xz.decompress, body, label)
        _finished(xz, label)
        return data
    if suffix == ".bz2":
        bz = bz2.BZ2Decompressor()
        data = _bounded(bz.decompress, body, label)
        _finished(bz, label)
        return data
    if suffix == ".zst":
        # Fed in small pieces: one piece cannot expand far past the bound.
        zstd = zstandard.ZstdDecompressor().decompressobj()
        pieces: list[bytes] = []
        size = 0
        for start in range(0, len(body), 4096):
            piece = zstd.decompress(body[start : start + 4096])
            size += len(piece)
            if size > MAX_UNPACKED_BYTES:
                raise _too_large(label)
            pieces.append(piece)
        _finished(zstd, label)
        return b"".join(pieces)
    raise SevimgError(
        f"{label} uses a compression sevimg cannot read "
        "(it reads data.tar, .gz, .xz, .zst, .bz2 and .lzma)"
    )


def _member_path(name: str) -> PurePosixPath | None:
    """A tar member's path relative to the package root; None when it escapes the root."""
    pure = PurePosixPath(name)
    if ".." in pure.parts:
        return None
    return PurePosixPath(*[p for p in pure.parts if p not in ("/", ".")])


def _deb_member(deb: bytes, member: str, *, what: str) -> bytes:
    """One regular file out of a .deb (an ar archive holding data.tar[.gz|.xz|.zst|...])."""
    wanted = _member_path(member)
    if wanted is None or not wanted.parts:
        raise SevimgError(f"{what}: member {member!r} is not a path inside the package")
    for name, body in _ar_members(deb, what):
        if not name.startswith("data.tar"):
            continue
        try:
            with tarfile.open(fileobj=io.BytesIO(_unpack(name, body, what)), mode="r:") as tar:
                infos = tar.getmembers()
                for info in infos:
                    if _member_path(info.name) is None:
                        raise SevimgError(
                            f"{what}: the package holds {info.name!r}, outside its root; not used"
                        )
                for info in infos:
                    if _member_path(info.name) != wanted:
                        continue
                    if not info.isreg():
                        kind = "a symbolic link" if info.issym() else "not a regular file"
                        kind = "a hard link" if info.islnk() else kind
                        raise SevimgError(
                            f"{what}: {member} is {kind} in the package; pin the file itself"
                        )
                    if info.size > MAX_UNPACKED_BYTES:
                        raise SevimgError(f"{what}: {member} is too large")
                    extracted = tar.extractfile(info)
                    if extracted is None:
                        raise SevimgError(f"{what}: {member} cannot be read from the package")
                    return extracted.read()
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            raise SevimgError(f"{what}: the package's {name} is damaged ({exc})") from None
        except zstandard.ZstdError as exc:
            raise SevimgError(f"{what}: the package's {name} is damaged ({exc})") from None
        raise SevimgError(f"{what}: the package has no {member}")
    raise SevimgError(f"{what}: the package has no data archive")
