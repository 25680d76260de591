"""SEV policy: what a resolved image must satisfy to be worth building.

Checks the declared versions against the SEV-SNP floors, that each role
carries what its payload needs, that the host knows where its SEV firmware
is, and that a guest still has the modules it cannot boot SNP without.
Pure functions over specs; problems point at the release file.
"""

from __future__ import annotations

from collections.abc import Iterable

from sevimg.catalog import payload, security
from sevimg.catalog.index import Entry
from sevimg.catalog.load import Document, JsonPath
from sevimg.catalog.records import Located
from sevimg.catalog.spec import ImageSpec, Versions
from sevimg.catalog.versions import HOST_FLOORS, Verdict
from sevimg.problems import Problem, Severity


def floor_verdicts(entry: Entry) -> dict[str, Verdict]:
    """component → verdict for the host floors, from the release's declared versions."""
    declared = _versions(entry)
    return {
        floor.component: floor.check(getattr(declared, floor.component)) for floor in HOST_FLOORS
    }


def check_floors(entry: Entry) -> list[Problem]:
    """Declared versions against the SEV-SNP host floors (only releases with a host)."""
    doc = entry.release
    declared = _versions(entry)
    problems: list[Problem] = []
    for floor in HOST_FLOORS:
        version = getattr(declared, floor.component)
        verdict = floor.check(version)
        path = ("versions", floor.component)
        if verdict is Verdict.FAIL:
            problems.append(
                doc.problem(
                    path,
                    f"{floor.component} {version} is below the SEV-SNP host floor "
                    f"{floor.minimum} ({floor.why}); drop the host role or raise the version",
                )
            )
        elif verdict is Verdict.WARN:
            problems.append(
                _as_warning(
                    doc.problem(
                        path,
                        f"{floor.component} {version} meets the hard floor {floor.minimum} "
                        f"({floor.why}) but not the guide's {floor.recommended} ({floor.guide_why})",
                    )
                )
            )
        elif verdict is Verdict.UNKNOWN:
            problems.append(
                _as_warning(
                    doc.problem(
                        ("versions",),
                        f"{floor.component} version not declared: the SEV floor "
                        f"({floor.component} >= {floor.recommended}) is unchecked",
                    )
                )
            )
    return problems


def check_spec(spec: ImageSpec, entry: Entry) -> list[Problem]:
    """Role requirements: packages, firmware path, guest modules."""
    doc = entry.release
    problems: list[Problem] = []
    packages = set(spec.packages)
    section = spec.role

    for kind, package in spec.components:
        if package not in packages:
            problems.append(
                doc.problem(
                    (section,),
                    f"the {spec.role} image needs its {kind.replace('_', '-')} package {package!r}, "
                    "but remove_packages takes it out",
                )
            )
    for need in payload.NEEDS[spec.role]:
        package = entry.family.package(need)
        if package not in packages:
            problems.append(
                doc.problem(
                    (section,),
                    f"the {spec.role} payload needs {need} (package {package!r}), which the image does not install",
                )
            )

    if spec.role == "host":
        firmware = spec.payload.sev_firmware
        known = entry.family.sev_firmware
        if firmware not in known:
            problems.append(
                _as_warning(
                    doc.problem(
                        ("host", "sev_firmware"),
                        f"{firmware} is not one of the known SEV firmware locations "
                        f"({', '.join(known)}); make sure the OVMF package ships it",
                    )
                )
            )
        elif not entry.family.sev_kernel_hashes:
            problems.append(
                _as_warning(
                    doc.problem(
                        ("host", "sev_firmware"),
                        f"{firmware} boots SEV-SNP but does not verify the kernel hashes "
                        f"({entry.family_doc.display}: sev_kernel_hashes: false): the launch "
                        "measurement covers the kernel, initrd and command line, but the firmware "
                        "does not refuse a different one",
                    )
                )
            )
        problems += check_floors(entry)

    required = payload.REQUIRED_MODULES[spec.role]
    for module, path in required.items():
        if not payload.module_kept(spec.kernel_modules, path):
            problems.append(
                doc.problem(
                    (spec.role, "kernel_modules"),
                    f"the {spec.role} would lose the {module} module ({path}); an SEV-SNP "
                    f"{spec.role} needs {', '.join(required)}",
                )
            )
    if spec.role == "guest" and not any(
        payload.module_kept(spec.kernel_modules, path)
        for path in payload.GUEST_TSM_REPORT_MODULES.values()
    ):
        names = " or ".join(payload.GUEST_TSM_REPORT_MODULES)
        problems.append(
            doc.problem(
                ("guest", "kernel_modules"),
                f"the guest would lose the TSM report module ({names}, drivers/virt/coco/): "
                "without it there are no configfs-tsm attestation reports",
            )
        )
    problems += check_rpm_repos(spec, entry)
    if not spec.debug:
        problems += check_security(spec, entry)
    return problems


