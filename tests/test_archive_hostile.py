"""`sevimg archive` against hostile mirrors on 127.0.0.1 and hostile index files:
a deadline per fetch, caps while streaming, a cache that cannot be poisoned, located errors."""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from sevimg.archive import compress, deb, rpmmd
from sevimg.archive.compress import ArchiveError
from sevimg.archive.fetch import Fetcher, Network, validator
from tests.hostilekit import Peer, TickingClock, answer, hang, hostile, stream


def fetcher(tmp_path: Path, **network: object) -> Fetcher:
    return Fetcher(tmp_path / "cache", Network(**network))  # type: ignore[arg-type]


def test_a_mirror_that_hangs_ends_at_the_fetch_deadline(tmp_path: Path) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc"
    with hostile(hang(head)) as peer, pytest.raises(ArchiveError, match="within 0.2 s"):
        fetcher(tmp_path, deadline=0.2, timeout=30).get(peer.url + "InRelease")


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
    ids=["length", "chunked"],
)
def test_a_dripping_mirror_cannot_hold_a_fetch_past_its_deadline(
    tmp_path: Path, head: bytes
) -> None:
    unit = b"1000\r\n" + b"x" * 4096 + b"\r\n" if b"chunked" in head else b"x"
    fetch = Fetcher(tmp_path / "cache", Network(deadline=50, timeout=30), clock=TickingClock())
    with hostile(stream(head, unit)) as peer, pytest.raises(ArchiveError, match="within 50 s"):
        fetch.get(peer.url + "InRelease")


def test_an_index_over_its_cap_is_refused_while_it_streams(tmp_path: Path) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n"
    cap = compress.CAPS["release"].download
    with hostile(stream(head, b"x" * 65536)) as peer, pytest.raises(ArchiveError, match=f"{cap}"):
        fetcher(tmp_path).get(peer.url + "InRelease")


def test_a_content_encoding_nobody_asked_for_is_refused(tmp_path: Path) -> None:
    bomb = gzip.compress(bytes(50 * 1024 * 1024))
    served = answer("200 OK", bomb, ("Content-Encoding: gzip",))
    with hostile(served) as peer, pytest.raises(ArchiveError, match="Content-Encoding 'gzip'"):
        fetcher(tmp_path).get(peer.url + "InRelease")
    assert b"accept-encoding: identity" in peer.requests[0].lower()


def test_escapes_in_a_mirrors_status_line_are_shown_escaped(tmp_path: Path) -> None:
    with hostile(answer("503 \x1b[31mred\x1b[0m")) as peer, pytest.raises(ArchiveError) as info:
        fetcher(tmp_path).get(peer.url + "InRelease")
    assert "HTTP 503" in info.value.message and "\x1b" not in info.value.message


def etag_server(etag: bytes) -> object:
    def script(conn: socket.socket, request: bytes, peer: Peer) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nETag: " + etag + b"\r\n\r\nhi")

    return script


def test_a_non_ascii_etag_never_poisons_the_cache(tmp_path: Path) -> None:
    with hostile(etag_server('"caf\u00e9"'.encode("latin-1"))) as peer:  # type: ignore[arg-type]
        assert fetcher(tmp_path).get(peer.url + "InRelease") == b"hi"
        assert fetcher(tmp_path).get(peer.url + "InRelease") == b"hi"
    assert b"if-none-match" not in peer.requests[1].lower()
    [meta] = (tmp_path / "cache/by-url").glob("*.json")
    assert json.loads(meta.read_text())["etag"] is None


@pytest.mark.parametrize(
    "meta",
    [b"{not json", b"[]", b'{"etag": 5}', '{"etag": "caf\u00e9"}'.encode(), b'{"etag": "a\\nb"}'],
    ids=["not-json", "not-an-object", "a-number", "non-ascii", "a-newline"],
)
def test_a_corrupt_cache_entry_is_dropped_and_fetched_again(tmp_path: Path, meta: bytes) -> None:
    with hostile(etag_server(b'"good"')) as peer:  # type: ignore[arg-type]
        first = fetcher(tmp_path)
        first.get(peer.url + "InRelease")
        [path] = (tmp_path / "cache/by-url").glob("*.json")
        path.write_bytes(meta)
        assert fetcher(tmp_path).get(peer.url + "InRelease") == b"hi"
    assert b"if-none-match" not in peer.requests[1].lower()
    assert json.loads(path.read_text())["etag"] == '"good"'


