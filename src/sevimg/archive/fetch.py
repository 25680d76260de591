"""HTTP for archive indexes, with a cache that revalidates (ETag / If-Modified-Since).

Files whose SHA-256 a signed index names are kept by that hash and never
fetched twice; the rest (InRelease, repomd.xml) are kept by URL with their
validators, and a second run asks the server whether they changed (304). With
`offline` nothing is fetched: the cache answers, or says what it lacks.
Every write to the cache is atomic.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from sevimg.archive.compress import ArchiveError
from sevimg.atomic import write_file_atomic
from sevimg.problems import SevimgError, parse_json
from sevimg.redact import redact_url

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Network:
    """How this machine reaches archives, for requests and for messages."""

    proxy: str | None = None
    offline: bool = False
    timeout: float = 30.0
    settings: str = ""  # where the proxy and mirrors come from (sevimg.local.yaml), for hints


class HttpStatusError(ArchiveError):
    """The server answered, with an error status."""

    def __init__(self, message: str, status: int, *, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.status = status


class Fetcher:
    """Reads archive files over HTTP through the cache folder `cache`."""

    def __init__(self, cache: Path, network: Network) -> None:
        self.cache = cache
        self.network = network
        self.requests = 0  # HTTP requests sent, for `--json` and the cache tests
        self.not_modified = 0
        self._client: httpx.Client | None = None
        self._this_run: dict[str, bytes] = {}  # unhashed files, asked once per run

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
                headers={"User-Agent": "sevimg-archive"},
            )
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
    ) -> bytes:
        """The body of `url`; with `sha256` (a digest of `algorithm`), only a body with that
        digest (else an error naming both)."""
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
        data = self._download(url, conditional=sha256 is None)
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

    def _download(self, url: str, *, conditional: bool) -> bytes:
        shown = redact_url(url)
        path = self._by_url(url)
        meta_path = path.with_suffix(".json")
        headers: dict[str, str] = {}
        if conditional and path.is_file() and meta_path.is_file():
            try:
                meta = parse_json(meta_path.read_bytes(), str(meta_path))
            except (OSError, SevimgError):
                meta = {}
            if not isinstance(meta, dict):
                meta = {}
            if etag := meta.get("etag"):
                headers["If-None-Match"] = etag
            if modified := meta.get("last_modified"):
                headers["If-Modified-Since"] = modified
        self.requests += 1
        try:
            response = self._http().get(url, headers=headers)
        except httpx.TooManyRedirects:
            raise ArchiveError(
                f"{shown}: more than {MAX_REDIRECTS} redirects (a redirect loop?)",
                hint="check the mirror URL in sevimg.local.yaml or the catalog",
            ) from None
        except httpx.HTTPError as exc:
            raise ArchiveError(
                f"cannot reach {urlsplit(shown).netloc} for {shown}: {type(exc).__name__}"
                + (f" ({redact_url(str(exc))})" if str(exc) else ""),
                hint=self._reach_hint(),
            ) from None
        if response.status_code == 304 and headers:
            self.not_modified += 1
            return path.read_bytes()
        if response.status_code >= 400:
            raise HttpStatusError(
                f"{shown}: HTTP {response.status_code} {response.reason_phrase}",
                response.status_code,
                hint=self._reach_hint() if response.status_code >= 500 else "",
            )
        if response.status_code != 200:
            raise ArchiveError(f"{shown}: unexpected HTTP {response.status_code}")
        data = response.content
        if conditional:
            write_file_atomic(path, data)
            meta = {
                "url": shown,
                "etag": response.headers.get("ETag"),
                "last_modified": response.headers.get("Last-Modified"),
            }
            write_file_atomic(meta_path, json.dumps(meta, sort_keys=True).encode())
        return data

    def _reach_hint(self) -> str:
        net = self.network
        proxy = f"proxy {redact_url(net.proxy)}" if net.proxy else "no proxy"
        where = net.settings or "sevimg.local.yaml (none here)"
        return (
            f"{proxy} set; mirrors and proxy come from {where}: set `mirrors:` or `proxy:` there, "
            "or run with --offline to use the cache"
        )
