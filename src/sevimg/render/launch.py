"""The QEMU command lines that launch a guest UKI.

One definition serves both `sevimg run` on a workstation and the host
image's own check script (rendered with shell variables in place of the
values only the host knows), so the two can never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_MEMORY_MB = 2048  # an SNP guest with a UKI initrd does not come up in less
DEFAULT_CBITPOS = 51  # AMD EPYC (Milan, Genoa, Turin); the host reads CPUID when it can
READY_MARKER = "SEVIMG-GUEST-READY"


@dataclass(frozen=True)
class Launch:
    """What a launch needs; strings so that a host script can pass shell expressions."""

    qemu: str
    firmware: str
    kernel: str
    memory_mb: str = str(MIN_MEMORY_MB)
    cbitpos: str = str(DEFAULT_CBITPOS)


def snp_command(launch: Launch) -> list[str]:
    """argv for an SEV-SNP launch, as in AMD's SEV getting-started guide."""
    return [
        launch.qemu,
        "-enable-kvm",
        "-machine", "q35",  # RHEL-likes dropped i440fx; q35 everywhere
        "-cpu", "EPYC-v4",
        "-machine", "memory-encryption=sev0",
        "-monitor", "none",
        "-display", "none",
        "-object", f"memory-backend-memfd,id=ram1,size={launch.memory_mb}M",
        "-machine", "memory-backend=ram1",
        "-object", f"sev-snp-guest,id=sev0,cbitpos={launch.cbitpos},reduced-phys-bits=1,kernel-hashes=on",
        "-bios", launch.firmware,
        "-kernel", launch.kernel,
    ]  # fmt: skip
