"""The HTTP server of `sevimg serve`: dispatch's API on one path, for a local folder.

| method     | effect                                              | answer                        |
|------------|-----------------------------------------------------|-------------------------------|
| HEAD, GET  | assign a job to the client's IP (GET: Downloading)   | the image; none left: the     |
|            |                                                     | --poweroff-efi program or 404 |
| POST       | Downloading → Booting                               | 200; 417 without such a job   |
| PUT        | Booting → Reported; report saved (and filed)        | 200; 400 bad report; 413;     |
|            |                                                     | 417; 503 not saved; 500       |
| GET, HEAD  | /kds/…: AMD KDS's paths, from serve's KDS cache     | see :mod:`sevimg.serve.kds`   |
| other      |                                                     | 405, `Allow: GET, POST, HEAD, PUT` |

A PUT's body is read only from a client whose job is Booting, and only up
to :data:`sevimg.serve.jobs.MAX_REPORT` bytes; it is checked whole (strict
UTF-8, JSON, no lone surrogates) and saved before the job becomes
Reported, so a report that cannot be saved leaves the job Booting for the
host's retry (400 for a report no retry can fix, 503 for a disk that
refused it). Connections are bounded per client and in total, and every
request has an overall deadline (:mod:`sevimg.serve.gate`).

Only the path is matched (`/dispatch?x.efi` is `/dispatch`); any other
path is 404. Images go out as `application/efi` with a Content-Length, read
in 1 MiB chunks so memory stays flat whatever their size. A single byte
range (`Range: bytes=a-b`, `a-`, `-n`) gets 206 and Content-Range; a range
past the end gets 416 with `Content-Range: bytes */size`; several ranges or
a malformed header are ignored and the whole file is sent (RFC 9110 allows
it). :func:`sevimg.serve.server.serve` starts the server in a thread.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sevimg.problems import SevimgError
from sevimg.redact import redact_text
from sevimg.serve import jobs as jobsm
from sevimg.serve.files import unchanged
from sevimg.serve.jobs import MAX_REPORT, Job, Report, parse_report
from sevimg.serve.listener import Event, Server, client_ip
from sevimg.serve.ranges import byte_range

ALLOW = "GET, POST, HEAD, PUT"
EFI = "application/efi"
CHUNK = 1024 * 1024
IDLE_TIMEOUT = 60.0  # one read or write that makes no progress for this long ends the connection
KDS_PREFIX = "/kds/"
SEND_GRACE = 60.0  # seconds any download gets, on top of its size at MIN_RATE
MIN_RATE = 256 * 1024  # bytes a second: far below any HTTP-boot link
DROP_LIMIT = 64 * 1024  # an unwanted body up to this is read and dropped; a larger one closes


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
        """One request; counted from its request line to its answer, so the server knows when it is quiet.

        Its deadline runs from the wait for the request line until the
        answer starts: a client that drips its request (or idles) is cut off.
        """
        config = self.server.config
        self._counted = False
        self._deadline: int | None = None
        if config.deadlines is not None:
            self._deadline = config.deadlines.arm(self.connection, config.deadline)
        try:
            super().handle_one_request()
        except (OSError, ValueError):
            # The client went away, or its deadline shut the socket: nothing to answer.
            self.close_connection = True
        finally:
            if config.deadlines is not None:
                config.deadlines.disarm(self._deadline)
            if self._counted:
                with config.lock:
                    config.in_flight -= 1

    def send_response(self, code: int, message: str | None = None) -> None:
        """The answer starts: the request was read in time, its deadline is off."""
        if self.server.config.deadlines is not None:
            self.server.config.deadlines.disarm(getattr(self, "_deadline", None))
        super().send_response(code, message)

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
        return client_ip(self.client_address)

    def _on_path(self) -> bool:
        if urlsplit(self.path).path == self.server.config.path:
            return True
        self._drain()
        self._empty(404)
        return False

    def do_HEAD(self) -> None:
        """Assign, and describe the image without sending it."""
        if self._kds(send=False) or self._status_page(send=False):
            return
        if self._on_path():
            self._image(jobsm.assign, send=False)

    def do_GET(self) -> None:
        """Assign, Downloading, and send the image."""
        if self._kds(send=True) or self._status_page(send=True):
            return
        if self._on_path():
            self._image(jobsm.download, send=True)

    def _kds(self, *, send: bool) -> bool:
        """A KDS path answered from the cache (True), or not a KDS path (False)."""
        config = self.server.config
        split = urlsplit(self.path)
        if config.kds is None or not split.path.startswith(KDS_PREFIX):
            return False
        self._drain()
        answer = config.kds.answer(split.path[len(KDS_PREFIX) - 1 :], split.query)
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        if answer.retry_after is not None:
            self.send_header("Retry-After", str(answer.retry_after))
        if answer.status != 200:
            config.log(f"{self.client} KDS {split.path}: {answer.status} {answer.why}")
        self._event(answer.status, None)
        self.end_headers()
        if send:
            self.wfile.write(answer.body)
        return True

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
        """The host's report: saved, then Booting → Reported, then filed when asked to."""
        if not self._on_path():
            return
        config = self.server.config
        if jobsm.booting(config.board.snapshot(), self.client) is None:
            # No job to report: the body is not kept. A small one is dropped so the
            # connection stays in step; a larger one is not read at all (closed).
            self._drain()
            self._answer(417, None)
            return
        raw = self._body()
        if raw is None:
            return
        try:
            report = parse_report(raw)
        except ValueError as exc:
            config.log(f"{self.client}: bad report ({exc}); answered 400, the job stays Booting")
            self._answer(400, None)
            return
        status, job = self._accept(report)
        if job is not None and status == 200:
            status = self._file(job, report)
        self._answer(status, job)

    def _accept(self, report: Report) -> tuple[int, Job | None]:
        """Save the report, then mark the job Reported: never Reported without its files."""
        config = self.server.config
        with config.report_lock:
            job = jobsm.booting(config.board.snapshot(), self.client)
            if job is None:  # another PUT of this host got there first
                return 417, None
            when = config.board.clock()
            if config.results is not None:
                try:
                    saved = config.results.save_report(job, report, self.client, when)
                except (OSError, ValueError) as exc:
                    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                    config.log(
                        f"{job.name}: cannot save the report ({why}); answered 503, "
                        "the job stays Booting for the host's retry"
                    )
                    return 503, job
                config.log(f"{job.name}: report saved as {saved.markdown}")
            done = config.board.apply(
                lambda jobs, client, _now: jobsm.report(jobs, client, when), self.client
            )
            return (200, done) if done is not None else (417, None)

    def _other(self) -> None:
        if not self._on_path():
            return
        self._drain()
        self._event(405, None)
        self._empty(405, {"Allow": ALLOW})

    # --- images ------------------------------------------------------------------------

    def _image(
        self,
        step: Callable[[tuple[Job, ...], str, float], tuple[tuple[Job, ...], int | None]],
        *,
        send: bool,
    ) -> None:
        config = self.server.config
        self._drain()
        header = self.headers.get("Range")

        def unless_unsatisfiable(
            jobs: tuple[Job, ...], client: str, now: float
        ) -> tuple[tuple[Job, ...], int | None]:
            # A range the job's image cannot satisfy is answered 416 with the jobs unchanged.
            after, index = step(jobs, client, now)
            if index is not None and byte_range(header, after[index].size) == "unsatisfiable":
                return jobs, index
            return after, index

        job = config.board.apply(unless_unsatisfiable, self.client)
        if job is None:
            if config.poweroff is None:
                self._event(404, None)
                self._empty(404)
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
            span = byte_range(self.headers.get("Range"), size)
            if isinstance(span, str):  # "unsatisfiable"
                self._event(416, job)
                self._empty(416, {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
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
            self._event(status, job)
            self.end_headers()
            if not send:
                return
            handle.seek(start)
            # A client that reads the image a byte at a time is cut off too: the
            # download has a deadline that allows any link faster than MIN_RATE.
            token = None
            if config.deadlines is not None:
                token = config.deadlines.arm(self.connection, SEND_GRACE + length / MIN_RATE)
            try:
                self._send_file(handle, length, job)
            finally:
                if config.deadlines is not None:
                    config.deadlines.disarm(token)

    def _send_file(self, handle: io.BufferedReader, length: int, job: Job | None) -> None:
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
                self.server.config.board.touch(self.client, n)

    # --- reports -----------------------------------------------------------------------

    def _file(self, job: Job, report: Report) -> int:
        """File the saved report as an issue if asked; the status to answer."""
        config = self.server.config
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
        """The request body (a report); None after answering 400/411/413 for one that cannot be read."""
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
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:  # the client stopped sending, or its deadline cut it off
            self.close_connection = True
            self._empty(400)
            return None
        self._read_in_time()
        return raw

    def _drain(self, limit: int = DROP_LIMIT) -> None:
        """Read and drop a request body we do not need (up to `limit`), so the connection stays in step."""
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if length < 0 or length > limit or self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return
        while length > 0:
            got = self.rfile.read(min(length, DROP_LIMIT))
            if not got:
                return
            length -= len(got)
        self._read_in_time()

    def _read_in_time(self) -> None:
        """The whole request is read: its deadline is off (saving, filing, KDS take their own time)."""
        if self.server.config.deadlines is not None:
            self.server.config.deadlines.disarm(getattr(self, "_deadline", None))

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        if self.close_connection:  # the client must not send its next request on it
            self.send_header("Connection", "close")
        self.end_headers()

    def _answer(self, status: int, job: Job | None) -> None:
        self._event(status, job)  # counted (and results.json written) before the client hears
        self._empty(status)

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
            del config.events[: -config.max_events]
        config.log(event.line())
