"""The listening side of `sevimg serve`: the shared configuration, the bounded server, the log line.

:class:`Server` hands each connection the :class:`sevimg.serve.gate.Gate`
admits to a thread of its own (daemon threads: they die with the process);
one the gate refuses is answered 503 and closed without a thread.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sevimg.display import printable
from sevimg.serve.files import Identity
from sevimg.serve.gate import REQUEST_DEADLINE, Deadlines, Gate, refuse
from sevimg.serve.jobs import Board
from sevimg.serve.results import Results

if TYPE_CHECKING:  # httpx is loaded only with --github-issues
    from sevimg.serve.issues import Issues
    from sevimg.serve.kds import KdsCache
    from sevimg.serve.status import StatusSite

Log = Callable[[str], None]


@dataclass(frozen=True)
class Event:
    """One answered request."""

    client: str
    method: str
    path: str
    status: int
    job: str | None
    state: str | None

    def line(self) -> str:
        """As printed: `10.0.2.15 GET 200 host-debian-13.efi Downloading` (the method escaped)."""
        method = one_line(self.method)
        return f"{self.client} {method} {self.status} {self.job or '-'} {self.state or '-'}"


def one_line(text: str) -> str:
    """A peer's text as one printable line: controls, bidi marks and line breaks escaped."""
    return printable(text).replace("\n", "\\n").replace("\t", "\\t")


@dataclass
class Config:
    """What the handler needs, shared by every request."""

    path: str
    board: Board
    identities: dict[str, Identity]
    poweroff: Path | None
    results: Results | None
    filer: Issues | None
    log: Log
    kds: KdsCache | None = None
    status: StatusSite | None = None  # the status page (GET / and below), when served
    events: list[Event] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    gate: Gate = field(default_factory=Gate)
    deadlines: Deadlines | None = None  # started with the server
    deadline: float = REQUEST_DEADLINE
    # Check, save and mark Reported as one step: two PUTs of one host cannot both save.
    report_lock: threading.Lock = field(default_factory=threading.Lock)
    max_events: int = 1000  # the last answered requests, for tests and the display


class Server(ThreadingHTTPServer):
    """The listening socket; a bounded number of handler threads, which die with the process."""

    daemon_threads = True
    request_queue_size = 128
    config: Config

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection, if the gate admits it; else 503 and closed, no thread."""
        if not self.config.gate.enter(client_ip(client_address)):
            refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.config.gate.leave(client_ip(client_address))
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """The connection's thread; its place at the gate is given back when it ends."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.config.gate.leave(client_ip(client_address))


def client_ip(client_address: Any) -> str:
    """The client's IP address (an IPv4-mapped IPv6 address as plain IPv4)."""
    host = str(client_address[0])
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(host)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            return str(address.ipv4_mapped)
    return host


class Server6(Server):
    """The same, on an IPv6 address."""

    address_family = socket.AF_INET6
