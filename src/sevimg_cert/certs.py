"""The certificates a report is verified with, from files or a folder.

A chain is the key that signed the report (a chip's VCEK, or a cloud
provider's VLEK), the intermediate that signed it (the ASK for VCEKs, the
ASVK for VLEKs) and the product's root (ARK). A folder holds `ark`, `ask` or
`asvk`, and `vcek` or `vlek` as `.pem` or `.der`, or AMD KDS's own shapes:
`cert_chain.pem` (the ASK or ASVK, then the ARK) next to `vcek.der`. Only
the VCEK or VLEK is required: a missing intermediate or root is taken from
AMD's pinned certificates (by the issuer name of the certificate below it),
so a chain is never completed with anything but AMD's real keys.

Every real VCEK and VLEK has serial number 0, which RFC 5280 disallows and
`cryptography` warns about on loading; the warning is silenced around the
loading and reading the serial only (see `_quietly`), so nothing reaches
the user.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import SignatureAlgorithmOID

from sevimg_cert import roots
from sevimg_cert.report import Product

MAX_CERT_FILE = 1 << 20  # certificates are a few KiB; refuse to read anything huge
KINDS = ("vcek", "ask", "ark")
# File stems a folder may hold for each slot of the chain (snpguest's names).
FILE_STEMS = {"vcek": ("vcek", "vlek"), "ask": ("ask", "asvk"), "ark": ("ark",)}
# The subject CNs AMD's KDS gives the keys that sign reports (KDS spec 57230).
ENDORSEMENT_CNS = {"SEV-VCEK": "VCEK", "SEV-VLEK": "VLEK"}
# cryptography's warning for AMD's serial 0 ("Parsed a serial number which
# wasn't positive ..."), matched by its start so that no other warning is hidden.
_SERIAL_WARNING = r"Parsed a serial number which wasn't positive"


class CertError(ValueError):
    """A certificate file or folder that cannot be used; the message names it."""


@dataclass(frozen=True)
class Chain:
    """The three certificates, and where each came from (for messages and JSON).

    `vcek` is the key that signed the report and `ask` its intermediate,
    whatever their kind: for a VLEK-signed report they hold the VLEK and the ASVK.
    """

    vcek: x509.Certificate
    ask: x509.Certificate
    ark: x509.Certificate
    sources: dict[str, str]

    def get(self, kind: str) -> x509.Certificate:
        """The certificate of `kind` (vcek, ask or ark)."""
        return {"vcek": self.vcek, "ask": self.ask, "ark": self.ark}[kind]

    @property
    def endorser(self) -> str | None:
        """VCEK or VLEK: which kind of key the chain's signing certificate is."""
        return endorsement_kind(self.vcek)

    @property
    def intermediate(self) -> str:
        """ASVK for a VLEK's chain, ASK otherwise (for messages)."""
        return "ASVK" if self.endorser == "VLEK" else "ASK"


@contextmanager
def _quietly() -> Iterator[None]:
    """Silence cryptography's serial-0 deprecation warning, and only it, while loading."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SERIAL_WARNING)
        yield


def load_pem_all(data: bytes) -> list[x509.Certificate]:
    """Every PEM certificate in `data`, without the serial-0 warning (ValueError if bad)."""
    with _quietly():
        return x509.load_pem_x509_certificates(data)


def serial(cert: x509.Certificate) -> int:
    """The certificate's serial number, without the serial-0 warning (cryptography reads it lazily)."""
    with _quietly():
        return cert.serial_number


def load_der(data: bytes) -> x509.Certificate:
    """One DER certificate, without the serial-0 warning (ValueError if bad)."""
    with _quietly():
        return x509.load_der_x509_certificate(data)


def parse_certs(data: bytes, name: str) -> list[x509.Certificate]:
    """Every certificate in `data`: one DER certificate, or one or more PEM blocks."""
    too_old = roots.cryptography_too_old()
    if too_old:
        raise CertError(f"{name}: {too_old}")
    try:
        certs = load_pem_all(data) if b"-----BEGIN" in data else [load_der(data)]
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


def _role(cert: x509.Certificate) -> str:
    """vcek (a VCEK or VLEK), ark (self-issued) or ask (an intermediate), by content."""
    if endorsement_kind(cert) is not None:
        return "vcek"
    return "ark" if cert.subject == cert.issuer else "ask"


def _pick(
    found: dict[str, list[tuple[str, x509.Certificate]]],
    kind: str,
    issuer_of: x509.Certificate | None = None,
) -> tuple[str, x509.Certificate] | None:
    """The one certificate found for `kind`.

    Where several different ones were found, the one whose subject names the
    issuer of the certificate below it (`issuer_of`) is taken; two candidates
    left are an error. A single one is used as given, matching or not, so
    that a wrong intermediate or root fails its check rather than being
    replaced by a pinned one.
    """
    options: list[tuple[str, x509.Certificate]] = []
    for name, cert in found.get(kind, []):
        if all(cert != other for _, other in options):
            options.append((name, cert))
    if len(options) > 1 and issuer_of is not None:
        matching = [o for o in options if o[1].subject == issuer_of.issuer]
        options = matching or options
    if len(options) > 1:
        label = {"vcek": "VCEK (or VLEK)", "ask": "ASK (or ASVK)", "ark": "ARK"}[kind]
        raise CertError(f"{options[0][0]} and {options[1][0]} are different {label} certificates")
    return options[0] if options else None


