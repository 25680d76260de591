"""Catalog files as typed records, decoded once right after the schema check.

The schema already guarantees every shape, so decoding does not validate:
it turns a Document's data into frozen dataclasses the resolver and policy
read by attribute. Each record keeps where it came from (`Located`), so a
problem about one of its fields points at the same file:line:col as the
document itself would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sevimg.catalog.load import Document, JsonPath
from sevimg.catalog.spec import ROLES, Family, Role, Status, Versions
from sevimg.problems import Problem

SECTIONS = ("common", "guest", "host")


@dataclass(frozen=True)
class Located:
    """A place in a document: the document and the JSON path of a record."""

    doc: Document
    path: JsonPath

    def at(self, *parts: str | int) -> JsonPath:
        """The JSON path of a field below this record."""
        return (*self.path, *parts)

    def problem(self, *parts: str | int, message: str) -> Problem:
        """An error at a field below this record (none given: the record itself)."""
        return self.doc.problem(self.at(*parts), message)


@dataclass(frozen=True)
class KernelModuleRules:
    """`kernel_modules:` of a role section: modules to keep and to drop."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Section:
    """One of `common:`, `guest:`, `host:` or `debug:` in a family, distro or release file.

    Family and distro files give `packages` and `kernel_command_line`; release
    files give the add_/remove_ lists. A setting left out is None.
    """

    where: Located
    present: bool = False
    packages: tuple[str, ...] = ()
    kernel_command_line: tuple[str, ...] = ()
    add_packages: tuple[str, ...] = ()
    remove_packages: tuple[str, ...] = ()
    add_kernel_command_line: tuple[str, ...] = ()
    remove_kernel_command_line: tuple[str, ...] = ()
    kernel_modules: KernelModuleRules | None = None
    exclude_packages: tuple[str, ...] = ()
    kernel: str | None = None
    qemu: str | None = None
    ovmf: str | None = None
    systemd_boot: str | None = None
    qemu_binary: str | None = None
    sev_firmware: str | None = None
    size_budget_mb: float | None = None

    def setting(self, key: str) -> str | None:
        """A component or path setting by name (kernel, qemu, sev_firmware...)."""
        return cast(str | None, getattr(self, key))


@dataclass(frozen=True)
class Sections:
    """The role sections of one file, by name."""

    common: Section
    guest: Section
    host: Section

    def __getitem__(self, name: str) -> Section:
        return cast(Section, getattr(self, name))


@dataclass(frozen=True)
class FamilyRecord:
    """images/families/<family>.yaml: the role defaults a distribution may override."""

    where: Located
    kernel_command_line: tuple[str, ...]
    sections: Sections


@dataclass(frozen=True)
class MkosiSettings:
    """`mkosi:` of a distribution file."""

    distribution: str
    release_is_codename: bool = False
    repositories: tuple[str, ...] = ()
    repository_key_fetch: bool = False
    archive_mirror: str | None = None


@dataclass(frozen=True)
class Archive:
    """`repository:` of a distribution file: its main archive, for extra apt suites."""

    url: str
    keyring: str | None = None


@dataclass(frozen=True)
class DistroRecord:
    """images/<distro>.yaml."""

    where: Located
    name: str
    family: Family
    mkosi: MkosiSettings
    repository: Archive | None
    kernel_command_line: tuple[str, ...]
    sections: Sections
    source_date_epoch: int | None = None


@dataclass(frozen=True)
class ExtraRepository:
    """One entry of a release's `extra_repositories:`; keys left out are None."""

    where: Located
    index: int
    name: str
    packages: tuple[str, ...]
    roles: tuple[Role, ...] | None = None
    suite: str | None = None
    url: str | None = None
    components: tuple[str, ...] | None = None
    baseurl: str | None = None
    gpgkey: str | None = None
    gpgcheck: bool | None = None

    def has(self, key: str) -> bool:
        """Whether the file gives `key` for this repository."""
        return getattr(self, key) is not None


@dataclass(frozen=True)
class ReleaseRecord:
    """images/<distro>-<release>.yaml."""

    where: Located
    release: str
    status: Status
    codename: str | None
    name: str | None
    archived: bool
    roles: tuple[Role, ...] | None
    versions: Versions
    sections: Sections
    debug: Section
    extra_repositories: tuple[ExtraRepository, ...]
    source_date_epoch: int | None = None


@dataclass(frozen=True)
class Records:
    """The three files one release resolves from."""

    family: FamilyRecord
    distro: DistroRecord
    release: ReleaseRecord


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(cast(Sequence[str], value or ()))


