"""What a report must show beyond being genuine: the verifier's policy, as go-sev-guest's `check` states it.

go-sev-guest (validate/validate.go, `Options`) checks a report's guest
policy against the most it accepts (validatePolicy: no migration agent, no
debugging, no SMT unless allowed, single socket when required, an ABI
version at least the minimum), its reported TCB component by component
against a minimum (validateTcb: `tcbGtError(minimum, reported)`), and its
VMPL. sevimg does the same, with this difference: debugging is refused
always (a guest the host can read proves nothing), and the minimum report
version is checked too. The policy bits are those of the SEV-SNP firmware
ABI (document 56860, table "Guest Policy Structure"): ABI minor 7:0, ABI
major 15:8, SMT 16, MIGRATE_MA 18, DEBUG 19, SINGLE_SOCKET 20.

Standard library only: this runs inside the host image. Reading a policy
file (YAML, JSON Schema) is sevimg's, in sevimg.machine.verify_policy.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sevimg_cert.checks import Check, Failure, Verdict
from sevimg_cert.report import AttestationReport

GUEST_POLICY = "guest policy"
MINIMUM_TCB = "minimum TCB"
REPORT_VERSION = "report version"
CHECK_NAMES = (GUEST_POLICY, MINIMUM_TCB, REPORT_VERSION)

SMT_BIT = 16
MIGRATE_MA_BIT = 18
SINGLE_SOCKET_BIT = 20
TCB_COMPONENTS = ("bootloader", "tee", "snp", "microcode", "fmc")


@dataclass(frozen=True)
class MinimumTcb:
    """The lowest security version number accepted per TCB component (fmc: Turin and later)."""

    bootloader: int = 0
    tee: int = 0
    snp: int = 0
    microcode: int = 0
    fmc: int = 0

    def is_zero(self) -> bool:
        """True when no component has a minimum."""
        return not any(getattr(self, name) for name in TCB_COMPONENTS)

    def as_dict(self) -> dict[str, int]:
        """A JSON-friendly form."""
        return {name: getattr(self, name) for name in TCB_COMPONENTS}


@dataclass(frozen=True)
class Policy:
    """What the verifier accepts. The defaults accept what a sevimg guest launches with."""

    minimum_tcb: MinimumTcb = MinimumTcb()
    allow_smt: bool = True
    allow_migration_agent: bool = False
    require_single_socket: bool = False
    minimum_abi: tuple[int, int] = (0, 0)  # major, minor
    minimum_report_version: int = 2
    vmpl: int = 0
    require_revocation_check: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (what the result was judged against)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["minimum_tcb"] = self.minimum_tcb.as_dict()
        out["minimum_abi"] = f"{self.minimum_abi[0]}.{self.minimum_abi[1]}"
        return out


def check_guest_policy(report: AttestationReport, policy: Policy) -> Check:
    """The report's guest policy bits against what `policy` allows (debug is its own check)."""
    bits = report.policy
    problems = []
    abi = (bits >> 8 & 0xFF, bits & 0xFF)
    if abi < policy.minimum_abi:
        problems.append(
            f"ABI {abi[0]}.{abi[1]} is below the required {policy.minimum_abi[0]}.{policy.minimum_abi[1]}"
        )
    if bits >> MIGRATE_MA_BIT & 1 and not policy.allow_migration_agent:
        problems.append("a migration agent is allowed (bit 18), which the policy refuses")
    if bits >> SMT_BIT & 1 and not policy.allow_smt:
        problems.append("SMT is allowed (bit 16), which the policy refuses")
    if policy.require_single_socket and not bits >> SINGLE_SOCKET_BIT & 1:
        problems.append("single socket is not required (bit 20), which the policy requires")
    if problems:
        return Check(GUEST_POLICY, Verdict.FAIL, f"policy {bits:#x}: " + "; ".join(problems))
    said = [
        f"ABI {abi[0]}.{abi[1]}",
        "SMT allowed" if bits >> SMT_BIT & 1 else "no SMT",
        "migration agent allowed" if bits >> MIGRATE_MA_BIT & 1 else "no migration agent",
        "single socket" if bits >> SINGLE_SOCKET_BIT & 1 else "any socket",
    ]
    return Check(GUEST_POLICY, Verdict.PASS, f"policy {bits:#x}: {', '.join(said)}")


def check_minimum_tcb(report: AttestationReport, policy: Policy) -> Check:
    """Each component of the reported TCB at least the policy's minimum (fmc only where the layout has it)."""
    tcb, least = report.reported_tcb, policy.minimum_tcb
    below = []
    for name in TCB_COMPONENTS:
        wanted = getattr(least, name)
        got = getattr(tcb, name)
        if got is None:  # a pre-Turin report has no FMC
            if wanted:
                below.append(f"{name}: the report has none (not a Turin layout), minimum {wanted}")
            continue
        if got < wanted:
            below.append(f"{name} {got} < {wanted}")
    if below:
        return Check(
            MINIMUM_TCB,
            Verdict.FAIL,
            f"reported TCB ({tcb}) is below the minimum: {'; '.join(below)}",
        )
    if least.is_zero():
        return Check(MINIMUM_TCB, Verdict.PASS, f"reported TCB {tcb} (the policy sets no minimum)")
    floor = " ".join(f"{k}={v}" for k, v in least.as_dict().items() if v)
    return Check(MINIMUM_TCB, Verdict.PASS, f"reported TCB {tcb} meets the minimum {floor}")


def check_report_version(report: AttestationReport, policy: Policy) -> Check:
    """The report's version at least the policy's minimum."""
    if report.version < policy.minimum_report_version:
        return Check(
            REPORT_VERSION,
            Verdict.FAIL,
            f"version {report.version}, the policy requires at least {policy.minimum_report_version}",
        )
    return Check(
        REPORT_VERSION,
        Verdict.PASS,
        f"version {report.version} (at least {policy.minimum_report_version})",
    )


def check_all(report: AttestationReport, policy: Policy) -> list[Check]:
    """The policy's checks, in CHECK_NAMES order."""
    return [
        check_guest_policy(report, policy),
        check_minimum_tcb(report, policy),
        check_report_version(report, policy),
    ]


def skipped(why: str) -> list[Check]:
    """The policy's checks, each skipped for `why`."""
    return [Check(name, Verdict.SKIP, why, Failure.EVIDENCE) for name in CHECK_NAMES]
