"""Decompression of index files by their name (.gz, .xz, .zst, .bz2), streamed.

A truncated or corrupt file is an :class:`ArchiveError` naming it, never a
half-read index: the stream must reach its end marker.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Iterator

import zstandard

from sevimg.problems import SevimgError

CHUNK = 1 << 20
SUFFIXES = (".xz", ".zst", ".gz", ".bz2")


class ArchiveError(SevimgError):
    """An archive's answer cannot be used: unreachable, unsigned, corrupt, missing."""


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


def chunks(data: bytes, name: str, where: str) -> Iterator[bytes]:
    """The decompressed content of `data` (named `name`, fetched from `where`), in pieces."""
    engine = _decompressor(name)
    if engine is None:
        yield data
        return
    try:
        for start in range(0, len(data) or 1, CHUNK):
            piece = engine.decompress(data[start : start + CHUNK])  # type: ignore[attr-defined]
            if piece:
                yield piece
        flush = getattr(engine, "flush", None)  # zlib and zstd may hold the last bytes
        if flush is not None and (rest := flush()):
            yield rest
        done = bool(getattr(engine, "eof", False))
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise ArchiveError(f"{where}: the compressed index is corrupt ({exc})") from None
    if not done:
        raise ArchiveError(
            f"{where}: the compressed index is truncated (it ends before its end marker)",
            hint="the download was cut short or the mirror is mid-sync; run again later",
        )


def decompress(data: bytes, name: str, where: str) -> bytes:
    """All of `data` decompressed (see :func:`chunks`)."""
    return b"".join(chunks(data, name, where))
