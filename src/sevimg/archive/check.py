"""What a spec would get from its repositories, judged: packages, versions, floors, files.

Pure: a spec and the indexes read for it in, a :class:`RoleReport` out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from sevimg.archive.read import RepoIndex, compare_versions
from sevimg.catalog import versions as floors
from sevimg.catalog.spec import FamilyFacts, ImageSpec

# Compared with the declared versions and the floors; systemd is reported only.
DECLARED = ("kernel", "qemu", "ovmf")
_UPSTREAM = re.compile(r"[0-9]+(?:\.[0-9]+)*")


@dataclass(frozen=True)
class PackageResult:
    """One package the spec installs."""

    name: str
    found: bool
    version: str | None = None
    repository: str | None = None
    via: str | None = None  # the real package when `name` is virtual


@dataclass(frozen=True)
class ComponentResult:
    """A versioned component: what the build would install, against what the catalog says."""

    kind: str  # kernel, qemu, ovmf, systemd
    package: str
    version: str | None  # the package version, as the archive writes it
    upstream: str | None  # its upstream part: 1:10.0.13+ds-1 → 10.0.13
    declared: str | None
    verdict: str  # a floor's verdict (host), or "" when no floor applies
    drift: bool  # declared and observed upstream versions differ


@dataclass(frozen=True)
class FileResult:
    """A file the host needs (the SEV firmware, the QEMU binary) and who ships it."""

    what: str
    path: str
    package: str  # the package expected to ship it
    owners: tuple[str, ...]
    checked: bool  # False when no repository had a file index

    @property
    def ok(self) -> bool:
        """Whether a package the image installs ships it."""
        return self.package in self.owners


@dataclass(frozen=True)
class RoleReport:
    """Everything found for one role of one release."""

    image: str
    role: str
    sources: tuple[str, ...]
    packages: tuple[PackageResult, ...]
    components: tuple[ComponentResult, ...]
    files: tuple[FileResult, ...]
    errors: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())


def upstream(version: str) -> str | None:
    """The upstream part of a package version: 1:10.0.13+ds-0+deb13u1 → 10.0.13, 20251119-3.fc44 → 20251119."""
    core = version.split(":", 1)[1] if ":" in version.split("-", 1)[0] else version
    match = _UPSTREAM.match(core)
    return match.group(0) if match else None


def candidate(name: str, indexes: Sequence[RepoIndex]) -> tuple[str, RepoIndex] | None:
    """The version of `name` the package manager would install, and where from.

    A repository pinned to a few packages gives only those at full priority;
    anything else from it is a fallback, as the rendered apt preferences say.
    """
    best: tuple[str, RepoIndex] | None = None
    fallback: tuple[str, RepoIndex] | None = None
    for index in indexes:
        version = index.versions.get(name)
        if version is None:
            continue
        kind = index.source.kind
        pinned = index.source.only_packages
        if pinned and name not in pinned:
            if fallback is None or compare_versions(kind, version, fallback[0]) > 0:
                fallback = (version, index)
            continue
        if best is None or compare_versions(kind, version, best[0]) > 0:
            best = (version, index)
    return best or fallback


def providers(name: str, indexes: Sequence[RepoIndex]) -> list[str]:
    """Real packages that provide the virtual package `name`."""
    found: set[str] = set()
    for index in indexes:
        found.update(index.provides.get(name, ()))
    return sorted(found)


def check_role(spec: ImageSpec, family: FamilyFacts, indexes: Sequence[RepoIndex]) -> RoleReport:
    """Judge one spec against the indexes of its repositories."""
    errors: list[str] = []
    warnings: list[str] = []
    searched = ", ".join(index.source.label for index in indexes)
    packages: list[PackageResult] = []
    for name in spec.packages:
        if found := candidate(name, indexes):
            packages.append(PackageResult(name, True, found[0], found[1].source.label))
        elif real := providers(name, indexes):
            via = real[0]
            got = candidate(via, indexes)
            packages.append(
                PackageResult(
                    name, True, got[0] if got else None, got[1].source.label if got else None, via
                )
            )
        else:
            packages.append(PackageResult(name, False))
            errors.append(f"package {name!r} is in no repository the build reads ({searched})")

    components: list[ComponentResult] = []
    kinds = [(kind, spec.component(kind)) for kind in DECLARED] + [
        ("systemd", family.package("systemd"))
    ]
    host = spec.role == "host"
    for kind, package in kinds:
        if package is None:
            continue
        found = candidate(package, indexes)
        version = found[0] if found else None
        if version is None and (real := providers(package, indexes)):
            got = candidate(real[0], indexes)
            version = got[0] if got else None
        up = upstream(version) if version else None
        declared = getattr(spec.versions, kind, None) if kind in DECLARED else None
        verdict = ""
        floor = next((f for f in floors.HOST_FLOORS if f.component == kind), None)
        if host and floor is not None and version is not None:
            verdict = str(floor.check(up))
            if verdict == "fail":
                errors.append(
                    f"{kind}: {package} {version} is below the SEV floor {floor.minimum} ({floor.why})"
                )
            elif verdict == "warn":
                warnings.append(
                    f"{kind}: {package} {version} is below the guide's floor "
                    f"{floor.recommended} ({floor.guide_why})"
                )
        drift = False
        if declared is not None and up is not None:
            try:
                drift = floors.compare(up, declared) != 0
            except ValueError:
                drift = True
            if drift:
                errors.append(
                    f"{kind}: the catalog declares {declared}, the archive has {up} ({package} {version}); "
                    "`sevimg archive --update` writes it"
                )
        components.append(ComponentResult(kind, package, version, up, declared, verdict, drift))

    files: list[FileResult] = []
    if host:
        wanted = [
            ("SEV firmware", spec.payload.sev_firmware, spec.component("ovmf")),
            ("QEMU binary", spec.payload.qemu_binary, spec.component("qemu")),
        ]
        for index in indexes:
            warnings += [f"{index.source.label}: {note}" for note in index.notes]
        for what, path, package in wanted:
            if not path or not package:
                continue
            owners: set[str] = set()
            for index in indexes:
                owners.update(index.files.get(path, ()))
            # Checked when the repository the package would come from had a file index.
            got = candidate(package, indexes)
            checked = got[1].file_index if got else any(i.file_index for i in indexes)
            result = FileResult(
                what, path, package, tuple(sorted(owners)), checked or package in owners
            )
            files.append(result)
            if not result.checked:
                warnings.append(
                    f"{what} {path}: the repository of {package} has no readable file index; not checked"
                )
            elif not result.ok:
                shipped = (
                    f"only {', '.join(result.owners)} ship it"
                    if result.owners
                    else "no package ships it"
                )
                errors.append(f"{what} {path} is not in {package}: {shipped}")
    return RoleReport(
        image=spec.image,
        role=spec.role,
        sources=tuple(index.source.label for index in indexes),
        packages=tuple(packages),
        components=tuple(components),
        files=tuple(files),
        errors=tuple(errors),
        warnings=tuple(warnings),
    )
