"""Bounds on what peers can make `sevimg serve` hold: connections, threads, time.

Every host (and anyone else on the lab network) is a peer that may be slow
or hostile. :class:`Gate` admits a connection only while the client and the
server are under their limits, so 200 half-open connections cost at most
:data:`MAX_CONNECTIONS` handler threads (the rest are answered 503 and
closed at once, without a thread). :class:`Deadlines` gives every request
an overall deadline from the moment its connection waits for it to the
moment the answer starts: one thread watches them all and shuts down the
socket of a request that is late, which wakes the handler's blocked read.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable

MAX_CONNECTIONS = 64  # handler threads, in total
MAX_PER_CLIENT = 8  # a host needs one or two; a firmware retrying may open a few more
REQUEST_DEADLINE = 30.0  # request line, headers and body (a report is at most 512 KiB)
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


class Gate:
    """Counts of open connections, per client and in total."""

    def __init__(self, total: int = MAX_CONNECTIONS, per_client: int = MAX_PER_CLIENT) -> None:
        self.total = total
        self.per_client = per_client
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._count = 0
        self.refused = 0
        self.peak = 0

    def enter(self, client: str) -> bool:
        """Admit a connection from `client`; False (and nothing held) when over a limit."""
        with self._lock:
            mine = self._open.get(client, 0)
            if self._count >= self.total or mine >= self.per_client:
                self.refused += 1
                return False
            self._open[client] = mine + 1
            self._count += 1
            self.peak = max(self.peak, self._count)
            return True

    def leave(self, client: str) -> None:
        """A connection admitted by :meth:`enter` closed."""
        with self._lock:
            left = self._open.get(client, 0) - 1
            if left > 0:
                self._open[client] = left
            else:
                self._open.pop(client, None)
            self._count = max(self._count - 1, 0)

    @property
    def count(self) -> int:
        """Connections open now."""
        with self._lock:
            return self._count


def refuse(sock: socket.socket) -> None:
    """Answer 503 without waiting for the client (it may read nothing), and close."""
    try:
        sock.setblocking(False)
        sock.send(BUSY)
    except OSError:
        pass  # the client's problem: it is refused either way
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


class Deadlines:
    """One thread that shuts down the sockets of requests past their deadline."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, tuple[socket.socket, Callable[[], None] | None]] = {}
        self._ids = itertools.count()
        self._changed = threading.Condition()
        self._stopped = False
        self.expired = 0
        self._thread = threading.Thread(target=self._watch, name="sevimg-deadlines", daemon=True)
        self._thread.start()

    def arm(
        self, sock: socket.socket, seconds: float, late: Callable[[], None] | None = None
    ) -> int:
        """Shut `sock` down `seconds` from now unless disarmed; `late` is called if it is."""
        with self._changed:
            token = next(self._ids)
            self._armed[token] = (sock, late)
            heapq.heappush(self._heap, (self._clock() + seconds, token))
            self._changed.notify()
            return token

    def disarm(self, token: int | None) -> None:
        """The request was read in time (or is over)."""
        if token is None:
            return
        with self._changed:
            self._armed.pop(token, None)

    @property
    def armed(self) -> int:
        """Requests whose deadline is running now."""
        with self._changed:
            return len(self._armed)

    def wait_expired(self, n: int, timeout: float) -> bool:
        """True once `n` deadlines have expired (tests, to wait without sleeping)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.expired >= n, timeout)

    def stop(self) -> None:
        """End the watching thread."""
        with self._changed:
            self._stopped = True
            self._changed.notify()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        while True:
            with self._changed:
                while not self._stopped:
                    # Drop disarmed entries from the top, so the wait is for a live one.
                    while self._heap and self._heap[0][1] not in self._armed:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._changed.wait()
                        continue
                    when, token = self._heap[0]
                    wait = when - self._clock()
                    if wait <= 0:
                        heapq.heappop(self._heap)
                        sock, late = self._armed.pop(token)
                        self.expired += 1
                        self._changed.notify_all()
                        break
                    self._changed.wait(wait)
                else:
                    return
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)
            if late is not None:
                late()
