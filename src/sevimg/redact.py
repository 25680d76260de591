"""Keeping secrets out of what sevimg shows and writes.

Two kinds of secret reach sevimg: the GitHub token (a
:class:`sevimg.release.github_access.Token`, which never prints itself and
scrubs itself out of text with :func:`redact_text`), and credentials inside
URLs: `http://user:password@proxy:3128` in `proxy`, a mirror, `--api-url` or
the HTTP(S)_PROXY variables. :func:`redact_url` hides the user-info part of
one URL, :func:`redact_text` every such part inside free text (an error
message, a log line, a table cell). Both leave everything else as it was, so
a redacted message still says which host was meant.

Every module may use this one: it needs nothing from sevimg (problems
imports it to redact every message).
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, unquote, urlsplit

MASK = "***"

# scheme://userinfo@ : the user-info runs to the last `@` before the path,
# so a password with a raw `@` (or even a space) in it is still hidden
# whole. It never holds `/`, `?`, `#`, `"` or a line break, which ends the
# match at the URL in running text; at worst a message loses a few words
# after a URL, never a password.
_WITH_SCHEME = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)"
    r"(?P<userinfo>[^/?#@\"\r\n]*(?:@[^/?#@\"\r\n]*)*)@"
)
# user:password@host without a scheme, as curl, apt and the *_proxy variables
# accept it. A colon is required, so `git@github.com` and e-mail addresses stay.
_BARE = re.compile(
    r"(?<![\w:/@.%+~-])(?P<userinfo>[A-Za-z0-9._~%+-]+:[^\s/?#@'\"]*)@(?=[A-Za-z0-9\[])"
)


def redact_url(url: str) -> str:
    """`url` with its user and password (if any) replaced by `***`.

    `http://user:secret@proxy:3128/x` → `http://***@proxy:3128/x`; a URL
    without credentials comes back unchanged, as does text that is no URL.
    """
    return redact_text(url)


def redact_text(text: str) -> str:
    """`text` with the credentials of every URL in it replaced by `***`."""
    if "@" not in text:
        return text
    text = _WITH_SCHEME.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _BARE.sub(f"{MASK}@", text)


def has_credentials(url: str) -> bool:
    """True when `url` carries a user name or password."""
    return redact_url(url) != url


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(the URL without user-info, user, password), both percent-decoded; None when absent."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    bare = SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment).geturl()
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return bare, user, password
