"""`sevimg run`: the SNP command line, and smoke boots under the real QEMU."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sevimg import run
from sevimg.launch import MIN_MEMORY_MB, READY_MARKER
from sevimg.problems import SevimgError
from tests.conftest import CliFn


@pytest.fixture
def built_guest(workspace: Path) -> Path:
    """A file where `sevimg build` puts the debian-13 guest (contents do not matter to --dry-run)."""
    out = workspace / "out"
    out.mkdir()
    path = out / "guest-debian-13.efi"
    path.write_bytes(b"MZ" + b"\0" * 1024)
    return path


def test_dry_run_prints_the_snp_command(cli: CliFn, built_guest: Path) -> None:
    run_ = cli("run", "debian-13", "--dry-run")
    assert run_.code == 0, run_.output
    command = run_.stdout.strip().splitlines()[-1]
    for piece in (
        "-enable-kvm",
        "-machine q35",
        "-cpu EPYC-v4",
        "-machine memory-encryption=sev0",
        "-monitor none",
        "-display none",
        "-object memory-backend-memfd,id=ram1,size=2048M",
        "-machine memory-backend=ram1",
        "reduced-phys-bits=1,kernel-hashes=on",
        f"-kernel {built_guest}",
    ):
        assert piece in command, piece
    assert "-object sev-snp-guest,id=sev0,cbitpos=" in command
    assert "-bios " in command
    assert "OVMF.amdsev.fd" in command or "ovmf-x86_64-sev.bin" in command
    assert "# cbitpos" in run_.stdout


def test_memory_floor_is_enforced(cli: CliFn, built_guest: Path) -> None:
    small = cli("run", "debian-13", "--dry-run", "--memory", "1024")
    assert small.code == 1 and f"an SNP guest needs at least {MIN_MEMORY_MB} MB" in small.stderr
    assert "size=4096M" in cli("run", "debian-13", "--dry-run", "--memory", "4096").stdout


def test_missing_artifact_says_how_to_build_it(cli: CliFn) -> None:
    missing = cli("run", "debian-13", "--dry-run")
    assert missing.code == 1 and "guest-debian-13.efi does not exist" in missing.stderr
    assert "sevimg build debian-13 --role guest" in missing.stderr
    assert cli("run", "/nonexistent/guest.efi").code == 1


def test_snp_launch_refuses_a_machine_without_snp(cli: CliFn, built_guest: Path) -> None:
    if Path("/sys/module/kvm_amd/parameters/sev_snp").exists():
        pytest.skip("this machine may really launch SNP guests")
    refused = cli("run", "debian-13")
    assert refused.code == 1 and "this machine cannot launch SEV-SNP guests" in refused.stderr


def test_no_sev_dry_run(cli: CliFn, built_guest: Path) -> None:
    out = cli("run", "debian-13", "--no-sev", "--dry-run", "--accel", "tcg").stdout
    assert "-accel tcg" in out and "-machine q35" in out and f"-kernel {built_guest}" in out
    assert "amdsev" not in out  # the SEV build of OVMF cannot boot a -kernel UKI without SEV


def test_cbit_fallback(tmp_path: Path) -> None:
    position, origin = run.cbit_position(tmp_path / "no-such-cpuid")
    assert position == 51 and origin.startswith("default")


@pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None, reason="QEMU is installed by tools/setup"
)
def test_smoke_boot_times_out_with_the_console_tail(tmp_path: Path) -> None:
    """A kernel that never prints the marker: real QEMU and OVMF run, and we give up cleanly."""
    junk = tmp_path / "junk.efi"
    junk.write_bytes(b"not a kernel")
    result = run.smoke_boot(
        junk,
        qemu=run.find_qemu(),
        firmware=run.find_firmware(run.PLAIN_OVMF, None, "plain OVMF"),
        memory_mb=MIN_MEMORY_MB,
        timeout=8,
        accel="tcg",
    )
    assert not result.ready and result.accel == "tcg"
    assert result.reason in (f"no {READY_MARKER} within 8 s",) or result.reason.startswith(
        "QEMU exited"
    )


def test_smoke_boot_refuses_too_little_memory(tmp_path: Path) -> None:
    with pytest.raises(SevimgError, match="at least 2048 MB"):
        run.smoke_boot(tmp_path / "x.efi", qemu="qemu", firmware="fw", memory_mb=512, timeout=1)
