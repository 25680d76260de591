"""`sevimg serve`'s KDS cache: AMD's certificates and CRLs on disk, for hosts that reach nothing else.

Hosts ask serve for KDS paths (`/kds/vcek/v1/…`, `/kds/vlek/v1/…`, laid out
as :mod:`sevimg.serve.kdspaths` says). A cached entry is answered from disk;
a miss is fetched from AMD's KDS (or `--kds URL`) and stored, unless the
cache is offline (`--kds-offline`), which answers 404 for a miss.

- One entry is two files: the document, and `<file>.meta.json` naming its
  path, size and SHA-256. Both are written atomically, the metadata last;
  an entry whose metadata does not parse, does not match its document, or
  whose document is not what KDS serves for its path is dropped and
  fetched again.
- One upstream request at a time per key: a second host asking for the
  same VCEK waits for the first fetch and is answered from the cache.
- KDS rate-limits with 429. Its Retry-After is honoured (by every key:
  nothing is sent upstream until it has passed) when it fits in the
  request's deadline; otherwise the host is answered 503 with a
  Retry-After of its own. Every fetch has an overall deadline and a size cap.
- A CRL is fetched again once its nextUpdate has passed (when online); if
  that fails, the cached one is still served.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sevimg.atomic import write_file_atomic
from sevimg.serve.kdspaths import MAX_ANSWER, Key, check_answer, crl_next_update, parse_path
from sevimg_cert.kds import DEFAULT_URL, check_base_url, retry_after
from sevimg_cert.redact import redact

SCHEMA_VERSION = 1
MAX_META = 1 << 16  # metadata is a few hundred bytes
# One host's request, waits for KDS included: under the host's own 30 s read timeout
# (sevimg_cert.kds), so the host hears a 503 and its Retry-After rather than nothing.
DEADLINE = 25.0
READ_TIMEOUT = 10.0  # one read from KDS; the deadline bounds the whole fetch
MAX_RETRY_AFTER = 20.0  # longer waits are passed on to the host as 503 + Retry-After
BACKOFF = 1.0


class KdsFetchError(Exception):
    """KDS (or the cache) cannot give a document: the status to answer and why."""

    def __init__(self, status: int, why: str, retry: float | None = None) -> None:
        super().__init__(why)
        self.status = status
        self.why = why
        self.retry = retry


@dataclass(frozen=True)
class Answer:
    """What serve answers a host's KDS request."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    retry_after: int | None = None
    why: str = ""


