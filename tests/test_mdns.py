"""sevimg_cert.mdns: the one-shot `_dispatch._tcp` browse, against a real UDP responder.

The responder listens on 127.0.0.1 (the query goes there instead of the
multicast group) and answers by unicast to the query's source port, as an
mDNS responder answers a legacy unicast query. Its messages are encoded
here by hand, with name compression, independently of the module.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sevimg_cert import dispatch, mdns
from tests.dispatchkit import FakeRoot, http_option

INSTANCE = "dispatch on lab-1._dispatch._tcp.local"


def name(text: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in text.split(".")) + b"\0"


def record(owner: bytes, kind: int, data: bytes) -> bytes:
    return owner + struct.pack("!HHIH", kind, 0x8001, 120, len(data)) + data


def answer(ident: int, answers: list[bytes], additional: list[bytes]) -> bytes:
    header = struct.pack("!HHHHHH", ident, 0x8400, 0, len(answers), 0, len(additional))
    return header + b"".join(answers) + b"".join(additional)


def full_answer(ident: int, address: str = "192.0.2.10", path: str = "/dispatch") -> bytes:
    """PTR in the answers, SRV/TXT/A as additional records, names compressed."""
    service = name("_dispatch._tcp.local")  # at offset 12
    ptr = record(service, mdns.PTR, b"\x11dispatch on lab-1\xc0\x0c")
    instance_at = 12 + len(service) + 10
    pointer = struct.pack("!H", 0xC000 | instance_at)
    srv = record(pointer, mdns.SRV, struct.pack("!HHH", 0, 0, 8080) + name("lab-1.local"))
    txt_items = [b"version=1.1.0", f"path={path}".encode(), b"description=x"]
    txt = record(pointer, mdns.TXT, b"".join(bytes([len(t)]) + t for t in txt_items))
    a = record(name("lab-1.local"), mdns.A, socket.inet_aton(address))
    return answer(ident, [ptr], [srv, txt, a])


@dataclass
class Responder:
    mode: str
    address: tuple[str, int] = ("", 0)
    questions: list[list[tuple[str, int]]] = field(default_factory=list)


def _questions(message: bytes) -> tuple[int, list[tuple[str, int]]]:
    ident, _, count = struct.unpack_from("!HHH", message)
    offset, found = 12, []
    for _ in range(count):
        labels = []
        while message[offset]:
            labels.append(message[offset + 1 : offset + 1 + message[offset]].decode())
            offset += 1 + message[offset]
        kind = struct.unpack_from("!H", message, offset + 1)[0]
        offset += 5
        found.append((".".join(labels), kind))
    return ident, found


@contextmanager
def responder(mode: str) -> Iterator[Responder]:
    state = Responder(mode)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    state.address = sock.getsockname()
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                message, peer = sock.recvfrom(9000)
            except TimeoutError:
                continue
            ident, questions = _questions(message)
            state.questions.append(questions)
            sock.sendto(b"\x00\x01garbage", peer)  # someone else's noise: ignored
            if mode == "full":
                sock.sendto(full_answer(ident), peer)
            elif mode == "loopback":
                sock.sendto(full_answer(ident, address="127.0.0.1"), peer)
            elif mode == "nopath":
                sock.sendto(full_answer(ident, path=""), peer)
            elif mode == "split" and len(state.questions) == 1:
                service = name("_dispatch._tcp.local")
                ptr = record(service, mdns.PTR, name(INSTANCE))
                sock.sendto(answer(ident, [ptr], []), peer)
            elif mode == "split":
                whole = full_answer(ident)  # the follow-up: SRV, TXT and A
                header = struct.pack("!HHHHHH", ident, 0x8400, 0, 1, 0, 3)
                sock.sendto(header + whole[12:], peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join()
        sock.close()


def test_one_answer_with_additional_records() -> None:
    with responder("full") as server:
        found = mdns.browse(timeout=3, group=server.address)
    assert found == [(INSTANCE, "http://192.0.2.10:8080/dispatch")]
    assert server.questions == [[("_dispatch._tcp.local", mdns.PTR)]]


def test_missing_records_are_asked_for_once_more() -> None:
    with responder("split") as server:
        found = mdns.browse(timeout=2, group=server.address)
    assert found == [(INSTANCE, "http://192.0.2.10:8080/dispatch")]
    assert server.questions[1] == [(INSTANCE, mdns.SRV), (INSTANCE, mdns.TXT)]


@pytest.mark.parametrize("mode", ["loopback", "nopath", "silent"])
def test_unusable_or_no_answers_give_no_url(mode: str) -> None:
    with responder(mode) as server:
        assert mdns.browse(timeout=0.5, group=server.address) == []


def test_a_pointer_loop_is_a_dns_error() -> None:
    message = struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0) + b"\xc0\x0c"
    with pytest.raises(mdns.DnsError, match="too many name pointers"):
        mdns.parse(message)


def test_truncated_answers_are_dns_errors() -> None:
    whole = full_answer(7)
    for cut in range(len(whole)):
        try:
            mdns.parse(whole[:cut])
        except mdns.DnsError:
            continue
    assert len(mdns.parse(whole)) == 4


def test_find_servers_tries_mdns_after_the_efi_variables(tmp_path: Path) -> None:
    FakeRoot(tmp_path).boot(0x1, http_option("http://boot1/dispatch"))
    lines: list[str] = []
    with responder("full") as server:
        servers = dispatch.find_servers(
            tmp_path, mdns_timeout=2, mdns_group=server.address, say=lines.append
        )
    assert [s.url for s in servers] == ["http://boot1/dispatch", "http://192.0.2.10:8080/dispatch"]
    assert servers[1].source == f"mDNS query _dispatch._tcp {INSTANCE!r}"


def test_avahi_browse_parsable_output() -> None:
    output = "\n".join(
        [
            "+;eth0;IPv4;dispatch\\032on\\032lab;_dispatch._tcp;local",
            '=;eth0;IPv4;lab;_dispatch._tcp;local;lab.local;192.0.2.5;8080;"version=1.1.0" "path=/dispatch"',
            '=;eth0;IPv6;lab;_dispatch._tcp;local;lab.local;2001:db8::5;8080;"path=/dispatch"',
            '=;eth0;IPv6;lab;_dispatch._tcp;local;lab.local;fe80::1%eth0;8080;"path=/dispatch"',
            '=;lo;IPv4;lab;_dispatch._tcp;local;lab.local;127.0.0.1;8080;"path=/dispatch"',
            '=;eth0;IPv4;lab;_dispatch._tcp;local;lab.local;192.0.2.6;8080;"version=1.1.0"',
            "=;eth0;IPv4;short",
        ]
    )
    assert dispatch.parse_avahi(output) == [
        ("lab", "http://192.0.2.5:8080/dispatch"),
        ("lab", "http://[2001:db8::5]:8080/dispatch"),
    ]


def test_random_bytes_and_flipped_answers_are_only_ever_dns_errors() -> None:
    import random

    rng = random.Random(5)
    whole = full_answer(7)
    samples = [bytes(rng.randrange(256) for _ in range(rng.randrange(60))) for _ in range(2000)]
    for _ in range(3000):
        broken = bytearray(whole)
        for _ in range(rng.randrange(1, 4)):
            broken[rng.randrange(len(broken))] = rng.randrange(256)
        samples.append(bytes(broken))
    parsed = 0
    for sample in samples:
        try:
            mdns.parse(sample)
            parsed += 1
        except mdns.DnsError:
            continue
    assert 0 < parsed < len(samples)
