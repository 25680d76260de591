"""The SEV-SNP ATTESTATION_REPORT structure, parsed.

Layout: AMD's "SEV Secure Nested Paging Firmware ABI Specification" (document
56860), table "ATTESTATION_REPORT Structure"; virtee's `sev` crate
(src/firmware/guest/types/snp.rs) is a readable version of it. A report is
1184 (0x4A0) bytes, little-endian; the signature covers bytes [0, 0x2A0).

Versions 2 to 5 are understood (go-sev-guest's abi.go accepts the same
range, MinSupportedReportVersion..MaxSupportedReportVersion). Version 3
added the CPUID family, model and stepping of the chip (0x188..0x18A);
version 4 changed no field this reader uses (virtee reads it as version 3);
version 5 added the launch and current mitigation vectors (0x1F8, 0x200).
Turin and later chips lay out a TCB_VERSION differently (an FMC field
first), so the processor generation must be known before the TCB fields can
be read: from the CPUID bytes (v3 and later), from the shape of the chip ID
(v2: Turin's is 8 bytes, zero padded, as virtee's chip_id_is_turin_like
decides), or from the caller.

KEY_INFO (0x48; go-sev-guest abi.ParseSignerInfo): bit 0 AUTHOR_KEY_EN,
bit 1 MASK_CHIP_KEY (the firmware wrote zeros instead of a signature;
virtee's KeyInfo), bits 4:2 SIGNING_KEY (0 VCEK, 1 VLEK, 7 none; 2-6
reserved), bits 31:5 zero. A host that set MASK_CHIP_ID in SNP_CONFIG gets
reports whose CHIP_ID is zeros; no field says so but the zeros.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SUPPORTED_VERSIONS = (2, 3, 4, 5)
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1
POLICY_DEBUG_BIT = 19
POLICY_MIGRATE_MA_BIT = 18
# KEY_INFO (0x48) bits 4:2: which key signed the report.
SIGNING_KEYS = {0: "VCEK", 1: "VLEK", 7: "none"}
KEY_INFO_MASK_CHIP_KEY = 1 << 1
# The chip ID as KDS's hwID names it (KDS spec 57230, "hwID"; virtee's
# sev, src/certs/snp: Turin and later use the first 8 bytes of CHIP_ID).
HWID_SIZE_TURIN = 8
HWID_SIZE = 64


class ReportError(ValueError):
    """The bytes are not an attestation report this code understands."""


class Product(StrEnum):
    """AMD EPYC generations with SEV-SNP, spelled as AMD's KDS spells them."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"

    @classmethod
    def parse(cls, name: str) -> Product:
        """`milan`, `Genoa`, `TURIN`, `siena` ... -> the product; ValueError otherwise.

        Siena and Bergamo are Genoa-class parts: KDS serves them as Genoa.
        """
        wanted = ALIASES.get(name.strip().lower(), name.strip().lower())
        for product in cls:
            if product.value.lower() == wanted:
                return product
        known = ", ".join(PRODUCT_NAMES)
        raise ValueError(f"unknown processor {name!r} (known: {known})")


# Names a user may give for a product KDS knows by another (Genoa-class parts).
ALIASES = {"siena": "genoa", "bergamo": "genoa", "genoa-x": "genoa"}
PRODUCT_NAMES = ("milan", "genoa", "siena", "bergamo", "genoa-x", "turin")


def product_from_cpuid(family: int, model: int) -> Product | None:
    """The product of a CPUID family/model pair (as the report's v3 fields hold them).

    The KDS names only three product lines, and every SEV-SNP part chains to
    one of their roots: family 19h models 00h-0Fh are Milan; 10h-1Fh (Genoa)
    and A0h-AFh (Bergamo, Siena) are Genoa; family 1Ah models 00h-11h
    (Turin, Turin dense) are Turin. These are the ranges of virtee's sev
    crate (src/lib.rs, Generation::identify_cpu); go-sev-guest's
    abi.SevProductFromCpuid1Eax lists the first model of each line only.
    """
    if family == 0x19:
        if model <= 0x0F:
            return Product.MILAN
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
            return Product.GENOA
    if family == 0x1A and model <= 0x11:
        return Product.TURIN
    return None


