"""The host side of the attestation channel against a real unix-socket peer.

The peer plays QEMU's chardev and the guest's responder: it listens on a
unix socket (QEMU's server=on), reads request lines and writes what the test
tells it to, including garbage, half replies and slow replies.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sevimg_cert import channel
from sevimg_cert.channel import ChannelError, GuestAnswer

Behaviour = Callable[[socket.socket, list[bytes]], None]


def reply(
    nonce: bytes,
    *,
    report: bytes | None = b"R" * 1184,
    overrides: dict[str, str] | None = None,
    **extra: str,
) -> bytes:
    fields = {
        "nonce": nonce.hex(),
        "image": "guest-debian-13",
        "os_id": "debian",
        "os_version": "13",
        "kernel": "6.12.48+deb13-amd64",
        "sev": "snp",
        "sev_guest_device": "yes",
        "configfs": "yes",
        "tsm_provider": "sev_guest",
        "module.sev-guest": "loaded",
        "module.tsm": "loaded",
        "module.configfs": "builtin",
    }
    if report is not None:
        fields["report"] = base64.b64encode(report).decode()
    else:
        fields["error"] = "SNP not active: no configfs-tsm provider (No such device or address)"
    fields.update(extra)
    fields.update(overrides or {})
    body = "".join(f"{k}={v}\n" for k, v in fields.items() if v != "<drop>")
    return f"SEVIMG-ATTEST-REPLY v1\n{body}SEVIMG-ATTEST-END\n".encode()


def read_request(conn: socket.socket, requests: list[bytes]) -> bytes:
    """The next request line from the client (requests are 160 bytes)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            raise ConnectionError("client closed")
        data += chunk
    requests.append(data)
    return data


def until_closed(conn: socket.socket) -> None:
    """Keep the connection open (reading what comes) until the client hangs up."""
    while conn.recv(4096):
        pass


def nonce_of(line: bytes) -> bytes:
    return bytes.fromhex(line.decode().rstrip("\n").split("nonce=")[1])


class Peer:
    """A listening unix socket served by one thread running `behaviour` on the first client."""

    def __init__(self, path: Path, behaviour: Behaviour) -> None:
        self.path = path
        self.requests: list[bytes] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.errors: list[BaseException] = []

        def serve() -> None:
            conn, _ = self.server.accept()
            with conn:
                try:
                    behaviour(conn, self.requests)
                except (ConnectionError, OSError) as exc:  # the client hung up: fine
                    self.errors.append(exc)

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=5)


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Callable[[Behaviour], Peer]]:
    made: list[Peer] = []
    # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path can be longer.
    short = Path(os.environ.get("TMPDIR", "/tmp")) / f"sevimg-ch-{os.getpid()}-{id(tmp_path)}"
    short.mkdir()

    def make(behaviour: Behaviour) -> Peer:
        made.append(Peer(short / f"s{len(made)}", behaviour))
        return made[-1]

    yield make
    for p in made:
        p.close()
        p.path.unlink(missing_ok=True)
    short.rmdir()


NONCE = bytes(range(64))


def test_a_guest_that_answers_the_second_request(peer: Callable[[Behaviour], Peer]) -> None:
    def guest(conn: socket.socket, requests: list[bytes]) -> None:
        read_request(conn, requests)  # the port was not open yet: lost
        line = read_request(conn, requests)
        conn.sendall(reply(nonce_of(line)))
        until_closed(conn)

    p = peer(guest)
    answer = channel.request(p.path, NONCE, timeout=10, resend=0.3)
    assert answer.nonce == NONCE
    assert answer.report == b"R" * 1184 and answer.error is None
    assert answer.sev == "snp" and answer.sev_guest_device and answer.configfs
    assert answer.tsm_provider == "sev_guest"
    assert answer.modules == {"sev-guest": "loaded", "tsm": "loaded", "configfs": "builtin"}
    assert (answer.image, answer.os_id, answer.os_version) == ("guest-debian-13", "debian", "13")
    assert answer.text.startswith("SEVIMG-ATTEST-REPLY v1\nnonce=" + NONCE.hex() + "\n")
    assert p.requests[0] == b"SEVIMG-ATTEST-REQUEST v1 nonce=" + NONCE.hex().encode() + b"\n"
    assert len(p.requests) == 2  # it sent again when the first went unanswered


