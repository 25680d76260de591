"""Check a built UKI against the SEV requirements, reading the artifact itself.

The configuration said what should be there; this says what is: the kernel,
QEMU and OVMF versions mkosi installed (from its package manifest and the
UKI's .uname), the host's SEV firmware, QEMU binary and embedded guest, the
modules each role needs, the payload units enabled, and none of the ways in
that :mod:`sevimg.catalog.security` forbids (command-line tokens, login servers,
getty autologin, accounts with a password) unless the image is a debug one.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from sevimg.catalog import payload, security, security_files, versions
from sevimg.catalog.spec import GUEST_EMBED_PATH, ImageSpec
from sevimg.imaging.uki import Member, Uki
from sevimg.render.trees import ATTEST_RESPONDER, ATTEST_RULES


@dataclass(frozen=True)
class Findings:
    """What the artifact holds, and what is wrong with it."""

    kernel: str | None
    installed: Mapping[str, str]  # component kind → installed version
    errors: tuple[str, ...]
    warnings: tuple[str, ...]


def resolve_member(members: Mapping[str, Member], path: str, depth: int = 0) -> Member | None:
    """The member at `path`, following symlinks (relative or absolute) inside the image."""
    path = path.lstrip("/")
    member = members.get(path)
    if member is None:
        # a parent folder may be a symlink (/lib → usr/lib, /bin → usr/bin)
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = members.get("/".join(parts[:i]))
            if parent is not None and parent.is_symlink and depth < 16:
                base = "/".join(parts[: i - 1])
                target = parent.data.decode()
                joined = target if target.startswith("/") else posixpath.join(base, target)
                return resolve_member(
                    members, posixpath.normpath(joined) + "/" + "/".join(parts[i:]), depth + 1
                )
        return None
    if member.is_symlink and depth < 16:
        target = member.data.decode()
        joined = (
            target if target.startswith("/") else posixpath.join(posixpath.dirname(path), target)
        )
        return resolve_member(members, posixpath.normpath(joined), depth + 1)
    return member


def installed_versions(spec: ImageSpec, packages: Mapping[str, str], uki: Uki) -> dict[str, str]:
    """Component kind → installed version: kernel from the UKI, QEMU and OVMF from the package list."""
    found: dict[str, str] = {}
    if uki.uname:
        found["kernel"] = uki.uname
    for kind in ("qemu", "ovmf"):
        package = spec.component(kind)
        if package and package in packages:
            found[kind] = packages[package]
    return found


def check(
    spec: ImageSpec, uki: Uki, packages: Mapping[str, str], guest_sha256: str | None = None
) -> Findings:
    """Everything wrong with the built image of `spec`."""
    members = uki.members()
    errors: list[str] = []
    warnings: list[str] = []
    installed = installed_versions(spec, packages, uki)

    if not uki.uname:
        errors.append("the UKI has no .uname section: no kernel version to check")
    for kind in [c for c, _ in spec.components if c not in ("kernel", "qemu", "ovmf")]:
        package = spec.component(kind)
        if package and package not in packages:
            errors.append(f"{kind} package {package} is not installed")

    declared = {
        "kernel": spec.versions.kernel,
        "qemu": spec.versions.qemu,
        "ovmf": spec.versions.ovmf,
    }
    if spec.role == "host":
        for floor in versions.HOST_FLOORS:
            version = installed.get(floor.component)
            verdict = floor.check(version)
            if version is None:
                errors.append(
                    f"{floor.component}: not installed ({spec.component(floor.component)})"
                )
            elif verdict is versions.Verdict.FAIL:
                errors.append(
                    f"{floor.component} {version} is below the SEV-SNP host floor {floor.minimum}"
                )
            elif verdict is versions.Verdict.WARN:
                warnings.append(
                    f"{floor.component} {version} is below the supported {floor.recommended}"
                )
        firmware = spec.payload.sev_firmware or ""
        if resolve_member(members, firmware) is None:
            errors.append(
                f"SEV firmware {firmware} is missing from the image ({spec.component('ovmf')} does not ship it)"
            )
        qemu = spec.payload.qemu_binary or ""
        binary = resolve_member(members, qemu)
        if binary is None or not binary.mode & 0o111:
            errors.append(f"QEMU binary {qemu} is missing from the image")
        guest = resolve_member(members, GUEST_EMBED_PATH)
        if guest is None:
            errors.append(f"the guest UKI is not embedded at {GUEST_EMBED_PATH}")
        elif guest_sha256 and hashlib.sha256(guest.data).hexdigest() != guest_sha256:
            errors.append(f"the guest embedded at {GUEST_EMBED_PATH} is not the guest just built")
    for kind, want in declared.items():
        have = installed.get(kind)
        if not (want and have and spec.role == "host"):
            continue
        try:
            differs = versions.compare(have, want) != 0
        except ValueError:  # a package version with no leading number: the floors say so
            continue
        if differs:
            warnings.append(
                f"{kind}: declared {want}, installed {have}; update versions.{kind} in {spec.sources[0]}"
            )

    module_errors, module_warnings = _missing_modules(spec, members)
    errors += module_errors + _blocked_modules(members)
    warnings += module_warnings

    for unit in [u for u in spec.payload.units if u in spec.payload.enable]:
        if f"etc/systemd/system/multi-user.target.wants/{unit}" not in members:
            errors.append(
                f"{unit} is not enabled (no multi-user.target.wants link): presets did not apply"
            )
    scripts = [f"usr/libexec/sevimg/{spec.role}-check"]
    if spec.role == "guest":
        scripts.append(ATTEST_RESPONDER)
        if ATTEST_RULES not in members:
            errors.append(
                f"/{ATTEST_RULES} is missing: nothing would start the attestation responder"
            )
    for script in scripts:
        if script not in members or not members[script].mode & 0o111:
            errors.append(f"/{script} is missing or not executable")

    if not spec.debug:
        tokens = security.split_command_line(uki.cmdline)
        for finding in security.kernel_command_line(tokens):
            (errors if finding.error else warnings).append(
                f"the UKI's .cmdline has {finding.what!r}, which {finding.why}"
            )
        if _FIRSTBOOT in members and security.firstboot_prompts(tokens):
            errors.append(
                "the UKI's .cmdline does not end with systemd.firstboot=off: systemd-firstboot "
                "would ask the console for a root password"
            )
        for finding in security_files.image_files(
            members, lambda path: resolve_member(members, path)
        ):
            (errors if finding.error else warnings).append(str(finding))
    return Findings(installed.get("kernel"), installed, tuple(errors), tuple(warnings))


_FIRSTBOOT = "usr/lib/systemd/system/systemd-firstboot.service"
_MODPROBE_DIRS = ("etc/modprobe.d/", "usr/lib/modprobe.d/", "lib/modprobe.d/", "run/modprobe.d/")
# modprobe options that switch SEV off in the module that carries it
_SEV_OPTIONS = {"kvm_amd": ("sev", "sev_es", "sev_snp", "npt")}


def _blocked_modules(members: Mapping[str, Member]) -> list[str]:
    """modprobe.d lines that keep a module SEV-SNP needs from loading, or switch SEV off.

    A module file that is present but blacklisted, replaced by an `install`
    command or loaded with sev=0 is as good as missing.
    """
    found: list[str] = []
    for path, member in sorted(members.items()):
        if not path.startswith(_MODPROBE_DIRS) or member.is_dir:
            continue
        for number, line in enumerate(member.data.decode(errors="replace").splitlines(), 1):
            words = line.split("#", 1)[0].split()
            if len(words) < 2:
                continue
            command, module = words[0], payload.module_name(words[1])
            where = f"/{path}:{number}"
            if command in ("blacklist", "install") and module in security.SEV_MODULES:
                found.append(
                    f"{where}: `{line.strip()}` keeps {module}, which SEV-SNP needs, from loading"
                )
            elif command == "options" and module in _SEV_OPTIONS:
                for option in words[2:]:
                    key, _, value = option.partition("=")
                    if key in _SEV_OPTIONS[module] and value.lower() in security.OFF_VALUES:
                        found.append(f"{where}: `{line.strip()}` switches SEV off")
    return found


def _missing_modules(spec: ImageSpec, members: Mapping[str, Member]) -> tuple[list[str], list[str]]:
    """The role's required modules that are neither files nor built into the kernel.

    Errors for the modules SEV-SNP needs; for a host's NIC drivers a warning
    each (a distribution kernel may lack one), and an error when none is left.
    """
    module_files: set[str] = set()
    builtin: set[str] = set()
    for path, member in members.items():
        if not path.startswith("usr/lib/modules/"):
            continue
        name = path.rsplit("/", 1)[-1]
        if ".ko" in name:
            module_files.add(payload.module_name(name.split(".ko", 1)[0]))
        elif name == "modules.builtin":
            builtin.update(
                payload.module_name(line.rsplit("/", 1)[-1].removesuffix(".ko"))
                for line in member.data.decode(errors="replace").splitlines()
            )
    present = module_files | builtin

    def missing(modules: Mapping[str, str]) -> list[str]:
        return [
            f"{spec.role} module {module} ({path}) is missing"
            for module, path in modules.items()
            if payload.module_name(module) not in present
        ]

    if spec.role == "guest":
        errors = missing(payload.GUEST_REQUIRED_MODULES)
        tsm = payload.GUEST_TSM_REPORT_MODULES
        if not any(payload.module_name(name) in present for name in tsm):
            errors.append(
                f"guest module for TSM reports ({' or '.join(tsm)}: "
                f"{', '.join(tsm.values())}) is missing: no configfs-tsm attestation reports"
            )
        return errors, []
    errors = missing(payload.HOST_REQUIRED_MODULES)
    nics = missing(payload.HOST_NIC_MODULES)
    if len(nics) == len(payload.HOST_NIC_MODULES):
        errors.append(
            f"the host has none of the NIC drivers {', '.join(payload.HOST_NIC_MODULES)}: "
            "it could not report its result"
        )
        return errors, []
    return errors, nics


def over_budget(spec: ImageSpec, size: int) -> str | None:
    """A message when an artifact of `size` bytes is over its catalog size budget, else None."""
    budget = spec.size_budget_mb
    if budget is None or size <= budget * 1e6:
        return None
    return (
        f"{size / 1e6:.1f} MB is over its size budget of {budget:g} MB "
        f"(size_budget_mb in {spec.sources[1]} or {spec.sources[0]})"
    )
