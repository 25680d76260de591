"""Verify an SEV-SNP attestation report: each check a named verdict with its reason.

A report is genuine when its signature (ECDSA P-384, SHA-384, over bytes
[0, 0x2A0), r and s stored little-endian) verifies with the chip's VCEK, the
VCEK is signed by the ASK and the ASK by the ARK (RSA-PSS, SHA-384, as AMD
signs them), the ARK is self-signed and is one of AMD's pinned roots (or one
the caller trusts explicitly), and the VCEK certifies this very chip and TCB:
its hwID extension equals the report's chip ID and its SPL extensions equal
the report's reported TCB. It is the expected guest when its request data is
the nonce, its measurement the expected one, debugging is off and it comes
from the expected VMPL. Beyond that the report must meet the policy
(sevimg_cert.policy: guest policy bits, minimum TCB, report version), and
the chain's ASK (or ASVK) must not be on a current CRL that the ARK signed
(sevimg_cert.crl).

A check is required unless said otherwise: `verified` means every required
check passed and none failed. Revocation is optional unless the policy
requires it: without a CRL at hand it is skipped, and listed apart.

Validity periods are not checked: a certificate's evidence is re-verified
long after the run, and AMD's roots are valid until 2045 and later. A CRL's
are, at the time given by the injected clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sevimg_cert import crl, policy, roots
from sevimg_cert.certs import (
    OID_SPL,
    CertError,
    Chain,
    common_name,
    extension,
    rsa_pss_problem,
    spki,
    vcek_hwid,
    vcek_spl,
)
from sevimg_cert.checks import Check, Failure, Verdict, failure, passed
from sevimg_cert.kds import KdsError
from sevimg_cert.policy import Policy
from sevimg_cert.report import (
    SIGNATURE_ALGO_ECDSA_P384_SHA384,
    AttestationReport,
    Product,
    ReportError,
    parse_report,
)

NONCE_SIZE = 64
MEASUREMENT_SIZE = 48

STRUCTURE = "report structure"
REQUEST_DATA = "request data"
MEASUREMENT = "measurement"
DEBUG = "debug policy"
VMPL = "VMPL"
CERTIFICATES = "certificates"
ARK = "ARK"
ASK = "ASK"
VCEK = "VCEK"
HWID = "VCEK hwID"
TCB = "VCEK TCB"
SIGNATURE = "report signature"
REVOCATION = crl.REVOCATION
REPORT_CHECKS = (REQUEST_DATA, MEASUREMENT, DEBUG, *policy.CHECK_NAMES, VMPL)
CHAIN_CHECKS = (ARK, ASK, VCEK, HWID, TCB, SIGNATURE, REVOCATION)
CHECK_NAMES = (STRUCTURE, *REPORT_CHECKS, CERTIFICATES, *CHAIN_CHECKS)
__all__ = ["Check", "Failure", "Verdict"]  # re-exported: callers name them verify.Check ...


def utc_now() -> datetime:
    """The wall clock in UTC: the default a CRL's currency is judged by."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Expected:
    """What the verifier expects and trusts.

    nonce (64 bytes), measurement (48), VMPL, extra trusted roots; the
    policy; the CRLs read from files, and a function fetching the chain's
    CRL from KDS (given the report and chain); the clock a CRL's currency
    is judged by (injected by tests).
    """

    nonce: bytes | None = None
    measurement: bytes | None = None
    vmpl: int = 0
    trusted_arks: tuple[x509.Certificate, ...] = ()
    policy: Policy = field(default_factory=Policy)
    crls: tuple[crl.Crl, ...] = ()
    fetch_crl: Callable[[AttestationReport, Chain], crl.Crl] | None = None
    now: Callable[[], datetime] = utc_now


