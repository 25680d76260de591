"""`sevimg new` asks the archive: fill in the versions, warn about what is missing.

The network half of onboarding (catalog/scaffold.py stays pure): a new release
file is checked like `sevimg archive` would, the observed kernel, QEMU and OVMF
versions are written into it, and what is missing becomes advice. When the
archive cannot be read (offline, unreachable, no keyring) it says so. For a
pre-release, the archive names the development series (:mod:`.development`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sevimg.archive.development import Verdict, judge, read_series
from sevimg.archive.fetch import Fetcher, Network
from sevimg.archive.run import Outcome, check_entries
from sevimg.archive.update import update_file
from sevimg.catalog.index import Catalog, families_by_distribution
from sevimg.problems import SevimgError
from sevimg.settings import load_local

NEW_TIMEOUT = 20.0  # seconds per request: onboarding should not hang on a dead mirror


@dataclass(frozen=True)
class Onboarding:
    """What the archive said about a new release."""

    checked: bool
    reason: str = ""  # why it could not check
    versions: dict[str, str] = field(default_factory=dict)  # written into the file
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def observed_versions(outcome: Outcome) -> dict[str, str]:
    """kernel, QEMU and OVMF upstream versions of a release, the host's first."""
    found: dict[str, str] = {}
    for report in sorted(outcome.reports, key=lambda r: r.role != "host"):
        for c in report.components:
            if c.kind in ("kernel", "qemu", "ovmf") and c.upstream and c.kind not in found:
                found[c.kind] = c.upstream
    return found


def check_new(catalog: Catalog, image: str, *, offline: bool) -> Onboarding:
    """Read the archive of the new release `image` and fill in its versions."""
    if offline:
        return Onboarding(False, "offline (--offline or SEVIMG_OFFLINE)")
    ws = catalog.workspace
    try:
        families = families_by_distribution(catalog)
        local = load_local(ws, {d for d, f in families.items() if f.is_apt})
        entry = catalog.get(image)
        network = Network(proxy=local.proxy, timeout=NEW_TIMEOUT, settings=local.source or "")
        fetcher = Fetcher(ws.cache_dir / "archive", network)
        try:
            (outcome,) = check_entries([entry], local, fetcher)
        finally:
            fetcher.close()
    except SevimgError as exc:
        return Onboarding(False, exc.message + (f" ({exc.hint})" if exc.hint else ""))
    if outcome.failure:
        return Onboarding(False, outcome.failure + (f" ({outcome.hint})" if outcome.hint else ""))
    versions = observed_versions(outcome)
    if versions:
        update_file(entry.release, versions)
    errors = tuple(
        f"{r.role}: {m}" for r in outcome.reports for m in r.errors if "declares" not in m
    )
    warnings = tuple(f"{r.role}: {m}" for r in outcome.reports for m in r.warnings)
    return Onboarding(True, versions=versions, errors=errors, warnings=warnings)


def development_verdict(catalog: Catalog, distro: str, release: str) -> Verdict | None:
    """What the distribution's archive says of pre-release `release` (None: it names no suite).

    Reads `repository.development_suite` (and `released_suite`) of
    images/<distro>.yaml, signed with the distribution's keyring; a
    SevimgError (ArchiveError) when the archive cannot be read.
    """
    doc = catalog.distros[distro]
    repository = doc.data.get("repository") or {}
    suite = repository.get("development_suite")
    if not suite:
        return None
    family = catalog.families.get(str(doc.data.get("family")))
    keyring = repository.get("keyring") or (family[1].apt_keyring if family else None) or ""
    families = families_by_distribution(catalog)
    local = load_local(catalog.workspace, {d for d, f in families.items() if f.is_apt})
    mirror = local.apt_mirrors.get(doc.data["mkosi"]["distribution"])
    url = mirror.url if mirror else repository["url"]
    network = Network(proxy=local.proxy, timeout=NEW_TIMEOUT, settings=local.source or "")
    fetcher = Fetcher(catalog.workspace.cache_dir / "archive", network)
    try:
        development = read_series(url, suite, keyring, fetcher)
        released = repository.get("released_suite")
        newest = read_series(url, released, keyring, fetcher) if released else None
    finally:
        fetcher.close()
    return judge(release, development, newest)
