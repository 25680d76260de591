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
(Turin's with fmcSPL). It is the expected guest when its request data is
the nonce, its measurement the expected one, debugging is off and it comes
from the expected VMPL. Validity periods are not checked: evidence is
re-verified long after the run, and AMD's roots are valid until 2045 and later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sevimg_cert import roots
from sevimg_cert.certs import (
    OID_SPL,
    CertError,
    Chain,
    common_name,
    endorsement_kind,
    extension,
    product_of_root,
    rsa_pss_problem,
    spki,
    vcek_hwid,
    vcek_spl,
)
from sevimg_cert.kds import KdsError
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
CHECK_NAMES = (
    STRUCTURE,
    REQUEST_DATA,
    MEASUREMENT,
    DEBUG,
    VMPL,
    CERTIFICATES,
    ARK,
    ASK,
    VCEK,
    HWID,
    TCB,
    SIGNATURE,
)


class Verdict(StrEnum):
    """A check passed, failed, or could not run (which is not a pass)."""

    PASS = "pass"  # noqa: S105  (a verdict, not a password)
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One named check and why it came out as it did."""

    name: str
    verdict: Verdict
    reason: str

    def as_dict(self) -> dict[str, str]:
        """A JSON-friendly form."""
        return {"name": self.name, "verdict": self.verdict.value, "reason": self.reason}


@dataclass(frozen=True)
class Expected:
    """What the verifier expects: nonce (64 bytes), measurement (48), VMPL, extra trusted roots."""

    nonce: bytes | None = None
    measurement: bytes | None = None
    vmpl: int = 0
    trusted_arks: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class Result:
    """Every check's outcome; `passed` only when each one passed."""

    checks: tuple[Check, ...]
    report: AttestationReport | None
    chain: Chain | None

    @property
    def passed(self) -> bool:
        """True when there are checks and every one passed (a skip is not a pass)."""
        return bool(self.checks) and all(c.verdict is Verdict.PASS for c in self.checks)

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
        return {
            "verified": self.passed,
            "signing_key": self.report.signing_key if self.report else None,
            "checks": [c.as_dict() for c in self.checks],
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
    return checks


def _check_ark(
    ark: x509.Certificate, expected: Expected, report: AttestationReport | None = None
) -> Check:
    problem = rsa_pss_problem(ark, ark)
    if problem:
        return Check(ARK, Verdict.FAIL, f"{common_name(ark)} is not self-signed: {problem}")
    key = spki(ark)
    for pair in roots.pinned():
        if spki(pair.ark) != key:
            continue
        made_by = report.product if report is not None else None
        if made_by is not None and made_by is not pair.product:
            return Check(
                ARK,
                Verdict.FAIL,
                f"the chain ends in AMD's {pair.product.value} root {common_name(ark)}, but the "
                f"report is from a {made_by.value} processor ({report.product_source if report else ''})",
            )
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
    """The VCEK names this chip; a VLEK names none (KDS spec 57230: VLEKs carry csp_id, no hwID)."""
    if endorsement_kind(vcek) == "VLEK":
        # Whether the report says VLEK is the signature check's to judge.
        shown = "zeros" if report.chip_id_masked else report.chip_id.hex()
        return Check(
            HWID,
            Verdict.PASS,
            f"signed with a VLEK, which names no chip (the report's chip ID: {shown}); not compared",
        )
    hwid = vcek_hwid(vcek)
    if hwid is None:
        return Check(HWID, Verdict.FAIL, "the VCEK has no hwID extension (1.3.6.1.4.1.3704.1.4)")
    if report.chip_id_masked:
        return Check(
            HWID,
            Verdict.PASS,
            "the report's chip ID is zeros (the host set MASK_CHIP_ID): not compared; "
            f"the signature check binds the report to the VCEK of chip {hwid.hex()}",
        )
    size = report.hwid_size
    if size is not None and len(hwid) != size:
        return Check(
            HWID,
            Verdict.FAIL,
            f"the VCEK's hwID is {len(hwid)} bytes; a {report.product.value if report.product else ''} "
            f"chip's is {size} (KDS puts the bare chip ID there)",
        )
    prefix, rest = report.chip_id[: len(hwid)], report.chip_id[len(hwid) :]
    if len(hwid) in (8, 64) and hwid == prefix and not any(rest):
        return Check(HWID, Verdict.PASS, f"equals the report's chip ID {hwid.hex()}")
    return Check(
        HWID,
        Verdict.FAIL,
        f"VCEK is for chip {hwid.hex()}, the report's chip ID is "
        f"{(report.chip_id if any(rest) else prefix).hex()}",
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
    if report.signing_key not in ("VCEK", "VLEK"):
        return Check(
            SIGNATURE,
            Verdict.FAIL,
            f"the report says it was signed with {report.signing_key}, not a VCEK or VLEK",
        )
    if report.mask_chip_key:
        return Check(
            SIGNATURE,
            Verdict.FAIL,
            "the host set MASK_CHIP_KEY: the firmware wrote zeros instead of a signature",
        )
    kind = endorsement_kind(vcek)
    if kind != report.signing_key:
        return Check(
            SIGNATURE,
            Verdict.FAIL,
            f"the report says its {report.signing_key} signed it, "
            f"but the certificate given is {common_name(vcek)}",
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
        SIGNATURE,
        Verdict.PASS,
        f"ECDSA P-384 SHA-384 over bytes 0-0x29F, by the {kind} ({common_name(vcek)})",
    )


def _guard(name: str, check: Callable[[], Check]) -> Check:
    """Run one check; a certificate cryptography cannot read fails it rather than raising."""
    try:
        return check()
    except (ValueError, UnsupportedAlgorithm) as exc:
        return Check(name, Verdict.FAIL, f"unusable certificate: {exc}")


def _check_chain(report: AttestationReport, chain: Chain, expected: Expected) -> list[Check]:
    return [
        _guard(ARK, lambda: _check_ark(chain.ark, expected, report)),
        _guard(ASK, lambda: _check_signed(ASK, chain.ask, chain.ark)),
        _guard(VCEK, lambda: _check_signed(VCEK, chain.vcek, chain.ask)),
        _guard(HWID, lambda: _check_hwid(report, chain.vcek)),
        _guard(TCB, lambda: _check_tcb(report, chain.vcek)),
        _guard(SIGNATURE, lambda: _check_signature(report, chain.vcek)),
    ]


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
        checks += [Check(n, Verdict.SKIP, "the report could not be read") for n in CHECK_NAMES[1:]]
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
    except (CertError, KdsError, roots.PinnedRootError, ValueError, UnsupportedAlgorithm) as exc:
        # CertError names the file; a bare ValueError is a certificate cryptography cannot read.
        checks.append(Check(CERTIFICATES, Verdict.FAIL, str(exc) or type(exc).__name__))
        checks += [Check(n, Verdict.SKIP, "no certificates to check with") for n in CHECK_NAMES[6:]]
        return Result(tuple(checks), report, None)
    made_by = product_of_root(got) if report.product is None else None
    if made_by is not None:  # a version 2 report: AMD's root of the chain names the processor
        source = f"AMD's {made_by.value} root ends the chain"
        report = replace(parse_report(raw, product=made_by), product_source=source)
        checks[0] = Check(
            STRUCTURE, Verdict.PASS, f"version {report.version}, {made_by.value} ({source})"
        )
    labels = {"vcek": got.endorser or "VCEK", "ask": got.intermediate, "ark": "ARK"}
    sources = ", ".join(f"{labels[kind]} from {got.sources[kind]}" for kind in labels)
    checks.append(Check(CERTIFICATES, Verdict.PASS, sources))
    checks += _check_chain(report, got, expected)
    return Result(tuple(checks), report, got)