class KdsCache:
    """The cache folder and, unless offline, the KDS it fills itself from."""

    def __init__(
        self,
        folder: Path,
        upstream: str | None = DEFAULT_URL,
        *,
        deadline: float = DEADLINE,
        max_retry_after: float = MAX_RETRY_AFTER,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """`upstream` None: offline, the cache only. ValueError for an upstream that is not a URL."""
        self.folder = folder
        self.upstream = None if upstream is None else check_base_url(upstream)
        self.deadline = deadline
        self.max_retry_after = max_retry_after
        self._clock, self._wall, self._sleep = clock, wall, sleep
        self._log = log or (lambda _: None)
        self._guard = threading.Lock()
        self._turns = threading.Condition(self._guard)
        self._keys: dict[str, tuple[threading.Lock, int]] = {}
        self._quiet_until = 0.0  # KDS said 429: nothing goes upstream before this
        self.upstream_requests = 0

    # --- what serve calls ------------------------------------------------------------

    def answer(self, path: str, query: str) -> Answer:
        """The answer to `GET /kds<path>?<query>`."""
        try:
            key = parse_path(path, query)
        except ValueError as exc:
            return Answer(404, f"{exc}\n".encode(), why=str(exc))
        try:
            data = self.get(key)
        except KdsFetchError as exc:
            retry = None if exc.retry is None else max(1, math.ceil(exc.retry))
            return Answer(exc.status, f"{exc.why}\n".encode(), retry_after=retry, why=exc.why)
        return Answer(200, data, key.content_type)

    def get(self, key: Key) -> bytes:
        """The document of `key`, from the cache or (once, whoever else asks) from KDS."""
        deadline = self._clock() + self.deadline
        cached = self.read(key)
        if cached is not None and not self._stale(key, cached):
            return cached
        if self.upstream is None:
            if cached is not None:
                return cached
            raise KdsFetchError(
                404,
                f"{key.path} is not in the KDS cache (offline: fill it with `sevimg kds fetch`)",
            )
        with self._turn(key, deadline):
            again = self.read(key)  # filled while this request waited its turn
            if again is not None and not self._stale(key, again):
                return again
            try:
                data = self._fetch(key, deadline)
            except KdsFetchError:
                if again is not None:  # a CRL past its nextUpdate: the old one beats none
                    self._log(f"KDS {key.path}: could not refresh it; the cached one is served")
                    return again
                raise
            self.store(key, data)
            return data

    # --- the folder --------------------------------------------------------------------

    def read(self, key: Key) -> bytes | None:
        """The cached document, checked against its metadata; None (and dropped) when corrupt."""
        data_file = self.folder / key.file
        meta_file = data_file.with_name(data_file.name + ".meta.json")
        try:
            meta_raw = _head(meta_file, MAX_META)
            data = _head(data_file, MAX_ANSWER + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._log(f"KDS cache {data_file}: cannot read ({exc.strerror or exc})")
            return None
        problem = _check_meta(key, meta_raw, data)
        if problem is None:
            return data
        self._log(f"KDS cache {data_file}: {problem}; dropped, fetched again")
        for stale in (meta_file, data_file):
            with suppress(OSError):
                stale.unlink()
        return None

    def store(self, key: Key, data: bytes) -> None:
        """Write `data` and its metadata (atomically; the metadata last, so it vouches for the data)."""
        check_answer(key, data)
        data_file = self.folder / key.file
        meta = {
            "schema_version": SCHEMA_VERSION,
            "path": key.path,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "fetched_at": datetime.fromtimestamp(self._wall(), UTC).isoformat(timespec="seconds"),
            "source": redact(self.upstream) if self.upstream else None,
        }
        try:
            data_file.parent.mkdir(parents=True, exist_ok=True)
            write_file_atomic(data_file, data)
            meta_text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
            write_file_atomic(
                data_file.with_name(data_file.name + ".meta.json"), meta_text.encode()
            )
        except OSError as exc:  # still answered; only the next request pays for it again
            self._log(f"KDS cache {data_file}: cannot write ({exc.strerror or exc})")

    def _stale(self, key: Key, data: bytes) -> bool:
        if key.kind != "crl" or self.upstream is None:
            return False
        due = crl_next_update(data)
        return due is not None and self._wall() > due

    # --- upstream ----------------------------------------------------------------------

    @contextmanager
    def _turn(self, key: Key, deadline: float) -> Iterator[None]:
        """Hold `key`'s lock: one upstream fetch per key at a time."""
        with self._guard:
            lock, users = self._keys.get(key.path, (threading.Lock(), 0))
            self._keys[key.path] = (lock, users + 1)
            self._turns.notify_all()
        try:
            if not lock.acquire(timeout=max(deadline - self._clock(), 0.0)):
                raise KdsFetchError(503, f"{key.path}: still being fetched for another host", 5)
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._guard:
                lock, users = self._keys[key.path]
                if users > 1:
                    self._keys[key.path] = (lock, users - 1)
                else:
                    del self._keys[key.path]

    def wait_for_requests(self, path: str, n: int, timeout: float) -> bool:
        """True once `n` requests for the KDS `path` fetch it or wait their turn (tests, bench)."""
        with self._turns:
            return self._turns.wait_for(lambda: self._keys.get(path, (None, 0))[1] >= n, timeout)

    def _fetch(self, key: Key, deadline: float) -> bytes:
        import httpx  # noqa: PLC0415 - loaded when serve first misses

        assert self.upstream is not None
        url = self.upstream + key.path
        shown = redact(self.upstream) + key.path
        wait = BACKOFF
        last = "no attempt"
        while True:
            self._wait_quiet(shown, deadline)
            left = deadline - self._clock()
            if left <= 0:
                raise KdsFetchError(504, f"{shown}: KDS gave no answer in time ({last})", 30)
            self.upstream_requests += 1
            try:
                status, data, headers = _get(httpx, url, shown, deadline, self._clock, left)
            except KdsFetchError:
                raise
            except (httpx.HTTPError, OSError) as exc:
                status, data, headers = 0, b"", {}
                last = type(exc).__name__
            if status == 200:
                try:
                    check_answer(key, data)
                except ValueError as exc:
                    raise KdsFetchError(502, f"{shown}: KDS answered {exc}") from None
                self._log(f"KDS {shown}: fetched ({len(data)} bytes)")
                return data
            if status == 404:
                raise KdsFetchError(404, f"{shown}: KDS knows no such chip, product or TCB")
            if status == 429 or status >= 500 or status == 0:
                last = f"HTTP {status}" if status else last
                said = retry_after(headers.get("retry-after"))
                if status == 429:
                    pause = said if said is not None else wait
                    with self._guard:
                        self._quiet_until = max(self._quiet_until, self._clock() + pause)
                    self._log(f"KDS {shown}: 429, waiting {pause:g} s before asking KDS again")
                else:
                    pause = min(said if said is not None else wait, self.max_retry_after)
                    self._pause(pause, deadline, shown, last)
                wait *= 2
                continue
            raise KdsFetchError(502, f"{shown}: KDS answered HTTP {status}")

    def _wait_quiet(self, shown: str, deadline: float) -> None:
        with self._guard:
            quiet = self._quiet_until - self._clock()
        if quiet > 0:
            self._pause(quiet, deadline, shown, "KDS asked to wait (429)")

    def _pause(self, seconds: float, deadline: float, shown: str, why: str) -> None:
        if seconds > self.max_retry_after or self._clock() + seconds >= deadline:
            raise KdsFetchError(503, f"{shown}: {why}; ask again later", seconds)
        if seconds > 0:
            self._sleep(seconds)


def _get(
    httpx: Any, url: str, shown: str, deadline: float, clock: Callable[[], float], left: float
) -> tuple[int, bytes, dict[str, str]]:
    """One GET: status, body (capped) and headers; the deadline bounds the whole exchange."""
    timeout = httpx.Timeout(min(READ_TIMEOUT, left))
    with (
        httpx.Client(timeout=timeout, follow_redirects=False) as client,
        client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as response,
    ):
        body = bytearray()
        if response.status_code == 200:
            for chunk in response.iter_raw():
                body += chunk
                if len(body) > MAX_ANSWER:
                    raise KdsFetchError(502, f"{shown}: KDS's answer is over {MAX_ANSWER} bytes")
                if clock() > deadline:
                    raise KdsFetchError(504, f"{shown}: KDS's answer did not arrive in time", 30)
        headers = {k.lower(): v for k, v in response.headers.items() if k.lower() == "retry-after"}
        return response.status_code, bytes(body), headers


def _head(path: Path, size: int) -> bytes:
    """At most `size` bytes of `path` (a planted huge file is never read whole)."""
    with path.open("rb") as handle:
        return handle.read(size)


def _check_meta(key: Key, meta_raw: bytes, data: bytes) -> str | None:
    """Why a cache entry cannot be used; None when it can."""
    if len(meta_raw) >= MAX_META:
        return "its metadata is too large"
    try:
        meta = json.loads(meta_raw)
    except (ValueError, RecursionError):
        return "its metadata is not JSON"
    if not isinstance(meta, dict) or meta.get("schema_version") != SCHEMA_VERSION:
        return "its metadata is not this cache's"
    if meta.get("path") != key.path:
        return "its metadata names another path"
    if meta.get("size") != len(data) or meta.get("sha256") != hashlib.sha256(data).hexdigest():
        return "it does not match its metadata (size or SHA-256)"
    try:
        check_answer(key, data)
    except ValueError as exc:
        return str(exc)
    return None
