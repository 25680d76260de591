"""AMD's certificate revocation lists: read them, decide whether they count, and what they revoke.

KDS publishes one CRL per product and key type (AMD document 57230, "VCEK
Certificate and KDS Interface Specification", section "Certificate
Revocation List"): `{base}/vcek/v1/{product}/crl` and `{base}/vlek/v1/{product}/crl`,
as DER, signed by the product's ARK with RSA-PSS SHA-384 like the
certificates. It lists revoked ASKs and ASVKs (go-sev-guest's
verify.GetCrlAndCheckRoot reads it the same way). A CRL counts only when the
ARK of the chain being verified signed it and it is current at the time of
verification; anything else is refused with its own reason, never ignored.

Standard library and cryptography only: this runs inside the host image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import SignatureAlgorithmOID

from sevimg_cert.certs import serial
from sevimg_cert.checks import Check, Failure, Verdict

MAX_CRL = 1 << 20  # AMD's CRLs are a few KiB


class CrlError(ValueError):
    """Bytes that are not a CRL; the message names where they came from."""


@dataclass(frozen=True)
class Crl:
    """One CRL and where it came from (a file, or a KDS URL)."""

    source: str
    crl: x509.CertificateRevocationList


def parse_crl(data: bytes, source: str) -> Crl:
    """A CRL from DER or PEM bytes; CrlError names `source` when it is not one."""
    if len(data) > MAX_CRL:
        raise CrlError(f"{source}: {len(data)} bytes is too large for a CRL (at most {MAX_CRL})")
    try:
        if b"-----BEGIN" in data:
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
    except ValueError as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CrlError(
            f"{source}: not a certificate revocation list (DER or PEM): {detail}"
        ) from None
    return Crl(source, crl)


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC) if value.tzinfo is None else value


def this_update(crl: x509.CertificateRevocationList) -> datetime:
    """thisUpdate as an aware UTC time (older cryptography gives a naive one)."""
    value = getattr(crl, "last_update_utc", None) or crl.last_update
    return _utc(value) or datetime.min.replace(tzinfo=UTC)


def next_update(crl: x509.CertificateRevocationList) -> datetime | None:
    """nextUpdate as an aware UTC time, or None when the CRL gives none."""
    return _utc(getattr(crl, "next_update_utc", None) or crl.next_update)


def signature_problem(crl: x509.CertificateRevocationList, ark: x509.Certificate) -> str | None:
    """Why `ark` did not sign `crl` with RSA-PSS SHA-384 (as AMD signs), or None when it did."""
    if crl.issuer != ark.subject:
        return f"issued by {crl.issuer.rfc4514_string()}, not by the ARK {ark.subject.rfc4514_string()}"
    if crl.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS:
        return f"signed with {crl.signature_algorithm_oid.dotted_string}, not RSA-PSS as AMD signs"
    try:
        digest = crl.signature_hash_algorithm
    except UnsupportedAlgorithm:
        digest = None
    if digest is None and _pss_sha384(crl):  # cryptography 43 names no hash for a PSS CRL
        digest = hashes.SHA384()
    if not isinstance(digest, hashes.SHA384):
        return f"signature hash is {digest.name if digest else 'unknown'}, not SHA-384"
    key = ark.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return "the ARK's key is not an RSA key"
    params = getattr(crl, "signature_algorithm_parameters", None)
    pss = (
        params
        if isinstance(params, padding.PSS)
        else padding.PSS(padding.MGF1(hashes.SHA384()), 48)
    )
    try:
        key.verify(crl.signature, crl.tbs_certlist_bytes, pss, hashes.SHA384())
    except InvalidSignature:
        return "its signature does not verify with the ARK's key: another key signed it"
    return None


_SHA384_OID = bytes.fromhex("608648016503040202")  # 2.16.840.1.101.3.4.2.2
_MGF1_OID = bytes.fromhex("2a864886f70d010108")  # 1.2.840.113549.1.1.8


def _tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, contents) of each DER TLV in `data`; IndexError/ValueError when malformed."""
    out, at = [], 0
    while at < len(data):
        tag, length, head = data[at], data[at + 1], 2
        if length & 0x80:
            count = length & 0x7F
            length, head = int.from_bytes(data[at + 2 : at + 2 + count], "big"), 2 + count
        if at + head + length > len(data):
            raise ValueError("a DER length runs past its data")
        out.append((tag, data[at + head : at + head + length]))
        at += head + length
    return out


def _pss_sha384(crl: x509.CertificateRevocationList) -> bool:
    """Whether the CRL's RSASSA-PSS parameters (RFC 4055) are SHA-384, MGF1 with SHA-384, salt 48.

    Read from the DER for the cryptography versions that do not tell: the
    CertificateList's signatureAlgorithm is SEQUENCE { rsassaPss OID,
    SEQUENCE { [0] hashAlgorithm, [1] maskGenAlgorithm, [2] saltLength,
    [3] trailerField (1) } }, as AMD encodes it.
    """
    try:
        algorithm = _tlvs(_tlvs(crl.public_bytes(Encoding.DER))[0][1])[1][1]
        params = dict(_tlvs(_tlvs(algorithm)[1][1]))
        hash_oid = _tlvs(_tlvs(params[0xA0])[0][1])[0][1]
        mgf = _tlvs(_tlvs(params[0xA1])[0][1])
        mgf_hash = _tlvs(mgf[1][1])[0][1]
        salt = _tlvs(params[0xA2])[0]
        trailer = _tlvs(params[0xA3])[0] if 0xA3 in params else (0x02, b"\x01")
    except (IndexError, KeyError, ValueError):
        return False
    return (
        hash_oid == _SHA384_OID
        and mgf[0][1] == _MGF1_OID
        and mgf_hash == _SHA384_OID
        and salt == (0x02, b"\x30")
        and trailer == (0x02, b"\x01")
    )


