"""Hostile HTTP peers on 127.0.0.1: raw sockets in threads, scripted byte by byte.

A peer is a function given the accepted connection and the request's bytes;
it may drip, hang (until the test's `release` event), stream for ever or
answer with escapes. Nothing sleeps: a hanging peer waits on an event that
the test sets when it is done, and a streaming one writes until the client
goes away.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

Script = Callable[[socket.socket, bytes, "Peer"], None]


@dataclass
class Peer:
    """A listening hostile server: its URL, the requests it read, the event that ends hangs."""

    url: str
    release: threading.Event = field(default_factory=threading.Event)
    requests: list[bytes] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])


def read_request(conn: socket.socket) -> bytes:
    """The request head (and whatever body came with it), up to the blank line."""
    data = b""
    conn.settimeout(10)
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            want = int(line.split(b":", 1)[1])
            while len(rest) < want:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                rest += chunk
    return head + b"\r\n\r\n" + rest


@contextmanager
def hostile(script: Script, path: str = "/") -> Iterator[Peer]:
    """Serve `script` to every connection until the block ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    peer = Peer(f"http://127.0.0.1:{listener.getsockname()[1]}{path}")
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                request = read_request(conn)
                peer.requests.append(request)
                script(conn, request, peer)
            except OSError:
                pass  # the client went away: that is what a deadline does

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        stop.set()
        peer.release.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        listener.close()
        thread.join(5)


def answer(status: str, body: bytes = b"", headers: tuple[str, ...] = ()) -> Script:
    """A plain answer with `status` ("200 OK") and `body`."""

    def script(conn: socket.socket, request: bytes, peer: Peer) -> None:
        head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    return script


def hang(first: bytes = b"") -> Script:
    """Send `first`, then nothing until the test releases the peer."""

    def script(conn: socket.socket, request: bytes, peer: Peer) -> None:
        conn.sendall(first)
        peer.release.wait(30)

    return script


def stream(head: bytes, unit: bytes) -> Script:
    """Send `head`, then `unit` one at a time for as long as the client reads."""

    def script(conn: socket.socket, request: bytes, peer: Peer) -> None:
        conn.sendall(head)
        while not peer.release.is_set():
            conn.sendall(unit)

    return script


class TickingClock:
    """A clock that moves `step` seconds each time it is read: time passes as the client works."""

    def __init__(self, step: float = 1.0) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now
