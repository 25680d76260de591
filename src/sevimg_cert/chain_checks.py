"""Whether a report is genuine: its certificate chain and its signature, each a named check.

The chain is VCEK -> ASK -> ARK, or for a report a cloud provider's VLEK
signed, VLEK -> ASVK -> ARK (AMD document 57230, "VCEK Certificate and KDS
Interface Specification"; go-sev-guest verify/verify.go reads it so). The
checks keep the names ASK and VCEK for the intermediate and the signing key
whatever their kind; their reasons name the certificates. Each check
returns its verdict and never raises: a certificate cryptography cannot
read fails its check (see `guard`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sevimg_cert import roots
from sevimg_cert.certs import (
    OID_SPL,
    Chain,
    common_name,
    endorsement_kind,
    extension,
    rsa_pss_problem,
    spki,
    vcek_hwid,
    vcek_spl,
)
from sevimg_cert.checks import Check, Failure, Verdict
from sevimg_cert.report import SIGNATURE_ALGO_ECDSA_P384_SHA384, AttestationReport

ARK = "ARK"
ASK = "ASK"  # the ASK, or a VLEK's ASVK
VCEK = "VCEK"  # the VCEK, or the VLEK
HWID = "VCEK hwID"
TCB = "VCEK TCB"
SIGNATURE = "report signature"
CHECK_NAMES = (ARK, ASK, VCEK, HWID, TCB, SIGNATURE)


def check_ark(
    ark: x509.Certificate,
    trusted_arks: tuple[x509.Certificate, ...] = (),
    report: AttestationReport | None = None,
) -> Check:
    """The ARK is self-signed and AMD's pinned root of the report's product, or one the caller trusts."""
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
    for trusted in trusted_arks:
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


def check_signed(name: str, cert: x509.Certificate, issuer: x509.Certificate) -> Check:
    """`issuer` signed `cert` (RSA-PSS SHA-384, as AMD signs the ASK, ASVK, VCEK and VLEK)."""
    problem = rsa_pss_problem(cert, issuer)
    if problem:
        return Check(
            name,
            Verdict.FAIL,
            f"{common_name(cert)} is not signed by {common_name(issuer)}: {problem}",
        )
    return Check(name, Verdict.PASS, f"{common_name(cert)} signed by {common_name(issuer)}")


def check_hwid(report: AttestationReport, vcek: x509.Certificate) -> Check:
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


def check_tcb(report: AttestationReport, vcek: x509.Certificate) -> Check:
    """The key's SPL extensions equal the reported TCB (fmcSPL where the VCEK or layout has one)."""
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


def check_signature(report: AttestationReport, vcek: x509.Certificate) -> Check:
    """The report's signature verifies with the key its SIGNING_KEY field names."""
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


def guard(name: str, check: Callable[[], Check]) -> Check:
    """Run one check; a certificate cryptography cannot read fails it rather than raising."""
    try:
        return check()
    except (ValueError, UnsupportedAlgorithm) as exc:
        return Check(name, Verdict.FAIL, f"unusable certificate: {exc}", Failure.CHAIN)


def check_chain(
    report: AttestationReport,
    chain: Chain,
    trusted_arks: tuple[x509.Certificate, ...] = (),
) -> list[Check]:
    """The chain's checks, in CHECK_NAMES order; a failure of any is a chain failure."""
    checks = [
        guard(ARK, lambda: check_ark(chain.ark, trusted_arks, report)),
        guard(ASK, lambda: check_signed(ASK, chain.ask, chain.ark)),
        guard(VCEK, lambda: check_signed(VCEK, chain.vcek, chain.ask)),
        guard(HWID, lambda: check_hwid(report, chain.vcek)),
        guard(TCB, lambda: check_tcb(report, chain.vcek)),
        guard(SIGNATURE, lambda: check_signature(report, chain.vcek)),
    ]
    return [replace(c, failure=Failure.CHAIN) for c in checks]