@pytest.mark.parametrize(
    ("value", "ok"),
    [('"abc"', True), ('W/"x"', True), ("", False), ("é", False), ("a\r\nb", False), (5, False)],
)
def test_the_validator_rule(value: object, ok: bool) -> None:
    assert validator(value) is ok


@pytest.mark.parametrize("name", ["primary.xml.zst", "Packages.gz", "Packages.xz", "x.bz2"])
def test_a_small_bomb_never_reaches_memory(name: str) -> None:
    raw = bytes(8 * 1024 * 1024)
    if name.endswith(".zst"):
        data = zstandard.ZstdCompressor(level=19).compress(raw)
    elif name.endswith(".gz"):
        data = gzip.compress(raw, 9)
    elif name.endswith(".xz"):
        import lzma

        data = lzma.compress(raw)
    else:
        import bz2

        data = bz2.compress(raw)
    limit = 1024 * 1024  # the rule's numbers are checked below; the stream stops at any
    produced = 0
    with pytest.raises(ArchiveError, match="decompresses to more than"):
        for piece in compress.chunks(data, name, "mirror/" + name, limit):
            produced += len(piece)
    assert produced <= limit


def test_the_unpacked_limit_rule() -> None:
    # A 32 KB zstd primary may not become more than the floor; a real Packages.xz
    # (10 MB) its 100 times; nothing more than its kind's cap.
    assert compress.unpacked_limit("primary", 32 * 1024) == compress.FLOOR == 64 << 20
    assert compress.unpacked_limit("packages", 10 << 20) == 1000 << 20
    assert compress.unpacked_limit("packages", 100 << 20) == compress.CAPS["packages"].unpacked


def test_an_invalid_version_in_packages_is_a_located_error() -> None:
    text = b"Package: good\nVersion: 1.0\n\nPackage: bad\nVersion: 1:\n\n"
    with pytest.raises(
        ArchiveError,
        match=r"Packages: stanza 2 \(Package bad\): Version '1:' is not a valid package version",
    ):
        deb.parse_packages(text, "Packages")


STANZA_LINES = st.sampled_from(
    [
        "Package: a",
        "Version: 1.0",
        "Version: 1:",
        "Version: ä",
        "Provides: b",
        "",
        " x",
        ":",
        "SHA256:",
        " 0 1 f",
    ]
)


@given(st.lists(STANZA_LINES, max_size=30))
def test_any_packages_text_is_packages_or_a_located_error(lines: list[str]) -> None:
    try:
        deb.parse_packages("\n".join(lines).encode(), "P")
    except ArchiveError as error:
        assert error.message.startswith("P: ")


@given(st.lists(STANZA_LINES, max_size=30))
def test_any_release_text_is_a_release_or_a_located_error(lines: list[str]) -> None:
    try:
        deb.parse_release("\n".join(lines), "R")
    except ArchiveError as error:
        assert error.message.startswith("R: ")


XML = st.sampled_from(
    [
        "<repomd xmlns='http://linux.duke.edu/metadata/repo'>",
        "</repomd>",
        "<data type='primary'>",
        "</data>",
        "<location href='p.zst'/>",
        "<checksum type='sha256'>ab</checksum>",
        "<size>²</size>",
        "<size>12</size>",
        "<metadata xmlns='http://linux.duke.edu/metadata/common'>",
        "<package><name>a</name><version epoch='0' ver='1' rel='1'/></package>",
        "<package/>",
        "</metadata>",
        "&",
    ]
)


@given(st.lists(XML, max_size=12))
def test_any_repomd_or_primary_is_read_or_a_located_error(parts: list[str]) -> None:
    data = "".join(parts).encode()
    for parse in (rpmmd.parse_repomd, rpmmd.parse_primary):
        try:
            parse(data, "M")
        except ArchiveError as error:
            assert error.message.startswith("M: ")


@given(st.binary(max_size=300), st.sampled_from(["a.gz", "a.xz", "a.zst", "a.bz2", "a"]))
def test_any_compressed_bytes_are_content_or_a_located_error(data: bytes, name: str) -> None:
    try:
        out = compress.decompress(data, name, "W", 1 << 20)
    except ArchiveError as error:
        assert error.message.startswith("W: ")
    else:
        assert len(out) <= 1 << 20
