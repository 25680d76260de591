"""A synthetic AMD certificate chain and SEV-SNP attestation reports, made for the tests.

Built from AMD's specifications, independently of sevimg_cert: reports are
packed with struct at the offsets of the ATTESTATION_REPORT table (SEV-SNP
firmware ABI, document 56860), certificates carry the VCEK extensions of
document 57230 encoded by hand, and nothing here imports sevimg_cert.

Keys: ARK and ASK are RSA 4096 and sign with RSA-PSS SHA-384 (salt 48) as AMD
does; the VCEK is ECDSA P-384 and signs reports over bytes [0, 0x2A0).

The VCEK is encoded as AMD's KDS issues it (test_evidence compares it with
the real ones): serial number 0, the extensions in KDS's order, the hwID as
the bare chip ID (64 bytes; Turin: its first 8) with no OCTET STRING around
it, and Turin's fmcSPL (1.3.6.1.4.1.3704.1.3.9) first among the SPLs.
"""

from __future__ import annotations

import functools
import struct
import warnings
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

NONCE = bytes(range(64))
MEASUREMENT = bytes.fromhex("5a" * 24 + "c3" * 24)
CHIP_ID = bytes((7 * i + 3) % 256 for i in range(64))
TURIN_CHIP_ID = bytes.fromhex("0123456789abcdef") + bytes(56)
# CPUID family, model, stepping per product, as the v3+ report stores them.
CPUID = {"Milan": (0x19, 0x01, 0x01), "Genoa": (0x19, 0x11, 0x01), "Turin": (0x1A, 0x02, 0x00)}
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Tcb:
    """A TCB_VERSION's security version numbers."""

    bl: int = 3
    tee: int = 0
    snp: int = 23
    ucode: int = 213
    fmc: int | None = None

    def pack(self, turin: bool) -> bytes:
        """Milan/Genoa: BL, TEE, 4 reserved, SNP, UCODE; Turin: FMC, BL, TEE, SNP, 3 reserved, UCODE."""
        if turin:
            return bytes([self.fmc or 0, self.bl, self.tee, self.snp, 0, 0, 0, self.ucode])
        return bytes([self.bl, self.tee, 0, 0, 0, 0, self.snp, self.ucode])


TURIN_TCB = Tcb(bl=1, tee=0, snp=4, ucode=72, fmc=2)


@dataclass(frozen=True)
class ReportSpec:
    """The fields of a synthetic report."""

    version: int = 5
    product: str = "Genoa"
    guest_svn: int = 1
    policy: int = 0x30000  # SMT allowed, reserved bit 17 set, debug off
    family_id: bytes = b"F" * 16
    image_id: bytes = b"I" * 16
    vmpl: int = 0
    signature_algo: int = 1
    platform_info: int = 0x25
    key_info: int = 0  # bits 4:2 = 0: signed with the VCEK
    report_data: bytes = NONCE
    measurement: bytes = MEASUREMENT
    host_data: bytes = b"H" * 32
    id_key_digest: bytes = b"\x11" * 48
    author_key_digest: bytes = b"\x22" * 48
    report_id: bytes = b"R" * 32
    report_id_ma: bytes = b"\xff" * 32
    chip_id: bytes = CHIP_ID
    current_tcb: Tcb = field(default_factory=Tcb)
    reported_tcb: Tcb = field(default_factory=Tcb)
    committed_tcb: Tcb = field(default_factory=Tcb)
    launch_tcb: Tcb = field(default_factory=Tcb)
    current_version: tuple[int, int, int] = (1, 55, 22)  # major, minor, build
    committed_version: tuple[int, int, int] = (1, 55, 21)
    launch_mit_vector: int = 0x11
    current_mit_vector: int = 0x13

    @property
    def turin(self) -> bool:
        return self.product == "Turin"


