"""`nox -s bench`, the parsers of peer data: each at its size cap, with the worst input we know.

Each line gives the seconds (best of 3) at the cap and at half of it; a
linear parser takes about twice as long for twice the input, so the ratio
printed next to it is near 2 (a quadratic one would be near 4). Where the
cap is too large to hold here (Packages unpacked: 2 GiB) the size is said.
`python -m tests.bench_parsers` runs this alone.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sevimg.archive import compress, deb, rpmmd
from sevimg.archive.compress import ArchiveError
from sevimg.machine.evidence import MAX_RESULT_FILE
from sevimg_cert import efi, framing, kds, markdown, peerhttp
from sevimg_cert.dispatch import MAX_ANSWER

Build = Callable[[int], object]
Run = Callable[[object], object]


def best(run: Run, data: object, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        # Hostile input: an error is the expected answer.
        with contextlib.suppress(ValueError, ArchiveError, efi.EfiError, peerhttp.PeerError):
            run(data)
        times.append(time.perf_counter() - start)
    return min(times)


def measure(
    name: str, cap: int, build: Build, run: Run, *, size: int | None = None, runs: int = 3
) -> dict[str, str]:
    """Seconds at `cap` (or `size`, with the time projected to the cap) and at half, their ratio."""
    at = size or cap
    full = best(run, build(at), runs)
    half = best(run, build(at // 2), runs)
    ratio = full / half if half > 0 else float("inf")
    text = f"{full:.3f} s at {at / (1 << 20):g} MiB (x{ratio:.1f} for twice the input)"
    if at != cap:
        text += f"; {full * cap / at:.0f} s projected at its {cap / (1 << 20):g} MiB cap"
    return {name: text}


def _evidence_fences(size: int) -> object:
    return ("```sevimg-evidence\n" * (size // 19 + 1))[:size]


def _deep_json(size: int) -> object:
    return "```sevimg-evidence\n" + "[" * size + "\n```\n"


def _console(size: int) -> object:
    line = "SEVIMG-CERT-RESULT-DATA 0000 00000000 AAAA\n"
    return (line * (size // len(line) + 1))[:size]


def _efi_option(size: int) -> object:
    description = "x".encode("utf-16-le") * ((size - 16) // 2) + b"\0\0"
    return b"\1\0\0\0" + b"\4\0" + description + b"\x7f\xff\4\0"


def _release(size: int) -> object:
    line = " 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef 12 main/x\n"
    return "Suite: x\nSHA256:\n" + line * (size // len(line))


def _packages(size: int) -> object:
    stanza = b"Package: p\nVersion: 1.0-1\nProvides: a, b | c\n\n"
    return stanza * (size // len(stanza))


def _primary(size: int) -> object:
    head = b"<metadata xmlns='http://linux.duke.edu/metadata/common'>"
    item = (
        b"<package><name>a</name><arch>x86_64</arch><version epoch='0' ver='1' rel='1'/></package>"
    )
    return head + item * (size // len(item)) + b"</metadata>"


def _zstd_bomb(size: int) -> object:
    import zstandard

    return zstandard.ZstdCompressor(level=3).compress(bytes(size))


@contextmanager
def _server(body: bytes, head: bytes) -> Iterator[str]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(head + body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()


def _http(cap: int, chunked: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for size in (cap, cap // 2):
        if chunked:
            body = b"1\r\nx\r\n" * size + b"0\r\n\r\n"
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        else:
            body = b"x" * size
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % size + b"X-A: b\r\n" * 90 + b"\r\n"
            )
        with _server(body, head) as url:
            seconds = best(
                lambda u: peerhttp.exchange(str(u), deadline=peerhttp.Deadline(60), max_body=cap),
                url,
                runs=1,
            )
        out[str(size)] = f"{seconds:.3f}"
    return out


def parser_numbers() -> dict[str, str]:
    """The parsers of peer data at their caps."""
    results: dict[str, str] = {}
    results |= measure(
        "evidence_block_unclosed_fences",
        MAX_RESULT_FILE,
        _evidence_fences,
        lambda d: markdown.evidence_from_text(str(d)),
    )
    results |= measure(
        "evidence_block_deep_json",
        MAX_RESULT_FILE,
        _deep_json,
        lambda d: markdown.evidence_from_text(str(d)),
    )
    results |= measure(
        "console_frame_garbage", framing.MAX_RESULT, _console, lambda d: framing.unframe(str(d))
    )
    results |= measure(
        "efi_load_option",
        efi.MAX_VARIABLE,
        _efi_option,
        lambda d: efi.parse_load_option(efi.variable_data(bytes(d))),  # type: ignore[call-overload]
    )
    results |= measure(
        "release_sha256_lines",
        compress.CAPS["release"].download,
        _release,
        lambda d: deb.parse_release(str(d), "bench"),
        runs=1,
    )
    # Packages and primary: the cap is the 64 MiB floor every compressed index is
    # allowed (2 GiB only for one of 20 MiB and more); python-debian's deb822 reads
    # some 200 KB/s, so Packages is measured smaller and projected.
    results |= measure(
        "packages_stanzas",
        compress.FLOOR,
        _packages,
        lambda d: deb.parse_packages(d, "bench"),  # type: ignore[arg-type]
        size=4 << 20,
        runs=1,
    )
    results |= measure(
        "primary_xml",
        compress.FLOOR,
        _primary,
        lambda d: rpmmd.parse_primary(d, "bench"),  # type: ignore[arg-type]
        size=16 << 20,
        runs=1,
    )
    results |= measure(
        "zstd_bomb_to_the_floor",
        compress.FLOOR * 2,
        _zstd_bomb,
        lambda d: compress.decompress(d, "x.zst", "bench", compress.FLOOR),  # type: ignore[arg-type]
    )
    for name, cap in (("kds_answer", kds.MAX_RESPONSE), ("dispatch_answer", MAX_ANSWER)):
        for chunked in (False, True):
            times = _http(cap, chunked)
            kind = "chunked_1_byte" if chunked else "plain"
            results[f"{name}_{kind}"] = (
                f"{times[str(cap)]} s at {cap} bytes, {times[str(cap // 2)]} s at half"
            )
    return results


def main() -> None:
    """Print the numbers."""
    print("bench: parsers of peer data at their caps (best of 3)", flush=True)
    results = parser_numbers()
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value}", flush=True)


if __name__ == "__main__":
    main()
