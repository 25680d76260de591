"""The SEV-SNP version floors of a host: kernel, QEMU, OVMF. Their one home.

Read by the in-image harness (which cannot import sevimg) and, through
:mod:`sevimg.catalog.versions`, by `sevimg validate`, `sevimg archive` and
`sevimg doctor --sev-host`. One rule everywhere:

- below ``snp``, the version has no SEV-SNP support at all: it fails;
- below ``guide``, SEV-SNP works but the version is older than the floor
  AMD's guide names: a warning, recorded in the result, never a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    """A version against a floor."""

    OK = "ok"
    WARN = "warn"  # SEV-SNP works; below the guide's floor
    FAIL = "fail"  # no SEV-SNP support at all


@dataclass(frozen=True)
class Floor:
    """Where SEV-SNP support landed upstream (`snp`), and the guide's floor (`guide`)."""

    component: str  # kernel, qemu, ovmf
    snp: tuple[int, int]
    guide: tuple[int, int]
    snp_why: str
    guide_why: str

    def judge(self, found: tuple[int, ...]) -> Verdict:
        """A (major, minor, ...) version against this floor."""
        if found < self.snp:
            return Verdict.FAIL
        if found < self.guide:
            return Verdict.WARN
        return Verdict.OK


def show(version: tuple[int, int]) -> str:
    """A floor as people write it: 6.11, 9.2, 2024.11 (edk2's year.month)."""
    major, minor = version
    return f"{major}.{minor:02d}" if major > 1000 else f"{major}.{minor}"


KERNEL = Floor(
    "kernel",
    # KVM's SEV-SNP hypervisor support (KVM_SEV_SNP_LAUNCH_*, SNP_GUEST_REQUEST) was
    # merged for Linux 6.11 (kvm-x86 "sev" pull, July 2024); guest-side SNP support is
    # older (5.19, tip x86_sev_for_v5.19_rc1) but a host needs KVM's half.
    snp=(6, 11),
    guide=(6, 11),
    snp_why="KVM's SEV-SNP host support landed in Linux 6.11",
    guide_why="the guide's host floor is Linux 6.11",
)
QEMU = Floor(
    "qemu",
    # "i386/sev: Introduce 'sev-snp-guest' object" (Brijesh Singh, Michael Roth,
    # Pankaj Gupta; merged 2024-06-05) is in QEMU 9.1.0, the first release that
    # launches an SEV-SNP guest.
    snp=(9, 1),
    guide=(9, 2),
    snp_why="the sev-snp-guest object landed in QEMU 9.1.0",
    guide_why="the guide's floor is QEMU 9.2",
)
OVMF = Floor(
    "ovmf",
    # "Add AMD Secure Nested Paging (SEV-SNP) support" (tianocore/edk2 pull 2269,
    # Bugzilla 3275, merged December 2021) is in edk2-stable202202, the first
    # release whose OVMF boots an SEV-SNP guest.
    snp=(2022, 2),
    guide=(2024, 11),
    snp_why="OVMF's SEV-SNP support landed in edk2-stable202202",
    guide_why="the guide's floor is edk2 2024.11 (SNP with kernel-hashes fixed)",
)
HOST_FLOORS: tuple[Floor, ...] = (KERNEL, QEMU, OVMF)
