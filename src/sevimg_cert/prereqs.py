"""The host's prerequisites for an SEV-SNP certification run, each a named step with its evidence.

Shared by the harness inside the host image and by `sevimg doctor --sev-host`
on a machine that runs its own SEV host. The machine is a
sevimg_cert.hostinfo.Host: every file is read below its root (so tests point
it at a fake root); programs (QEMU, snphost) are run as named in
/etc/sevimg/image.env or found on its PATH, so tests can supply fake
executables. Nothing here changes the machine: `snphost ok` is
the only snphost command ever run (never `snphost commit`).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sevimg_cert import floors, installed
from sevimg_cert.hostinfo import Host, qemu_program, sev_firmware_path
from sevimg_cert.result import Outcome, Step

PROGRAM_TIMEOUT = 120.0

SEV_SNP = "sev_snp"
SEV_FIRMWARE = "sev_firmware"
KERNEL = "kernel"
QEMU = "qemu"
OVMF = "ovmf"
SNPHOST = "snphost_ok"
GUEST_IMAGE = "guest_image"

FIXES = {
    SEV_SNP: "enable SEV-SNP (SMEE, SNP memory coverage, SEV-ES ASIDs) in the BIOS, "
    "boot a kernel >= 6.11 with kvm_amd loaded, check `cat /sys/module/kvm_amd/parameters/sev_snp`",
    SEV_FIRMWARE: "install the distribution's AMD SEV build of OVMF (OVMF.amdsev.fd)",
    KERNEL: f"boot a kernel >= {floors.show(floors.KERNEL.guide)} ({floors.KERNEL.snp_why})",
    QEMU: f"install QEMU >= {floors.show(floors.QEMU.guide)} ({floors.QEMU.guide_why})",
    OVMF: f"install an OVMF from edk2 {floors.show(floors.OVMF.guide)} or newer "
    "with the AMD SEV build",
    SNPHOST: "install snphost and read what `snphost ok` reports (firmware, BIOS settings)",
    GUEST_IMAGE: "build the host with `sevimg build`, which embeds its guest",
}


# Terminal colour and cursor sequences (snphost colours its verdicts); results are plain text.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_program(argv: list[str], timeout: float = PROGRAM_TIMEOUT) -> tuple[int, str]:
    """(exit status, stdout+stderr without colour codes); 127 with the reason when it cannot run."""
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]} did not finish within {timeout:.0f} s"
    except OSError as exc:
        return 127, f"cannot run {argv[0]}: {exc.strerror or exc}"
    return done.returncode, _ANSI.sub("", done.stdout.decode(errors="replace"))


def version_tuple(text: str, pattern: str) -> tuple[int, int] | None:
    """(major, minor) from the first match of `pattern` (two groups) in `text`."""
    match = re.search(pattern, text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def judged(
    name: str, floor: floors.Floor, found: tuple[int, int], what: str, context: str = ""
) -> Step:
    """A version against its floor, one rule everywhere: without SEV-SNP support it
    fails; below the guide's floor it passes with a warning recorded in the result."""
    verdict = floor.judge(found)
    snp, guide = floors.show(floor.snp), floors.show(floor.guide)
    about = f", {context}" if context else ""
    if verdict is floors.Verdict.FAIL:
        where = f"; {context}" if context else ""
        detail = f"{what} is older than {snp}: no SEV-SNP support ({floor.snp_why}{where})"
        return Step(name, Outcome.FAIL, detail)
    if verdict is floors.Verdict.WARN:
        warning = f"below the guide's floor {guide} ({floor.guide_why}); SEV-SNP works since {snp}"
        return Step(name, Outcome.PASS, f"{what} (>= {snp}{about})", warning=warning)
    return Step(name, Outcome.PASS, f"{what} (>= {guide}{about})")


