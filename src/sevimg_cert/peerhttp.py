"""One HTTP exchange with a peer that may be slow or hostile (dispatch, KDS).

The whole exchange (connect, TLS, request, status line, headers, body) has
one deadline: a server that drips a byte every few seconds or streams
`100 Continue` for ever cannot hold the caller past it, because every read
waits at most for what is left, and a watchdog shuts the socket when the
deadline passes. The body is capped; redirects are followed only when asked
(never for POST and PUT), only to http(s), never from https to http, and
credentials never follow to another host. What a peer says (status line,
headers, errors) reaches messages only through `shown`, which escapes it.
Standard library only: this runs inside the host image.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

REDIRECTS = frozenset({301, 302, 303, 307, 308})
SHOWN_LIMIT = 200


class PeerError(OSError):
    """No proper answer from the peer; the message is safe to print."""


class PeerTimeout(PeerError, TimeoutError):
    """The exchange's deadline passed."""


class PeerRefused(PeerError):
    """Not worth another attempt: a bad URL, a refused redirect, an answer over the cap."""


class Deadline:
    """A point in time `seconds` from now on `clock` (monotonic unless a test injects one)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.seconds = seconds
        self.at = clock() + seconds

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self.at - self.clock()

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.remaining() <= 0

    def within(self, seconds: float) -> Deadline:
        """A deadline `seconds` from now, or this one when it comes first."""
        sooner = Deadline(seconds, self.clock)
        return self if self.at <= sooner.at else sooner


def shown(text: object, limit: int = SHOWN_LIMIT) -> str:
    """`text` from a peer, safe for a terminal or a log: escapes for anything unprintable, cut."""
    value = text if isinstance(text, str) else str(text)
    cut = len(value) > limit
    out = []
    for char in value[:limit]:
        if char.isprintable() and char not in "\\\x1b":
            out.append(char)
        else:
            out.append(char.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out) + ("…" if cut else "")


@dataclass(frozen=True)
class Answer:
    """The peer's answer: status, reason (escaped), headers, body (at most the cap)."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    url: str


