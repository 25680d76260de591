"""Decompression of index files by their name (.gz, .xz, .zst, .bz2), streamed.

A truncated or corrupt file is an :class:`ArchiveError` naming it, never a
half-read index: the stream must reach its end marker. What comes out is
bounded while it streams (CAPS per kind of index, and RATIO times the
compressed size), so a small bomb never reaches memory.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import zstandard

from sevimg.problems import SevimgError

CHUNK = 1 << 20
SUFFIXES = (".xz", ".zst", ".gz", ".bz2")


class ArchiveError(SevimgError):
    """An archive's answer cannot be used: unreachable, unsigned, corrupt, missing."""


# Caps per kind of index, for what is downloaded and what it decompresses to.
# Real ones are far below: Debian's InRelease ~200 KB, a Packages.xz ~10 MB
# (70 MB unpacked), Ubuntu's Contents ~70 MB (1 GB unpacked, read streaming),
# Fedora's primary.xml.zst ~15 MB (~200 MB unpacked).
MiB = 1 << 20


@dataclass(frozen=True)
class Cap:
    """The most bytes an index of one kind may be, downloaded and unpacked."""

    download: int
    unpacked: int


CAPS = {
    "release": Cap(32 * MiB, 32 * MiB),  # InRelease, Release, repomd.xml (not compressed)
    "packages": Cap(256 * MiB, 2048 * MiB),
    "contents": Cap(1024 * MiB, 16384 * MiB),  # streamed, never held whole
    "primary": Cap(256 * MiB, 2048 * MiB),
    "filelists": Cap(512 * MiB, 4096 * MiB),
}
# And whatever the kind, no more than RATIO times the compressed size (above a
# floor): indexes compress 5 to 15 times; a bomb compresses thousands of times.
RATIO = 100
FLOOR = 64 * MiB
# zstd gives at most this many bytes per byte of input (an RLE block), so its
# input is fed in pieces small enough that one call cannot pass the limit.
ZSTD_RATIO = 1 << 16


def unpacked_limit(kind: str, compressed: int) -> int:
    """The most bytes `compressed` bytes of an index of `kind` may decompress to."""
    return min(CAPS[kind].unpacked, max(FLOOR, RATIO * compressed))


def _decompressor(name: str) -> object | None:
    if name.endswith(".gz"):
        return zlib.decompressobj(wbits=47)  # gzip or zlib header
    if name.endswith(".xz"):
        return lzma.LZMADecompressor()
    if name.endswith(".zst"):
        return zstandard.ZstdDecompressor().decompressobj()
    if name.endswith(".bz2"):
        return bz2.BZ2Decompressor()
    return None


def _pieces(engine: Any, data: bytes, limit: int) -> Iterator[bytes]:
    """Decompressed pieces, none larger than what is left of `limit` (plus one CHUNK)."""
    if isinstance(engine, type(zlib.decompressobj())):
        rest = data
        while True:
            piece = engine.decompress(rest, CHUNK)
            rest = engine.unconsumed_tail
            if piece:
                yield piece
            if engine.eof or (not piece and not rest):
                return
    elif isinstance(engine, lzma.LZMADecompressor | bz2.BZ2Decompressor):
        piece = engine.decompress(data, CHUNK)
        while True:
            if piece:
                yield piece
            if engine.eof or engine.needs_input:
                return
            piece = engine.decompress(b"", CHUNK)
    else:  # zstd: no output bound of its own
        produced = 0
        at = 0
        while at < len(data) and not engine.eof:
            feed = max(64, min(CHUNK, (limit - produced) // ZSTD_RATIO))
            piece = engine.decompress(data[at : at + feed])
            at += feed
            produced += len(piece)
            if piece:
                yield piece


def chunks(data: bytes, name: str, where: str, limit: int = FLOOR) -> Iterator[bytes]:
    """The decompressed content of `data` (named `name`, fetched from `where`), in pieces.

    ArchiveError once more than `limit` bytes come out: the stream stops
    there, so a bomb never reaches memory.
    """
    engine = _decompressor(name)
    if engine is None:
        if len(data) > limit:
            raise ArchiveError(f"{where}: {len(data)} bytes, more than the {limit} allowed")
        yield data
        return
    produced = 0
    try:
        for piece in _pieces(engine, data, limit):
            produced += len(piece)
            if produced > limit:
                raise ArchiveError(
                    f"{where}: decompresses to more than {limit} bytes "
                    f"({len(data)} compressed): not an index",
                    hint="the mirror serves something else under this name",
                )
            yield piece
        done = bool(getattr(engine, "eof", False))
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise ArchiveError(f"{where}: the compressed index is corrupt ({exc})") from None
    if not done:
        raise ArchiveError(
            f"{where}: the compressed index is truncated (it ends before its end marker)",
            hint="the download was cut short or the mirror is mid-sync; run again later",
        )


def decompress(data: bytes, name: str, where: str, limit: int = FLOOR) -> bytes:
    """All of `data` decompressed, at most `limit` bytes (see :func:`chunks`)."""
    return b"".join(chunks(data, name, where, limit))