def load_folder(folder: Path) -> Chain:
    """The chain in `folder`, completed with AMD's pinned ASK/ASVK/ARK where they are missing.

    A file holding one certificate gives it the role its name says (vcek or
    vlek, ask or asvk, ark); a file holding several (KDS's cert_chain.pem, or
    a vcek.pem with the whole chain, as some clouds hand it out) has each
    sorted by what it is: the VCEK or VLEK by its name and extensions, the
    self-issued root, and the intermediate.
    """
    if not folder.is_dir():
        raise CertError(
            f"{folder}: no such folder" if not folder.exists() else f"{folder}: not a folder"
        )
    found: dict[str, list[tuple[str, x509.Certificate]]] = {}
    stems = [(kind, stem) for kind in KINDS for stem in FILE_STEMS[kind]]
    for kind, stem in [*stems, (None, "cert_chain")]:
        for suffix in (".pem", ".der", ".crt", ".cer"):
            path = folder / f"{stem}{suffix}"
            if not path.exists():
                continue
            certs = parse_certs(read_bytes(path), str(path))
            if len(certs) == 1 and kind is not None:
                found.setdefault(kind, []).append((str(path), certs[0]))
                continue
            for at, cert in enumerate(certs, 1):
                where = f"{path} (certificate {at}, {common_name(cert)})"
                found.setdefault(_role(cert), []).append((where, cert))
    vcek = _pick(found, "vcek")
    if vcek is None:
        raise CertError(
            f"{folder}: no vcek.pem or vcek.der (the chip's VCEK, as AMD KDS serves it), "
            "nor vlek.pem or vlek.der (a cloud provider's VLEK)"
        )
    ask = _pick(found, "ask", vcek[1])
    ark = _pick(found, "ark", ask[1] if ask else None)
    return complete(vcek, ask, ark)


def product_of_root(chain: Chain) -> Product | None:
    """The product whose pinned ARK (by key) ends `chain`, or None."""
    try:
        key = spki(chain.ark)
    except (ValueError, UnsupportedAlgorithm):
        return None  # the ARK check says why
    return next((p.product for p in roots.pinned() if spki(p.ark) == key), None)


def _pinned_by_subject(kind: str, subject: x509.Name) -> tuple[str, x509.Certificate] | None:
    for pair in roots.pinned():
        options = (
            (("ASK", pair.ask), ("ASVK", pair.asvk)) if kind == "ask" else (("ARK", pair.ark),)
        )
        for name, cert in options:
            if cert.subject == subject:
                return f"pinned AMD {pair.product.value} {name}", cert
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
                f"no ASK given, and the {endorsement_kind(vcek[1]) or 'VCEK'}'s issuer "
                f"({vcek[1].issuer.rfc4514_string()}) is none of AMD's pinned ASKs or ASVKs"
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
# the SPLs under .3, hwID); the VLEK carries the same SPLs and, instead of the
# hwID, the cloud provider's csp_id. go-sev-guest transcribes them in
# kds/kds.go (OidBlSpl .. OidUcodeSpl, OidHwid, OidCspID); Turin's fmcSPL
# (.3.9) is in virtee's sev (src/certs/snp, and the real Turin VCEKs of
# tests/data/evidence carry it).
OID_PRODUCT_NAME = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.2")
OID_HWID = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.4")
OID_CSP_ID = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.5")
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


def endorsement_kind(cert: x509.Certificate) -> str | None:
    """VCEK or VLEK: by the subject CN KDS gives them (SEV-VCEK, SEV-VLEK), else by
    the extension only that kind carries (hwID, csp_id); None when neither says."""
    try:
        names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    except ValueError:
        names = []
    if names and str(names[0].value) in ENDORSEMENT_CNS:
        return ENDORSEMENT_CNS[str(names[0].value)]
    hwid, csp = extension(cert, OID_HWID), extension(cert, OID_CSP_ID)
    if (hwid is None) == (csp is None):
        return None
    return "VCEK" if hwid is not None else "VLEK"


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
    """The VCEK's hwID extension (the chip ID it certifies) as KDS issues it, or None.

    KDS puts the chip ID in as the bare extension value (64 bytes for Milan
    and Genoa, 8 for Turin), not wrapped in an OCTET STRING (go-sev-guest,
    kds/kds.go asn1OctetString: "the KDS doesn't add [a type tag] for the
    HWID"; the real VCEKs under tests/data/evidence agree). It is never
    DER-unwrapped: a real chip ID may start like a DER header, and a wrapped
    value is not what KDS issues.
    """
    return extension(cert, OID_HWID)


def product_name(cert: x509.Certificate) -> str | None:
    """The productName extension (an IA5String such as "Milan-B0"), or None."""
    raw = extension(cert, OID_PRODUCT_NAME)
    tlv = _der_value(raw) if raw is not None else None
    if tlv is None or tlv[0] != 0x16:
        return None
    return tlv[1].decode("ascii", "replace")
