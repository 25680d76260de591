"""Reading a published release: its assets, downloaded under one deadline and a cap per asset.

:class:`ReleaseReader` is the releases client (:class:`~sevimg.release.github.GitHub`)
with what a reader of someone else's release needs: every socket read, every
retry and every rate-limit wait fits in one deadline for the whole download
(:mod:`sevimg.archive.bounded`), and an asset is streamed to a file while
its size is held to a cap and to the size GitHub lists, and hashed. GitHub
serves an asset's bytes by redirecting to a signed URL on another host;
httpx does not carry the token there.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import httpx

from sevimg.archive import bounded
from sevimg.atomic import create_new
from sevimg.display import printable
from sevimg.release.github import Asset, Clock, GitHub, GitHubError, LogFn, ProgressFn, Token
from sevimg.release.github_access import DEFAULT_API_URL
from sevimg.release.github_api import RateLimitWaits
from sevimg.retry import Backoff, RetryPolicy, SystemClock

# What is kept of an error answer's body (GitHub's JSON message fits many times).
_ERROR_BODY = 64 * 1024


class DeadlineClock:
    """A clock whose waits may not end past the deadline: a wait that would is an error.

    Rate-limit waits and backoff go through it, so a release that stays
    rate limited ends the download at its deadline, not an hour later.
    """

    def __init__(self, inner: Clock, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds
        self.until = inner.time() + seconds

    def time(self) -> float:
        """Seconds since the epoch, from the clock it wraps."""
        return self.inner.time()

    def sleep(self, seconds: float) -> None:
        """Wait, unless that would end past the deadline (then a GitHubError)."""
        if self.inner.time() + seconds > self.until:
            raise GitHubError(
                f"the download did not finish within its deadline of {self.seconds:g} s "
                f"(the next retry would wait {seconds:g} s more)"
            )
        self.inner.sleep(seconds)

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.inner.time() >= self.until


class ReleaseReader(GitHub):
    """GitHub's releases API for reading one repository's releases, under a deadline."""

    def __init__(
        self,
        repo: str,
        token: Token | None,
        *,
        deadline: float,
        api_url: str = DEFAULT_API_URL,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        log: LogFn | None = None,
    ) -> None:
        self.deadline = DeadlineClock(clock or SystemClock(), deadline)
        super().__init__(repo, token, api_url=api_url, clock=self.deadline, retry=retry, log=log)
        # Socket reads wait at most for what is left: a server that drips
        # bytes, or stops sending, cannot hold the download past it.
        self.backend = bounded.DeadlineBackend(self.deadline.time)
        bounded.install(self._client, self.backend)
        self.backend.start(deadline)

    def too_slow(self, what: str) -> GitHubError:
        """The error for a download past its deadline."""
        return GitHubError(
            f"{what}: GitHub did not send it within the download deadline "
            f"({self.deadline.seconds:g} s, --deadline)"
        )

    def _send(self, method: str, url: str, *, what: str, **options: Any) -> httpx.Response:
        # GitHub's own call, refused once the deadline has passed and its error named so.
        if self.deadline.expired():
            raise self.too_slow(what)
        try:
            return super()._send(method, url, what=what, **options)
        except GitHubError:
            if self.deadline.expired():
                raise self.too_slow(what) from None
            raise

    def download(
        self, asset: Asset, path: Path, *, cap: int, progress: ProgressFn | None = None
    ) -> str:
        """Stream `asset` into a new file at `path`; its SHA-256 (hex).

        At most `cap` bytes and exactly the size GitHub lists, checked while
        it streams; the file is created afresh (never written through a
        link). Network errors and 5xx are retried from the start, rate limits
        waited out, all within the deadline; anything else is a GitHubError
        saying what happened. On an error the file may be left partial: the
        caller writes into a staging folder it removes. `progress` hears the
        bytes received so far.
        """
        what = f"downloading {asset.name}"
        if asset.size > cap:
            raise GitHubError(
                f"{what}: GitHub lists it as {asset.size} bytes, more than the {cap} "
                "such a file may be; refusing to download it"
            )
        url = self._url(f"/releases/assets/{asset.id}")
        headers = {"Accept": "application/octet-stream", "Accept-Encoding": "identity"}
        backoff = Backoff(self.retry, self.clock)
        waits = RateLimitWaits()
        while True:
            if self.deadline.expired():
                raise self.too_slow(what)
            try:
                with self._client.stream("GET", url, headers=headers) as response:
                    if response.status_code == 200:
                        return self._receive(response, asset, path, what, progress)
                    body = bytearray()
                    for piece in response.iter_raw():
                        body += piece
                        if len(body) > _ERROR_BODY:
                            break
                failed = httpx.Response(
                    response.status_code,
                    headers=response.headers,
                    content=bytes(body[:_ERROR_BODY]),
                    request=response.request,
                )
            except httpx.HTTPError as exc:
                if self.deadline.expired():
                    raise self.too_slow(what) from None
                reason = self.scrub(str(exc)) or type(exc).__name__
                if backoff.exhausted:
                    raise GitHubError(f"{what}: the download failed ({reason})") from None
                backoff.wait(self.log, f"{what}: {reason}")
                continue
            self._after_failure(failed, what, backoff, waits)

    def _receive(
        self,
        response: httpx.Response,
        asset: Asset,
        path: Path,
        what: str,
        progress: ProgressFn | None,
    ) -> str:
        """The body of a 200 answer into `path`, held to the listed size; its SHA-256."""
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # A second layer sevimg did not ask for, and httpx would not bound.
            raise GitHubError(
                f"{what}: sent with Content-Encoding {printable(encoding)[:40]!r}, "
                "which sevimg did not ask for"
            )
        digest = hashlib.sha256()
        received = 0
        fd = create_new(path)
        with os.fdopen(fd, "wb") as handle:
            for piece in response.iter_raw():
                received += len(piece)
                if received > asset.size:
                    raise GitHubError(
                        f"{what}: GitHub sent more than the {asset.size} bytes it lists "
                        "for this asset; refusing it"
                    )
                if self.deadline.expired():  # buffered bytes too: the deadline is for all
                    raise self.too_slow(what)
                digest.update(piece)
                handle.write(piece)
                if progress is not None:
                    progress(received)
        if received != asset.size:
            raise GitHubError(
                f"{what}: GitHub sent {received} bytes, but lists {asset.size} for this asset"
            )
        return digest.hexdigest()
