"""Look inside a built UKI: its PE sections, and the files of its initrd.

The post-build checks read the real artifact rather than trusting the
configuration: which kernel it carries, whether the SEV firmware file and
QEMU binary are in the host, whether the guest kept its modules. A UKI's
`.initrd` section holds one or more (compressed) cpio archives; we list
their members without unpacking anything to disk.
"""

from __future__ import annotations

import io
import lzma
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pefile
import zstandard

from sevimg.problems import SevimgError

_ZSTD = b"\x28\xb5\x2f\xfd"
_XZ = b"\xfd7zXZ\x00"
_GZIP = b"\x1f\x8b"
_NEWC = (b"070701", b"070702")
_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Member:
    """One file in the initrd (symlinks carry their target as `data`)."""

    path: str  # without a leading slash
    mode: int
    size: int
    data: bytes
    uid: int = 0
    gid: int = 0
    mtime: int = 0

    @property
    def is_dir(self) -> bool:
        """A folder."""
        return self.mode & 0o170000 == 0o040000

    @property
    def is_symlink(self) -> bool:
        """A symbolic link."""
        return self.mode & 0o170000 == 0o120000


@dataclass(frozen=True)
class Uki:
    """The sections of a UKI that the checks need."""

    path: Path
    linux: bytes
    initrd: bytes
    cmdline: str
    uname: str
    osrel: str

    def members(self) -> dict[str, Member]:
        """Every file of every cpio archive in the initrd, later archives winning."""
        found: dict[str, Member] = {}
        for member in _cpio_members(self.initrd):
            found[member.path] = member
        return found


class NotUki(SevimgError):
    """A PE/EFI binary without a .linux section: an EFI program, not a unified kernel image."""


def read_uki(path: Path, data: bytes | None = None) -> Uki:
    """Parse the UKI at `path` (or `data`, a UKI found at `path`); SevimgError when it is not one."""
    try:
        pe = pefile.PE(str(path), fast_load=True) if data is None else pefile.PE(data=data)
    except (OSError, pefile.PEFormatError) as exc:
        raise SevimgError(f"{path} is not a PE/EFI binary: {exc}") from None
    sections = {
        s.Name.rstrip(b"\x00").decode("ascii", "replace"): s.get_data() for s in pe.sections
    }
    pe.close()
    if ".linux" not in sections:
        raise NotUki(f"{path} has no .linux section: not a unified kernel image")

    def text(name: str) -> str:
        raw: bytes = sections.get(name, b"")
        return raw.rstrip(b"\x00").decode("utf-8", "replace").strip()

    return Uki(
        path=path,
        linux=sections[".linux"],
        initrd=sections.get(".initrd", b""),
        cmdline=text(".cmdline"),
        uname=text(".uname"),
        osrel=text(".osrel"),
    )


def initrd_members(initrd: bytes) -> Iterator[Member]:
    """Every member of an initrd's (concatenated, possibly compressed) cpio archives, in order."""
    return _cpio_members(initrd)


def _decompress(blob: bytes) -> bytes:
    """Compressed streams (concatenated, with zero padding between or after them) to bytes."""
    out = io.BytesIO()
    rest = blob
    while rest:
        if rest.startswith(_ZSTD):
            stream = zstandard.ZstdDecompressor().decompressobj()
            out.write(stream.decompress(rest))
            rest = stream.unused_data
        elif rest.startswith(_XZ):
            xz = lzma.LZMADecompressor()
            out.write(xz.decompress(rest))
            rest = xz.unused_data
        elif rest.startswith(_GZIP):
            gz = zlib.decompressobj(wbits=31)
            out.write(gz.decompress(rest))
            rest = gz.unused_data
        elif rest[:1] == b"\x00":
            rest = rest.lstrip(b"\x00")
        else:
            out.write(rest)  # not compressed
            break
    return out.getvalue()


def _cpio_members(blob: bytes) -> Iterator[Member]:
    """Members of the concatenated, possibly compressed, newc cpio archives in `blob`."""
    offset = 0
    while offset < len(blob):
        rest = blob[offset:]
        if rest[:6] in _NEWC:
            end = yield from _newc(blob, offset)
            offset = end
        elif rest.lstrip(b"\x00") == b"":
            return  # padding at the end
        elif rest[:1] == b"\x00":
            offset += len(rest) - len(rest.lstrip(b"\x00"))
        else:
            # A compressed archive runs to the end of the section (mkosi puts
            # uncompressed parts, such as microcode, first).
            yield from _cpio_members(_decompress(rest))
            return


def _newc(blob: bytes, offset: int) -> Generator[Member, None, int]:
    """Members of one newc archive starting at `offset`; returns the offset after its trailer."""
    while True:
        header = blob[offset : offset + 110]
        if len(header) < 110 or header[:6] not in _NEWC:
            raise SevimgError(f"corrupt cpio archive in the initrd at byte {offset}")
        try:
            fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise SevimgError(f"corrupt cpio archive in the initrd at byte {offset}") from None
        mode, uid, gid, mtime = fields[1], fields[2], fields[3], fields[5]
        filesize, namesize = fields[6], fields[11]
        name_start = offset + 110
        name = blob[name_start : name_start + namesize - 1].decode("utf-8", "surrogateescape")
        data_start = (name_start + namesize + 3) & ~3
        data = blob[data_start : data_start + filesize]
        offset = (data_start + filesize + 3) & ~3
        if name == _TRAILER:
            return offset
        path = name.lstrip("./").lstrip("/")
        if path:
            yield Member(path, mode, filesize, data, uid, gid, mtime)