def _section(doc: Document, data: Mapping[str, Any], name: str) -> Section:
    raw = cast(Mapping[str, Any], data.get(name) or {})
    modules = raw.get("kernel_modules")
    return Section(
        where=Located(doc, (name,)),
        present=name in data,
        packages=_strings(raw.get("packages")),
        kernel_command_line=_strings(raw.get("kernel_command_line")),
        add_packages=_strings(raw.get("add_packages")),
        remove_packages=_strings(raw.get("remove_packages")),
        add_kernel_command_line=_strings(raw.get("add_kernel_command_line")),
        remove_kernel_command_line=_strings(raw.get("remove_kernel_command_line")),
        kernel_modules=(
            KernelModuleRules(_strings(modules.get("include")), _strings(modules.get("exclude")))
            if modules
            else None
        ),
        exclude_packages=_strings(raw.get("exclude_packages")),
        size_budget_mb=raw.get("size_budget_mb"),
        **{key: raw.get(key) for key in _SETTINGS},
    )


_SETTINGS = ("kernel", "qemu", "ovmf", "systemd_boot", "qemu_binary", "sev_firmware")


def _sections(doc: Document, data: Mapping[str, Any]) -> Sections:
    return Sections(*(_section(doc, data, name) for name in SECTIONS))


def family_record(doc: Document) -> FamilyRecord:
    """A family document that passed its schema, decoded."""
    data = cast(Mapping[str, Any], doc.data)
    return FamilyRecord(
        where=Located(doc, ()),
        kernel_command_line=_strings(data.get("kernel_command_line")),
        sections=_sections(doc, data),
    )


def distro_record(doc: Document) -> DistroRecord:
    """A distribution document that passed its schema, decoded."""
    data = cast(Mapping[str, Any], doc.data)
    mkosi = cast(Mapping[str, Any], data["mkosi"])
    archive = cast(Mapping[str, Any] | None, data.get("repository"))
    return DistroRecord(
        where=Located(doc, ()),
        name=data["name"],
        family=data["family"],
        mkosi=MkosiSettings(
            distribution=mkosi["distribution"],
            release_is_codename=bool(mkosi.get("release_is_codename")),
            repositories=_strings(mkosi.get("repositories")),
            repository_key_fetch=bool(mkosi.get("repository_key_fetch")),
            archive_mirror=mkosi.get("archive_mirror") or None,
        ),
        # An empty `repository: {}` counts as none, as `or` did before.
        repository=Archive(archive["url"], archive.get("keyring") or None) if archive else None,
        kernel_command_line=_strings(data.get("kernel_command_line")),
        sections=_sections(doc, data),
        source_date_epoch=data.get("source_date_epoch"),
    )


def _extra_repository(doc: Document, index: int, raw: Mapping[str, Any]) -> ExtraRepository:
    components = raw.get("components")
    roles = raw.get("roles")
    return ExtraRepository(
        where=Located(doc, ("extra_repositories", index)),
        index=index,
        name=raw["name"],
        packages=_strings(raw["packages"]),
        roles=tuple(roles) if roles else None,
        suite=raw.get("suite"),
        url=raw.get("url"),
        components=tuple(components) if components is not None else None,
        baseurl=raw.get("baseurl"),
        gpgkey=raw.get("gpgkey"),
        gpgcheck=raw.get("gpgcheck"),
    )


def release_record(doc: Document) -> ReleaseRecord:
    """A release document that passed its schema, decoded."""
    data = cast(Mapping[str, Any], doc.data)
    roles = data.get("roles")
    return ReleaseRecord(
        where=Located(doc, ()),
        release=data["release"],
        status=data["status"],
        codename=data.get("codename"),
        name=data.get("name"),
        archived=bool(data.get("archived")),
        roles=tuple(roles) if roles else None,
        versions=Versions(**dict((data.get("versions") or {}).items())),
        sections=_sections(doc, data),
        debug=_section(doc, data, "debug"),
        extra_repositories=tuple(
            _extra_repository(doc, i, raw)
            for i, raw in enumerate(data.get("extra_repositories") or ())
        ),
        source_date_epoch=data.get("source_date_epoch"),
    )


def declared_roles(doc: Document) -> tuple[Role, ...]:
    """The roles of a release whose file may not have passed its schema (best effort)."""
    data = doc.data
    declared = (data.get("roles") if isinstance(data, dict) else None) or ROLES
    return tuple(r for r in ROLES if r in declared)
