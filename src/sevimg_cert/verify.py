"""Verify an SEV-SNP attestation report: each check a named verdict with its reason.

A report is genuine when its signature (ECDSA P-384, SHA-384, over bytes
[0, 0x2A0), r and s little-endian) verifies with the key its SIGNING_KEY
field names, and that key's chain ends in AMD's root for its processor:
the chip's VCEK under the product's ASK, the VCEK's hwID (64 bytes, 8 for
Turin) equal to the report's chip ID unless the host masked it to zeros;
or a cloud provider's VLEK under the product's ASVK (a VLEK names no chip).
The ASK or ASVK is signed by the ARK (RSA-PSS, SHA-384), the ARK is
self-signed, one of AMD's pinned roots (or one the caller trusts), of the
product the report's CPUID names, and the key's SPLs equal the reported TCB
(Turin's with fmcSPL). Those are sevimg_cert.chain_checks.

It is the expected guest when its request data is the nonce, its
measurement the expected one, debugging is off, it meets the policy (guest
policy bits, minimum TCB, report version) and it comes from the expected
VMPL: sevimg_cert.report_checks. Last, the chain's ASK or ASVK (and a
leaf with a serial) must not be on a current CRL that the ARK signed
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
from cryptography.exceptions import UnsupportedAlgorithm

from sevimg_cert import chain_checks, crl, report_checks, roots
from sevimg_cert.certs import CertError, Chain, product_of_root
from sevimg_cert.chain_checks import ARK, ASK, HWID, SIGNATURE, TCB, VCEK, guard
from sevimg_cert.checks import Check, Failure, Verdict, failure, passed
from sevimg_cert.kds import KdsError
from sevimg_cert.policy import Policy
from sevimg_cert.report import AttestationReport, Product, ReportError, parse_report
from sevimg_cert.report_checks import (
    DEBUG,
    MEASUREMENT,
    MEASUREMENT_SIZE,
    NONCE_SIZE,
    REQUEST_DATA,
    VMPL,
    pad_nonce,
)

STRUCTURE = "report structure"
CERTIFICATES = "certificates"
REVOCATION = crl.REVOCATION
REPORT_CHECKS = report_checks.CHECK_NAMES
CHAIN_CHECKS = (*chain_checks.CHECK_NAMES, REVOCATION)
CHECK_NAMES = (STRUCTURE, *REPORT_CHECKS, CERTIFICATES, *CHAIN_CHECKS)
# Re-exported: callers name them verify.Check, verify.ARK ...
__all__ = [
    "ARK",
    "ASK",
    "DEBUG",
    "HWID",
    "MEASUREMENT",
    "MEASUREMENT_SIZE",
    "NONCE_SIZE",
    "REQUEST_DATA",
    "SIGNATURE",
    "TCB",
    "VCEK",
    "VMPL",
    "Check",
    "Expected",
    "Failure",
    "Result",
    "Verdict",
    "pad_nonce",
    "utc_now",
    "verify",
]


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
    """Every check's outcome; `passed` only when each required one passed and none failed."""

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
            "signing_key": self.report.signing_key if self.report else None,
            "checks": [c.as_dict() for c in self.checks],
            "not_checked": [{"name": c.name, "reason": c.reason} for c in self.not_checked],
            "report": self.report.as_dict() if self.report else None,
            "certificates": certs,
        }


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


def _skipped(names: tuple[str, ...], why: str, expected: Expected) -> list[Check]:
    """Checks that could not run; revocation is required only when the policy says so."""
    optional = not expected.policy.require_revocation_check
    return [Check(n, Verdict.SKIP, why, required=not (n == REVOCATION and optional)) for n in names]


def _report_checks(report: AttestationReport, expected: Expected) -> list[Check]:
    return report_checks.check_report(
        report, expected.nonce, expected.measurement, expected.vmpl, expected.policy
    )


def verify(
    raw: bytes,
    chain: Chain | Callable[[AttestationReport], Chain],
    expected: Expected,
    *,
    product: Product | None = None,
) -> Result:
    """Verify the report in `raw` with `chain` (or a function getting it for the parsed report).

    The checks, in CHECK_NAMES order: the report's structure; the report's
    own (report_checks); whether the certificates could be had; the chain's
    (chain_checks); revocation. Never raises for bad input: a report that
    cannot be parsed fails `report structure`, certificates that cannot be
    had fail `certificates`, and the checks that depend on them are skipped.
    """
    try:
        report = parse_report(raw, product=product)
    except ReportError as exc:
        checks = [Check(STRUCTURE, Verdict.FAIL, str(exc))]
        checks += _skipped(CHECK_NAMES[1:], "the report could not be read", expected)
        return Result(tuple(checks), None, None)
    where = f", {report.product.value}" if report.product else ""
    structure = Check(
        STRUCTURE,
        Verdict.PASS,
        f"version {report.version}, {len(raw)} bytes{where} ({report.product_source})",
    )
    try:
        got = chain if isinstance(chain, Chain) else chain(report)
    except (CertError, KdsError, roots.PinnedRootError, ValueError, UnsupportedAlgorithm) as exc:
        # CertError names the file; a bare ValueError is a certificate cryptography cannot read.
        kind = Failure.FETCH if isinstance(exc, KdsError) else Failure.CHAIN
        checks = [structure, *_report_checks(report, expected)]
        checks.append(Check(CERTIFICATES, Verdict.FAIL, str(exc) or type(exc).__name__, kind))
        checks += _skipped(CHAIN_CHECKS, "no certificates to check with", expected)
        return Result(tuple(checks), report, None)
    made_by = product_of_root(got) if report.product is None else None
    if made_by is not None:  # a version 2 report: AMD's root of the chain names the processor
        source = f"AMD's {made_by.value} root ends the chain"
        report = replace(parse_report(raw, product=made_by), product_source=source)
        structure = Check(
            STRUCTURE, Verdict.PASS, f"version {report.version}, {made_by.value} ({source})"
        )
    labels = {"vcek": got.endorser or "VCEK", "ask": got.intermediate, "ark": "ARK"}
    sources = ", ".join(f"{labels[kind]} from {got.sources[kind]}" for kind in labels)
    checks = [structure, *_report_checks(report, expected)]
    checks.append(Check(CERTIFICATES, Verdict.PASS, sources))
    checks += chain_checks.check_chain(report, got, expected.trusted_arks)
    checks.append(guard(REVOCATION, lambda: _check_revocation(report, got, expected)))
    return Result(tuple(checks), report, got)
