"""SEV policy: what a resolved image must satisfy to be worth building.

Checks the declared versions against the SEV-SNP floors, that each role
carries what its payload needs, that the host knows where its SEV firmware
is, and that a guest still has the modules it cannot boot SNP without.
Pure functions over specs; problems point at the release file.
"""

from __future__ import annotations

from collections.abc import Iterable

from sevimg import payload
from sevimg.catalog import Entry
from sevimg.problems import Problem, Severity
from sevimg.spec import ImageSpec
from sevimg.versions import HOST_FLOORS, Verdict


def floor_verdicts(entry: Entry) -> dict[str, Verdict]:
    """component → verdict for the host floors, from the release's declared versions."""
    declared = entry.release.data.get("versions") or {}
    return {floor.component: floor.check(declared.get(floor.component)) for floor in HOST_FLOORS}


def check_floors(entry: Entry) -> list[Problem]:
    """Declared versions against the SEV-SNP host floors (only releases with a host)."""
    doc = entry.release
    declared = doc.data.get("versions") or {}
    problems: list[Problem] = []
    for floor in HOST_FLOORS:
        verdict = floor.check(declared.get(floor.component))
        path = ("versions", floor.component)
        if verdict is Verdict.FAIL:
            problems.append(
                doc.problem(
                    path,
                    f"{floor.component} {declared[floor.component]} is below the SEV-SNP host floor "
                    f"{floor.minimum} ({floor.why}); drop the host role or raise the version",
                )
            )
        elif verdict is Verdict.WARN:
            problems.append(
                _as_warning(
                    doc.problem(
                        path,
                        f"{floor.component} {declared[floor.component]} meets the hard floor "
                        f"{floor.minimum} but not the supported {floor.recommended} ({floor.why})",
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
    for need, package in payload.required_packages(spec.role, spec.family).items():
        if package not in packages:
            problems.append(
                doc.problem(
                    (section,),
                    f"the {spec.role} payload needs {need} (package {package!r}), which the image does not install",
                )
            )

    if spec.role == "host":
        firmware = spec.payload.sev_firmware
        if firmware not in payload.KNOWN_SEV_FIRMWARE:
            problems.append(
                _as_warning(
                    doc.problem(
                        ("host", "sev_firmware"),
                        f"{firmware} is not one of the known SEV firmware locations "
                        f"({', '.join(payload.KNOWN_SEV_FIRMWARE)}); make sure the OVMF package ships it",
                    )
                )
            )
        problems += check_floors(entry)

    if spec.role == "guest":
        for module, path in payload.GUEST_REQUIRED_MODULES.items():
            if not payload.module_kept(spec.kernel_modules, path):
                problems.append(
                    doc.problem(
                        ("guest", "kernel_modules"),
                        f"the guest would lose the {module} module ({path}); an SEV-SNP guest needs "
                        f"{', '.join(payload.GUEST_REQUIRED_MODULES)}",
                    )
                )
    return problems


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