def currency_problem(crl: x509.CertificateRevocationList, now: datetime) -> str | None:
    """Why `crl` is not current at `now` (thisUpdate <= now <= nextUpdate), or None."""
    start, end = this_update(crl), next_update(crl)
    if now < start:
        return f"not valid yet: thisUpdate {start:%Y-%m-%d %H:%M:%SZ} is after now ({now:%Y-%m-%d %H:%M:%SZ})"
    if end is None:
        return "it has no nextUpdate, so it cannot be known to be current"
    if now > end:
        return (
            f"expired: nextUpdate {end:%Y-%m-%d %H:%M:%SZ} is before now ({now:%Y-%m-%d %H:%M:%SZ})"
        )
    return None


@dataclass(frozen=True)
class Finding:
    """What the CRLs say about a chain: which usable ones were read, what they revoke, what was refused."""

    used: tuple[str, ...]  # sources of the CRLs that count
    refused: tuple[str, ...]  # "<source>: <why>" for each CRL that does not count
    revoked: tuple[str, ...]  # "<what> (serial <n>) revoked on <date> by <source>"


def check(
    crls: Sequence[Crl],
    ark: x509.Certificate,
    certs: Sequence[tuple[str, x509.Certificate]],
    now: datetime,
) -> Finding:
    """Read each CRL against `ark` at `now` and look up each (name, certificate) of `certs` in it."""
    used, refused, revoked = [], [], []
    for item in crls:
        problem = signature_problem(item.crl, ark) or currency_problem(item.crl, now)
        if problem:
            refused.append(f"{item.source}: {problem}")
            continue
        used.append(item.source)
        for name, cert in certs:
            entry = item.crl.get_revoked_certificate_by_serial_number(serial(cert))
            if entry is None:
                continue
            when = getattr(entry, "revocation_date_utc", None) or entry.revocation_date
            revoked.append(
                f"{name} (serial {serial(cert):#x}) revoked on {when:%Y-%m-%d} by {item.source}"
            )
    return Finding(tuple(used), tuple(refused), tuple(revoked))


REVOCATION = "revocation"


def check_revocation(
    ark: x509.Certificate,
    intermediate: tuple[str, x509.Certificate],
    leaf: tuple[str, x509.Certificate],
    given: Sequence[Crl],
    fetch: Callable[[], Crl] | None,
    now: datetime,
    *,
    required: bool,
) -> Check:
    """Whether the chain's intermediate (the ASK, or the ASVK) is revoked by a CRL that counts.

    AMD's CRL is the ARK's and lists the intermediates it revokes (as
    go-sev-guest's verify.VcekNotRevoked reads it, by the ASK's serial). The
    VCEK (or VLEK) is looked up too, by its serial, when it has one: KDS
    issues VCEKs with serial 0, which names no certificate, so such a leaf is
    not looked up (an entry for serial 0 would otherwise revoke every chip).
    `given` are the CRLs the caller read from files; `fetch` gets the
    product's from KDS (or a cache) and raises OSError/ValueError/RuntimeError
    when it cannot (then, without another CRL, the check is skipped, and
    optional unless `required`), or CrlError when what it got is not a CRL
    (refused: the check fails).
    """
    crls = list(given)
    fetch_problem = None
    if fetch is not None:
        try:
            crls.append(fetch())
        except CrlError as exc:  # an answer that is not a CRL: refused, like a forged one
            return Check(REVOCATION, Verdict.FAIL, f"CRL refused: {exc}", Failure.CHAIN)
        except (OSError, ValueError, RuntimeError) as exc:
            fetch_problem = str(exc)
    if not crls:
        why = (
            f"the CRL could not be fetched: {fetch_problem}"
            if fetch_problem
            else "no CRL given (--crl FILE, or the product's from KDS with --kds)"
        )
        if required:
            failure = Failure.FETCH if fetch_problem else Failure.INCOMPLETE
            return Check(REVOCATION, Verdict.FAIL, f"required, not checked: {why}", failure)
        return Check(REVOCATION, Verdict.SKIP, why, Failure.FETCH, required=False)
    ours = [c for c in crls if c.crl.issuer == ark.subject]
    others = [
        f"{c.source}: issued by {c.crl.issuer.rfc4514_string()}, not this chain's ARK"
        for c in crls
        if c not in ours
    ]
    looked_up = [intermediate] + ([leaf] if serial(leaf[1]) else [])
    finding = check(ours, ark, looked_up, now)
    if finding.revoked:
        return Check(REVOCATION, Verdict.FAIL, "; ".join(finding.revoked), Failure.REVOKED)
    refused = list(finding.refused) + ([] if finding.used else others)
    if refused:
        return Check(REVOCATION, Verdict.FAIL, "CRL refused: " + "; ".join(refused), Failure.CHAIN)
    note = f"; ignored {'; '.join(others)}" if others else ""
    fetched = f" (fetching another failed: {fetch_problem})" if fetch_problem else ""
    return Check(
        REVOCATION,
        Verdict.PASS,
        f"{' and '.join(f'{n} (serial {serial(c):#x})' for n, c in looked_up)} "
        f"not revoked by {', '.join(finding.used)}, "
        f"signed by the ARK and current{fetched}{note}",
        Failure.CHAIN,
    )