def check_security(spec: ImageSpec, entry: Entry) -> list[Problem]:
    """Ways into a published image: unsafe kernel command-line tokens and login servers.

    A debug image (`--debug-image`) is exempt; everything else is refused
    here, before rendering, and again in the built UKI (postcheck).
    """
    problems: list[Problem] = []
    hint = "; only a debug image (--debug-image, never published) may have it: move it to `debug:`"
    for finding in security.kernel_command_line(spec.kernel_command_line):
        doc, path = _locate(entry, spec.role, finding.what, "kernel_command_line")
        problem = doc.problem(
            path, f"kernel command-line token {finding.what!r} {finding.why}{hint}"
        )
        problems.append(problem if finding.error else _as_warning(problem))
    for finding in security.packages(spec.packages):
        doc, path = _locate(entry, spec.role, finding.what, "packages")
        problems.append(
            doc.problem(
                path,
                f"package {finding.what!r} is {finding.why}: published images accept no "
                f"remote login{hint}",
            )
        )
    return problems


def check_rpm_repos(spec: ImageSpec, entry: Entry) -> list[Problem]:
    """Unsigned or plain-HTTP rpm repositories: a warning; an error when an unsigned one
    supplies a component or a package the payload needs."""
    doc = entry.release
    declared = entry.records.release.extra_repositories if entry.records else ()
    index = {repo.name: repo.index for repo in declared}
    # What the image and its certification rest on: the components and the payload's needs.
    vital = dict(spec.components)
    vital.update({need: entry.family.package(need) for need in payload.NEEDS[spec.role]})
    problems: list[Problem] = []
    for repo in spec.rpm_repos:
        where: JsonPath = ("extra_repositories", index.get(repo.name, 0))
        if not repo.gpgcheck:
            supplied = sorted({k for k, p in vital.items() if p in repo.only_packages})
            if supplied:
                problems.append(
                    doc.problem(
                        (*where, "gpgcheck"),
                        f"{repo.name!r} is not signature-checked but supplies the "
                        f"{', '.join(supplied)}: give it a gpgkey",
                    )
                )
            else:
                problems.append(
                    _as_warning(
                        doc.problem(
                            (*where, "gpgcheck"),
                            f"{repo.name!r} is not signature-checked (gpgcheck: false): anyone on "
                            "the path to it can change what the image installs; give it a gpgkey",
                        )
                    )
                )
        if repo.baseurl.startswith("http://"):
            problems.append(
                _as_warning(
                    doc.problem(
                        (*where, "baseurl"),
                        f"{repo.name!r} is fetched over plain HTTP; prefer https",
                    )
                )
            )
    return problems


def _locate(entry: Entry, role: str, value: str, kind: str) -> tuple[Document, JsonPath]:
    """Where a package or command-line token was added: release, distro, then family file."""
    records = entry.records
    if records is None:
        return entry.release, (role,)
    if kind == "packages":
        release_key, own_key = "add_packages", "packages"
    else:
        release_key, own_key = "add_kernel_command_line", "kernel_command_line"
    candidates: list[tuple[Located, str, tuple[str, ...]]] = []
    for section in (records.release.sections[s] for s in ("common", role)):
        candidates.append((section.where, release_key, getattr(section, release_key)))
    for layer in (records.distro, records.family):
        for section in (layer.sections[s] for s in ("common", role)):
            candidates.append((section.where, own_key, getattr(section, own_key)))
        if kind != "packages":  # only the command line has a top-level list
            candidates.append((layer.where, own_key, layer.kernel_command_line))
    for where, key, found in candidates:
        if value in found:
            return where.doc, where.at(key, found.index(value))
    if kind == "packages":
        # a component (kernel:, qemu:...) of a release, distro or family section
        layers = (records.release.sections, records.distro.sections, records.family.sections)
        for sections in layers:
            for section in (sections[s] for s in ("common", role)):
                for component in ("kernel", "qemu", "ovmf", "systemd_boot"):
                    if section.setting(component) == value:
                        return section.where.doc, section.where.at(component)
        # or what the family installs for one of the payload's needs
        for need, name in entry.family.payload:
            if name == value:
                return entry.family_doc, ("payload", need)
    # a component (kernel=, qemu=) or a value from elsewhere: point at the role's section
    return entry.release, (role,)


def _versions(entry: Entry) -> Versions:
    """The release's declared versions (none when its files did not pass the schema)."""
    return entry.records.release.versions if entry.records else Versions()


def check(specs: Iterable[ImageSpec], entry: Entry) -> list[Problem]:
    """All policy problems for the resolved roles of one release (floors reported once)."""
    problems: set[Problem] = set()
    for spec in specs:
        problems.update(check_spec(spec, entry))
    return sorted(problems)


def _as_warning(problem: Problem) -> Problem:
    return Problem(
        problem.file, problem.line, problem.column, Severity.WARNING, problem.field, problem.message
    )