@dataclass(frozen=True)
class TcbVersion:
    """A TCB_VERSION: the security version numbers of the firmware components."""

    raw: bytes
    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None  # Turin and later only

    @classmethod
    def decode(cls, raw: bytes, *, turin: bool) -> TcbVersion:
        """Milan/Genoa: BOOT_LOADER, TEE, 4 reserved, SNP, MICROCODE.

        Turin: FMC, BOOT_LOADER, TEE, SNP, 3 reserved, MICROCODE (virtee's
        sev, src/firmware/host/types/snp.rs, TcbVersion::from_turin_bytes and
        from_legacy_bytes; the real Turin reports of tests/data/evidence and
        their VCEKs' fmcSPL agree).
        """
        if turin:
            return cls(raw, bootloader=raw[1], tee=raw[2], snp=raw[3], microcode=raw[7], fmc=raw[0])
        return cls(raw, bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7], fmc=None)

    def __str__(self) -> str:
        fmc = "" if self.fmc is None else f"fmc={self.fmc} "
        return f"{fmc}bl={self.bootloader} tee={self.tee} snp={self.snp} ucode={self.microcode}"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form."""
        out: dict[str, Any] = {
            "bootloader": self.bootloader,
            "tee": self.tee,
            "snp": self.snp,
            "microcode": self.microcode,
        }
        if self.fmc is not None:
            out["fmc"] = self.fmc
        out["raw"] = self.raw.hex()
        return out


@dataclass(frozen=True)
class FirmwareVersion:
    """A firmware version, stored as build, minor, major bytes."""

    major: int
    minor: int
    build: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.build}"


@dataclass(frozen=True)
class AttestationReport:
    """One parsed ATTESTATION_REPORT; `raw` keeps the exact bytes."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: TcbVersion
    platform_info: int
    key_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: TcbVersion
    cpuid_family: int | None
    cpuid_model: int | None
    cpuid_stepping: int | None
    chip_id: bytes
    committed_tcb: TcbVersion
    current_version: FirmwareVersion
    committed_version: FirmwareVersion
    launch_tcb: TcbVersion
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: bytes  # 72 bytes, little-endian, as stored
    signature_s: bytes
    product: Product | None
    product_source: str  # how the product was decided, for messages

    @property
    def signed_bytes(self) -> bytes:
        """The bytes the signature covers: [0, 0x2A0)."""
        return self.raw[:SIGNED_SIZE]

    @property
    def debug_allowed(self) -> bool:
        """Policy bit 19: the hypervisor may debug (read) the guest."""
        return bool(self.policy >> POLICY_DEBUG_BIT & 1)

    @property
    def signing_key(self) -> str:
        """VCEK, VLEK, none, or reserved(N)."""
        code = self.key_info >> 2 & 0b111
        return SIGNING_KEYS.get(code, f"reserved({code})")

    @property
    def mask_chip_key(self) -> bool:
        """KEY_INFO's MASK_CHIP_KEY bit: the firmware wrote zeros instead of signing."""
        return bool(self.key_info & KEY_INFO_MASK_CHIP_KEY)

    @property
    def chip_id_masked(self) -> bool:
        """The chip ID is all zeros (the host set MASK_CHIP_ID, or a VLEK signed it)."""
        return not any(self.chip_id)

    @property
    def hwid_size(self) -> int | None:
        """How many bytes of the chip ID KDS's hwID holds (8 for Turin, 64 before), if known."""
        if self.product is Product.TURIN:
            return HWID_SIZE_TURIN
        if self.product in (Product.MILAN, Product.GENOA):
            return HWID_SIZE
        return None

    @property
    def hwid(self) -> bytes:
        """The chip ID as AMD's KDS names the chip: Turin uses the first 8 bytes."""
        return self.chip_id[:HWID_SIZE_TURIN] if self.product is Product.TURIN else self.chip_id

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (byte fields as lowercase hex)."""
        return {
            "version": self.version,
            "product": self.product.value if self.product else None,
            "guest_svn": self.guest_svn,
            "policy": f"{self.policy:#x}",
            "debug_allowed": self.debug_allowed,
            "family_id": self.family_id.hex(),
            "image_id": self.image_id.hex(),
            "vmpl": self.vmpl,
            "signature_algo": self.signature_algo,
            "current_tcb": self.current_tcb.as_dict(),
            "platform_info": f"{self.platform_info:#x}",
            "key_info": f"{self.key_info:#x}",
            "signing_key": self.signing_key,
            "mask_chip_key": self.mask_chip_key,
            "report_data": self.report_data.hex(),
            "measurement": self.measurement.hex(),
            "host_data": self.host_data.hex(),
            "id_key_digest": self.id_key_digest.hex(),
            "author_key_digest": self.author_key_digest.hex(),
            "report_id": self.report_id.hex(),
            "report_id_ma": self.report_id_ma.hex(),
            "reported_tcb": self.reported_tcb.as_dict(),
            "cpuid_family": self.cpuid_family,
            "cpuid_model": self.cpuid_model,
            "cpuid_stepping": self.cpuid_stepping,
            "chip_id": self.chip_id.hex(),
            "committed_tcb": self.committed_tcb.as_dict(),
            "current_version": str(self.current_version),
            "committed_version": str(self.committed_version),
            "launch_tcb": self.launch_tcb.as_dict(),
            "launch_mit_vector": self.launch_mit_vector,
            "current_mit_vector": self.current_mit_vector,
            "signature_r": self.signature_r.hex(),
            "signature_s": self.signature_s.hex(),
        }


# The processors whose firmware writes version 2 reports (no CPUID fields):
# Milan and Genoa (the CPUID fields came with version 3, which Turin writes from the start).
VERSION_2_PRODUCTS = (Product.MILAN, Product.GENOA)


def _decide_product(
    data: bytes, version: int, given: Product | None
) -> tuple[Product | None, bool, str]:
    """(product, Turin TCB layout?, how it was decided)."""
    family, model = data[0x188], data[0x189]
    if given is not None:
        said = product_from_cpuid(family, model) if version >= 3 and family else None
        if said is not None and said is not given:
            return given, given is Product.TURIN, f"given; the report's CPUID says {said.value}"
        return given, given is Product.TURIN, "given"
    if version >= 3 and family:
        product = product_from_cpuid(family, model)
        where = f"CPUID family {family:#x} model {model:#x}"
        if product is None:
            where += " is no product AMD's KDS serves (Milan, Genoa, Turin)"
        # An unknown newer family still uses the Turin TCB layout (Venice does).
        return product, product is Product.TURIN or family >= 0x1A, where
    chip_id = data[0x1A0:0x1E0]
    if any(chip_id[:8]) and not any(chip_id[8:]):
        return Product.TURIN, True, "chip ID of 8 bytes"
    if version >= 3:
        return None, False, "CPUID fields are zero"
    return None, False, "not recorded in a version 2 report (Milan or Genoa)"


def parse_report(data: bytes, *, product: Product | None = None) -> AttestationReport:
    """Parse 1184 bytes; ReportError names what is wrong (size, version).

    `product` overrides what the report says about its processor, which
    decides the TCB layout (and which VCEK KDS serves).
    """
    if len(data) != REPORT_SIZE:
        short = "truncated: " if len(data) < REPORT_SIZE else ""
        raise ReportError(
            f"{short}{len(data)} bytes; an SEV-SNP attestation report is {REPORT_SIZE} (0x4A0)"
        )
    version = struct.unpack_from("<I", data, 0x00)[0]
    if version not in SUPPORTED_VERSIONS:
        known = ", ".join(map(str, SUPPORTED_VERSIONS))
        raise ReportError(f"report version {version} is not one this verifier knows ({known})")
    prod, turin, source = _decide_product(data, version, product)

    def u32(at: int) -> int:
        return int(struct.unpack_from("<I", data, at)[0])

    def u64(at: int) -> int:
        return int(struct.unpack_from("<Q", data, at)[0])

    def tcb(at: int) -> TcbVersion:
        return TcbVersion.decode(data[at : at + 8], turin=turin)

    def fw(at: int) -> FirmwareVersion:
        return FirmwareVersion(major=data[at + 2], minor=data[at + 1], build=data[at])

    v3 = version >= 3
    v5 = version >= 5
    return AttestationReport(
        raw=bytes(data),
        version=version,
        guest_svn=u32(0x04),
        policy=u64(0x08),
        family_id=data[0x10:0x20],
        image_id=data[0x20:0x30],
        vmpl=u32(0x30),
        signature_algo=u32(0x34),
        current_tcb=tcb(0x38),
        platform_info=u64(0x40),
        key_info=u32(0x48),
        report_data=data[0x50:0x90],
        measurement=data[0x90:0xC0],
        host_data=data[0xC0:0xE0],
        id_key_digest=data[0xE0:0x110],
        author_key_digest=data[0x110:0x140],
        report_id=data[0x140:0x160],
        report_id_ma=data[0x160:0x180],
        reported_tcb=tcb(0x180),
        cpuid_family=data[0x188] if v3 else None,
        cpuid_model=data[0x189] if v3 else None,
        cpuid_stepping=data[0x18A] if v3 else None,
        chip_id=data[0x1A0:0x1E0],
        committed_tcb=tcb(0x1E0),
        current_version=fw(0x1E8),
        committed_version=fw(0x1EC),
        launch_tcb=tcb(0x1F0),
        launch_mit_vector=u64(0x1F8) if v5 else None,
        current_mit_vector=u64(0x200) if v5 else None,
        signature_r=data[0x2A0:0x2E8],
        signature_s=data[0x2E8:0x330],
        product=prod,
        product_source=source,
    )
