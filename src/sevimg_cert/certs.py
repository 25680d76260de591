"""The certificates a report is verified with: VCEK, ASK and ARK, from files or a folder.

A folder holds `ark`, `ask` and `vcek` as `.pem` or `.der`, or AMD KDS's own
shapes: `cert_chain.pem` (the ASK, then the ARK) next to `vcek.der` or
`vcek.pem`. Only the VCEK is required: a missing ASK or ARK is taken from
AMD's pinned certificates (by the issuer name of the certificate below it),
so a chain is never completed with anything but AMD's real keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import SignatureAlgorithmOID

from sevimg_cert import roots

MAX_CERT_FILE = 1 << 20  # certificates are a few KiB; refuse to read anything huge
KINDS = ("vcek", "ask", "ark")


class CertError(ValueError):
    """A certificate file or folder that cannot be used; the message names it."""


@dataclass(frozen=True)
class Chain:
    """The three certificates, and where each came from (for messages and JSON)."""

    vcek: x509.Certificate
    ask: x509.Certificate
    ark: x509.Certificate
    sources: dict[str, str]

    def get(self, kind: str) -> x509.Certificate:
        """The certificate of `kind` (vcek, ask or ark)."""
        return {"vcek": self.vcek, "ask": self.ask, "ark": self.ark}[kind]


def parse_certs(data: bytes, name: str) -> list[x509.Certificate]:
    """Every certificate in `data`: one DER certificate, or one or more PEM blocks."""
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CertError(f"{name}: not an X.509 certificate (PEM or DER): {detail}") from None
    if not certs:
        raise CertError(f"{name}: holds no certificate")
    for number, cert in enumerate(certs, 1):
        # The library decodes names and extensions only when asked: ask now, so an
        # undecodable one is this file's located error, not a crash in a later message.
        try:
            cert.subject.rfc4514_string()
            cert.issuer.rfc4514_string()
            cert.extensions  # noqa: B018
        except ValueError as exc:
            which = f" (certificate {number})" if len(certs) > 1 else ""
            raise CertError(
                f"{name}{which}: a name or extension cannot be decoded: {str(exc)[:200]}"
            ) from None
    return certs


def parse_cert(data: bytes, name: str) -> x509.Certificate:
    """Exactly one certificate from `data`."""
    certs = parse_certs(data, name)
    if len(certs) != 1:
        raise CertError(f"{name}: holds {len(certs)} certificates, expected one")
    return certs[0]


def read_bytes(path: Path) -> bytes:
    """A certificate file's bytes, with clean errors for missing, unreadable or huge files."""
    try:
        if path.is_dir():
            raise CertError(f"{path}: is a folder, not a certificate file")
        if path.exists() and not path.is_file():
            raise CertError(f"{path}: not a regular file")
        size = path.stat().st_size
        if size > MAX_CERT_FILE:
            raise CertError(f"{path}: {size} bytes is too large for a certificate")
        return path.read_bytes()
    except FileNotFoundError:
        raise CertError(f"{path}: no such file") from None
    except OSError as exc:
        raise CertError(f"{path}: cannot read: {exc.strerror or exc}") from None


def load_cert_file(path: Path) -> x509.Certificate:
    """One certificate from a PEM or DER file."""
    return parse_cert(read_bytes(path), str(path))


def _pick(
    found: dict[str, list[tuple[str, x509.Certificate]]], kind: str
) -> tuple[str, x509.Certificate] | None:
    """The one certificate found for `kind`; two different ones are an error."""
    options = found.get(kind, [])
    if not options:
        return None
    first_name, first = options[0]
    for name, other in options[1:]:
        if other != first:
            raise CertError(f"{first_name} and {name} are different {kind.upper()} certificates")
    return first_name, first


def load_folder(folder: Path) -> Chain:
    """The chain in `folder`, completed with AMD's pinned ASK/ARK where they are missing."""
    if not folder.is_dir():
        raise CertError(
            f"{folder}: no such folder" if not folder.exists() else f"{folder}: not a folder"
        )
    found: dict[str, list[tuple[str, x509.Certificate]]] = {}
    for kind in KINDS:
        for suffix in (".pem", ".der"):
            path = folder / f"{kind}{suffix}"
            if path.exists():
                found.setdefault(kind, []).append((str(path), load_cert_file(path)))
    chain_file = folder / "cert_chain.pem"
    if chain_file.exists():
        certs = parse_certs(read_bytes(chain_file), str(chain_file))
        if len(certs) != 2:
            raise CertError(
                f"{chain_file}: holds {len(certs)} certificates; KDS's cert_chain is the ASK, then the ARK"
            )
        ask, ark = certs
        if ask.subject == ask.issuer and ark.subject != ark.issuer:
            ask, ark = ark, ask  # the self-signed one is the root, whatever the order
        found.setdefault("ask", []).append((f"{chain_file} (ASK)", ask))
        found.setdefault("ark", []).append((f"{chain_file} (ARK)", ark))
    vcek = _pick(found, "vcek")
    if vcek is None:
        raise CertError(
            f"{folder}: no vcek.pem or vcek.der (the chip's VCEK, as AMD KDS serves it)"
        )
    return complete(vcek, _pick(found, "ask"), _pick(found, "ark"))


