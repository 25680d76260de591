"""`sevimg measure` and sevimg_cert.measure on hostile inputs: the OVMF's size and shape are
checked before it is read, and numbers are read strictly (no library needed for any of this)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sevimg.imaging import measurement
from sevimg.problems import SevimgError
from sevimg_cert import measure
from tests.conftest import CliFn


@pytest.mark.parametrize(
    ("size", "problem"),
    [
        (0, "is empty"),
        (4097, "not whole 4096-byte pages"),
        (4 * 1024 * 1024 - 1, "not whole 4096-byte pages"),
        (measure.MAX_OVMF + 4096, "more than"),
        (4 * 1024 * 1024, None),
    ],
)
def test_the_ovmf_shape_rule(size: int, problem: str | None) -> None:
    found = measure.ovmf_problem(size)
    assert found is None if problem is None else (found is not None and problem in found)


def sparse(path: Path, size: int) -> Path:
    with path.open("wb") as handle:
        handle.truncate(size)  # no memory, no disk: only its size is real
    return path


@pytest.mark.parametrize(
    ("size", "problem"),
    [(4097, "not whole 4096-byte pages"), (512 * 1024 * 1024, "more than")],
    ids=["odd", "huge"],
)
def test_measure_refuses_an_ovmf_by_its_size_before_reading_it(
    cli: CliFn, tmp_path: Path, size: int, problem: str
) -> None:
    guest = tmp_path / "guest.efi"
    guest.write_bytes(b"MZ" + bytes(1022))
    ovmf = sparse(tmp_path / "OVMF.fd", size)
    run = cli("measure", str(guest), "--ovmf", str(ovmf))
    assert run.code == 1 and f"--ovmf: {ovmf} is {size} bytes" in run.stderr
    assert problem in run.stderr and "Traceback" not in run.output


def test_compute_refuses_firmware_bytes_of_the_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(SevimgError, match="host.efi:OVMF.fd is 4097 bytes, not whole"):
        measurement.compute(tmp_path / "guest.efi", bytes(4097), "host.efi:OVMF.fd", None)


@pytest.mark.parametrize("value", ["1_0", "0x4", "1e1", " 2", "٢", "1.5", "+"])
def test_vcpus_are_read_strictly(cli: CliFn, tmp_path: Path, value: str) -> None:
    guest = tmp_path / "guest.efi"
    guest.write_bytes(b"MZ")
    run = cli("measure", str(guest), "--ovmf", os.devnull, "--vcpus", value)
    assert run.code != 0 and "--vcpus" in run.stderr and "is not" in run.stderr
