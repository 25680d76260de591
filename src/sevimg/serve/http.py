"""The HTTP server of `sevimg serve`: dispatch's API on one path, for a local folder.

| method     | effect                                              | answer                        |
|------------|-----------------------------------------------------|-------------------------------|
| HEAD, GET  | assign a job to the client's IP (GET: Downloading)   | the image; none left: the     |
|            |                                                     | --poweroff-efi program or 404 |
| POST       | Downloading → Booting                               | 200; 417 without such a job   |
| PUT        | Booting → Reported; report saved (and filed)        | 200; 400 bad JSON; 417; 500   |
| other      |                                                     | 405, `Allow: GET, POST, HEAD, PUT` |

Only the path is matched (`/dispatch?x.efi` is `/dispatch`); any other
path is 404. Images go out as `application/efi` with a Content-Length, read
in 1 MiB chunks so memory stays flat whatever their size. A single byte
range (`Range: bytes=a-b`, `a-`, `-n`) gets 206 and Content-Range; a range
past the end gets 416 with `Content-Range: bytes */size`; several ranges or
a malformed header are ignored and the whole file is sent (RFC 9110 allows
it). :func:`sevimg.serve.server.serve` starts the server in a thread.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sevimg.problems import SevimgError
from sevimg.redact import redact_text
from sevimg.serve import jobs as jobsm
from sevimg.serve.files import Identity, unchanged
from sevimg.serve.jobs import Board, Job, Report, parse_report
from sevimg.serve.results import Results

if TYPE_CHECKING:  # httpx is loaded only with --github-issues
    from sevimg.serve.issues import Issues
    from sevimg.serve.status import StatusSite

ALLOW = "GET, POST, HEAD, PUT"
EFI = "application/efi"
CHUNK = 1024 * 1024
MAX_REPORT = 16 * 1024 * 1024  # a report's body is a Markdown result and a log, far below this
IDLE_TIMEOUT = 60.0  # a silent keep-alive connection is closed after this long

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
        """As printed: `10.0.2.15 GET 200 host-debian-13.efi Downloading`."""
        return f"{self.client} {self.method} {self.status} {self.job or '-'} {self.state or '-'}"


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
    status: StatusSite | None = None  # the status page (GET / and below), when served
    events: list[Event] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0


class Server(ThreadingHTTPServer):
    """The listening socket; its handler threads die with the process."""

    daemon_threads = True
    config: Config


class Server6(Server):
    """The same, on an IPv6 address."""

    address_family = socket.AF_INET6


class Handler(BaseHTTPRequestHandler):
    """dispatch's API; one instance per connection."""

    protocol_version = "HTTP/1.1"
    server_version = "sevimg-serve"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    server: Server

    def version_string(self) -> str:
        """The Server header: our name, without Python's version."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's own log lines are replaced by :class:`Event` lines."""

    def handle_one_request(self) -> None:
        """One request; counted from its request line to its answer, so the server knows when it is quiet."""
        self._counted = False
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client went away; nothing to answer
        finally:
            if self._counted:
                with self.server.config.lock:
                    self.server.config.in_flight -= 1

    def parse_request(self) -> bool:
        """http.server's parsing; from here on a request is in flight (an idle keep-alive is not)."""
        with self.server.config.lock:
            self.server.config.in_flight += 1
        self._counted = True
        return super().parse_request()

    def __getattr__(self, name: str) -> Callable[[], None]:
        # Every other method (DELETE, OPTIONS, BREW…) gets dispatch's 405, not http.server's 501.
        if name.startswith("do_"):
            return self._other
        raise AttributeError(name)

    # --- the API -----------------------------------------------------------------------

    @property
    def client(self) -> str:
        """The client's IP address (an IPv4-mapped IPv6 address as plain IPv4)."""
        host = str(self.client_address[0])
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(host)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                return str(address.ipv4_mapped)
        return host

    def _on_path(self) -> bool:
        if urlsplit(self.path).path == self.server.config.path:
            return True
        self._drain()
        self._empty(404)
        return False

    def do_HEAD(self) -> None:
        """Assign, and describe the image without sending it."""
        if self._status_page(send=False):
            return
        if self._on_path():
            self._image(jobsm.assign, send=False)

    def do_GET(self) -> None:
        """Assign, Downloading, and send the image."""
        if self._status_page(send=True):
            return
        if self._on_path():
            self._image(jobsm.download, send=True)

    def _status_page(self, *, send: bool) -> bool:
        """A status page answered (True); False for the dispatch path and everything else."""
        config = self.server.config
        path = urlsplit(self.path).path
        if config.status is None or path == config.path:
            return False
        answer = config.status.answer(path)
        if answer is None:
            return False
        from sevimg.serve.status import HEADERS  # noqa: PLC0415

        self._drain()
        self.send_response(answer.status)
        for key, value in (*HEADERS.items(), ("Content-Type", answer.content_type)):
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        # Not an Event: a browser polls every two seconds, and the log is the hosts'.
        if send:
            self.wfile.write(answer.body)
        return True

    def do_POST(self) -> None:
        """The host booted: Downloading → Booting."""
        if not self._on_path():
            return
        self._drain()
        job = self.server.config.board.apply(jobsm.boot, self.client)
        self._answer(200 if job else 417, job)

    def do_PUT(self) -> None:
        """The host's report: Booting → Reported, saved, and filed when asked to."""
        if not self._on_path():
            return
        config = self.server.config
        raw = self._body()
        if raw is None:
            return
        try:
            report = parse_report(raw)
        except ValueError as exc:
            config.log(f"{self.client}: bad report ({exc}); answered 400")
            self._answer(400, None)
            return
        job = config.board.apply(jobsm.report, self.client)
        if job is None:
            self._answer(417, None)
            return
        status = self._deliver(job, report)
        self._answer(status, job)

    def _other(self) -> None:
        if not self._on_path():
            return
        self._drain()
        self._empty(405, {"Allow": ALLOW})
        self._event(405, None)

    # --- images ------------------------------------------------------------------------

    def _image(
        self,
        step: Callable[[tuple[Job, ...], str, float], tuple[tuple[Job, ...], int | None]],
        *,
        send: bool,
    ) -> None:
        config = self.server.config
        self._drain()
        job = config.board.apply(step, self.client)
        if job is None:
            if config.poweroff is None:
                self._empty(404)
                self._event(404, None)
                return
            self._stream(config.poweroff, send=send, job=None)
            return
        if not unchanged(job.path, config.identities[job.name]):
            config.log(
                f"{job.name} changed on disk after it was verified; not served (restart sevimg serve)"
            )
            self._answer(500, job)
            return
        self._stream(job.path, send=send, job=job)

    def _stream(self, path: Path, *, send: bool, job: Job | None) -> None:
        config = self.server.config
        try:
            handle = path.open("rb")
        except OSError as exc:
            config.log(f"cannot read {path}: {exc.strerror or exc}")
            self._answer(500, job)
            return
        with handle:
            size = handle.seek(0, 2)
            span = _range(self.headers.get("Range"), size)
            if isinstance(span, str):  # "unsatisfiable"
                self._empty(416, {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
                self._event(416, job)
                return
            start, end = span if span is not None else (0, size - 1)
            length = max(end - start + 1, 0)
            status = 206 if span is not None else 200
            self.send_response(status)
            self.send_header("Content-Type", EFI)
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            if job is not None:
                self.send_header("ETag", f'"{job.sha256}"')
            if span is not None:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            self._event(status, job)
            if not send:
                return
            handle.seek(start)
            left = length
            buffer = bytearray(CHUNK)
            view = memoryview(buffer)
            while left > 0:
                n = handle.readinto(view[: min(CHUNK, left)])
                if not n:
                    # The file shrank under us: the client cannot get what was promised.
                    self.close_connection = True
                    return
                self.wfile.write(view[:n])
                left -= n
                if job is not None:
                    config.board.touch(self.client, n)

    # --- reports -----------------------------------------------------------------------

    def _deliver(self, job: Job, report: Report) -> int:
        """Save the report, file it if asked; the status to answer."""
        config = self.server.config
        when = job.reported_at or 0.0
        if config.results is not None:
            try:
                saved = config.results.save_report(job, report, self.client, when)
                config.log(f"{job.name}: report saved as {saved.markdown}")
            except OSError as exc:
                config.log(f"{job.name}: cannot save the report: {exc.strerror or exc}")
                config.board.settle(job.name, ok=False, note="the report could not be saved")
                return 500
        if config.filer is None:
            return 200
        try:
            filed = config.filer.file(report)
        except SevimgError as exc:
            message = redact_text(exc.message)
            config.log(f"{job.name}: the GitHub issue was not filed: {message}")
            config.board.settle(job.name, ok=False, note=message)
            return 500
        if config.results is not None:
            config.results.note_issue(job, filed.as_json())
        dropped = filed.dropped_milestone
        if dropped is not None:
            config.log(f"{job.name}: milestone {dropped!r} does not exist on GitHub; dropped")
        config.log(f"{job.name}: filed {filed.url or f'issue #{filed.number}'}")
        config.board.settle(job.name, ok=True, note=filed.url or f"#{filed.number}")
        return 200

    # --- plumbing ----------------------------------------------------------------------

    def _body(self) -> bytes | None:
        """The request body; None after answering 411/413 for one that cannot be read."""
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._empty(411)
            return None
        try:
            length = int(length_text or "0")
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._empty(400)
            return None
        if length > MAX_REPORT:
            self.close_connection = True
            self._empty(413)
            return None
        return self.rfile.read(length) if length else b""

    def _drain(self) -> None:
        """Read and drop a request body we do not need, so the connection stays in step."""
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if length < 0 or length > MAX_REPORT or self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return
        while length > 0:
            got = self.rfile.read(min(length, CHUNK))
            if not got:
                break
            length -= len(got)

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _answer(self, status: int, job: Job | None) -> None:
        self._empty(status)
        self._event(status, job)

    def _event(self, status: int, job: Job | None) -> None:
        config = self.server.config
        if job is not None:
            config.board.record(job.name, self.client, self.command, status)
            job = next((j for j in config.board.snapshot() if j.name == job.name), job)
        event = Event(
            self.client,
            self.command,
            urlsplit(self.path).path,
            status,
            job.name if job else None,
            job.state.value if job else None,
        )
        with config.lock:
            config.events.append(event)
        config.log(event.line())


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(first, last) byte of a single range; "unsatisfiable"; None to send everything."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match[1] and not match[2]):
        return None  # several ranges, another unit, or nonsense: ignored
    if not match[1]:  # the last n bytes
        n = int(match[2])
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(size - n, 0), size - 1
    first = int(match[1])
    last = int(match[2]) if match[2] else size - 1
    if match[2] and last < first:
        return None  # invalid: ignored
    if first >= size:
        return "unsatisfiable"
    return first, min(last, size - 1)
