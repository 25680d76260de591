"""A small client for GitHub's releases REST API: auth, retries, rate limits, pagination, errors.

Only the calls `sevimg publish` needs (see shared/reference/dispatch.md).
Every failure ends as a one-line :class:`GitHubError` (a SevimgError) that
says what was being done and what to do about it; the token never appears
in it. Waiting goes through an injectable :class:`Clock`, so tests can run
through minutes of rate limiting without sleeping.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx

from sevimg import __version__
from sevimg.problems import SevimgError

# Token is re-exported here: callers build it with the rest of the client.
from sevimg.redact import Token, redact_text
from sevimg.release.checksums import iter_chunks

API_VERSION = "2022-11-28"
DEFAULT_API_URL = "https://api.github.com"
USER_AGENT = f"sevimg/{__version__}"
PER_PAGE = 100
_MAX_PAGES = 1000  # 100 000 items: far past GitHub's 1000 assets per release

ProgressFn = Callable[[int], None]
LogFn = Callable[[str], None]


# --- the token -----------------------------------------------------------------------------

__all__ = [
    "API_VERSION",
    "DEFAULT_API_URL",
    "PER_PAGE",
    "USER_AGENT",
    "Asset",
    "Clock",
    "GitHub",
    "GitHubError",
    "LogFn",
    "ProgressFn",
    "Release",
    "RetryPolicy",
    "SystemClock",
    "Token",
    "check_api_url",
    "check_repo",
    "resolve_api_url",
    "resolve_token",
    "url_segment",
]


def resolve_token(
    option: str | None,
    env: Mapping[str, str],
    *,
    api_url: str = DEFAULT_API_URL,
    use_gh: bool = True,
) -> Token | None:
    """The token from --token, else GITHUB_TOKEN, else `gh auth token`; None when there is none."""
    if option:
        return Token(option, "--token")
    if env.get("GITHUB_TOKEN", "").strip():
        return Token(env["GITHUB_TOKEN"], "GITHUB_TOKEN")
    if not use_gh:
        return None
    gh = shutil.which("gh")
    if gh is None:
        return None
    host = urlsplit(api_url).hostname or "github.com"
    argv = [gh, "auth", "token"]
    if host != "api.github.com":
        argv += ["--hostname", host]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 or not done.stdout.strip():
        return None
    return Token(done.stdout, "gh auth token")


def resolve_api_url(option: str | None, env: Mapping[str, str]) -> str:
    """--api-url, else GITHUB_API_URL (as GitHub Actions sets it), else the public API; checked."""
    if option is not None:
        return check_api_url(option, "--api-url")
    if env.get("GITHUB_API_URL"):
        return check_api_url(env["GITHUB_API_URL"], "GITHUB_API_URL")
    return DEFAULT_API_URL


def check_api_url(url: str, source: str = "--api-url") -> str:
    """`url` without a trailing slash if it can be GitHub's REST API, else a SevimgError.

    http(s) only, a host, no query or fragment (request paths are appended to
    it), and no user:password@ (the token is the credential; httpx would
    replace it with the URL's). The message never shows the credentials.
    """
    shown = redact_text(url)
    stripped = url.strip(" ")

    def bad(why: str) -> SevimgError:
        return SevimgError(
            f"{source}: {shown!r} is not a usable GitHub API URL: {why}",
            hint="e.g. https://api.github.com or https://github.example.com/api/v3",
        )

    if not stripped or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in stripped):
        raise bad("it is empty or holds spaces or control characters")
    try:
        parts = urlsplit(stripped)
        port = parts.port
    except ValueError as exc:
        raise bad(str(exc)) from None
    if parts.scheme not in ("http", "https"):
        raise bad("not an http:// or https:// URL")
    if not parts.hostname:
        raise bad("it names no host")
    if parts.username is not None or parts.password is not None:
        raise bad("it carries a user name or password; sevimg sends the token instead")
    if parts.query or stripped.endswith("?"):
        raise bad("it has a query (?...)")
    if parts.fragment or "#" in stripped:
        raise bad("it has a fragment (#...)")
    if port == 0:
        raise bad("port 0")
    if any(segment in (".", "..") for segment in parts.path.split("/")):
        raise bad("its path has . or .. segments")
    return stripped.rstrip("/")


# GitHub's rules: an owner (user or organization) is 1-39 letters, digits or
# single hyphens, not starting or ending with one; a repository name is 1-100
# of letters, digits, `.`, `_` and `-`, except `.`, `..` and names ending in
# `.git`. fullmatch, because `$` also matches before a final newline.
_OWNER = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")
_REPO = re.compile(r"[A-Za-z0-9._-]{1,100}")


def check_repo(repo: str, source: str = "--repo") -> str:
    """`repo` if it is OWNER/NAME as GitHub allows them, else a SevimgError saying what is wrong."""
    owner, sep, name = repo.partition("/")
    why = ""
    if not sep:
        why = "it is not OWNER/NAME"
    elif not _OWNER.fullmatch(owner) or len(owner) > 39:
        why = (
            f"the owner {owner!r} must be 1-39 letters, digits or single hyphens, "
            "not starting or ending with a hyphen"
        )
    elif not _REPO.fullmatch(name):
        why = f"the name {name!r} must be 1-100 letters, digits, '.', '_' or '-'"
    elif name in (".", ".."):
        why = f"the name {name!r} is not a repository"
    elif name.lower().endswith(".git"):
        why = f"the name {name!r} ends in .git, which GitHub does not allow (leave .git off)"
    if why:
        raise SevimgError(f"{source}: {repo!r} is not a repository name such as owner/name: {why}")
    return repo


def url_segment(value: str) -> str:
    """`value` as one URL path segment: percent-encoded, and never `.` or `..` (defence in depth)."""
    encoded = quote(value, safe="")
    if encoded in (".", ".."):
        encoded = encoded.replace(".", "%2E")
    return encoded


# --- waiting -----------------------------------------------------------------------------


class Clock(Protocol):
    """What the client needs of time: the current epoch seconds, and a way to wait."""

    def time(self) -> float:
        """Seconds since the epoch."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait this long."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        """Wait for real."""
        time.sleep(seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts for 5xx and network errors, backoff, and rate-limit waits."""

    attempts: int = 6  # 5xx and network errors: the first try and five retries
    backoff: float = 2.0  # seconds before the first retry, doubling
    backoff_cap: float = 60.0
    secondary_backoff: float = 60.0  # GitHub: "wait at least one minute", then longer
    max_wait: float = 3900.0  # a primary limit resets within the hour
    max_rate_limit_waits: int = 8

    def delay(self, attempt: int) -> float:
        """Backoff before retry number `attempt` (0 for the first retry)."""
        return float(min(self.backoff_cap, self.backoff * 2**attempt))


# --- data ----------------------------------------------------------------------------------


class GitHubError(SevimgError):
    """A GitHub call failed; the message is one line and holds no token."""

    def __init__(
        self, message: str, *, status: int | None = None, codes: Iterable[str] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.codes = tuple(codes)


@dataclass(frozen=True)
class Release:
    """The parts of a release sevimg uses."""

    id: int
    tag_name: str
    draft: bool
    prerelease: bool
    upload_url: str
    html_url: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Release:
        """From GitHub's release object."""
        return cls(
            id=int(data["id"]),
            tag_name=str(data["tag_name"]),
            draft=bool(data.get("draft")),
            prerelease=bool(data.get("prerelease")),
            upload_url=str(data["upload_url"]),
            html_url=str(data.get("html_url") or ""),
        )


@dataclass(frozen=True)
class Asset:
    """The parts of a release asset sevimg uses."""

    id: int
    name: str
    label: str
    state: str  # "uploaded", or "starter" for an upload that never finished
    content_type: str
    size: int
    digest: str | None  # "sha256:<hex>" (GitHub computes it on upload)

    @property
    def sha256(self) -> str | None:
        """The hex SHA-256 from `digest`, when GitHub gave one."""
        if self.digest and self.digest.startswith("sha256:"):
            return self.digest.removeprefix("sha256:")
        return None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Asset:
        """From GitHub's asset object."""
        return cls(
            id=int(data["id"]),
            name=str(data["name"]),
            label=str(data.get("label") or ""),
            state=str(data.get("state") or "uploaded"),
            content_type=str(data.get("content_type") or ""),
            size=int(data.get("size") or 0),
            digest=data["digest"] if isinstance(data.get("digest"), str) else None,
        )


# --- the client ----------------------------------------------------------------------------


class GitHub:
    """GitHub's releases API for one repository."""

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

    def __enter__(self) -> GitHub:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GitHub({self.repo!r}, api_url={self.api_url!r}, token={self.token!r})"

    def scrub(self, text: str) -> str:
        """Text safe to show: without the token, and without credentials in URLs."""
        return self.token.scrub(text) if self.token else redact_text(text)

    def _url(self, path: str) -> str:
        owner, _, name = self.repo.partition("/")
        return f"{self.api_url}/repos/{url_segment(owner)}/{url_segment(name)}{path}"

    # --- releases ----------------------------------------------------------------------

    def release_by_tag(self, tag: str) -> Release | None:
        """The published release for `tag`, or None (GitHub hides drafts from this call)."""
        response = self._send(
            "GET",
            self._url(f"/releases/tags/{url_segment(tag)}"),
            what=f"looking up release {tag} of {self.repo}",
            ok=(200, 404),
        )
        if response.status_code == 404:
            return None
        return Release.from_json(self._json(response, dict))

    def draft_by_tag(self, tag: str) -> Release | None:
        """A draft release named for `tag` (left by an interrupted publish), newest first.

        A 404 counts as "no draft": some GitHub-compatible servers do not
        list releases, and for a repository that really is missing the next
        call (creating the release) says so.
        """
        try:
            for data in self._paginate(
                self._url("/releases"), what=f"listing releases of {self.repo}"
            ):
                if data.get("draft") and data.get("tag_name") == tag:
                    return Release.from_json(data)
        except GitHubError as exc:
            if exc.status != 404:
                raise
        return None

    def create_release(
        self, tag: str, *, prerelease: bool, name: str, body: str, target: str | None
    ) -> Release:
        """Create a draft release for `tag` (it is published later, with :meth:`publish_release`)."""
        payload: dict[str, Any] = {
            "tag_name": tag,
            "name": name,
            "body": body,
            "draft": True,
            "prerelease": prerelease,
        }
        if target:
            payload["target_commitish"] = target
        # Not retried on 5xx: a retried POST could make a second draft. The
        # caller looks for the draft before trying again.
        response = self._send(
            "POST",
            self._url("/releases"),
            what=f"creating release {tag} in {self.repo}",
            json=payload,
            ok=(201,),
            retry_errors=False,
        )
        return Release.from_json(self._json(response, dict))

    def publish_release(self, release: Release) -> Release:
        """Make a draft visible (dispatch and anonymous users see it from now on)."""
        response = self._send(
            "PATCH",
            self._url(f"/releases/{release.id}"),
            what=f"publishing release {release.tag_name} of {self.repo}",
            json={"draft": False},
        )
        return Release.from_json(self._json(response, dict))

    # --- assets ------------------------------------------------------------------------

    def list_assets(self, release: Release) -> list[Asset]:
        """Every asset of `release`, following pagination."""
        return [
            Asset.from_json(data)
            for data in self._paginate(
                self._url(f"/releases/{release.id}/assets"),
                what=f"listing the assets of release {release.tag_name}",
            )
        ]

    def delete_asset(self, asset: Asset) -> None:
        """Delete an asset; one that is already gone counts as deleted."""
        self._send(
            "DELETE",
            self._url(f"/releases/assets/{asset.id}"),
            what=f"deleting asset {asset.name}",
            ok=(204, 404),
        )

    def rename_asset(self, asset: Asset, name: str, label: str) -> Asset:
        """Rename an asset (its content type cannot change this way)."""
        response = self._send(
            "PATCH",
            self._url(f"/releases/assets/{asset.id}"),
            what=f"renaming asset {asset.name} to {name}",
            json={"name": name, "label": label},
        )
        return Asset.from_json(self._json(response, dict))

    def upload_asset(
        self,
        release: Release,
        path: Path,
        *,
        name: str,
        label: str,
        content_type: str,
        sha256: str,
        progress: ProgressFn | None = None,
        content: bytes | None = None,
    ) -> Asset:
        """Upload `path` (or `content`) as asset `name`, streaming it, and return the new asset.

        After a 5xx or a dropped connection, an asset GitHub kept under
        `name` is inspected: a complete one with the right digest is the
        upload (only the answer was lost); anything else, such as an empty
        asset in state `starter`, is deleted before trying again.
        """
        size = len(content) if content is not None else path.stat().st_size
        url = re.sub(r"\{[^}]*\}$", "", release.upload_url)
        what = f"uploading {name}"

        def body() -> Iterator[bytes]:
            sent = 0
            if progress:
                progress(0)
            chunks: Iterable[bytes] = [content] if content is not None else iter_chunks(path)
            for chunk in chunks:
                sent += len(chunk)
                yield chunk
                if progress:
                    progress(sent)

        attempt = 0
        while True:
            try:
                response = self._send(
                    "POST",
                    url,
                    what=what,
                    params={"name": name, "label": label},
                    headers={"Content-Type": content_type, "Content-Length": str(size)},
                    body=body,
                    ok=(201,),
                    retry_errors=False,
                )
                return Asset.from_json(self._json(response, dict))
            except GitHubError as exc:
                retryable = exc.status is None or exc.status >= 500
                duplicate = exc.status == 422 and "already_exists" in exc.codes
                if not (retryable or duplicate) or attempt + 1 >= self.retry.attempts:
                    raise
                leftover = [a for a in self.list_assets(release) if a.name == name]
                done = [
                    a
                    for a in leftover
                    if a.state == "uploaded"
                    and a.sha256 == sha256
                    and a.content_type == content_type
                ]
                if done:
                    return done[0]
                if duplicate and not leftover:
                    raise
                if duplicate and any(a.state == "uploaded" for a in leftover):
                    raise  # a real asset of that name, not ours to delete here
                for asset in leftover:
                    self.log(
                        f"removing the incomplete asset {asset.name} (state {asset.state}) left by a failed upload"
                    )
                    self.delete_asset(asset)
                if retryable:
                    delay = self.retry.delay(attempt)
                    self.log(f"{what} failed ({exc.message}); retrying in {delay:g} s")
                    self.clock.sleep(delay)
                attempt += 1

    # --- plumbing ----------------------------------------------------------------------

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
        except ValueError:
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
        attempt = 0
        waits = 0
        secondary = 0
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
                if not retry_errors or attempt + 1 >= self.retry.attempts:
                    raise error from None
                delay = self.retry.delay(attempt)
                self.log(f"{what}: {reason}; retrying in {delay:g} s")
                self.clock.sleep(delay)
                attempt += 1
                continue

            if response.status_code in ok:
                return response
            wait = self._rate_limit_wait(response, secondary)
            if wait is not None:
                kind, seconds = wait
                waits += 1
                secondary += kind == "secondary"
                if waits > self.retry.max_rate_limit_waits:
                    raise GitHubError(
                        f"{what}: still rate limited by GitHub after {waits - 1} waits; try again later",
                        status=response.status_code,
                    )
                if seconds > self.retry.max_wait:
                    raise GitHubError(
                        f"{what}: GitHub's {kind} rate limit lifts only in {seconds / 60:.0f} minutes; try again later",
                        status=response.status_code,
                    )
                self.log(f"{what}: GitHub {kind} rate limit; waiting {seconds:.0f} s")
                self.clock.sleep(seconds)
                continue
            if response.status_code >= 500 and retry_errors and attempt + 1 < self.retry.attempts:
                delay = self.retry.delay(attempt)
                self.log(f"{what}: GitHub answered {response.status_code}; retrying in {delay:g} s")
                self.clock.sleep(delay)
                attempt += 1
                continue
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
    except ValueError:
        return ""
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return ""


def _error_codes(response: httpx.Response) -> tuple[str, ...]:
    """The `code` of each entry of a 422's `errors`."""
    try:
        data = response.json()
    except ValueError:
        return ()
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return ()
    return tuple(str(e["code"]) for e in errors if isinstance(e, dict) and "code" in e)
