"""Whether a report is the expected guest: what it says about itself, each a named check.

Its request data is the nonce, its measurement the expected one, debugging
is off (policy bit 19), it meets the policy (sevimg_cert.policy: guest
policy bits, minimum TCB, report version) and it comes from the expected
VMPL. These say nothing about whether the report is genuine: that is
sevimg_cert.chain_checks'. Each check returns its verdict and never raises.
"""

from __future__ import annotations

from sevimg_cert import policy
from sevimg_cert.checks import Check, Verdict
from sevimg_cert.policy import Policy
from sevimg_cert.report import AttestationReport

NONCE_SIZE = 64
MEASUREMENT_SIZE = 48

REQUEST_DATA = "request data"
MEASUREMENT = "measurement"
DEBUG = "debug policy"
VMPL = "VMPL"
CHECK_NAMES = (REQUEST_DATA, MEASUREMENT, DEBUG, *policy.CHECK_NAMES, VMPL)


def pad_nonce(nonce: bytes) -> bytes:
    """The report's 64-byte REPORT_DATA for a nonce: shorter nonces are zero-padded at the end.

    That is what the guest side does with a short nonce (configfs-tsm's
    inblob and snpguest both take 64 bytes), so a 32-byte nonce is checked
    as those 32 bytes followed by 32 zero bytes.
    """
    if len(nonce) > NONCE_SIZE:
        raise ValueError(
            f"{len(nonce)} bytes; the report's request data holds at most {NONCE_SIZE}"
        )
    return nonce.ljust(NONCE_SIZE, b"\0")


def check_report(
    report: AttestationReport,
    nonce: bytes | None,
    measurement: bytes | None,
    vmpl: int,
    rules: Policy,
) -> list[Check]:
    """The report's checks, in CHECK_NAMES order; a value not given skips its check (not a pass)."""
    checks = []
    if nonce is None:
        checks.append(Check(REQUEST_DATA, Verdict.SKIP, "no nonce given to compare with"))
    elif report.report_data == pad_nonce(nonce):
        checks.append(Check(REQUEST_DATA, Verdict.PASS, "equals the nonce"))
    else:
        checks.append(
            Check(
                REQUEST_DATA,
                Verdict.FAIL,
                f"is {report.report_data.hex()}, not the nonce {pad_nonce(nonce).hex()}",
            )
        )
    if measurement is None:
        checks.append(Check(MEASUREMENT, Verdict.SKIP, "no expected measurement given"))
    elif report.measurement == measurement:
        checks.append(Check(MEASUREMENT, Verdict.PASS, f"{report.measurement.hex()} as expected"))
    else:
        checks.append(
            Check(
                MEASUREMENT,
                Verdict.FAIL,
                f"is {report.measurement.hex()}, expected {measurement.hex()}",
            )
        )
    if report.debug_allowed:
        checks.append(
            Check(
                DEBUG,
                Verdict.FAIL,
                f"policy {report.policy:#x} allows debugging (bit 19): the host can read the guest",
            )
        )
    else:
        checks.append(
            Check(DEBUG, Verdict.PASS, f"policy {report.policy:#x}: debugging disallowed")
        )
    if report.vmpl == vmpl:
        checks.append(Check(VMPL, Verdict.PASS, f"{report.vmpl}"))
    else:
        checks.append(
            Check(VMPL, Verdict.FAIL, f"report is for VMPL {report.vmpl}, expected {vmpl}")
        )
    # The policy's checks stand beside the debug bit's, before the VMPL's.
    return checks[:3] + policy.check_all(report, rules) + checks[3:]