def _pinned_by_subject(kind: str, subject: x509.Name) -> tuple[str, x509.Certificate] | None:
    for pair in roots.pinned():
        cert = pair.ask if kind == "ask" else pair.ark
        if cert.subject == subject:
            return f"pinned AMD {pair.product.value} {kind.upper()}", cert
    return None


def complete(
    vcek: tuple[str, x509.Certificate],
    ask: tuple[str, x509.Certificate] | None,
    ark: tuple[str, x509.Certificate] | None,
) -> Chain:
    """A Chain from (source, certificate) pairs, taking a missing ASK/ARK from the pinned ones."""
    if ask is None:
        ask = _pinned_by_subject("ask", vcek[1].issuer)
        if ask is None:
            raise CertError(
                f"no ASK given, and the VCEK's issuer ({vcek[1].issuer.rfc4514_string()}) "
                "is none of AMD's pinned ASKs"
            )
    if ark is None:
        ark = _pinned_by_subject("ark", ask[1].issuer)
        if ark is None:
            raise CertError(
                f"no ARK given, and the ASK's issuer ({ask[1].issuer.rfc4514_string()}) "
                "is none of AMD's pinned ARKs"
            )
    return Chain(
        vcek=vcek[1],
        ask=ask[1],
        ark=ark[1],
        sources={"vcek": vcek[0], "ask": ask[0], "ark": ark[0]},
    )


# The VCEK's extensions: AMD document 57230, "Versioned Chip Endorsement Key
# (VCEK) Certificate and KDS Interface Specification", chapter "VCEK
# Certificate", table "VCEK Certificate Extensions" (structVersion, productName,
# the SPLs under .3, hwID).
OID_HWID = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.4")
OID_SPL = {
    "blSPL": x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.1"),
    "teeSPL": x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.2"),
    "snpSPL": x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.3"),
    "ucodeSPL": x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.8"),
    "fmcSPL": x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.9"),  # Turin and later
}


def spki(cert: x509.Certificate) -> bytes:
    """The DER SubjectPublicKeyInfo: roots are pinned by key."""
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def common_name(cert: x509.Certificate) -> str:
    """The subject's CN (or the whole subject), for messages."""
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string() or "(no subject)"


def rsa_pss_problem(cert: x509.Certificate, issuer: x509.Certificate) -> str | None:
    """Why `issuer` did not sign `cert` with RSA-PSS SHA-384, or None when it did."""
    if cert.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS:
        name = getattr(
            cert.signature_algorithm_oid, "_name", cert.signature_algorithm_oid.dotted_string
        )
        return f"signed with {name}, not RSA-PSS as AMD signs"
    try:
        digest = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        digest = None
    if not isinstance(digest, hashes.SHA384):
        return f"signature hash is {digest.name if digest else 'unknown'}, not SHA-384"
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return f"{common_name(issuer)}'s key is not an RSA key"
    params = cert.signature_algorithm_parameters
    pss = (
        params
        if isinstance(params, padding.PSS)
        else padding.PSS(padding.MGF1(hashes.SHA384()), 48)
    )
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, pss, hashes.SHA384())
    except InvalidSignature:
        return f"the signature does not verify with {common_name(issuer)}'s key"
    return None


def _der_value(data: bytes) -> tuple[int, bytes] | None:
    """(tag, contents) of one DER TLV spanning `data`, or None."""
    if len(data) < 2:
        return None
    tag, length, at = data[0], data[1], 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or len(data) < 2 + count:
            return None
        length, at = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
    return (tag, data[at:]) if len(data) - at == length else None


def extension(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    """The raw value of a non-standard extension, or None."""
    try:
        value = cert.extensions.get_extension_for_oid(oid).value
    except (x509.ExtensionNotFound, x509.DuplicateExtension, ValueError):
        return None  # a malformed extension list certifies nothing
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def vcek_spl(cert: x509.Certificate, name: str) -> int | None:
    """The VCEK's SPL extension `name` (blSPL ...) as an integer, or None."""
    raw = extension(cert, OID_SPL[name])
    tlv = _der_value(raw) if raw is not None else None
    if tlv is None or tlv[0] != 0x02 or not tlv[1]:  # an INTEGER
        return None
    return int.from_bytes(tlv[1], "big", signed=True)


def vcek_hwid(cert: x509.Certificate) -> bytes | None:
    """The VCEK's hwID extension (the chip ID it certifies), or None."""
    raw = extension(cert, OID_HWID)
    if raw is None:
        return None
    tlv = _der_value(raw)
    if tlv is not None and tlv[0] == 0x04:  # an OCTET STRING
        return tlv[1]
    return raw if len(raw) == 64 else None  # early VCEKs carried the bare bytes
