"""Check a built UKI against the SEV requirements, reading the artifact itself.

The configuration said what should be there; this says what is: the kernel,
QEMU and OVMF versions mkosi installed (from its package manifest and the
UKI's .uname), the host's SEV firmware, QEMU binary and embedded guest, the
guest's modules, the payload units enabled, and no root password.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from sevimg import payload, versions
from sevimg.spec import GUEST_EMBED_PATH, ImageSpec
from sevimg.uki import Member, Uki

# Password fields in /etc/shadow that allow no login with a password.
_IN_SHADOW = "x"
_LOCKED = ("*", "!", "!*", "!!", "!locked")


@dataclass(frozen=True)
class Findings:
    """What the artifact holds, and what is wrong with it."""

    kernel: str | None
    installed: Mapping[str, str]  # component kind → installed version
    errors: tuple[str, ...]
    warnings: tuple[str, ...]


def _resolve(members: Mapping[str, Member], path: str, depth: int = 0) -> Member | None:
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
                return _resolve(
                    members, posixpath.normpath(joined) + "/" + "/".join(parts[i:]), depth + 1
                )
        return None
    if member.is_symlink and depth < 16:
        target = member.data.decode()
        joined = (
            target if target.startswith("/") else posixpath.join(posixpath.dirname(path), target)
        )
        return _resolve(members, posixpath.normpath(joined), depth + 1)
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
        if _resolve(members, firmware) is None:
            errors.append(
                f"SEV firmware {firmware} is missing from the image ({spec.component('ovmf')} does not ship it)"
            )
        qemu = spec.payload.qemu_binary or ""
        binary = _resolve(members, qemu)
        if binary is None or not binary.mode & 0o111:
            errors.append(f"QEMU binary {qemu} is missing from the image")
        guest = _resolve(members, GUEST_EMBED_PATH)
        if guest is None:
            errors.append(f"the guest UKI is not embedded at {GUEST_EMBED_PATH}")
        elif guest_sha256 and hashlib.sha256(guest.data).hexdigest() != guest_sha256:
            errors.append(f"the guest embedded at {GUEST_EMBED_PATH} is not the guest just built")
    for kind, want in declared.items():
        have = installed.get(kind)
        if want and have and versions.compare(have, want) != 0 and spec.role == "host":
            warnings.append(
                f"{kind}: declared {want}, installed {have}; update versions.{kind} in {spec.sources[0]}"
            )

    if spec.role == "guest":
        errors += _missing_modules(members)

    for unit in spec.payload.units:
        if f"etc/systemd/system/multi-user.target.wants/{unit}" not in members:
            errors.append(
                f"{unit} is not enabled (no multi-user.target.wants link): presets did not apply"
            )
    check_script = f"usr/libexec/sevimg/{spec.role}-check"
    if check_script not in members or not members[check_script].mode & 0o111:
        errors.append(f"/{check_script} is missing or not executable")

    if not spec.debug and (problem := _root_password(members)):
        errors.append(problem)
    return Findings(installed.get("kernel"), installed, tuple(errors), tuple(warnings))


def _root_password(members: Mapping[str, Member]) -> str | None:
    """Why root could log in with a password (or without one), or None when it cannot."""

    def field(path: str) -> str | None:
        member = _resolve(members, path)
        for line in member.data.decode(errors="replace").splitlines() if member else ():
            parts = line.split(":")
            if parts[0] == "root" and len(parts) > 1:
                return parts[1]
        return None

    password = field("/etc/passwd")
    if password == _IN_SHADOW:  # the real field is in /etc/shadow; no entry there means locked
        password = field("/etc/shadow")
    if password is None or password in _LOCKED:
        return None
    what = "an empty password (login without one)" if password == "" else "a password"
    return f"root has {what}: published images must not"


def _missing_modules(members: Mapping[str, Member]) -> list[str]:
    """The guest's required modules that are neither files nor built into the kernel."""
    module_files: set[str] = set()
    builtin: set[str] = set()
    for path, member in members.items():
        if not path.startswith("usr/lib/modules/"):
            continue
        name = path.rsplit("/", 1)[-1]
        if ".ko" in name:
            module_files.add(name.split(".ko", 1)[0].replace("-", "_"))
        elif name == "modules.builtin":
            builtin.update(
                line.rsplit("/", 1)[-1].removesuffix(".ko").replace("-", "_")
                for line in member.data.decode(errors="replace").splitlines()
            )
    present = module_files | builtin
    return [
        f"guest module {module} ({path}) is missing"
        for module, path in payload.GUEST_REQUIRED_MODULES.items()
        if module.replace("-", "_") not in present
    ]
