"""rpm-md repositories: repomd.xml, then primary and filelists by checksum.

The standard library's XML parser reads them (iterparse: filelists are large),
never a regular expression. Pure: bytes in, records out.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sevimg.archive.compress import ArchiveError
from sevimg.display import printable

REPO_NS = "{http://linux.duke.edu/metadata/repo}"
COMMON_NS = "{http://linux.duke.edu/metadata/common}"
RPM_NS = "{http://linux.duke.edu/metadata/rpm}"
FILELISTS_NS = "{http://linux.duke.edu/metadata/filelists}"
SKIP_ARCHES = frozenset({"src", "nosrc", "i686", "i386", "aarch64", "ppc64le", "s390x"})


@dataclass(frozen=True)
class RepoFile:
    """One metadata file repomd.xml names."""

    kind: str  # primary, filelists, ...
    href: str
    checksum_type: str
    checksum: str
    size: int | None = None


@dataclass(frozen=True)
class RpmPackage:
    """One binary package of primary.xml."""

    name: str
    epoch: str
    version: str
    release: str
    arch: str
    provides: tuple[str, ...] = ()

    @property
    def evr(self) -> str:
        """epoch:version-release as rpm prints it (no epoch when 0)."""
        head = f"{self.epoch}:" if self.epoch not in ("", "0") else ""
        return f"{head}{self.version}-{self.release}"


def _parse(data: bytes, where: str) -> ET.Element:
    try:
        return ET.fromstring(data)  # noqa: S314 - signed or checksummed metadata, no DTDs
    except ET.ParseError as exc:
        raise ArchiveError(f"{where}: not valid XML ({exc})") from None


def parse_repomd(data: bytes, where: str) -> dict[str, RepoFile]:
    """The metadata files repomd.xml lists, by type."""
    root = _parse(data, where)
    if root.tag != f"{REPO_NS}repomd":
        raise ArchiveError(f"{where}: not a repomd.xml (root element {printable(root.tag)[:80]})")
    found: dict[str, RepoFile] = {}
    for item in root.findall(f"{REPO_NS}data"):
        kind = item.get("type", "")
        location = item.find(f"{REPO_NS}location")
        checksum = item.find(f"{REPO_NS}checksum")
        size = item.find(f"{REPO_NS}size")
        if location is None or checksum is None or not location.get("href") or not checksum.text:
            raise ArchiveError(
                f"{where}: the {kind or 'unnamed'} entry has no location or checksum"
            )
        found[kind] = RepoFile(
            kind,
            location.get("href", ""),
            checksum.get("type", "sha256"),
            checksum.text.strip(),
            int(size.text)
            if size is not None and size.text and size.text.isascii() and size.text.isdigit()
            else None,
        )
    return found


def _iterparse(data: bytes, where: str) -> Iterable[tuple[str, ET.Element]]:
    try:
        yield from ET.iterparse(io.BytesIO(data), events=("end",))  # noqa: S314
    except ET.ParseError as exc:
        raise ArchiveError(f"{where}: not valid XML ({exc})") from None


def parse_primary(data: bytes, where: str) -> list[RpmPackage]:
    """The x86_64 and noarch packages of a primary.xml."""
    found: list[RpmPackage] = []
    for _, elem in _iterparse(data, where):
        if elem.tag != f"{COMMON_NS}package":
            continue
        name = elem.findtext(f"{COMMON_NS}name", "")
        arch = elem.findtext(f"{COMMON_NS}arch", "")
        version = elem.find(f"{COMMON_NS}version")
        if not name or version is None:
            raise ArchiveError(f"{where}: a package without name or version")
        if arch not in SKIP_ARCHES:
            provides = tuple(
                entry.get("name", "")
                for entry in elem.iterfind(f"{COMMON_NS}format/{RPM_NS}provides/{RPM_NS}entry")
            )
            found.append(
                RpmPackage(
                    name,
                    version.get("epoch", "0"),
                    version.get("ver", ""),
                    version.get("rel", ""),
                    arch,
                    tuple(p for p in provides if p),
                )
            )
        elem.clear()
    return found


def filelists_owners(data: bytes, where: str, paths: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Which packages filelists.xml says ship each of `paths`."""
    wanted = set(paths)
    owners: dict[str, set[str]] = {}
    for _, elem in _iterparse(data, where):
        if elem.tag != f"{FILELISTS_NS}package":
            continue
        if elem.get("arch") not in SKIP_ARCHES:
            for item in elem.iterfind(f"{FILELISTS_NS}file"):
                if item.text in wanted:
                    owners.setdefault(item.text, set()).add(elem.get("name", ""))
        elem.clear()
    return {path: tuple(sorted(names)) for path, names in owners.items()}


_TOKEN = re.compile(r"[0-9]+|[A-Za-z]+|~|\^")


def rpmvercmp(a: str, b: str) -> int:
    """rpm's comparison of two version (or release) strings: -1, 0 or 1.

    Digits beat letters, numbers compare as numbers, `~` sorts before
    anything (even the end), `^` after the end but before anything else.
    """
    if a == b:
        return 0
    x, y = _TOKEN.findall(a), _TOKEN.findall(b)
    while x or y:
        p, q = (x[0] if x else None), (y[0] if y else None)
        if p == "~" or q == "~":
            if p != "~":
                return 1
            if q != "~":
                return -1
        elif p == "^" or q == "^":
            if p is None:
                return -1
            if q is None:
                return 1
            if p != "^":
                return 1
            if q != "^":
                return -1
        elif p is None or q is None:
            break
        elif p.isdigit() != q.isdigit():
            return 1 if p.isdigit() else -1
        elif p.isdigit():
            if int(p) != int(q):
                return 1 if int(p) > int(q) else -1
        elif p != q:
            return 1 if p > q else -1
        x, y = x[1:], y[1:]
    if not x and not y:
        return 0
    return 1 if x else -1


def compare_evr(a: RpmPackage, b: RpmPackage) -> int:
    """Which of two packages rpm would call newer."""
    for x, y in ((a.epoch or "0", b.epoch or "0"), (a.version, b.version), (a.release, b.release)):
        if x.isdigit() and y.isdigit() and int(x) != int(y):
            return 1 if int(x) > int(y) else -1
        if (c := rpmvercmp(x, y)) != 0:
            return c
    return 0


def repo_files(repomd: Mapping[str, RepoFile], where: str, *kinds: str) -> list[RepoFile]:
    """The named metadata files, or an error naming the one repomd.xml lacks."""
    missing = [k for k in kinds if k not in repomd]
    if missing:
        raise ArchiveError(f"{where}: repomd.xml names no {', '.join(missing)} metadata")
    return [repomd[k] for k in kinds]
