"""The host machine as the harness and its checks read it.

`Host` holds the root that every file is read below (tests point it at a
fake root), the image's settings (/etc/sevimg/image.env) and the PATH that
programs are found on; with it come os-release, the firmware and QEMU the
image names, and the processor: its family, model and EPYC series from
CPUID (/dev/cpu/0/cpuid, else /proc/cpuinfo) and the SEV C-bit position.
Reading only: nothing here changes the machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sevimg_cert.result import Identity

DEFAULT_CBITPOS = 51
CPUID_FEATURES = 0x80000001
CPUID_SEV = 0x8000001F
SERIES_NAMES = {
    "7001": "Naples",
    "7002": "Rome",
    "7003": "Milan",
    "9004": "Genoa",
    "8004": "Siena",
    "9005": "Turin",
}


@dataclass(frozen=True)
class Host:
    """The machine as the checks see it."""

    root: Path = Path("/")
    env: Mapping[str, str] = field(default_factory=dict)  # /etc/sevimg/image.env
    kernel_release: str = field(default_factory=lambda: os.uname().release)
    path: str | None = None  # PATH for programs; None: the process's own

    def file(self, absolute: str) -> Path:
        """`absolute` below the root."""
        return self.root / absolute.lstrip("/")

    def read(self, absolute: str) -> str | None:
        """A file's text below the root, None when it cannot be read."""
        try:
            return self.file(absolute).read_text(errors="replace")
        except OSError:
            return None

    def which(self, program: str) -> str | None:
        """`program` as a path to run: itself when it has a slash and is executable, else from PATH."""
        if "/" in program:
            return program if os.access(program, os.X_OK) and Path(program).is_file() else None
        return shutil.which(program, path=self.path)


def parse_env(text: str) -> dict[str, str]:
    """KEY=value lines (image.env, os-release); quotes around values removed, comments skipped."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def image_env(root: Path) -> dict[str, str]:
    """/etc/sevimg/image.env below `root` ({} when missing)."""
    try:
        return parse_env((root / "etc/sevimg/image.env").read_text(errors="replace"))
    except OSError:
        return {}


def os_release(root: Path) -> dict[str, str]:
    """/etc/os-release (else /usr/lib/os-release) below `root`."""
    for name in ("etc/os-release", "usr/lib/os-release"):
        try:
            return parse_env((root / name).read_text(errors="replace"))
        except OSError:
            continue
    return {}


def sev_firmware_path(host: Host) -> str:
    """The SEV OVMF the image names (SEVIMG_SEV_FIRMWARE)."""
    return host.env.get("SEVIMG_SEV_FIRMWARE", "")


def qemu_program(host: Host) -> str:
    """The QEMU the image names (SEVIMG_QEMU), else qemu-system-x86_64 on PATH."""
    return host.env.get("SEVIMG_QEMU") or "qemu-system-x86_64"


# --- the processor ---------------------------------------------------------


@dataclass(frozen=True)
class Cpu:
    """The processor's identity as CPUID tells it."""

    vendor_amd: bool
    family: int
    model: int
    brand: str = ""
    source: str = ""

    @property
    def series(self) -> str | None:
        """The EPYC series of the certification matrix (7001 ... 9005), None when unknown."""
        return series(self.family, self.model, self.brand) if self.vendor_amd else None

    def describe(self) -> str:
        """E.g. `9004 (Genoa), family 0x19 model 0x11`."""
        name = self.series
        what = f"{name} ({SERIES_NAMES.get(name, '?')})" if name else "unknown series"
        return f"{what}, family {self.family:#x} model {self.model:#x}" + (
            f", {self.brand}" if self.brand else ""
        )


def series(family: int, model: int, brand: str = "") -> str | None:
    """The series of a family/model pair; the brand string splits Zen 4c's shared models."""
    if family == 0x17:
        if model <= 0x0F:
            return "7001"
        if 0x30 <= model <= 0x3F:
            return "7002"
    if family == 0x19:
        if model <= 0x0F:
            return "7003"
        if 0x10 <= model <= 0x1F:
            return "9004"
        if 0xA0 <= model <= 0xAF:  # Bergamo (97x4, a 9004) and Siena (8004) share these models
            match = re.search(r"EPYC\s+([89])\d{3}", brand)
            return {"8": "8004", "9": "9004"}.get(match.group(1)) if match else None
    if family == 0x1A and model <= 0x1F:
        return "9005"
    return None


def _cpuid(root: Path, leaf: int) -> tuple[int, int, int, int] | None:
    try:
        fd = os.open(root / "dev/cpu/0/cpuid", os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.pread(fd, 16, leaf)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) != 16:
        return None
    a, b, c, d = struct.unpack("<4I", data)
    return a, b, c, d


def _signature(eax: int) -> tuple[int, int]:
    base_family, base_model = (eax >> 8) & 0xF, (eax >> 4) & 0xF
    family = base_family + ((eax >> 20) & 0xFF) if base_family == 0xF else base_family
    model = base_model | (((eax >> 16) & 0xF) << 4) if base_family in (0x6, 0xF) else base_model
    return family, model


def cpu(root: Path) -> Cpu | None:
    """The processor, from /dev/cpu/0/cpuid (leaf 0x80000001), else /proc/cpuinfo."""
    info = ""
    with contextlib.suppress(OSError):
        info = (root / "proc/cpuinfo").read_text(errors="replace").split("\n\n")[0]
    fields = {
        k.strip(): v.strip() for k, _, v in (line.partition(":") for line in info.splitlines())
    }
    brand = fields.get("model name", "")
    regs = _cpuid(root, CPUID_FEATURES)
    if regs is not None:
        family, model = _signature(regs[0])
        amd = fields.get("vendor_id", "AuthenticAMD") == "AuthenticAMD"
        return Cpu(amd, family, model, brand, "CPUID 0x80000001")
    try:
        return Cpu(
            fields.get("vendor_id") == "AuthenticAMD",
            int(fields["cpu family"]),
            int(fields["model"]),
            brand,
            "/proc/cpuinfo",
        )
    except (KeyError, ValueError):
        return None


def cbit_position(root: Path) -> tuple[int, str]:
    """The C-bit position from CPUID 0x8000001F EBX[5:0], with where it came from."""
    regs = _cpuid(root, CPUID_SEV)
    if regs is None:
        return (
            DEFAULT_CBITPOS,
            f"default {DEFAULT_CBITPOS} (/dev/cpu/0/cpuid unreadable: modprobe cpuid)",
        )
    position = regs[1] & 0x3F
    if position == 0:
        return DEFAULT_CBITPOS, f"default {DEFAULT_CBITPOS} (CPUID reports no SEV C-bit)"
    return position, "CPUID 0x8000001F"


def identity(root: Path) -> Identity:
    """Who ran: the OS (ID, version) and the processor series, as far as they can be read."""
    release = os_release(root)
    found = None
    with contextlib.suppress(Exception):  # an identity without a processor is still a result
        found = cpu(root)
    return Identity(
        release.get("ID"),
        release.get("VERSION_ID") or release.get("VERSION_CODENAME"),
        found.series if found else None,
    )
