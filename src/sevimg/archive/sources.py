"""Which repositories a spec's build reads, the same ones mkosi and sevimg's sandbox give apt/dnf.

Pure: the spec, its catalog entry and sevimg.local.yaml in, a list of
:class:`Source` out. apt: the machine's mirror (sevimg.local.yaml) or the
distribution's `repository.url`, with the family's pocket and security rules
(as build/sandbox.py writes them), the spec's components, then the release's
extra suites pinned to their packages; an archived release reads the archive
mirror's sources the spec carries. rpm: the distribution's
`repository.repodata` paths below the machine's mirror or `repository.url`,
then the release's extra repositories.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sevimg.catalog.index import Entry
from sevimg.catalog.spec import AptSource, ImageSpec, PackageManager
from sevimg.problems import SevimgError
from sevimg.redact import redact_url
from sevimg.settings import LocalConfig


class NotCovered(SevimgError):
    """The catalog does not say where this distribution's repositories are."""


@dataclass(frozen=True)
class Source:
    """One repository to read: an apt suite (with components) or an rpm-md baseurl."""

    kind: PackageManager
    url: str
    suite: str = ""
    components: tuple[str, ...] = ()
    keyring: str = ""
    only_packages: tuple[str, ...] = ()  # pinned: nothing else comes from it
    origin: str = ""  # where it was configured, for messages

    @property
    def label(self) -> str:
        """How messages name it (never with a mirror's password)."""
        url = redact_url(self.url)
        if self.kind == "apt":
            return f"{url.rstrip('/')} {self.suite} {'/'.join(self.components)}"
        return url


def _apt_main(spec: ImageSpec, entry: Entry, local: LocalConfig) -> list[Source]:
    family = entry.family
    distro = entry.records.distro if entry.records else None
    keyring = (distro.repository.keyring if distro and distro.repository else None) or (
        family.apt_keyring or ""
    )
    components = ("main", *spec.repositories)
    release = spec.mkosi_release
    mirror = local.apt_mirrors.get(spec.mkosi_distribution)
    if mirror is not None:
        url, security, origin = mirror.url, mirror.security_url, local.source or "sevimg.local.yaml"
    elif distro is not None and distro.repository is not None:
        url, security, origin = distro.repository.url, None, entry.distro_doc.display
    else:
        raise SevimgError(
            f"{entry.image}: images/{entry.distro}.yaml has no `repository: {{url: …}}` and "
            "sevimg.local.yaml no mirror for it: there is no archive to read",
        )
    if security is None:
        suffix = family.apt_security_suffix
        security = url.rstrip("/") + suffix if suffix else url
    pocketless = release in family.apt_suites_without_pockets
    sources = [Source("apt", url, release, components, keyring, origin=origin)]
    if not pocketless:
        sources.append(Source("apt", url, f"{release}-updates", components, keyring, origin=origin))
        sources.append(
            Source("apt", security, f"{release}-security", components, keyring, origin=origin)
        )
    return sources


def _rpm_main(spec: ImageSpec, entry: Entry, local: LocalConfig) -> list[Source]:
    repository: Any = entry.distro_doc.data.get("repository") or {}
    paths = repository.get("repodata") or []
    development = (entry.distro_doc.data.get("mkosi") or {}).get("prerelease_codename")
    if spec.mkosi_release == development and repository.get("repodata_prerelease"):
        paths = repository["repodata_prerelease"]
    mirror = spec.mirror or local.rpm_mirrors.get(spec.mkosi_distribution) or repository.get("url")
    if not paths or not mirror:
        raise NotCovered(
            f"{entry.image}: images/{entry.distro}.yaml gives no `repository: {{url, repodata}}`: "
            "sevimg does not know where its rpm-md repositories are",
            hint="add repository.url and repository.repodata (paths below it, with {release})",
        )
    origin = entry.distro_doc.display
    found = []
    for path in paths:
        where = path.replace("{release}", spec.mkosi_release)
        if "://" not in where:  # below the mirror; a full URL (EPEL) stays as written
            where = f"{mirror.rstrip('/')}/{where.strip('/')}"
        found.append(Source("rpm", where, origin=origin))
    return found


def _suites(source: AptSource, origin: str, *, pinned: bool = True) -> list[Source]:
    """One Source a suite of an apt source (`pinned`: with the packages pinned to it)."""
    return [
        Source(
            "apt",
            source.url,
            suite,
            source.components,
            source.signed_by,
            source.only_packages if pinned else (),
            origin=origin,
        )
        for suite in source.suites
    ]


def sources_for(spec: ImageSpec, entry: Entry, local: LocalConfig) -> tuple[Source, ...]:
    """The repositories one image's build installs from, main ones first."""
    release_file = entry.release.display
    found: list[Source] = []
    if entry.family.is_apt:
        extras = list(spec.apt_sources)
        if spec.apt_replace_default_sources and extras:
            found += _suites(extras.pop(0), release_file, pinned=False)
        else:
            found += _apt_main(spec, entry, local)
        for extra in extras:
            found += _suites(extra, release_file)
    else:
        found += _rpm_main(spec, entry, local)
        found += [
            Source(
                "rpm",
                repo.baseurl.replace("$releasever", spec.mkosi_release).replace(
                    "$basearch", "x86_64"
                ),
                only_packages=repo.only_packages,
                origin=release_file,
            )
            for repo in spec.rpm_repos
        ]
    return tuple(found)