def test_no_snp_answer(peer: Callable[[Behaviour], Peer]) -> None:
    def guest(conn: socket.socket, requests: list[bytes]) -> None:
        line = read_request(conn, requests)
        conn.sendall(reply(nonce_of(line), report=None, sev="none", tsm_provider="none"))
        until_closed(conn)

    answer = channel.request(peer(guest).path, NONCE, timeout=10)
    assert answer.report is None and answer.tsm_provider is None and answer.sev == "none"
    assert answer.error is not None and answer.error.startswith("SNP not active")


def test_stale_tail_and_reply_to_another_nonce_are_skipped(
    peer: Callable[[Behaviour], Peer],
) -> None:
    other = bytes(64)

    def guest(conn: socket.socket, requests: list[bytes]) -> None:
        line = read_request(conn, requests)
        # The end of a reply an earlier client hung up on, then a whole one for it.
        conn.sendall(b"module.msr=loaded\nreport=QUJD\nSEVIMG-ATTEST-END\n" + reply(other))
        conn.sendall(reply(nonce_of(line), image="ours"))
        until_closed(conn)

    answer = channel.request(peer(guest).path, NONCE, timeout=10)
    assert answer.nonce == NONCE and answer.image == "ours"


def test_a_mismatched_nonce_is_returned_for_the_verifier_to_judge(
    peer: Callable[[Behaviour], Peer],
) -> None:
    other = b"\xff" * 64

    def guest(conn: socket.socket, requests: list[bytes]) -> None:
        read_request(conn, requests)
        conn.sendall(reply(other))
        read_request(conn, requests)  # the client kept asking: it waits for its own nonce
        until_closed(conn)

    p = peer(guest)
    answer = channel.request(p.path, NONCE, timeout=1, resend=0.1)
    assert answer.nonce == other  # kept as echoed, not an error here
    p.thread.join(timeout=10)
    assert len(p.requests) == 2 and not p.thread.is_alive()


def test_a_slow_guest_writing_a_byte_at_a_time(peer: Callable[[Behaviour], Peer]) -> None:
    def guest(conn: socket.socket, requests: list[bytes]) -> None:
        line = read_request(conn, requests)
        for i, byte in enumerate(reply(nonce_of(line), report=b"\x00\x01" * 600)):
            conn.sendall(bytes([byte]))
            if i % 200 == 0:
                time.sleep(0.05)  # the peer is slow on purpose
        until_closed(conn)

    answer = channel.request(peer(guest).path, NONCE, timeout=20, resend=0.2)
    assert answer.report == b"\x00\x01" * 600


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"nonce: oops\n", "reply line 2 is not key=value: 'nonce: oops'"),
        (b"colour=blue\n", "reply line 2: unknown field 'colour'"),
        (b"sev=snp\nsev=snp\n", "reply line 3: sev is given twice"),
        (
            b"module.tsm=maybe\n",
            "reply line 2: module tsm is 'maybe', not one of builtin, loaded, missing",
        ),
        (b"image=caf\xc3\xa9\n", "reply line 2 is not printable ASCII"),
        (b"SEVIMG-ATTEST-REPLY v1\n", "a reply began inside another"),
    ],
)
def test_garbage_inside_a_reply_is_named(
    peer: Callable[[Behaviour], Peer], body: bytes, message: str
) -> None:
    def guest(conn: socket.socket, requests: list[bytes]) -> None:
        read_request(conn, requests)
        conn.sendall(b"SEVIMG-ATTEST-REPLY v1\n" + body + b"SEVIMG-ATTEST-END\n")
        until_closed(conn)

    with pytest.raises(ChannelError, match="^" + re.escape(message)):
        channel.request(peer(guest).path, NONCE, timeout=5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"kernel": "<drop>"}, "the reply has no kernel"),
        ({"error": "also"}, "either report= or error=, and not both"),
        ({"report": "not base64!"}, "the reply's report is not base64"),
        ({"report": ""}, "the reply's report is empty"),
        ({"nonce": "ABCD"}, "the reply's nonce is not 128 lower-case hex digits: 'ABCD'"),
        ({"sev": "tdx"}, "the reply's sev is 'tdx'"),
        ({"configfs": "true"}, "the reply's configfs is 'true', not yes or no"),
    ],
)
def test_malformed_fields_are_named(extra: dict[str, str], message: str) -> None:
    lines = reply(NONCE, overrides=extra).decode().splitlines()[1:-1]
    with pytest.raises(ChannelError, match=re.escape(message)):
        channel.parse_reply(lines)


