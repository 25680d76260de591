"""Network I/O for httpx bounded by one deadline per fetch, not only per read.

httpx's timeouts bound each read: a mirror that drips a byte every few
seconds (in its headers or its body) holds a fetch for ever. This backend
wraps httpcore's sockets so that every read and write waits at most for what
is left of the current fetch's deadline, set by the fetcher before each
request; past it a read raises httpcore.ReadTimeout as a stalled one does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx


class FetchDeadline(httpcore.ReadTimeout):
    """The whole fetch took longer than its deadline."""


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, owner: DeadlineBackend) -> None:
        self.inner = inner
        self.owner = owner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, self.owner.clamp(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, self.owner.clamp(timeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self.inner.start_tls(ssl_context, server_hostname, self.owner.clamp(timeout))
        return _Stream(inner, self.owner)

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, every socket operation clamped to the current deadline."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = httpcore.SyncBackend()
        self.clock = clock
        self.until: float | None = None
        self.seconds = 0.0

    def start(self, seconds: float) -> None:
        """A new fetch: it must be over `seconds` from now."""
        self.seconds = seconds
        self.until = self.clock() + seconds

    def expired(self) -> bool:
        """Whether the current fetch's deadline has passed."""
        return self.until is not None and self.clock() >= self.until

    def clamp(self, timeout: float | None) -> float | None:
        """`timeout`, or what is left of the deadline when that is sooner; FetchDeadline past it."""
        if self.until is None:
            return timeout
        left = self.until - self.clock()
        if left <= 0:
            raise FetchDeadline(f"the fetch took longer than {self.seconds:g} s")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self.inner.connect_tcp(
            host, port, self.clamp(timeout), local_address, socket_options
        )
        return _Stream(stream, self)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(
            self.inner.connect_unix_socket(path, self.clamp(timeout), socket_options), self
        )

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def install(client: httpx.Client, backend: DeadlineBackend) -> None:
    """Make `client`'s connections (direct or through its proxy) use `backend`.

    httpx does not take a backend itself; its transport's connection pool
    (httpcore.ConnectionPool or HTTPProxy) does, and reads it for each new
    connection. tests/test_archive_hostile.py fails if that ever changes.
    """
    transports = [client._transport, *client._mounts.values()]
    for transport in transports:
        if transport is None:  # a no-proxy mount: the default transport serves it
            continue
        pool = getattr(transport, "_pool", None)
        if pool is None or not hasattr(pool, "_network_backend"):
            raise RuntimeError("httpx's transport has no connection pool to bound")
        pool._network_backend = backend
