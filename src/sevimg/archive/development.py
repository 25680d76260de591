"""What a distribution's archive says about its development series, for `sevimg new --prerelease`.

A distribution file may name, below `repository:`, the suite whose signed
InRelease always describes the development series (`development_suite`:
Ubuntu's `devel`, Debian's `testing`) and the one that describes the newest
release (`released_suite`: Debian's `stable`). Their Codename and Version
fields tell `new` which codename a pre-release is built from, and whether the
release it was asked for is out already. The decision is a pure function
(:func:`judge`); reading the archive is :func:`read_series`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from debian.deb822 import Release

from sevimg.archive import deb
from sevimg.archive.compress import ArchiveError
from sevimg.archive.fetch import Fetcher
from sevimg.redact import redact_url

_NUMBER = re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,4}){0,3}")


@dataclass(frozen=True)
class Series:
    """One suite's InRelease: the series it names now."""

    suite: str
    codename: str
    version: str  # "27.04", "13.8"; "" when the Release gives none (Debian testing)
    url: str  # the InRelease, for messages


@dataclass(frozen=True)
class Verdict:
    """What `new --prerelease` makes of a release name, given the archive's series."""

    codename: str | None  # the development series' codename when the release is it
    warning: str = ""
    note: str = ""  # how the codename was found, for the output and the file's comment


def _number(text: str) -> tuple[int, ...] | None:
    return tuple(int(p) for p in text.split(".")) if _NUMBER.fullmatch(text) else None


def read_series(url: str, suite: str, keyring: str, fetcher: Fetcher) -> Series:
    """The Codename and Version of `url`/dists/`suite`/InRelease, checked with `keyring`."""
    where = f"{url.rstrip('/')}/dists/{suite}/InRelease"
    shown = redact_url(where)
    text = deb.verify_inrelease(fetcher.get(where), keyring, shown)
    release: Any = Release(text)
    codename = str(release.get("Codename", "")).strip()
    version = str(release.get("Version", "")).strip()
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,31}", codename):
        raise ArchiveError(f"{shown}: no usable Codename ({codename[:40]!r})")
    if version and _number(version) is None:
        raise ArchiveError(f"{shown}: an unusable Version ({version[:40]!r})")
    return Series(suite, codename, version, shown)


def judge(release: str, development: Series, released: Series | None = None) -> Verdict:
    """Whether `release` is the development series, an earlier (released) one, or not yet open.

    The development series is known by its Version (Ubuntu's devel: 27.04), or,
    when its Release gives none (Debian's testing), as the release after the
    newest released one's major version (stable 13.8 → 14).
    """
    asked = _number(release)
    dev = _number(development.version) if development.version else None
    newest = _number(released.version) if released and released.version else None
    if asked is None:  # a named release (forky): the development series when it is its codename
        if release == development.codename:
            return Verdict(development.codename, note=f"{development.url} names it")
        return Verdict(None)
    if dev is None and newest is not None:
        dev = (newest[0] + 1,)
        asked = asked[:1]
    if dev is None:
        return Verdict(None)
    name = f"{development.codename} ({development.version or '.'.join(map(str, dev))})"
    if asked == dev:
        return Verdict(
            development.codename,
            note=f"the development series is {name}, from {development.url}",
        )
    if asked < dev:
        return Verdict(
            None,
            warning=f"{release} is already released (the development series is {name}, "
            f"from {development.url}): it is not a pre-release; drop --prerelease",
        )
    return Verdict(
        None,
        warning=f"{release} is not the development series yet (that is {name}, from "
        f"{development.url}): the archive has no repositories for it",
    )
