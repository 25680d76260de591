"""HTTP for archive indexes, with a cache that revalidates (ETag / If-Modified-Since).

Files whose SHA-256 a signed index names are kept by that hash and never
fetched twice; the rest (InRelease, repomd.xml) are kept by URL with their
validators, and a second run asks the server whether they changed (304). With
`offline` nothing is fetched: the cache answers, or says what it lacks.
Every write to the cache is atomic, and what is read back from it is
checked: a validator that is not printable ASCII is never stored or sent,
and a corrupt entry is dropped and fetched again. Each fetch has a deadline
for all of it (sevimg.archive.bounded) and a size cap per kind of index,
read while it streams.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from sevimg.archive import bounded
from sevimg.archive.compress import CAPS, ArchiveError
from sevimg.atomic import write_file_atomic
from sevimg.display import printable
from sevimg.problems import SevimgError, parse_json
from sevimg.redact import redact_url

MAX_REDIRECTS = 5
# A cached validator is sent back as a header: printable ASCII, not too long.
MAX_VALIDATOR = 1024


@dataclass(frozen=True)
class Network:
    """How this machine reaches archives, for requests and for messages."""

    proxy: str | None = None
    offline: bool = False
    timeout: float = 30.0  # a mirror silent this long is given up
    deadline: float = 600.0  # one fetch, whole: however slowly a mirror answers
    settings: str = ""  # where the proxy and mirrors come from (sevimg.local.yaml), for hints


class HttpStatusError(ArchiveError):
    """The server answered, with an error status."""

    def __init__(self, message: str, status: int, *, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.status = status


class TooLarge(ArchiveError):
    """The answer went past the cap while it streamed."""


def validator(value: object) -> bool:
    """Whether `value` may be kept and sent back as an ETag or Last-Modified."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_VALIDATOR
        and all(" " <= c <= "~" for c in value)
    )