def turin_spec(**changes: object) -> ReportSpec:
    """A Turin report's spec (8-byte chip ID, TCBs with an FMC field)."""
    base = ReportSpec(
        product="Turin",
        chip_id=TURIN_CHIP_ID,
        current_tcb=TURIN_TCB,
        reported_tcb=TURIN_TCB,
        committed_tcb=TURIN_TCB,
        launch_tcb=TURIN_TCB,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def pack_report(spec: ReportSpec) -> bytearray:
    """The unsigned 1184-byte report, laid out as in the ABI table."""
    buf = bytearray(0x4A0)
    struct.pack_into("<IIQ", buf, 0x00, spec.version, spec.guest_svn, spec.policy)
    buf[0x10:0x20] = spec.family_id
    buf[0x20:0x30] = spec.image_id
    struct.pack_into("<II", buf, 0x30, spec.vmpl, spec.signature_algo)
    buf[0x38:0x40] = spec.current_tcb.pack(spec.turin)
    struct.pack_into("<QI", buf, 0x40, spec.platform_info, spec.key_info)
    buf[0x50:0x90] = spec.report_data
    buf[0x90:0xC0] = spec.measurement
    buf[0xC0:0xE0] = spec.host_data
    buf[0xE0:0x110] = spec.id_key_digest
    buf[0x110:0x140] = spec.author_key_digest
    buf[0x140:0x160] = spec.report_id
    buf[0x160:0x180] = spec.report_id_ma
    buf[0x180:0x188] = spec.reported_tcb.pack(spec.turin)
    if spec.version >= 3:
        buf[0x188:0x18B] = bytes(CPUID[spec.product])
    buf[0x1A0:0x1E0] = spec.chip_id
    buf[0x1E0:0x1E8] = spec.committed_tcb.pack(spec.turin)
    major, minor, build = spec.current_version
    buf[0x1E8:0x1EB] = bytes([build, minor, major])
    major, minor, build = spec.committed_version
    buf[0x1EC:0x1EF] = bytes([build, minor, major])
    buf[0x1F0:0x1F8] = spec.launch_tcb.pack(spec.turin)
    if spec.version >= 5:
        struct.pack_into("<QQ", buf, 0x1F8, spec.launch_mit_vector, spec.current_mit_vector)
    assert len(buf) == 1184
    return buf


def sign(report: bytearray, key: ec.EllipticCurvePrivateKey, over: bytes | None = None) -> bytes:
    """Sign bytes [0, 0x2A0) (or `over`) and store r, s little-endian in 72-byte fields at 0x2A0."""
    der = key.sign(over if over is not None else bytes(report[:0x2A0]), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    report[0x2A0:0x2E8] = r.to_bytes(72, "little")
    report[0x2E8:0x330] = s.to_bytes(72, "little")
    return bytes(report)


@functools.cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    """An RSA 4096 key per name, made once per test session."""
    return rsa.generate_private_key(public_exponent=65537, key_size=4096)


@functools.cache
def ec_key(name: str) -> ec.EllipticCurvePrivateKey:
    """A P-384 key per name."""
    return ec.generate_private_key(ec.SECP384R1())


def amd_name(cn: str) -> x509.Name:
    """A subject shaped like AMD's."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def der_integer(value: int) -> bytes:
    """DER INTEGER (small non-negative values, as the SPLs are)."""
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


def der_ia5(value: str) -> bytes:
    """DER IA5String (short form length), as productName is."""
    return bytes([0x16, len(value)]) + value.encode("ascii")


def hwid_of(product: str, chip_id: bytes) -> bytes:
    """The hwID KDS puts in a VCEK: the chip ID, Turin's first 8 bytes of it."""
    return chip_id[:8] if product == "Turin" else chip_id


def certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    signer: rsa.RSAPrivateKey,
    extensions: list[x509.ExtensionType] = (),  # type: ignore[assignment]
    *,
    ca: bool,
    serial: int | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_BEFORE + timedelta(days=365 * 25))
    )
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    cert = builder.sign(signer, hashes.SHA384(), rsa_padding=PSS)
    return cert if serial is None else with_serial(cert, serial, signer)


def _tlv(tag: int, body: bytes) -> bytes:
    """One DER TLV."""
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _split(data: bytes) -> list[bytes]:
    """The TLVs one after another in `data`, each whole."""
    out, at = [], 0
    while at < len(data):
        length, head = data[at + 1], 2
        if length & 0x80:
            count = length & 0x7F
            length, head = int.from_bytes(data[at + 2 : at + 2 + count], "big"), 2 + count
        out.append(data[at : at + head + length])
        at += head + length
    return out


def _contents(tlv: bytes) -> bytes:
    """The value of one TLV (its header skipped)."""
    return tlv[2 + (tlv[1] & 0x7F if tlv[1] & 0x80 else 0) :]


