"""`sevimg run`: the SNP command line, and smoke boots under the real QEMU."""

from __future__ import annotations

import math
import os
import shlex
import socket
import subprocess
from pathlib import Path

import click
import pytest

from sevimg.catalog.index import machine_families
from sevimg.cli.run import run_command
from sevimg.machine import run
from sevimg.problems import SevimgError
from sevimg.render.launch import MIN_MEMORY_MB, READY_MARKER, channel_args
from tests import fakes
from tests.conftest import CliFn

# QEMU and firmware search paths from the catalog's family files, as `sevimg run` uses them.
PATHS = run.search_paths(machine_families(None))


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


def children() -> list[str]:
    """Command lines of the processes this test process started and that still run."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


NOT_NUMBERS = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400", "abc", "", " ", "0x10"]
CONTROL = ["\n", "\r", "\t", "\x00", "\x1b", "\x7f"]
RUN_MODES = [["--dry-run"], ["--no-sev"], ["--no-sev", "--dry-run"], []]
RUN_CASES = (
    [("--memory", v) for v in NOT_NUMBERS]
    + [("--memory", v) for v in ["0", "-1", "-2048", "1024", "2047", "1048577"]]
    + [("--memory", v) for v in ["2048.5", "4e3", "99999999999999999999999", "9" * 5000]]
    + [("--memory", c + "4096") for c in CONTROL]
    + [("--memory", "4096" + c) for c in CONTROL]
    + [("--timeout", v) for v in NOT_NUMBERS]
    + [("--timeout", v) for v in ["0", "-0", "-1", "0.5", "1e-400", "86401", "1e9"]]
    + [("--timeout", "600" + c) for c in CONTROL]
)
# The parser gets the whole table (below); each run mode one case of each class:
# not a number, out of range, not whole, a control character.
RUN_REPRESENTATIVES = [
    ("--memory", "nan"),
    ("--memory", "0"),
    ("--memory", "2048.5"),
    ("--memory", "\x1b4096"),
    ("--timeout", "inf"),
    ("--timeout", "86401"),
    ("--timeout", "600\n"),
]
BAD_OPTIONS = [
    (["run", "debian-13", *mode], option, value)
    for mode in RUN_MODES
    for option, value in RUN_REPRESENTATIVES
] + [
    (["doctor", "--no-network"], "--timeout", value)
    for value in [*NOT_NUMBERS, "0", "0.05", "-1", "61", "1e9", "5\n"]
]


def _option(name: str) -> click.Option:
    found = [p for p in run_command.params if isinstance(p, click.Option) and name in p.opts]
    assert len(found) == 1, name
    return found[0]


@pytest.mark.parametrize(("option", "value"), RUN_CASES)
def test_the_run_options_parser_refuses_the_whole_table(option: str, value: str) -> None:
    param = _option(option)
    with pytest.raises(click.BadParameter) as refused:
        param.type.convert(value, param, None)
    assert repr(value)[:40] in str(refused.value)  # named as given


@pytest.mark.parametrize(("args", "option", "value"), BAD_OPTIONS)
def test_numbers_must_be_finite_and_in_range(
    cli: CliFn, built_guest: Path, args: list[str], option: str, value: str
) -> None:
    result = cli(*args, option, value)
    assert result.code == 1, result.output
    assert f"Invalid value for '{option}'" in result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert result.stdout == ""  # nothing started, nothing printed
    assert children() == []


@pytest.mark.parametrize(
    ("option", "value", "shown"),
    [
        ("--memory", "2048", "size=2048M"),
        ("--memory", "4096", "size=4096M"),
        ("--memory", "1048576", "size=1048576M"),
        ("--memory", "+4096", "size=4096M"),
        ("--timeout", "1", "size=2048M"),
        ("--timeout", "86400", "size=2048M"),
        ("--timeout", "1.5", "size=2048M"),
    ],
)
def test_numbers_in_range_are_taken(
    cli: CliFn, built_guest: Path, option: str, value: str, shown: str
) -> None:
    result = cli("run", "debian-13", "--dry-run", option, value)
    assert result.code == 0, result.output
    assert shown in result.stdout


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -math.inf, 0, -1.0, run.MAX_TIMEOUT + 1])
def test_smoke_boot_refuses_odd_timeouts(tmp_path: Path, timeout: float) -> None:
    with pytest.raises(SevimgError, match="--timeout"):
        run.smoke_boot(
            tmp_path / "x.efi", qemu="qemu", firmware="fw", memory_mb=MIN_MEMORY_MB, timeout=timeout
        )
    assert children() == []


@pytest.mark.parametrize("memory", [0, -1, MIN_MEMORY_MB - 1, run.MAX_MEMORY_MB + 1, True, 2048.0])
def test_snp_command_refuses_odd_memory(tmp_path: Path, memory: int) -> None:
    with pytest.raises(SevimgError, match="--memory"):
        run.snp_argv(tmp_path / "x.efi", memory_mb=memory, qemu="q", firmware="f", cbitpos=51)


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


@pytest.mark.qemu  # fails (never skips) when QEMU is missing: tests/conftest.py
def test_smoke_boot_times_out_with_the_console_tail(tmp_path: Path) -> None:
    """A kernel that never prints the marker: real QEMU and OVMF run, and we give up cleanly."""
    junk = tmp_path / "junk.efi"
    junk.write_bytes(b"not a kernel")
    result = run.smoke_boot(
        junk,
        qemu=run.find_qemu(None, PATHS.qemu),
        firmware=run.find_firmware(PATHS.plain_ovmf, None, "plain OVMF"),
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


# The host↔guest attestation channel (contract §1): exactly these arguments.
CHANNEL = [
    "-device", "virtio-serial-pci,id=sevimg-serial,iommu_platform=on,disable-legacy=on",
    "-chardev", "socket,id=sevimg-attest,path=/run/sevimg/attest.sock,server=on,wait=off",
    "-device", "virtserialport,bus=sevimg-serial.0,chardev=sevimg-attest,name=org.sevimg.attest",
]  # fmt: skip


def test_channel_args_are_the_contract() -> None:
    # The one definition: `sevimg run` uses it, and hosts get it in /etc/sevimg/launch.json.
    assert channel_args("/run/sevimg/attest.sock") == CHANNEL
    with pytest.raises(ValueError, match="cannot contain a comma"):
        channel_args("/tmp/a,server=off")


def test_dry_runs_carry_the_channel(cli: CliFn, built_guest: Path) -> None:
    for mode in (["--dry-run"], ["--no-sev", "--dry-run"]):
        out = cli("run", "debian-13", *mode, "--channel", "/run/sevimg/attest.sock").stdout
        assert shlex.split(out.strip().splitlines()[-1])[-6:] == CHANNEL, mode
    plain = cli("run", "debian-13", "--dry-run").stdout
    assert "virtio-serial" not in plain  # today's command unless asked


def test_attest_needs_no_sev_and_its_own_channel(cli: CliFn, built_guest: Path) -> None:
    snp = cli("run", "debian-13", "--attest")
    assert snp.code == 1 and "--attest needs --no-sev" in snp.stderr
    both = cli("run", "debian-13", "--no-sev", "--attest", "--channel", "/tmp/x.sock")
    assert both.code == 1 and "--attest makes its own channel" in both.stderr
    assert "Traceback" not in snp.output + both.output


@pytest.mark.qemu
def test_qemu_takes_the_channel_and_opens_its_socket(tmp_path: Path) -> None:
    """This machine's QEMU accepts the devices (iommu_platform and all) and listens on the socket."""
    socket_path = Path("/tmp") / f"sevimg-qemu-{os.getpid()}.sock"
    socket_path.unlink(missing_ok=True)
    argv = [
        "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-nodefaults",
        "-display", "none", "-monitor", "none", "-S", *channel_args(str(socket_path)),
    ]  # fmt: skip
    qemu = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        # Woken when QEMU binds the socket in /tmp (or looks again when anything else does).
        fakes.wait_until(
            socket_path.parent, lambda: socket_path.exists() or qemu.poll() is not None
        )
        assert qemu.poll() is None, qemu.communicate()[1]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(socket_path))  # wait=off: QEMU runs and accepts
    finally:
        qemu.kill()
        qemu.wait()
        socket_path.unlink(missing_ok=True)