def test_a_refused_request_parses_with_an_empty_nonce() -> None:
    lines = reply(b"", report=None, error="bad request: line longer than 512 characters")
    answer = channel.parse_reply(lines.decode().splitlines()[1:-1])
    assert answer.nonce == b"" and answer.error == "bad request: line longer than 512 characters"


def test_truncated_reply(peer: Callable[[Behaviour], Peer]) -> None:
    def guest(conn: socket.socket, requests: list[bytes]) -> None:
        read_request(conn, requests)
        conn.sendall(reply(NONCE)[:200])  # then QEMU goes away

    with pytest.raises(ChannelError, match="closed in the middle of a reply; received 200 bytes"):
        channel.request(peer(guest).path, NONCE, timeout=5)


def test_timeout_says_what_was_received(peer: Callable[[Behaviour], Peer]) -> None:
    def guest(conn: socket.socket, requests: list[bytes]) -> None:
        read_request(conn, requests)
        conn.sendall(b"[    1.234] Booting the guest\nlogin: ")
        until_closed(conn)

    with pytest.raises(ChannelError) as caught:
        channel.request(peer(guest).path, NONCE, timeout=0.5, resend=0.2)
    text = str(caught.value)
    assert text.startswith("no reply from the guest within 0.5 s on ")
    assert "received 37 bytes, ending '[    1.234] Booting the guest\\nlogin: '" in text


def test_silence_times_out_with_nothing_received(peer: Callable[[Behaviour], Peer]) -> None:
    def guest(conn: socket.socket, requests: list[bytes]) -> None:
        while True:
            read_request(conn, requests)

    p = peer(guest)
    with pytest.raises(ChannelError, match="no reply .* within 1.2 s .*; nothing was received"):
        channel.request(p.path, NONCE, timeout=1.2, resend=0.25)
    p.thread.join(timeout=10)  # the guest reads until the client hangs up
    assert not p.thread.is_alive() and len(p.requests) >= 3  # sent again until the deadline


def test_a_huge_line_is_refused(peer: Callable[[Behaviour], Peer]) -> None:
    def guest(conn: socket.socket, requests: list[bytes]) -> None:
        read_request(conn, requests)
        conn.sendall(b"x" * (channel.MAX_LINE + 10))
        until_closed(conn)

    with pytest.raises(ChannelError, match="a line longer than 65536 bytes"):
        channel.request(peer(guest).path, NONCE, timeout=5)


class CountedWaits:
    """channel's `time`, whose sleep (between connection attempts) is counted and signalled."""

    def __init__(self) -> None:
        self.waits = 0
        self.waited = threading.Event()
        self.monotonic = time.monotonic

    def sleep(self, seconds: float) -> None:
        self.waits += 1
        self.waited.set()
        time.sleep(seconds)


def test_no_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    waits = CountedWaits()
    monkeypatch.setattr(channel, "time", waits)
    with pytest.raises(ChannelError, match="cannot connect to .*missing.sock: No such file"):
        channel.request(tmp_path / "missing.sock", NONCE, timeout=0.5)
    assert waits.waits >= 1  # it tried again, waiting for QEMU to create the socket


def test_a_socket_appearing_late_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path("/tmp") / f"sevimg-late-{os.getpid()}.sock"
    path.unlink(missing_ok=True)
    result: list[GuestAnswer | BaseException] = []
    waits = CountedWaits()
    monkeypatch.setattr(channel, "time", waits)

    def guest(conn: socket.socket, requests: list[bytes]) -> None:
        conn.sendall(reply(nonce_of(read_request(conn, requests))))
        until_closed(conn)

    def client() -> None:
        try:
            result.append(channel.request(path, NONCE, timeout=30))
        except ChannelError as exc:
            result.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    assert waits.waited.wait(timeout=30)  # the client found no socket and waits for it
    late = Peer(path, guest)  # then "QEMU" starts and creates the socket
    thread.join(timeout=15)
    late.close()
    path.unlink()
    assert isinstance(result[0], GuestAnswer) and result[0].nonce == NONCE


def test_the_nonce_must_be_64_bytes() -> None:
    with pytest.raises(ValueError, match="a nonce is 64 bytes, not 32"):
        channel.request_line(bytes(32))
    assert len(channel.request_line(NONCE)) == len("SEVIMG-ATTEST-REQUEST v1 nonce=") + 129
