"""Resolve a release into one frozen :class:`ImageSpec` per role.

family defaults + distro defaults + release overrides + role → spec. Pure: takes documents
that passed the schema, returns a spec or raises :class:`ResolveError` with
located problems. Nothing here reads files or looks at the machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import cast

from sevimg.catalog import exclusions, payload, repositories
from sevimg.catalog.index import Entry
from sevimg.catalog.load import Document, JsonPath
from sevimg.catalog.records import (
    KernelModuleRules,
    MkosiSettings,
    ReleaseRecord,
    Section,
    declared_roles,
)
from sevimg.catalog.spec import (
    ROLES,
    AptSource,
    ImageSpec,
    KernelModules,
    Payload,
    Role,
)
from sevimg.problems import Problem, SevimgError

ARCHITECTURE = "x86-64"
COMPONENT_KEYS: Mapping[Role, tuple[str, ...]] = {
    "guest": ("kernel",),
    "host": ("kernel", "qemu", "ovmf"),
}


class ResolveError(SevimgError):
    """The release cannot be resolved; `problems` say where and why."""


def roles_of(entry: Entry) -> tuple[Role, ...]:
    """The roles a release provides, guest first (the build order)."""
    if entry.records is None:
        return declared_roles(entry.release)
    declared = entry.records.release.roles or ROLES
    return tuple(r for r in ROLES if r in declared)


def mkosi_release(release: ReleaseRecord) -> str:
    """What mkosi's Release= gets: the codename when there is one, else the release."""
    return release.codename or release.release


def resolve(entry: Entry, role: Role, *, debug: bool = False) -> ImageSpec:
    """The spec for one role of one release; raises ResolveError with located problems."""
    resolver = _Resolver(entry, role)
    spec = resolver.spec(debug=debug)
    if resolver.problems:
        raise ResolveError(f"{entry.image}: cannot resolve the {role} image", resolver.problems)
    return spec


def resolve_all(entry: Entry, *, debug: bool = False) -> tuple[list[ImageSpec], list[Problem]]:
    """Specs for every role of a release, and the problems of those that failed."""
    specs: list[ImageSpec] = []
    problems: list[Problem] = []
    for role in roles_of(entry):
        try:
            specs.append(resolve(entry, role, debug=debug))
        except ResolveError as exc:
            problems += exc.problems
    return specs, sorted(set(problems))


