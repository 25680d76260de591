"""A synthetic AMD certificate chain and SEV-SNP attestation reports, made for the tests.

Built from AMD's specifications, independently of sevimg_cert: reports are
packed with struct at the offsets of the ATTESTATION_REPORT table (SEV-SNP
firmware ABI, document 56860), certificates carry the VCEK extensions of
document 57230 encoded by hand, and nothing here imports sevimg_cert.

Keys: ARK and ASK are RSA 4096 and sign with RSA-PSS SHA-384 (salt 48) as AMD
does; the VCEK is ECDSA P-384 and signs reports over bytes [0, 0x2A0).
"""

from __future__ import annotations

import functools
import struct
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


def der_octets(value: bytes) -> bytes:
    """DER OCTET STRING (short form length; the hwID is 64 bytes)."""
    return bytes([0x04, len(value)]) + value


def certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    signer: rsa.RSAPrivateKey,
    extensions: list[x509.ExtensionType] = (),  # type: ignore[assignment]
    *,
    ca: bool,
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
    return builder.sign(signer, hashes.SHA384(), rsa_padding=PSS)


def vcek_extensions(
    product: str, chip_id: bytes, tcb: Tcb, *, hwid: bytes | None = None
) -> list[x509.ExtensionType]:
    """The VCEK's AMD extensions: structVersion, productName, the SPLs and hwID."""
    base = "1.3.6.1.4.1.3704.1"
    spl = {"3.1": tcb.bl, "3.2": tcb.tee, "3.3": tcb.snp, "3.8": tcb.ucode}
    if product == "Turin":
        spl["3.9"] = tcb.fmc or 0
    name = f"{product}-B0".encode()
    exts: list[x509.ExtensionType] = [
        x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{base}.1"), der_integer(1)),
        x509.UnrecognizedExtension(
            x509.ObjectIdentifier(f"{base}.2"), bytes([0x16, len(name)]) + name
        ),
    ]
    exts += [
        x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{base}.{k}"), der_integer(v))
        for k, v in spl.items()
    ]
    exts.append(
        x509.UnrecognizedExtension(
            x509.ObjectIdentifier(f"{base}.4"), der_octets(chip_id if hwid is None else hwid)
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