class Fetcher:
    """Reads archive files over HTTP through the cache folder `cache`."""

    def __init__(
        self, cache: Path, network: Network, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cache = cache
        self.network = network
        self.requests = 0  # HTTP requests sent, for `--json` and the cache tests
        self.not_modified = 0
        self._client: httpx.Client | None = None
        self._this_run: dict[str, bytes] = {}  # unhashed files, asked once per run
        self.backend = bounded.DeadlineBackend(clock)

    def close(self) -> None:
        """Close the HTTP connections."""
        if self._client is not None:
            self._client.close()

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                proxy=self.network.proxy,
                timeout=self.network.timeout,
                follow_redirects=True,
                max_redirects=MAX_REDIRECTS,
                trust_env=self.network.proxy is None,
                # Index files come compressed by their name or not at all; a transfer
                # encoding would be a second layer, unbounded by httpx: none is asked for.
                headers={"User-Agent": "sevimg-archive", "Accept-Encoding": "identity"},
            )
            bounded.install(self._client, self.backend)
        return self._client

    def _by_url(self, url: str) -> Path:
        return self.cache / "by-url" / hashlib.sha256(url.encode()).hexdigest()

    def _by_hash(self, sha256: str) -> Path:
        return self.cache / "by-hash" / sha256

    def cached(self, url: str) -> bytes | None:
        """The cached copy of `url`, if any (no request)."""
        path = self._by_url(url)
        return path.read_bytes() if path.is_file() else None

    def get(
        self,
        url: str,
        *,
        sha256: str | None = None,
        size: int | None = None,
        algorithm: str = "sha256",
        kind: str = "release",
    ) -> bytes:
        """The body of `url`; with `sha256` (a digest of `algorithm`), only a body with that
        digest (else an error naming both).

        At most the download cap of `kind` (compress.CAPS) and `size` when the
        signed index gives it, read while it streams; the whole fetch within
        the network's deadline.
        """
        shown = redact_url(url)
        if algorithm not in ("sha256", "sha384", "sha512", "sha1"):
            raise ArchiveError(f"{shown}: checksum type {algorithm!r} is not one sevimg checks")
        if sha256 is not None:
            kept = self._by_hash(f"{algorithm}-{sha256}")
            if kept.is_file():
                data = kept.read_bytes()
                if hashlib.new(algorithm, data).hexdigest() == sha256:
                    return data
        if self.network.offline:
            data_or_none = self.cached(url) if sha256 is None else None
            if data_or_none is None:
                raise ArchiveError(
                    f"--offline: {shown} is not in the cache ({self.cache})",
                    hint="run `sevimg archive` once with the network to fill the cache",
                )
            return data_or_none
        if sha256 is None and url in self._this_run:
            return self._this_run[url]
        cap = CAPS[kind].download if size is None else min(size, CAPS[kind].download)
        try:
            data = self._download(url, conditional=sha256 is None, cap=cap)
        except TooLarge:
            if size is None or cap != size:
                raise
            raise ArchiveError(
                f"{shown}: more than {size} bytes but the index that names it says "
                f"{sha256} ({size} bytes)",
                hint="the mirror is mid-sync or was tampered with; run again later or use another mirror",
            ) from None
        if sha256 is None:
            self._this_run[url] = data
        if sha256 is not None:
            found = hashlib.new(algorithm, data).hexdigest()
            if found != sha256 or (size is not None and len(data) != size):
                raise ArchiveError(
                    f"{shown}: its {algorithm} is {found} ({len(data)} bytes) but the index "
                    f"that names it says {sha256}"
                    + (f" ({size} bytes)" if size is not None else ""),
                    hint="the mirror is mid-sync or was tampered with; run again later or use another mirror",
                )
            write_file_atomic(self._by_hash(f"{algorithm}-{sha256}"), data)
        return data

    def _validators(self, path: Path, meta_path: Path) -> dict[str, str]:
        """If-None-Match / If-Modified-Since from the cache entry; a bad entry is dropped."""
        if not (path.is_file() and meta_path.is_file()):
            return {}
        try:
            meta = parse_json(meta_path.read_bytes(), str(meta_path))
        except (OSError, SevimgError):
            meta = None
        headers: dict[str, str] = {}
        if isinstance(meta, dict):
            for key, header in (("etag", "If-None-Match"), ("last_modified", "If-Modified-Since")):
                value = meta.get(key)
                if value is not None and not validator(value):
                    headers = {}
                    break
                if value:
                    headers[header] = value
            else:
                return headers
        # Corrupt: fetched again, whole, and cached anew.
        for stale in (path, meta_path):
            with contextlib.suppress(OSError):
                stale.unlink()
        return {}

    def _download(self, url: str, *, conditional: bool, cap: int) -> bytes:
        shown = redact_url(url)
        path = self._by_url(url)
        meta_path = path.with_suffix(".json")
        headers = self._validators(path, meta_path) if conditional else {}
        self.requests += 1
        self.backend.start(self.network.deadline)
        try:
            with self._http().stream("GET", url, headers=headers) as response:
                if response.status_code == 304 and headers:
                    self.not_modified += 1
                    try:
                        return path.read_bytes()
                    except OSError:  # gone meanwhile: ask again, whole
                        return self._download(url, conditional=False, cap=cap)
                if response.status_code >= 400:
                    raise HttpStatusError(
                        f"{shown}: HTTP {response.status_code} {printable(response.reason_phrase)}",
                        response.status_code,
                        hint=self._reach_hint() if response.status_code >= 500 else "",
                    )
                if response.status_code != 200:
                    raise ArchiveError(f"{shown}: unexpected HTTP {response.status_code}")
                encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise ArchiveError(
                        f"{shown}: the mirror sent it with Content-Encoding "
                        f"{printable(encoding)[:40]!r}, which sevimg did not ask for"
                    )
                data = bytearray()
                for piece in response.iter_raw():
                    data += piece
                    if self.backend.expired():  # buffered bytes too: the deadline is for all
                        raise self._too_slow(shown)
                    if len(data) > cap:
                        raise TooLarge(
                            f"{shown}: more than {cap} bytes, more than this index may be",
                            hint="the mirror serves something else under this name",
                        )
        except httpx.TooManyRedirects:
            raise ArchiveError(
                f"{shown}: more than {MAX_REDIRECTS} redirects (a redirect loop?)",
                hint="check the mirror URL in sevimg.local.yaml or the catalog",
            ) from None
        except httpx.HTTPError as exc:
            if self.backend.expired():
                raise self._too_slow(shown) from None
            raise ArchiveError(
                f"cannot reach {urlsplit(shown).netloc} for {shown}: {type(exc).__name__}"
                + (f" ({printable(redact_url(str(exc)))})" if str(exc) else ""),
                hint=self._reach_hint(),
            ) from None
        body = bytes(data)
        if conditional:
            write_file_atomic(path, body)
            meta: dict[str, str | None] = {"url": shown}
            for key, header in (("etag", "ETag"), ("last_modified", "Last-Modified")):
                value = response.headers.get(header)
                meta[key] = value if value is not None and validator(value) else None
            write_file_atomic(meta_path, json.dumps(meta, sort_keys=True).encode())
        return body

    def _too_slow(self, shown: str) -> ArchiveError:
        return ArchiveError(
            f"{shown}: the mirror did not send it all within {self.network.deadline:g} s",
            hint=self._reach_hint(),
        )

    def _reach_hint(self) -> str:
        net = self.network
        proxy = f"proxy {redact_url(net.proxy)}" if net.proxy else "no proxy"
        where = net.settings or "sevimg.local.yaml (none here)"
        return (
            f"{proxy} set; mirrors and proxy come from {where}: set `mirrors:` or `proxy:` there, "
            "or run with --offline to use the cache"
        )
