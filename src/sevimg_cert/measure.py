"""The expected launch measurement of a guest: what an SNP report's MEASUREMENT must equal.

Computed with the pinned `sev-snp-measure` (its `sevsnpmeasure` package,
unpacked next to this one in a host, or put on sys.path by sevimg on the
build machine) for SNP with kernel hashes, the way QEMU launches the guest:
the UKI is the kernel, with no separate initrd and no command line, as
`snpguest generate measurement --vcpu-type EPYC-v4 --ovmf OVMF.amdsev.fd
--kernel guest.efi` computes it. Imported lazily: the rest of sevimg_cert
works without the library.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

MEASUREMENT_SIZE = 48
DEFAULT_VCPU_TYPE = "EPYC-v4"
# The guest-features word QEMU gives an SNP guest by default (SNP active, no
# optional features); sev-snp-measure's and snpguest's default too.
GUEST_FEATURES = 0x1
LIBRARY = "sevsnpmeasure"
# An OVMF image is whole 4 KiB pages (the library asserts it) and a few MiB
# (OVMF.amdsev.fd: 4 MiB); anything past this is not a firmware image.
PAGE = 4096
MAX_OVMF = 64 * 1024 * 1024
# The guest UKI is hashed whole by the library; a kernel image is far smaller.
MAX_KERNEL = 1024 * 1024 * 1024


class MeasureError(Exception):
    """The measurement cannot be computed; the message says why."""


def _library() -> tuple[Any, Any, Any, Any]:
    """sevsnpmeasure's guest, ovmf, vcpu_types and SevMode, or MeasureError."""
    try:
        guest, ovmf, vcpu_types, sev_mode = (
            importlib.import_module(f"{LIBRARY}.{name}")
            for name in ("guest", "ovmf", "vcpu_types", "sev_mode")
        )
    except ImportError as exc:
        raise MeasureError(
            f"sev-snp-measure is not available ({exc}); sevimg ships its pinned wheel "
            f"as /usr/lib/sevimg/python/{LIBRARY}/ in hosts (sevimg.yaml, tools)"
        ) from None
    return guest, ovmf, vcpu_types, sev_mode.SevMode


def ovmf_problem(size: int) -> str | None:
    """Why an OVMF image of `size` bytes cannot be one, or None."""
    if size == 0:
        return "is empty"
    if size > MAX_OVMF:
        return f"is {size} bytes, more than {MAX_OVMF} ({MAX_OVMF >> 20} MiB): not an OVMF image"
    if size % PAGE:
        return f"is {size} bytes, not whole {PAGE}-byte pages: not an OVMF image"
    return None


def _readable(path: Path, what: str) -> None:
    if not path.exists():
        raise MeasureError(f"{what} {path}: no such file")
    if not path.is_file():
        raise MeasureError(f"{what} {path}: not a regular file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise MeasureError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None


def library_version() -> str:
    """The version of the sev-snp-measure in use (its CLI module says it)."""
    _library()
    cli = importlib.import_module(f"{LIBRARY}.cli")
    return str(getattr(cli, "VERSION", "unknown"))


def expected(ovmf: Path, kernel: Path, vcpus: int = 1, vcpu_type: str = DEFAULT_VCPU_TYPE) -> bytes:
    """The 48-byte SNP launch digest of `kernel` (a UKI) booted by `ovmf` with kernel hashes.

    MeasureError when the library is missing, a file cannot be read, the
    vCPU type is unknown, or `ovmf` has no SEV metadata (not an AMD SEV build
    such as OVMF.amdsev.fd).
    """
    guest, ovmf_module, vcpu_types, sev_mode = _library()
    if vcpus < 1:
        raise MeasureError(f"vcpus must be at least 1, not {vcpus}")
    signatures: dict[str, int] = vcpu_types.CPU_SIGS
    if vcpu_type not in signatures:
        raise MeasureError(
            f"unknown vCPU type {vcpu_type!r}; known: {', '.join(sorted(signatures))}"
        )
    _readable(ovmf, "OVMF")
    _readable(kernel, "kernel")
    # Size and shape before the library reads either file whole.
    if (problem := ovmf_problem(ovmf.stat().st_size)) is not None:
        raise MeasureError(f"OVMF {ovmf} {problem}")
    if kernel.stat().st_size > MAX_KERNEL:
        raise MeasureError(f"kernel {kernel} is larger than {MAX_KERNEL >> 20} MiB")
    # The library asserts and indexes where it should raise: any of these is the file's fault.
    library_errors = (RuntimeError, ValueError, OSError, AssertionError, IndexError, KeyError)
    try:
        firmware = ovmf_module.OVMF(str(ovmf))
        sections = {item.section_type() for item in firmware.metadata_items()}
    except library_errors as exc:
        raise MeasureError(f"OVMF {ovmf}: cannot read its SEV metadata: {exc}") from None
    if not sections:
        raise MeasureError(
            f"OVMF {ovmf} has no SEV metadata: not an AMD SEV build of OVMF (use OVMF.amdsev.fd)"
        )
    if ovmf_module.SectionType.SNP_KERNEL_HASHES not in sections:
        raise MeasureError(
            f"OVMF {ovmf} has no SNP kernel-hashes section: it cannot measure a kernel "
            "given with -kernel (use OVMF.amdsev.fd)"
        )
    try:
        digest = guest.calc_launch_digest(
            sev_mode.SEV_SNP,
            vcpus,
            signatures[vcpu_type],
            str(ovmf),
            str(kernel),
            None,
            None,
            GUEST_FEATURES,
        )
    except library_errors as exc:
        raise MeasureError(
            f"cannot compute the measurement of {kernel} with {ovmf}: {exc}"
        ) from None
    if not isinstance(digest, bytes) or len(digest) != MEASUREMENT_SIZE:
        raise MeasureError(f"sev-snp-measure returned no {MEASUREMENT_SIZE}-byte digest")
    return digest
