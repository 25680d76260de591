"""The HTTP side of GitHub's REST API: headers, retries, rate limits, pagination, errors.

Every failure ends as a one-line :class:`GitHubError` (a SevimgError) that
says what was being done and what to do about it; the token never appears
in it. :class:`~sevimg.release.github.GitHub` builds the releases calls on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from sevimg import __version__
from sevimg.problems import SevimgError
from sevimg.redact import redact_text
from sevimg.release.github_access import DEFAULT_API_URL, Token, check_repo, url_segment
from sevimg.retry import Backoff, Clock, RetryPolicy, SystemClock

API_VERSION = "2022-11-28"
USER_AGENT = f"sevimg/{__version__}"
PER_PAGE = 100
_MAX_PAGES = 1000  # 100 000 items: far past GitHub's 1000 assets per release

LogFn = Callable[[str], None]


class RateLimitWaits:
    """Rate-limit waits of one call so far: all of them, and the secondary ones (which back off)."""

    def __init__(self) -> None:
        self.total = 0
        self.secondary = 0


class GitHubError(SevimgError):
    """A GitHub call failed; the message is one line and holds no token."""

    def __init__(
        self, message: str, *, status: int | None = None, codes: Iterable[str] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.codes = tuple(codes)


class Api:
    """A connection to GitHub's REST API on behalf of one repository."""

    def __init__(
        self,
        repo: str,
        token: Token | None,
        *,
        api_url: str = DEFAULT_API_URL,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        log: LogFn | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.repo = check_repo(repo)
        self.token = token
        self.api_url = api_url.rstrip("/")
        self.clock: Clock = clock or SystemClock()
        self.retry = retry or RetryPolicy()
        self.log: LogFn = log or (lambda _: None)
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": USER_AGENT,
        }
        if token is not None:
            headers["Authorization"] = f"Bearer {token.reveal()}"
        # Uploads of hundreds of MB: generous read/write timeouts, and httpx
        # drops Authorization on redirects to another host.
        try:
            self._client = httpx.Client(
                headers=headers,
                timeout=httpx.Timeout(60.0, read=600.0),
                follow_redirects=True,
                transport=transport,
            )
        except (ValueError, httpx.InvalidURL, ImportError) as exc:
            # httpx reads HTTP(S)_PROXY and ALL_PROXY here; a bad one fails now.
            raise GitHubError(
                f"cannot set up a connection to {redact_text(self.api_url)}: {self.scrub(str(exc))}; "
                "check the HTTPS_PROXY, HTTP_PROXY and ALL_PROXY variables"
            ) from None

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.repo!r}, api_url={self.api_url!r}, token={self.token!r})"
        )

    def scrub(self, text: str) -> str:
        """Text safe to show: without the token, and without credentials in URLs."""
        return self.token.scrub(text) if self.token else redact_text(text)

    def _url(self, path: str) -> str:
        owner, _, name = self.repo.partition("/")
        return f"{self.api_url}/repos/{url_segment(owner)}/{url_segment(name)}{path}"

    # --- releases ----------------------------------------------------------------------
    def _paginate(self, url: str, *, what: str) -> Iterator[dict[str, Any]]:
        """Items of every page of a list call, following `Link: rel="next"`."""
        params: dict[str, Any] | None = {"per_page": PER_PAGE}
        next_url: str | None = url
        for _ in range(_MAX_PAGES):
            if next_url is None:
                return
            response = self._send("GET", next_url, what=what, params=params)
            for item in self._json(response, list):
                if isinstance(item, dict):
                    yield item
            next_url = response.links.get("next", {}).get("url")
            params = None  # the next link carries per_page and page
            if next_url and urlsplit(next_url).netloc != urlsplit(self.api_url).netloc:
                raise GitHubError(
                    f"{what}: GitHub's next-page link points to another host; refusing to follow it"
                )
        raise GitHubError(f"{what}: more than {_MAX_PAGES} pages; giving up")

    def _json(self, response: httpx.Response, kind: type[Any]) -> Any:
        try:
            data = response.json()
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, kind):
            raise GitHubError(
                f"{response.request.method} {self._show_url(response.request.url)}: GitHub answered {response.status_code} without the expected JSON",
                status=response.status_code,
            )
        return data

    def _show_url(self, url: httpx.URL | str) -> str:
        return self.scrub(str(httpx.URL(str(url)).copy_with(query=None)))

    def _send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        body: Callable[[], Iterable[bytes]] | None = None,
        ok: tuple[int, ...] = (200,),
        retry_errors: bool = True,
    ) -> httpx.Response:
        """One API call, waiting out rate limits and retrying 5xx and network errors.

        Rate-limited calls are always retried (GitHub did not act on them);
        others only when `retry_errors`, since retrying a POST might repeat it.
        """
        backoff = Backoff(self.retry, self.clock)
        waits = RateLimitWaits()
        while True:
            try:
                response = self._client.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=headers,
                    content=body() if body is not None else None,
                )
            except httpx.HTTPError as exc:
                reason = self.scrub(str(exc)) or type(exc).__name__
                error = GitHubError(f"{what}: no answer from {urlsplit(url).netloc} ({reason})")
                if not retry_errors or backoff.exhausted:
                    raise error from None
                backoff.wait(self.log, f"{what}: {reason}")
                continue

            if response.status_code in ok:
                return response
            self._after_failure(response, what, backoff, waits, retry_errors=retry_errors)

    def _after_failure(
        self,
        response: httpx.Response,
        what: str,
        backoff: Backoff,
        waits: RateLimitWaits,
        *,
        retry_errors: bool = True,
    ) -> None:
        """Wait before trying `response`'s request again (a rate limit, a 5xx), or raise its error.

        The body of `response` must have been read (its message is in the error).
        """
        wait = self._rate_limit_wait(response, waits.secondary)
        if wait is not None:
            kind, seconds = wait
            waits.total += 1
            waits.secondary += kind == "secondary"
            if waits.total > self.retry.max_rate_limit_waits:
                raise GitHubError(
                    f"{what}: still rate limited by GitHub after {waits.total - 1} waits; try again later",
                    status=response.status_code,
                )
            if seconds > self.retry.max_wait:
                raise GitHubError(
                    f"{what}: GitHub's {kind} rate limit lifts only in {seconds / 60:.0f} minutes; try again later",
                    status=response.status_code,
                )
            self.log(f"{what}: GitHub {kind} rate limit; waiting {seconds:.0f} s")
            self.clock.sleep(seconds)
            return
        if response.status_code >= 500 and retry_errors and not backoff.exhausted:
            backoff.wait(self.log, f"{what}: GitHub answered {response.status_code}")
            return
        raise self._error(response, what)

    def _rate_limit_wait(
        self, response: httpx.Response, secondary: int
    ) -> tuple[str, float] | None:
        """('primary'|'secondary', seconds to wait) when `response` is a rate limit, else None."""
        if response.status_code not in (403, 429):
            return None
        headers = response.headers
        message = _message(response).lower()
        retry_after = headers.get("retry-after", "").strip()
        if retry_after.isdigit():
            kind = "primary" if headers.get("x-ratelimit-remaining") == "0" else "secondary"
            return kind, max(float(retry_after), 1.0)
        if headers.get("x-ratelimit-remaining") == "0":
            reset = headers.get("x-ratelimit-reset", "").strip()
            if reset.isdigit():
                # One second of slack: GitHub's reset is rounded down.
                return "primary", max(float(reset) - self.clock.time(), 0.0) + 1.0
            return "primary", self.retry.secondary_backoff
        if response.status_code == 429 or "secondary rate limit" in message or "abuse" in message:
            return "secondary", self.retry.secondary_backoff * 2**secondary
        return None

    def _error(self, response: httpx.Response, what: str) -> GitHubError:
        """One line that says what failed, why, and what to do."""
        status = response.status_code
        message = _message(response) or response.reason_phrase
        codes = _error_codes(response)
        if status == 401:
            if self.token is None:
                text = f"{what}: GitHub wants a token (401 {message}); pass --token, set GITHUB_TOKEN, or run `gh auth login`"
            else:
                text = f"{what}: GitHub rejected the token from {self.token.source} (401 {message}); it is wrong, expired or revoked"
        elif status == 403:
            needed = response.headers.get("x-accepted-github-permissions", "").strip()
            if needed:
                wanted = " or ".join(p.strip() for p in needed.split(";") if p.strip())
                source = (
                    f"the token from {self.token.source}" if self.token else "an anonymous request"
                )
                text = (
                    f"{what}: {source} lacks permission (403 {message}); it needs {wanted} on {self.repo} "
                    "(in a workflow: `permissions: contents: write`)"
                )
            else:
                text = f"{what}: GitHub refused (403 {message})"
        elif status == 404:
            text = f"{what}: not found (404); {self.repo} does not exist or the token cannot see it"
        elif status == 422:
            detail = f": {', '.join(codes)}" if codes else ""
            text = f"{what}: GitHub refused it (422 {message}{detail})"
        else:
            text = f"{what}: GitHub answered {status} {message}"
        return GitHubError(self.scrub(" ".join(text.split())), status=status, codes=codes)


def _message(response: httpx.Response) -> str:
    """GitHub's `message` from an error body, if it has one."""
    try:
        data = response.json()
    except (ValueError, RecursionError):
        return ""
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return ""


def _error_codes(response: httpx.Response) -> tuple[str, ...]:
    """The `code` of each entry of a 422's `errors`."""
    try:
        data = response.json()
    except (ValueError, RecursionError):
        return ()
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return ()
    return tuple(str(e["code"]) for e in errors if isinstance(e, dict) and "code" in e)