def check_sev_snp(host: Host) -> Step:
    """kvm_amd's sev_snp parameter says Y."""
    where = "/sys/module/kvm_amd/parameters/sev_snp"
    value = host.read(where)
    if value is None:
        loaded = host.file("/sys/module/kvm_amd").exists()
        why = "kvm_amd has no sev_snp parameter" if loaded else "kvm_amd is not loaded"
        return Step(SEV_SNP, Outcome.FAIL, f"SEV-SNP is not available: {why} ({where} missing)")
    if value.strip() in ("Y", "1"):
        return Step(
            SEV_SNP, Outcome.PASS, f"kvm_amd reports SEV-SNP enabled ({where}: {value.strip()})"
        )
    return Step(
        SEV_SNP, Outcome.FAIL, f"SEV-SNP is not enabled: {where} is {value.strip()!r}, not Y"
    )


def check_sev_firmware(host: Host) -> Step:
    """The AMD SEV build of OVMF exists."""
    firmware = sev_firmware_path(host)
    if not firmware:
        return Step(
            SEV_FIRMWARE, Outcome.FAIL, "SEVIMG_SEV_FIRMWARE is not set in /etc/sevimg/image.env"
        )
    if host.file(firmware).is_file():
        size = host.file(firmware).stat().st_size
        return Step(SEV_FIRMWARE, Outcome.PASS, f"{firmware} ({size} bytes)")
    return Step(SEV_FIRMWARE, Outcome.FAIL, f"the SEV firmware {firmware} does not exist")


def check_kernel(host: Host) -> Step:
    """The running kernel meets the floor."""
    release = host.kernel_release
    found = version_tuple(release, r"^(\d+)\.(\d+)")
    if found is None:
        return Step(
            KERNEL, Outcome.FAIL, f"cannot read a version from the kernel release {release!r}"
        )
    return judged(KERNEL, floors.KERNEL, found, f"kernel {release}")


def check_qemu(host: Host) -> tuple[Step, str | None]:
    """QEMU runs and meets the floor; also its version line."""
    named = qemu_program(host)
    program = host.which(named)
    if program is None:
        return Step(QEMU, Outcome.FAIL, f"QEMU {named} is not installed or not executable"), None
    code, output = run_program([program, "--version"], timeout=30)
    line = output.strip().splitlines()[0] if output.strip() else ""
    found = version_tuple(output, r"version (\d+)\.(\d+)")
    if code != 0 or found is None:
        return (
            Step(
                QEMU,
                Outcome.FAIL,
                f"{program} --version failed (status {code})",
                output=output[-2000:],
            ),
            line or None,
        )
    return judged(QEMU, floors.QEMU, found, line, program), line


def _dpkg_version(host: Host, absolute: str) -> tuple[str, str] | None:
    """(package, version) of the Debian-format package that installed `absolute`, if any."""
    info = host.file("/var/lib/dpkg/info")
    if not info.is_dir():
        return None
    wanted = {absolute, os.path.realpath(absolute) if host.root == Path("/") else absolute}
    owner = None
    for listing in sorted(info.glob("*.list")):
        try:
            names = set(listing.read_text(errors="replace").splitlines())
        except OSError:
            continue
        if names & wanted:
            owner = listing.stem.split(":")[0]
            break
    if owner is None:
        return None
    status = host.read("/var/lib/dpkg/status") or ""
    for stanza in status.split("\n\n"):
        fields = dict(
            line.split(": ", 1)
            for line in stanza.splitlines()
            if ": " in line and not line[0].isspace()
        )
        if fields.get("Package") == owner and "installed" in fields.get("Status", ""):
            return owner, fields.get("Version", "")
    return None


# edk2's release tags: "edk2-stable202411", in ASCII or UTF-16 inside the firmware.
_EDK2_TAG = re.compile(rb"edk2-stable(\d{4})(\d{2})")