class _Resolver:
    def __init__(self, entry: Entry, role: Role) -> None:
        if entry.records is None:
            # The catalog marks such a release broken; its files' problems say why.
            raise ResolveError(f"{entry.image}: its catalog files have errors")
        self.entry = entry
        self.role = role
        self.f = entry.records.family
        self.d = entry.records.distro
        self.r = entry.records.release
        self.problems: list[Problem] = []

    # --- helpers -----------------------------------------------------------------

    def fail(self, doc: Document, path: JsonPath, message: str) -> None:
        self.problems.append(doc.problem(path, message))

    def layers(self, section: str) -> tuple[Section, Section, Section]:
        """One section of the release, the distro and the family, in that order."""
        return (self.r.sections[section], self.d.sections[section], self.f.sections[section])

    def setting(self, section: str, key: str) -> str | None:
        """A role setting: the release's value if it sets one, else the distro's, else the family's."""
        for layer in self.layers(section):
            value = layer.setting(key)
            if value is not None:
                return value
        self.fail(
            self.entry.distro_doc,
            (section,) if self.d.sections[section].present else (),
            f"the {self.role} image needs `{section}.{key}`: give it here "
            f"(or in {self.entry.family_doc.display})",
        )
        return None

    def sections(self) -> tuple[str, str]:
        return ("common", self.role)

    # --- the spec ----------------------------------------------------------------

    def spec(self, *, debug: bool) -> ImageSpec:
        family = self.d.family
        release = self.r.release
        codename = self.r.codename
        mkosi = self.d.mkosi
        self.check_roles()
        mrelease = self.check_release_name(mkosi, release, codename)

        components = self.components()
        packages = self.packages(components, debug=debug)
        layers = [layer for section in self.sections() for layer in self.layers(section)]
        excluded, problems = exclusions.excluded_packages(
            layers, packages, role=self.role, apt=self.entry.family.is_apt, distro=self.d.name
        )
        self.problems += problems
        apt_sources, rpm_repos, problems = repositories.extra_repositories(
            self.entry, self.role, packages
        )
        self.problems += problems
        mirror, replace_sources = self.archive(mkosi, self.r.archived, mrelease, apt_sources)
        if replace_sources:
            apt_sources = (replace_sources, *apt_sources)

        image = self.entry.image
        image_id = f"{self.role}-{image}" + ("-debug" if debug else "")
        environment = (("VERSION", release),) if release != mrelease else ()

        return ImageSpec(
            image=image,
            image_id=image_id,
            role=self.role,
            distro=self.entry.distro,
            distro_name=self.r.name or f"{self.d.name} {release}",
            family=family,
            release=release,
            codename=codename,
            status=self.r.status,
            # Every catalog file that shaped the image: release, distribution, family.
            sources=(
                self.entry.release.display,
                self.entry.distro_doc.display,
                self.entry.family_doc.display,
            ),
            source_sha256=(
                self.entry.release.sha256,
                self.entry.distro_doc.sha256,
                self.entry.family_doc.sha256,
            ),
            mkosi_distribution=mkosi.distribution,
            mkosi_release=mrelease,
            architecture=ARCHITECTURE,
            repositories=tuple(sorted(mkosi.repositories)),
            repository_key_fetch=mkosi.repository_key_fetch,
            mirror=mirror,
            apt_sources=apt_sources,
            apt_replace_default_sources=replace_sources is not None,
            rpm_repos=rpm_repos,
            packages=packages,
            components=tuple(sorted(components.items())),
            kernel_command_line=self.kernel_command_line(debug=debug),
            kernel_modules=self.kernel_modules(),
            remove_files=exclusions.remove_files(self.role, self.entry.family.removes(self.role)),
            # Neither image installs packages at run time: drop the package database.
            clean_package_metadata=True,
            environment=environment,
            autologin=debug,
            payload=self.payload(image, components, debug=debug),
            versions=self.r.versions,
            debug=debug,
            source_date_epoch=payload.source_date_epoch(
                self.r.source_date_epoch, self.d.source_date_epoch
            ),
            seed=payload.seed(image_id),
            size_budget_mb=self.size_budget(),
            compress_level=payload.COMPRESS_LEVEL[self.role],
            excluded_packages=excluded,
        )

    def size_budget(self) -> float | None:
        """The role's size budget: the release's, else the distribution's, else the family's."""
        budgets = (layer.size_budget_mb for layer in self.layers(self.role))
        return next((b for b in budgets if b is not None), None)

    def check_roles(self) -> None:
        roles = self.r.roles
        if roles and "host" in roles and "guest" not in roles:
            self.fail(
                self.entry.release,
                ("roles",),
                "a host embeds its release's guest, so a release with the host role needs the guest role too",
            )

    def check_release_name(self, mkosi: MkosiSettings, release: str, codename: str | None) -> str:
        if mkosi.release_is_codename and release[0].isdigit() and not codename:
            self.fail(
                self.entry.release,
                ("release",),
                f"{self.d.name}'s mkosi Release= is a codename: add `codename:` "
                f"(e.g. codename: trixie for Debian 13)",
            )
        return mkosi_release(self.r)

    def components(self) -> dict[str, str]:
        wanted: list[tuple[str, str]] = [(self.role, key) for key in COMPONENT_KEYS[self.role]]
        wanted.append(("common", "systemd_boot"))
        # A missing one is a problem already (setting() says where to add it).
        found = {key: self.setting(section, key) for section, key in wanted}
        return {key: value for key, value in found.items() if value is not None}

    def debug_section(self, debug: bool) -> Section:
        """The release's `debug:` additions, which only a debug image takes."""
        return self.r.debug if debug else Section(self.r.debug.where)

    def packages(self, components: Mapping[str, str], *, debug: bool) -> tuple[str, ...]:
        chosen: dict[str, None] = dict.fromkeys(components.values())
        # What sevimg's payload needs, in the family's package names.
        family = self.entry.family
        chosen.update(dict.fromkeys(family.package(n) for n in payload.NEEDS[self.role]))
        for section in self.sections():
            chosen.update(dict.fromkeys(self.f.sections[section].packages))
        for section in self.sections():
            chosen.update(dict.fromkeys(self.d.sections[section].packages))
        for section in self.sections():
            chosen.update(dict.fromkeys(self.r.sections[section].add_packages))
        chosen.update(dict.fromkeys(self.debug_section(debug).add_packages))
        for section in self.sections():
            for i, name in enumerate(self.r.sections[section].remove_packages):
                if name in chosen:
                    del chosen[name]
                else:
                    self.fail(
                        self.entry.release,
                        (section, "remove_packages", i),
                        f"{name!r} is not among the {self.role} image's packages, so it cannot be removed",
                    )
        return tuple(sorted(chosen))

    def kernel_command_line(self, *, debug: bool) -> tuple[str, ...]:
        tokens: dict[str, None] = dict.fromkeys(
            () if debug else payload.DEFAULT_KERNEL_COMMAND_LINE[self.role]
        )
        tokens.update(dict.fromkeys(self.f.kernel_command_line))
        tokens.update(dict.fromkeys(self.d.kernel_command_line))
        tokens.update(dict.fromkeys(self.f.sections[self.role].kernel_command_line))
        tokens.update(dict.fromkeys(self.d.sections[self.role].kernel_command_line))
        for section in self.sections():
            tokens.update(dict.fromkeys(self.r.sections[section].add_kernel_command_line))
        debug_tokens = self.debug_section(debug).add_kernel_command_line
        tokens.update(dict.fromkeys(debug_tokens))
        for section in self.sections():
            for i, token in enumerate(self.r.sections[section].remove_kernel_command_line):
                if token in tokens:
                    del tokens[token]
                else:
                    self.fail(
                        self.entry.release,
                        (section, "remove_kernel_command_line", i),
                        f"{token!r} is not on the {self.role} kernel command line, so it cannot be removed",
                    )
        tokens.update(dict.fromkeys(payload.KERNEL_COMMAND_LINE))
        # Order matters on a kernel command line (console= last wins): keep it.
        return tuple(tokens)

    def kernel_modules(self) -> KernelModules:
        base = payload.DEFAULT_MODULES[self.role]
        include = list(base.include)
        exclude = list(base.exclude)
        for layer in reversed(self.layers(self.role)):
            rules = layer.kernel_modules or KernelModuleRules()
            include += [m for m in rules.include if m not in include]
            exclude += [m for m in rules.exclude if m not in exclude]
        return KernelModules(keep_all=base.keep_all, include=tuple(include), exclude=tuple(exclude))

    def apt_keyring(self) -> str | None:
        return repositories.apt_keyring(self.entry)

    def archive(
        self,
        mkosi: MkosiSettings,
        archived: bool,
        mrelease: str,
        apt_sources: Iterable[AptSource],
    ) -> tuple[str | None, AptSource | None]:
        """Mirror= for an archived rpm release, or the apt sources replacing mkosi's defaults."""
        if not archived:
            return None, None
        url = mkosi.archive_mirror
        if not url:
            self.fail(
                self.entry.release,
                ("archived",),
                f"images/{self.entry.distro}.yaml has no mkosi.archive_mirror to take an archived release from",
            )
            return None, None
        if not self.entry.family.is_apt:
            return url, None
        # mkosi's own apt sources point at the live mirrors (and security.*),
        # which drop a release when it is archived: list them ourselves.
        keyring = self.apt_keyring()
        if not keyring:
            self.fail(
                self.entry.release,
                ("archived",),
                f"images/{self.entry.distro}.yaml has no `repository:` keyring for the archive's sources",
            )
            return None, None
        components = ("main", *sorted(mkosi.repositories))
        return None, AptSource(
            name="mkosi",
            url=url,
            suites=(mrelease, f"{mrelease}-updates", f"{mrelease}-security"),
            components=components,
            signed_by=keyring,
        )

    def payload(self, image: str, components: Mapping[str, str], *, debug: bool) -> Payload:
        if self.role == "guest":
            return Payload(
                modules_load=payload.GUEST_MODULES_LOAD,
                units=payload.UNITS["guest"],
                enable=payload.ENABLE["guest"],
                # A debug image keeps its login prompts: it logs in on the console.
                masked_units=payload.GUEST_MASKED_UNITS
                + (() if debug else payload.GUEST_LOGIN_UNITS),
                transient_machine_id=True,
            )
        return Payload(
            modules_load=(),
            units=payload.UNITS["host"],
            enable=payload.ENABLE["host"],
            qemu_binary=cast(str, self.setting("host", "qemu_binary")),
            sev_firmware=cast(str, self.setting("host", "sev_firmware")),
            guest_image=f"guest-{image}" + ("-debug" if debug else ""),
            recorded_packages=self.recorded_packages(components),
            package_version_query=self.entry.family.package_version_query,
        )

    def recorded_packages(self, components: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        """(kind, package) for each component and payload need whose version a host records."""
        family = self.entry.family
        found = [
            (kind, components[kind]) for kind in payload.RECORDED_COMPONENTS if kind in components
        ]
        found += [(need, family.package(need)) for need in payload.RECORDED_NEEDS]
        return tuple(found)
