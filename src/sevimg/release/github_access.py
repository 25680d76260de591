"""Which GitHub, which repository, and as whom: the API URL, the repository name and the token.

Checked before any connection is made, so a typo is an error naming the
option (or the environment variable) it came from, and the token is found
the way `gh` users expect.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from sevimg.problems import SevimgError
from sevimg.redact import MASK, redact_text

DEFAULT_API_URL = "https://api.github.com"


class Token:
    """A GitHub token that does not print itself.

    `repr`, `str` and f-strings show where it came from, never its value;
    :meth:`reveal` is the one way to read it (for the Authorization header),
    and :meth:`scrub` removes it, and any credentials in URLs, from text
    before that text is shown.
    """

    __slots__ = ("_secret", "source")

    def __init__(self, secret: str, source: str) -> None:
        secret = secret.strip()
        if not secret:
            raise SevimgError(f"the GitHub token from {source} is empty")
        # A token is one printable ASCII word; anything else would be refused
        # by httpx with an error message quoting it.
        if not all(33 <= ord(c) < 127 for c in secret):
            raise SevimgError(
                f"the GitHub token from {source} contains spaces, control or non-ASCII characters"
            )
        self._secret = secret
        self.source = source

    def reveal(self) -> str:
        """The token itself, for the Authorization header only."""
        return self._secret

    def scrub(self, text: str) -> str:
        """`text` without the token (replaced by `***`) and without credentials in URLs."""
        return redact_text(text.replace(self._secret, MASK))

    def __repr__(self) -> str:
        return f"Token(<hidden>, source={self.source!r})"

    def __str__(self) -> str:
        return "<hidden token>"

    def __reduce__(self) -> Any:
        raise TypeError("a Token cannot be pickled")


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
    if parts.scheme == "http" and not _loopback(parts.hostname):
        # The token would cross the network in clear text.
        raise bad(
            "plain http:// sends the token unencrypted; use https:// (http:// is for 127.0.0.1)"
        )
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


def _loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
