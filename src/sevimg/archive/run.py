"""One `sevimg archive` run: every role of the chosen releases, against their repositories."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sevimg.archive.check import RoleReport, check_role
from sevimg.archive.fetch import Fetcher
from sevimg.archive.read import Reader
from sevimg.archive.sources import NotCovered, sources_for
from sevimg.catalog.index import Entry
from sevimg.catalog.resolve import resolve_all
from sevimg.problems import SevimgError
from sevimg.settings import LocalConfig


@dataclass(frozen=True)
class Outcome:
    """The reports of one release, or why its archive could not be read."""

    image: str
    reports: tuple[RoleReport, ...] = ()
    failure: str = ""  # the error that stopped the reading (unreachable, bad signature, ...)
    hint: str = ""
    skipped: str = ""  # why it was not checked (the catalog names no repositories for it)

    @property
    def ok(self) -> bool:
        """No failure and no errors in any role."""
        return not self.failure and not any(r.errors for r in self.reports)


def _hint404(entry: Entry) -> str:
    records = entry.records
    if records is None or records.release.archived or records.release.status == "prerelease":
        return ""
    if url := records.distro.mkosi.archive_mirror:
        return (
            f"if {entry.image} has moved to the archive, say `archived: true` in "
            f"{entry.release.display} (its archive mirror is {url})"
        )
    return ""


Progress = Callable[[str, str], None]  # (release, what is being read)


def _quiet(_image: str, _what: str) -> None:
    return None


def check_entry(
    entry: Entry, local: LocalConfig, reader: Reader, progress: Progress = _quiet
) -> Outcome:
    """Read the repositories of every role of `entry` and judge each role."""
    specs, problems = resolve_all(entry)
    if problems:
        raise SevimgError(f"{entry.image} does not resolve", problems)
    reports: list[RoleReport] = []
    try:
        for spec in specs:
            sources = sources_for(spec, entry, local)
            paths = (
                tuple(p for p in (spec.payload.sev_firmware, spec.payload.qemu_binary) if p)
                if spec.role == "host"
                else ()
            )
            indexes = []
            for source in sources:
                progress(entry.image, f"reading {source.label} ({spec.role})")
                indexes.append(reader.read(source, paths, hint404=_hint404(entry)))
            reports.append(check_role(spec, entry.family, indexes))
    except NotCovered as exc:
        return Outcome(entry.image, skipped=exc.message)
    except SevimgError as exc:  # ArchiveError, and sources the catalog cannot give
        return Outcome(entry.image, tuple(reports), exc.message, exc.hint)
    return Outcome(entry.image, tuple(reports))


def check_entries(
    entries: Iterable[Entry], local: LocalConfig, fetcher: Fetcher, progress: Progress = _quiet
) -> list[Outcome]:
    """:func:`check_entry` for each release, sharing one reader (each index read once);
    `progress` hears of each repository as it is read."""
    reader = Reader(fetcher)
    return [check_entry(entry, local, reader, progress) for entry in entries]
