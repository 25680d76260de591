"""The expected launch measurement of a built guest, for a host's own OVMF (build machine side).

The host's firmware is taken out of the built host UKI (its initrd holds the
root file system), the guest is the built guest UKI, and the digest is
computed by sevimg_cert.measure with the pinned sev-snp-measure wheel,
unpacked from the pin cache and put on sys.path: the same files the host
carries, so the manifest and the host's harness compute with the same code.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sevimg.imaging import uki
from sevimg.problems import SevimgError
from sevimg_cert import measure

_MAX_LINKS = 8


@dataclass(frozen=True)
class Measured:
    """A guest's expected measurement and what it was computed from."""

    measurement: bytes
    ovmf: str  # the firmware's path in the host
    ovmf_sha256: str
    vcpus: int
    vcpu_type: str
    tool_version: str


def host_firmware(host: Path, firmware: str) -> bytes:
    """The bytes of `firmware` (an absolute path) in the built host UKI `host`, links followed."""
    members = uki.read_uki(host).members()
    path = PurePosixPath(firmware)
    for _ in range(_MAX_LINKS):
        member = members.get(str(path).lstrip("/"))
        if member is None:
            raise SevimgError(
                f"{host} has no {path} in its initrd",
                hint="the host's SEV firmware package (ovmf-amdsev or its family's) is missing",
            )
        if not member.is_symlink:
            if member.is_dir:
                raise SevimgError(f"{host}: {path} is a folder, not the SEV firmware")
            return member.data
        target = PurePosixPath(member.data.decode("utf-8", "surrogateescape"))
        path = target if target.is_absolute() else path.parent / target
        path = PurePosixPath(*_normal(path.parts))
    raise SevimgError(f"{host}: {firmware} is a chain of more than {_MAX_LINKS} links")


def _normal(parts: tuple[str, ...]) -> list[str]:
    """Path parts with '.' and '..' resolved (never above the root)."""
    out: list[str] = []
    for part in parts:
        if part == "..":
            if len(out) > 1:
                out.pop()
        elif part != ".":
            out.append(part)
    return out


@contextmanager
def library(folder: Path | None) -> Iterator[None]:
    """sev-snp-measure importable from `folder` (the unpacked pinned wheels) while inside."""
    if folder is None:
        yield
        return
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        if entry in sys.path:
            sys.path.remove(entry)


def compute(
    guest: Path,
    ovmf: bytes,
    ovmf_path: str,
    libraries: Path | None,
    vcpus: int = 1,
    vcpu_type: str = measure.DEFAULT_VCPU_TYPE,
) -> Measured:
    """The expected measurement of `guest` under the firmware `ovmf`; SevimgError when it cannot be had."""
    if (problem := measure.ovmf_problem(len(ovmf))) is not None:
        raise SevimgError(
            f"cannot compute the expected measurement of {guest.name}: OVMF {ovmf_path} {problem}"
        )
    with library(libraries), tempfile.TemporaryDirectory(prefix="sevimg-measure-") as scratch:
        firmware = Path(scratch) / "OVMF.fd"
        firmware.write_bytes(ovmf)
        try:
            digest = measure.expected(firmware, guest, vcpus=vcpus, vcpu_type=vcpu_type)
            version = measure.library_version()
        except measure.MeasureError as exc:
            message = str(exc).replace(str(firmware), ovmf_path)
            raise SevimgError(
                f"cannot compute the expected measurement of {guest.name}: {message}"
            ) from None
    return Measured(
        measurement=digest,
        ovmf=ovmf_path,
        ovmf_sha256=hashlib.sha256(ovmf).hexdigest(),
        vcpus=vcpus,
        vcpu_type=vcpu_type,
        tool_version=version,
    )


def find_host_firmware(host: Path, candidates: Sequence[str]) -> tuple[str, bytes]:
    """(path, bytes) of the first SEV firmware of the families' list found in the host UKI."""
    for candidate in candidates:
        try:
            return candidate, host_firmware(host, candidate)
        except SevimgError as exc:
            if "has no" not in exc.message:
                raise
    raise SevimgError(
        f"{host} carries none of the SEV firmware files the families name: "
        + ", ".join(candidates),
        hint="give the firmware with --ovmf FILE",
    )
