"""Read one repository's indexes into a small :class:`RepoIndex` (the side-effecting half).

Parsed summaries are cached next to the downloads, keyed by the index's
checksum: a Packages file of 70 000 stanzas is parsed once, not on every run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debian.debian_support import version_compare

from sevimg.archive import deb, rpmmd
from sevimg.archive.compress import ArchiveError, decompress, unpacked_limit
from sevimg.archive.fetch import Fetcher, HttpStatusError
from sevimg.archive.sources import Source
from sevimg.atomic import write_file_atomic
from sevimg.problems import SevimgError, parse_json
from sevimg.redact import redact_url

SUMMARY_FORMAT = 1
BAD_CONTENTS_RETRY = 6 * 3600  # seconds before a Contents file that did not match is tried again


@dataclass(frozen=True)
class RepoIndex:
    """What one repository carries, reduced to what the checks ask."""

    source: Source
    versions: Mapping[str, str]  # package → its newest version here
    provides: Mapping[str, tuple[str, ...]]  # virtual name → packages providing it
    files: Mapping[str, tuple[str, ...]]  # wanted path → packages shipping it
    file_index: bool  # whether a Contents/filelists index was read
    notes: tuple[str, ...] = ()  # what could not be read, and why (warnings)


def compare_versions(kind: str, a: str, b: str) -> int:
    """Which of two package versions the package manager of `kind` calls newer."""
    if kind == "apt":
        return version_compare(a, b)
    return rpmmd.compare_evr(_evr(a), _evr(b))


def _evr(text: str) -> rpmmd.RpmPackage:
    epoch, _, rest = text.rpartition(":")
    version, _, release = rest.rpartition("-")
    return rpmmd.RpmPackage("", epoch or "0", version or rest, release if version else "", "")


class Reader:
    """Reads repositories through one fetcher, each at most once per run."""

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self._done: dict[tuple[Source, tuple[str, ...]], RepoIndex] = {}

    def read(self, source: Source, paths: Iterable[str] = (), *, hint404: str = "") -> RepoIndex:
        """The index of `source`, with the owners of `paths` when it has a file index."""
        key = (source, tuple(sorted(paths)))
        if key not in self._done:
            try:
                if source.kind == "apt":
                    self._done[key] = self._apt(source, key[1])
                else:
                    self._done[key] = self._rpm(source, key[1])
            except HttpStatusError as exc:
                if exc.status == 404 and hint404:
                    raise ArchiveError(exc.message, hint=hint404) from None
                raise
        return self._done[key]

    # --- cached summaries --------------------------------------------------------

    def _summary(self, digest: str, what: str, make: Any) -> Any:
        path = self.fetcher.cache / "parsed" / f"{what}-{SUMMARY_FORMAT}-{digest}.json"
        if path.is_file():
            try:
                return parse_json(path.read_bytes(), str(path))
            except (OSError, SevimgError):
                pass
        value = make()
        write_file_atomic(path, json.dumps(value, sort_keys=True).encode())
        return value

    @staticmethod
    def _recently_bad(marker: Path) -> bool:
        try:
            return time.time() - marker.stat().st_mtime < BAD_CONTENTS_RETRY
        except OSError:
            return False

    def _merge(
        self,
        kind: str,
        versions: dict[str, str],
        provides: dict[str, set[str]],
        summary: Mapping[str, list[Any]],
    ) -> None:
        for name, (version, provided) in summary.items():
            if name not in versions or compare_versions(kind, version, versions[name]) > 0:
                versions[name] = version
            for virtual in provided:
                provides.setdefault(virtual, set()).add(name)

    # --- apt ---------------------------------------------------------------------

    def _by_hash_or_path(
        self, release: deb.ReleaseInfo, base: str, entry: deb.IndexFile, kind: str
    ) -> bytes:
        """A file the Release names, by hash first; by path when the mirror keeps no by-hash
        copy (as apt does). Either way only the signed digest is accepted."""
        url = release.url(base, entry)
        try:
            return self.fetcher.get(
                url, sha256=entry.digest, size=entry.size, algorithm=entry.algorithm, kind=kind
            )
        except HttpStatusError as exc:
            if exc.status != 404 or url == base + entry.path:
                raise
        return self.fetcher.get(
            base + entry.path,
            sha256=entry.digest,
            size=entry.size,
            algorithm=entry.algorithm,
            kind=kind,
        )

    def _apt(self, source: Source, paths: tuple[str, ...]) -> RepoIndex:
        base = f"{source.url.rstrip('/')}/dists/{source.suite}/"
        where = redact_url(base + "InRelease")
        text = deb.verify_inrelease(self.fetcher.get(base + "InRelease"), source.keyring, where)
        release = deb.parse_release(text, where)
        versions: dict[str, str] = {}
        provides: dict[str, set[str]] = {}
        files: dict[str, set[str]] = {}
        file_index = False
        notes: list[str] = []
        for component in source.components:
            stem = f"{component}/binary-{deb.ARCH}/Packages"
            entry = release.pick(stem)
            if entry is None:
                raise ArchiveError(f"{where} lists no {stem} index (is {component!r} a component?)")
            url = base + entry.path

            def parse(entry: deb.IndexFile = entry, url: str = url) -> dict[str, list[Any]]:
                data = self._by_hash_or_path(release, base, entry, "packages")
                limit = unpacked_limit("packages", len(data))
                text = decompress(data, entry.path, redact_url(url), limit)
                summary: dict[str, list[Any]] = {}
                for pkg in deb.parse_packages(text, redact_url(url)):
                    old = summary.get(pkg.name)
                    if old is None or version_compare(pkg.version, old[0]) > 0:
                        summary[pkg.name] = [pkg.version, list(pkg.provides)]
                return summary

            self._merge("apt", versions, provides, self._summary(entry.digest, "packages", parse))
        # Debian keeps Contents per component, Ubuntu one per suite: read whichever
        # the Release lists (both arch-specific and arch: all).
        contents = [f"{c}/Contents-{a}" for c in source.components for a in (deb.ARCH, "all")]
        contents += [f"Contents-{a}" for a in (deb.ARCH, "all")]
        for stem in contents if paths else ():
            found = release.pick(stem)
            if found is None:
                continue
            curl = base + found.path

            def scan(found: deb.IndexFile = found, curl: str = curl) -> dict[str, list[str]]:
                data = self._by_hash_or_path(release, base, found, "contents")
                owners = deb.contents_from(data, found.path, redact_url(curl), paths)
                return {path: list(names) for path, names in owners.items()}

            tag = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]
            bad = self.fetcher.cache / "parsed" / f"contents-bad-{found.digest}"
            if self._recently_bad(bad):
                notes.append(
                    f"{found.path} not read: {bad.read_text().strip()} (known since "
                    f"{time.strftime('%H:%M', time.localtime(bad.stat().st_mtime))}; "
                    f"retried after {BAD_CONTENTS_RETRY // 3600} h)"
                )
                continue
            try:
                owners = self._summary(f"{found.digest}-{tag}", "contents", scan)
            except ArchiveError as exc:
                # Contents only tells who ships a file; a broken one leaves the
                # files unchecked (said so), the packages and versions stand. A mirror
                # whose Contents does not match its InRelease stays so for hours:
                # remembered, so each run does not download 40 MB to learn it again.
                notes.append(f"{found.path} not read: {exc.message}")
                if not self.fetcher.network.offline:
                    write_file_atomic(bad, exc.message.encode())
                continue
            file_index = True
            for path, names in owners.items():
                files.setdefault(path, set()).update(names)
        return RepoIndex(
            source,
            versions,
            {k: tuple(sorted(v)) for k, v in provides.items()},
            {k: tuple(sorted(v)) for k, v in files.items()},
            file_index,
            tuple(notes),
        )

    # --- rpm-md ------------------------------------------------------------------

    def _rpm(self, source: Source, paths: tuple[str, ...]) -> RepoIndex:
        base = source.url.rstrip("/") + "/"
        where = redact_url(base + "repodata/repomd.xml")
        repomd = rpmmd.parse_repomd(self.fetcher.get(base + "repodata/repomd.xml"), where)
        kinds = ("primary", "filelists") if paths else ("primary",)
        metadata = rpmmd.repo_files(repomd, where, *kinds)

        def fetch(item: rpmmd.RepoFile, kind: str) -> bytes:
            url = base + item.href
            try:
                data = self.fetcher.get(
                    url,
                    sha256=item.checksum,
                    size=item.size,
                    algorithm=item.checksum_type,
                    kind=kind,
                )
            except HttpStatusError as exc:
                raise ArchiveError(
                    f"{where} names {item.href}, which the mirror does not have "
                    f"(HTTP {exc.status})",
                    hint="the mirror is mid-sync or broken; run again later or use another mirror",
                ) from None
            return decompress(data, item.href, redact_url(url), unpacked_limit(kind, len(data)))

        primary = metadata[0]

        def parse() -> dict[str, list[Any]]:
            summary: dict[str, list[Any]] = {}
            for pkg in rpmmd.parse_primary(
                fetch(primary, "primary"), redact_url(base + primary.href)
            ):
                old = summary.get(pkg.name)
                if old is None or compare_versions("rpm", pkg.evr, old[0]) > 0:
                    summary[pkg.name] = [pkg.evr, list(pkg.provides)]
            return summary

        versions: dict[str, str] = {}
        provides: dict[str, set[str]] = {}
        self._merge("rpm", versions, provides, self._summary(primary.checksum, "primary", parse))
        files: dict[str, tuple[str, ...]] = {}
        if paths:
            filelists = metadata[1]

            def scan() -> dict[str, list[str]]:
                owners = rpmmd.filelists_owners(
                    fetch(filelists, "filelists"), redact_url(base + filelists.href), paths
                )
                return {path: list(names) for path, names in owners.items()}

            tag = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]
            files = {
                path: tuple(names)
                for path, names in self._summary(
                    f"{filelists.checksum}-{tag}", "filelists", scan
                ).items()
            }
        return RepoIndex(
            source, versions, {k: tuple(sorted(v)) for k, v in provides.items()}, files, bool(paths)
        )