def with_serial(cert: x509.Certificate, serial: int, signer: rsa.RSAPrivateKey) -> x509.Certificate:
    """`cert` with another serial number (0, say, which CertificateBuilder refuses), re-signed.

    The TBSCertificate is [0] version, serial, ...: the serial INTEGER is
    swapped and the TBS signed again with RSA-PSS SHA-384 as AMD signs.
    """
    outer = _split(_contents(cert.public_bytes(serialization.Encoding.DER)))
    tbs_parts = _split(_contents(outer[0]))
    tbs_parts[1] = _tlv(0x02, serial.to_bytes(max(1, (serial.bit_length() + 8) // 8), "big"))
    tbs = _tlv(0x30, b"".join(tbs_parts))
    signature = signer.sign(tbs, PSS, hashes.SHA384())
    der_cert = _tlv(0x30, tbs + outer[1] + _tlv(0x03, b"\0" + signature))
    with warnings.catch_warnings():  # cryptography warns about serial 0, as with AMD's own
        warnings.filterwarnings("ignore", message="Parsed a serial number which wasn't positive")
        return x509.load_der_x509_certificate(der_cert)


def vcek_extensions(
    product: str, chip_id: bytes, tcb: Tcb, *, hwid: bytes | None = None
) -> list[x509.ExtensionType]:
    """The VCEK's AMD extensions in KDS's order: structVersion, productName, the SPLs, hwID.

    Milan and Genoa: structVersion 0, productName "Milan-B0" / "Genoa", SPLs
    .3.1, .3.2, .3.4-.3.7 (zero), .3.3, .3.8. Turin: structVersion 1,
    productName "Turin", SPLs .3.9 (fmcSPL), .3.1, .3.2, .3.3, .3.5-.3.7, .3.8.
    """
    base = "1.3.6.1.4.1.3704.1"
    turin = product == "Turin"
    if turin:
        spl = [("3.9", tcb.fmc or 0), ("3.1", tcb.bl), ("3.2", tcb.tee), ("3.3", tcb.snp)]
        spl += [("3.5", 0), ("3.6", 0), ("3.7", 0), ("3.8", tcb.ucode)]
    else:
        spl = [("3.1", tcb.bl), ("3.2", tcb.tee), ("3.4", 0), ("3.5", 0), ("3.6", 0)]
        spl += [("3.7", 0), ("3.3", tcb.snp), ("3.8", tcb.ucode)]
    name = {"Milan": "Milan-B0"}.get(product, product)
    exts: list[x509.ExtensionType] = [
        x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{base}.1"), der_integer(int(turin))),
        x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{base}.2"), der_ia5(name)),
    ]
    exts += [
        x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{base}.{k}"), der_integer(v))
        for k, v in spl
    ]
    exts.append(
        x509.UnrecognizedExtension(
            x509.ObjectIdentifier(f"{base}.4"), hwid_of(product, chip_id) if hwid is None else hwid
        )
    )
    return exts


@dataclass(frozen=True)
class SynthChain:
    """ARK, ASK and VCEK with their keys."""

    ark: x509.Certificate
    ask: x509.Certificate
    vcek: x509.Certificate
    vcek_key: ec.EllipticCurvePrivateKey

    def with_(self, **changes: x509.Certificate) -> SynthChain:
        return replace(self, **changes)  # type: ignore[arg-type]


def make_ark(product: str = "Genoa", key: str = "ark", cn: str | None = None) -> x509.Certificate:
    """A self-signed root."""
    private = rsa_key(key)
    name = amd_name(cn or f"ARK-{product}")
    return certificate(name, name, private.public_key(), private, ca=True)


def make_ask(
    product: str = "Genoa", signer: str = "ark", ark_cn: str | None = None
) -> x509.Certificate:
    """The intermediate, signed by the key named `signer`."""
    return certificate(
        amd_name(f"SEV-{product}"),
        amd_name(ark_cn or f"ARK-{product}"),
        rsa_key("ask").public_key(),
        rsa_key(signer),
        ca=True,
    )


def make_vcek(
    product: str = "Genoa",
    chip_id: bytes = CHIP_ID,
    tcb: Tcb | None = None,
    *,
    signer: str = "ask",
    hwid: bytes | None = None,
    extensions: list[x509.ExtensionType] | None = None,
) -> x509.Certificate:
    """The chip's VCEK, signed by the key named `signer`."""
    if tcb is None:
        tcb = TURIN_TCB if product == "Turin" else Tcb()
    exts = (
        extensions if extensions is not None else vcek_extensions(product, chip_id, tcb, hwid=hwid)
    )
    return certificate(
        amd_name("SEV-VCEK"),
        amd_name(f"SEV-{product}"),
        ec_key("vcek").public_key(),
        rsa_key(signer),
        exts,
        ca=False,
        serial=0,  # every VCEK KDS issues has serial 0
    )


def make_asvk(product: str = "Genoa", signer: str = "ark") -> x509.Certificate:
    """The intermediate AMD signs cloud providers' VLEKs with (SEV-VLEK-<product>)."""
    return certificate(
        amd_name(f"SEV-VLEK-{product}"),
        amd_name(f"ARK-{product}"),
        rsa_key("asvk").public_key(),
        rsa_key(signer),
        ca=True,
    )


def make_vlek(product: str = "Genoa", tcb: Tcb | None = None) -> x509.Certificate:
    """A cloud provider's VLEK as KDS issues it: the SPLs and csp_id, no hwID, serial 0.

    Its productName is the bare product line ("Milan"), as on the real VLEK
    of tests/data/evidence/trustee-milan-v3-vlek.
    """
    if tcb is None:
        tcb = TURIN_TCB if product == "Turin" else Tcb()
    exts = [
        e
        for e in vcek_extensions(product, bytes(64), tcb)
        if e.oid.dotted_string not in ("1.3.6.1.4.1.3704.1.4", "1.3.6.1.4.1.3704.1.2")
    ]
    base = "1.3.6.1.4.1.3704.1"
    exts.insert(1, x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{base}.2"), der_ia5(product)))
    exts.append(
        x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{base}.5"), der_ia5("CN=cloud.test"))
    )
    return certificate(
        amd_name("SEV-VLEK"),
        amd_name(f"SEV-VLEK-{product}"),
        ec_key("vlek").public_key(),
        rsa_key("asvk"),
        exts,
        ca=False,
        serial=0,
    )


def make_chain(
    product: str = "Genoa", chip_id: bytes | None = None, tcb: Tcb | None = None
) -> SynthChain:
    """A consistent synthetic chain for `product`."""
    if chip_id is None:
        chip_id = TURIN_CHIP_ID if product == "Turin" else CHIP_ID
    return SynthChain(
        make_ark(product), make_ask(product), make_vcek(product, chip_id, tcb), ec_key("vcek")
    )


def signed_report(
    spec: ReportSpec | None = None, key: ec.EllipticCurvePrivateKey | None = None
) -> bytes:
    """A report for `spec`, signed with the VCEK key."""
    return sign(pack_report(spec or ReportSpec()), key or ec_key("vcek"))


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def write_folder(folder: Path, chain: SynthChain, layout: str = "pem") -> Path:
    """Write the chain as `sevimg verify --certs` takes it.

    pem: ark.pem ask.pem vcek.pem; der: ark.der ask.der vcek.der;
    kds: cert_chain.pem (ASK then ARK) and vcek.der, as KDS serves them;
    vcek-only: vcek.pem alone.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "kds":
        (folder / "cert_chain.pem").write_bytes(pem(chain.ask) + pem(chain.ark))
        (folder / "vcek.der").write_bytes(der(chain.vcek))
    elif layout == "vcek-only":
        (folder / "vcek.pem").write_bytes(pem(chain.vcek))
    else:
        encode = pem if layout == "pem" else der
        for kind in ("ark", "ask", "vcek"):
            (folder / f"{kind}.{layout}").write_bytes(encode(getattr(chain, kind)))
    return folder


def verify_case(folder: Path, chain: SynthChain | None = None) -> Path:
    """A folder for `sevimg verify`: report.bin, certs/ (KDS layout) and ark.pem (the root)."""
    synth = chain or make_chain()
    (folder / "report.bin").write_bytes(signed_report())
    write_folder(folder / "certs", synth, "kds")
    (folder / "ark.pem").write_bytes(pem(synth.ark))
    return folder


def verify_args(case: Path, *more: str, report: str = "report.bin") -> list[str]:
    """`sevimg verify` of a :func:`verify_case` folder, expecting its nonce and measurement."""
    return [
        "verify",
        str(case / report),
        "--certs",
        str(case / "certs"),
        "--trusted-ark",
        str(case / "ark.pem"),
        "--nonce",
        NONCE.hex(),
        "--measurement",
        MEASUREMENT.hex(),
        *more,
    ]