@dataclass(frozen=True)
class Result:
    """Every check's outcome; `passed` only when each one passed."""

    checks: tuple[Check, ...]
    report: AttestationReport | None
    chain: Chain | None

    @property
    def passed(self) -> bool:
        """True when every required check passed and none failed (a required skip is not a pass)."""
        return passed(self.checks)

    @property
    def failure(self) -> Failure | None:
        """The gravest kind of failure, INCOMPLETE when a required check only could not run."""
        return failure(self.checks)

    @property
    def not_checked(self) -> tuple[Check, ...]:
        """The optional checks that did not run, each with why."""
        return tuple(c for c in self.checks if c.verdict is Verdict.SKIP and not c.required)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form."""
        certs = None
        if self.chain is not None:
            certs = {
                kind: {
                    "subject": self.chain.get(kind).subject.rfc4514_string(),
                    "issuer": self.chain.get(kind).issuer.rfc4514_string(),
                    "sha256": roots.fingerprint(self.chain.get(kind)),
                    "source": self.chain.sources[kind],
                }
                for kind in ("vcek", "ask", "ark")
            }
        kind = self.failure
        return {
            "verified": self.passed,
            "failure": kind.value if kind else None,
            "checks": [c.as_dict() for c in self.checks],
            "not_checked": [{"name": c.name, "reason": c.reason} for c in self.not_checked],
            "report": self.report.as_dict() if self.report else None,
            "certificates": certs,
        }


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


def _check_report(report: AttestationReport, expected: Expected) -> list[Check]:
    checks = []
    if expected.nonce is None:
        checks.append(Check(REQUEST_DATA, Verdict.SKIP, "no nonce given to compare with"))
    elif report.report_data == pad_nonce(expected.nonce):
        checks.append(Check(REQUEST_DATA, Verdict.PASS, "equals the nonce"))
    else:
        checks.append(
            Check(
                REQUEST_DATA,
                Verdict.FAIL,
                f"is {report.report_data.hex()}, not the nonce {pad_nonce(expected.nonce).hex()}",
            )
        )
    if expected.measurement is None:
        checks.append(Check(MEASUREMENT, Verdict.SKIP, "no expected measurement given"))
    elif report.measurement == expected.measurement:
        checks.append(Check(MEASUREMENT, Verdict.PASS, f"{report.measurement.hex()} as expected"))
    else:
        checks.append(
            Check(
                MEASUREMENT,
                Verdict.FAIL,
                f"is {report.measurement.hex()}, expected {expected.measurement.hex()}",
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
    if report.vmpl == expected.vmpl:
        checks.append(Check(VMPL, Verdict.PASS, f"{report.vmpl}"))
    else:
        checks.append(
            Check(VMPL, Verdict.FAIL, f"report is for VMPL {report.vmpl}, expected {expected.vmpl}")
        )
    # The policy's checks stand beside the debug bit's, before the VMPL's.
    return checks[:3] + policy.check_all(report, expected.policy) + checks[3:]


def _check_ark(ark: x509.Certificate, expected: Expected) -> Check:
    problem = rsa_pss_problem(ark, ark)
    if problem:
        return Check(ARK, Verdict.FAIL, f"{common_name(ark)} is not self-signed: {problem}")
    key = spki(ark)
    for pair in roots.pinned():
        if spki(pair.ark) == key:
            return Check(
                ARK,
                Verdict.PASS,
                f"AMD's pinned {pair.product.value} root {common_name(ark)}, self-signed",
            )
    for trusted in expected.trusted_arks:
        if spki(trusted) == key:
            return Check(
                ARK,
                Verdict.PASS,
                f"{common_name(ark)}, self-signed, explicitly trusted (not an AMD root)",
            )
    return Check(
        ARK,
        Verdict.FAIL,
        f"{common_name(ark)} (SHA-256 {roots.fingerprint(ark)}) is not one of AMD's pinned roots "
        "(Milan, Genoa, Turin) nor an explicitly trusted one",
    )


def _check_signed(name: str, cert: x509.Certificate, issuer: x509.Certificate) -> Check:
    problem = rsa_pss_problem(cert, issuer)
    if problem:
        return Check(
            name,
            Verdict.FAIL,
            f"{common_name(cert)} is not signed by {common_name(issuer)}: {problem}",
        )
    return Check(name, Verdict.PASS, f"{common_name(cert)} signed by {common_name(issuer)}")


def _check_hwid(report: AttestationReport, vcek: x509.Certificate) -> Check:
    hwid = vcek_hwid(vcek)
    if hwid is None:
        return Check(HWID, Verdict.FAIL, "the VCEK has no hwID extension (1.3.6.1.4.1.3704.1.4)")
    if report.chip_id_masked:
        return Check(
            HWID,
            Verdict.FAIL,
            "the report's chip ID is masked (MASK_CHIP_ID): it cannot be matched",
        )
    short = report.product is Product.TURIN and not any(report.chip_id[8:])
    if hwid == report.chip_id or (short and hwid == report.chip_id[:8]):
        return Check(HWID, Verdict.PASS, f"equals the report's chip ID {report.hwid.hex()}")
    return Check(
        HWID,
        Verdict.FAIL,
        f"VCEK is for chip {hwid.hex()}, the report's chip ID is {report.chip_id.hex()}",
    )


def _check_tcb(report: AttestationReport, vcek: x509.Certificate) -> Check:
    tcb = report.reported_tcb
    wanted: dict[str, int | None] = {
        "blSPL": tcb.bootloader,
        "teeSPL": tcb.tee,
        "snpSPL": tcb.snp,
        "ucodeSPL": tcb.microcode,
    }
    if tcb.fmc is not None or extension(vcek, OID_SPL["fmcSPL"]) is not None:
        wanted["fmcSPL"] = tcb.fmc
    problems = []
    for name, value in wanted.items():
        got = vcek_spl(vcek, name)
        if got is None:
            problems.append(f"the VCEK has no {name} (or not an integer)")
        elif value is None:
            problems.append(
                f"the VCEK certifies {name}={got} (a Turin VCEK) but the report was read as {report.product or 'Milan/Genoa'}"
            )
        elif got != value:
            problems.append(f"{name}: VCEK {got}, report {value}")
    if problems:
        return Check(TCB, Verdict.FAIL, "; ".join(problems))
    return Check(TCB, Verdict.PASS, f"equals the reported TCB ({tcb})")


def _check_signature(report: AttestationReport, vcek: x509.Certificate) -> Check:
    if report.signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
        return Check(
            SIGNATURE,
            Verdict.FAIL,
            f"signature algorithm {report.signature_algo} is not 1 (ECDSA P-384 with SHA-384)",
        )
    if report.signing_key != "VCEK":
        return Check(
            SIGNATURE,
            Verdict.FAIL,
            f"the report says it was signed with {report.signing_key}, not the VCEK",
        )
    key = vcek.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        return Check(
            SIGNATURE, Verdict.FAIL, f"{common_name(vcek)}'s key is not an ECDSA P-384 key"
        )
    r = int.from_bytes(report.signature_r, "little")
    s = int.from_bytes(report.signature_s, "little")
    try:
        key.verify(encode_dss_signature(r, s), report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ValueError):
        return Check(
            SIGNATURE,
            Verdict.FAIL,
            f"the signature over bytes 0-0x29F does not verify with {common_name(vcek)}'s key",
        )
    return Check(
        SIGNATURE, Verdict.PASS, f"ECDSA P-384 SHA-384 over bytes 0-0x29F, by {common_name(vcek)}"
    )


def _guard(name: str, check: Callable[[], Check]) -> Check:
    """Run one check; a certificate cryptography cannot read fails it rather than raising."""
    try:
        return check()
    except (ValueError, UnsupportedAlgorithm) as exc:
        return Check(name, Verdict.FAIL, f"unusable certificate: {exc}", Failure.CHAIN)


def _check_revocation(report: AttestationReport, chain: Chain, expected: Expected) -> Check:
    fetch = expected.fetch_crl
    vlek = report.signing_key == "VLEK"
    return crl.check_revocation(
        chain.ark,
        ("ASVK" if vlek else "ASK", chain.ask),
        ("VLEK" if vlek else "VCEK", chain.vcek),
        expected.crls,
        None if fetch is None else lambda: fetch(report, chain),
        expected.now(),
        required=expected.policy.require_revocation_check,
    )


def _check_chain(report: AttestationReport, chain: Chain, expected: Expected) -> list[Check]:
    checks = [
        _guard(ARK, lambda: _check_ark(chain.ark, expected)),
        _guard(ASK, lambda: _check_signed(ASK, chain.ask, chain.ark)),
        _guard(VCEK, lambda: _check_signed(VCEK, chain.vcek, chain.ask)),
        _guard(HWID, lambda: _check_hwid(report, chain.vcek)),
        _guard(TCB, lambda: _check_tcb(report, chain.vcek)),
        _guard(SIGNATURE, lambda: _check_signature(report, chain.vcek)),
    ]
    chained = [replace(c, failure=Failure.CHAIN) for c in checks]
    return [*chained, _guard(REVOCATION, lambda: _check_revocation(report, chain, expected))]


def _skipped(names: tuple[str, ...], why: str, expected: Expected) -> list[Check]:
    """Checks that could not run; revocation is required only when the policy says so."""
    optional = not expected.policy.require_revocation_check
    return [Check(n, Verdict.SKIP, why, required=not (n == REVOCATION and optional)) for n in names]


def verify(
    raw: bytes,
    chain: Chain | Callable[[AttestationReport], Chain],
    expected: Expected,
    *,
    product: Product | None = None,
) -> Result:
    """Verify the report in `raw` with `chain` (or a function getting it for the parsed report).

    Never raises for bad input: a report that cannot be parsed fails
    `report structure`, certificates that cannot be had fail `certificates`,
    and the checks that depend on them are skipped.
    """
    try:
        report = parse_report(raw, product=product)
    except ReportError as exc:
        checks = [Check(STRUCTURE, Verdict.FAIL, str(exc))]
        checks += _skipped(CHECK_NAMES[1:], "the report could not be read", expected)
        return Result(tuple(checks), None, None)
    where = f", {report.product.value}" if report.product else ""
    checks = [
        Check(
            STRUCTURE,
            Verdict.PASS,
            f"version {report.version}, {len(raw)} bytes{where} ({report.product_source})",
        )
    ]
    checks += _check_report(report, expected)
    try:
        got = chain if isinstance(chain, Chain) else chain(report)
    except (CertError, KdsError, roots.PinnedRootError) as exc:
        kind = Failure.FETCH if isinstance(exc, KdsError) else Failure.CHAIN
        checks.append(Check(CERTIFICATES, Verdict.FAIL, str(exc), kind))
        checks += _skipped(CHAIN_CHECKS, "no certificates to check with", expected)
        return Result(tuple(checks), report, None)
    sources = ", ".join(
        f"{kind.upper()} from {got.sources[kind]}" for kind in ("vcek", "ask", "ark")
    )
    checks.append(Check(CERTIFICATES, Verdict.PASS, sources))
    checks += _check_chain(report, got, expected)
    return Result(tuple(checks), report, got)