class _Reader(io.RawIOBase):
    """The socket's bytes, each read bounded by what is left of the deadline."""

    def __init__(self, sock: socket.socket, deadline: Deadline, read_timeout: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.read_timeout = read_timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        left = self.deadline.remaining()
        if left <= 0:
            raise PeerTimeout(f"no whole answer within {self.deadline.seconds:g} s")
        self.sock.settimeout(min(left, self.read_timeout))
        return self.sock.recv_into(buffer)


class _Source:
    """What http.client.HTTPResponse reads from: a file over the bounded reader."""

    def __init__(self, reader: _Reader) -> None:
        self.reader = reader

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(self.reader)


def _target(url: str) -> tuple[urllib.parse.SplitResult, str, int, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PeerRefused(f"{shown(url)}: not an http:// or https:// URL")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise PeerRefused(f"{shown(url)}: the URL holds spaces or control characters")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise PeerRefused(f"{shown(url)}: {exc}") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts, parts.hostname, port, path


def _once(
    url: str,
    method: str,
    body: bytes | None,
    headers: Mapping[str, str],
    deadline: Deadline,
    max_body: int,
    read_timeout: float,
) -> Answer:
    parts, host, port, path = _target(url)
    left = deadline.remaining()
    if left <= 0:
        raise PeerTimeout(f"no whole answer within {deadline.seconds:g} s")
    try:
        sock = socket.create_connection((host, port), timeout=min(left, read_timeout))
    except UnicodeError as exc:  # a host name IDNA cannot encode: no use retrying
        raise PeerRefused(f"{shown(url)}: {shown(exc)}") from None
    except OSError as exc:
        if deadline.expired():
            raise PeerTimeout(f"no whole answer within {deadline.seconds:g} s") from None
        raise PeerError(f"{type(exc).__name__}: {shown(exc)}") from None
    # The watchdog: whatever blocks (TLS, a send, a read) ends when the deadline passes.
    watchdog = threading.Timer(max(deadline.remaining(), 0.0), _shut, (sock,))
    watchdog.daemon = True
    watchdog.start()
    try:
        if parts.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        netloc = parts.netloc.rpartition("@")[2]
        lines = [f"{method} {path} HTTP/1.1", f"Host: {netloc}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body or b'')}")
        sock.settimeout(min(max(deadline.remaining(), 0.001), read_timeout))
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        source: Any = _Source(_Reader(sock, deadline, read_timeout))  # it reads only makefile()
        response = http.client.HTTPResponse(source, method=method)
        response.begin()
        data = bytearray()
        while method != "HEAD" and len(data) <= max_body:
            chunk = response.read(max_body + 1 - len(data))  # a read may return part of it
            if not chunk:
                break
            data += chunk
        if len(data) > max_body:
            raise PeerRefused(f"{shown(url)}: the answer is larger than {max_body} bytes")
        answer_headers = {k.lower(): v for k, v in response.getheaders()}
        return Answer(response.status, shown(response.reason), answer_headers, bytes(data), url)
    except PeerError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if deadline.expired():
            raise PeerTimeout(f"no whole answer within {deadline.seconds:g} s") from None
        what = type(exc).__name__
        raise PeerError(f"{what}: {shown(exc)}" if str(exc) else what) from None
    finally:
        watchdog.cancel()
        sock.close()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """`url` without user:password, and a Basic Authorization header when it had them."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, {}
    user = urllib.parse.unquote(parts.username or "")
    secret = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{secret}".encode()).decode()
    bare = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return bare, {"Authorization": f"Basic {token}"}


def redirect_target(url: str, location: str) -> str:
    """Where a redirect from `url` to `location` leads; PeerRefused unless http(s) and not https -> http."""
    try:
        following = urllib.parse.urljoin(url, location.strip())
        scheme = urllib.parse.urlsplit(following).scheme
    except ValueError:
        raise PeerRefused(f"{shown(url)}: a redirect to an unparsable place") from None
    if scheme not in ("http", "https"):
        raise PeerRefused(f"{shown(url)}: refusing a redirect to {shown(following)} (not http(s))")
    if urllib.parse.urlsplit(url).scheme == "https" and scheme == "http":
        raise PeerRefused(f"{shown(url)}: refusing a redirect from https to {shown(following)}")
    return following


def exchange(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    deadline: Deadline,
    max_body: int,
    redirects: int = 0,
    read_timeout: float = 30.0,
) -> Answer:
    """One request and its answer within `deadline`; PeerError (escaped message) otherwise.

    Redirects are followed (at most `redirects`) only for GET and HEAD, only
    to http(s) and never from https to http (PeerRefused); a redirect not
    followed (POST, PUT, `redirects=0`) is returned as the 3xx answer it is.
    Credentials in `url` are sent as a header, and not to another host
    after a redirect.
    """
    try:
        url, auth = split_credentials(url)
    except ValueError as exc:
        raise PeerRefused(f"{shown(url)}: not a URL ({shown(exc)})") from None
    sent = {"User-Agent": "sevimg-cert", "Accept": "*/*", **auth, **(headers or {})}
    origin = urllib.parse.urlsplit(url).netloc
    for _ in range(redirects + 1):
        answer = _once(url, method, body, sent, deadline, max_body, read_timeout)
        if answer.status not in REDIRECTS or method not in ("GET", "HEAD") or not redirects:
            return answer
        following = redirect_target(url, answer.headers.get("location", ""))
        nxt = urllib.parse.urlsplit(following)
        if nxt.netloc != origin:
            sent = {k: v for k, v in sent.items() if k != "Authorization"}
        url = following
    raise PeerRefused(f"{shown(url)}: more than {redirects} redirects")