def _firmware_tag(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    for blob in (data, data.replace(b"\0", b"")):
        if match := _EDK2_TAG.search(blob):
            return match.group(0).decode()
    return None


def check_ovmf(host: Host) -> tuple[Step, str | None]:
    """OVMF meets the floor: the version the build recorded, else the package database's, else the file's edk2 tag."""
    firmware = sev_firmware_path(host)
    if not firmware or not host.file(firmware).is_file():
        return Step(
            OVMF,
            Outcome.FAIL,
            f"no SEV firmware file to read a version from ({firmware or 'unset'})",
        ), None
    recorded, unusable = installed.read_installed(host.root)
    package = None if OVMF in recorded else _dpkg_version(host, firmware)
    if OVMF in recorded:
        record = recorded[OVMF]
        found = installed.edk2_version(record.version)
        text = f"{record.package} {record.version}"
        source = f"recorded at build time in {installed.PACKAGES_JSON}"
    elif package is not None:
        owner, version = package
        found = installed.edk2_version(version)
        text = f"{owner} {version}"
        source = "from the package database"
    else:
        tag = _firmware_tag(host.file(firmware))
        found = version_tuple(tag or "", r"(\d{4})(\d{2})")
        text = tag or ""
        source = f"edk2 tag in {firmware}"
    if unusable:
        source += f"; {unusable}"
    if found is None:
        none = "no build record, no package record, no edk2 tag"
        why = f"{text} ({source}) names no edk2 release" if text else none
        if unusable and not text:
            why += f"; {unusable}"
        return (
            Step(
                OVMF,
                Outcome.SKIP,
                f"version of {firmware} unknown ({why}): "
                f"floor {floors.show(floors.OVMF.guide)} not checked",
                optional=True,  # an unreadable version is not a failed floor; it is said
            ),
            None,
        )
    return judged(OVMF, floors.OVMF, found, f"OVMF {text}", source), text


def check_snphost(host: Host) -> Step:
    """`snphost ok` passes. Only `ok`: nothing that changes firmware state."""
    program = host.which(host.env.get("SEVIMG_SNPHOST") or "snphost")
    if program is None:
        return Step(SNPHOST, Outcome.FAIL, "snphost is not installed")
    code, output = run_program([program, "ok"])
    failing = [line.strip() for line in output.splitlines() if "FAIL" in line.upper()]
    if code == 0:
        return Step(
            SNPHOST, Outcome.PASS, f"{program} ok: every check passed", output=output[-4000:]
        )
    detail = f"{program} ok exited with status {code}"
    if failing:
        detail += ": " + "; ".join(failing[:5])
    return Step(SNPHOST, Outcome.FAIL, detail, output=output[-4000:])


def check_guest_image(host: Host) -> Step:
    """The embedded guest UKI exists."""
    guest = host.env.get("SEVIMG_GUEST_EFI", "")
    if guest and host.file(guest).is_file():
        name = host.env.get("SEVIMG_GUEST_IMAGE_ID", "")
        return Step(
            GUEST_IMAGE, Outcome.PASS, f"{guest} ({name}, {host.file(guest).stat().st_size} bytes)"
        )
    return Step(
        GUEST_IMAGE,
        Outcome.FAIL,
        f"the embedded guest {guest or '(SEVIMG_GUEST_EFI unset)'} does not exist",
    )


@dataclass(frozen=True)
class Prerequisites:
    """Every prerequisite step, and the versions found on the way."""

    steps: tuple[Step, ...]
    qemu_version: str | None
    ovmf_version: str | None

    @property
    def failed(self) -> list[Step]:
        """The steps that did not pass (a skip is not a failure)."""
        return [s for s in self.steps if s.result in (Outcome.FAIL, Outcome.ERROR)]


def check_all(host: Host, *, guest: bool = True) -> Prerequisites:
    """All prerequisites, in order; `guest=False` leaves out the embedded guest (doctor)."""
    qemu, qemu_version = check_qemu(host)
    ovmf, ovmf_version = check_ovmf(host)
    steps = [
        check_sev_snp(host),
        check_sev_firmware(host),
        check_kernel(host),
        qemu,
        ovmf,
        check_snphost(host),
    ]
    if guest:
        steps.append(check_guest_image(host))
    return Prerequisites(tuple(steps), qemu_version, ovmf_version)
