"""`sevimg run IMAGE --role host --no-sev` against a fake QEMU that prints a framed result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sevimg_cert import framing, markdown, result
from tests import fakes
from tests.conftest import CliFn
from tests.test_cert_result import failing, passing

# A fake QEMU that "boots" by copying FAKE_CONSOLE into its -serial file, then waits to be stopped.
CONSOLE_QEMU = r"""#!/bin/bash
console=""
printf '%s\n' "$*" > "$FAKE_ARGS"
while [ $# -gt 0 ]; do
  case "$1" in -serial) shift; console="${1#file:}" ;; esac
  shift
done
[ -n "$console" ] && cat "$FAKE_CONSOLE" >> "$console"
while :; do sleep 1; done
"""


@pytest.fixture
def host_run(workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A built host artifact (contents do not matter to the fake QEMU) and the fake's files."""
    out = workspace / "out"
    out.mkdir()
    (out / "host-debian-forky.efi").write_bytes(b"MZ" + b"\0" * 1024)
    (tmp_path / "OVMF.fd").write_bytes(b"\0" * 64)
    fakes.install(tmp_path / "bin", "qemu", CONSOLE_QEMU)
    monkeypatch.setenv("FAKE_CONSOLE", str(tmp_path / "console.txt"))
    monkeypatch.setenv("FAKE_ARGS", str(tmp_path / "args.txt"))
    return tmp_path


def boot(cli: CliFn, tmp: Path, console: str, *extra: str) -> tuple[int, str, str]:
    (tmp / "console.txt").write_text(console)
    ran = cli(
        "run", "debian-forky", "--role", "host", "--no-sev", "--accel", "tcg",
        "--qemu", str(tmp / "bin/qemu"), "--firmware", str(tmp / "OVMF.fd"),
        "--timeout", "5", "--results", str(tmp / "results"), *extra,
    )  # fmt: skip
    assert "Traceback" not in ran.output
    return ran.code, ran.stdout, ran.stderr


NOISE = "[    1.0] Linux version 6.16\nWelcome to Debian\n"


def test_a_fail_result_is_read_written_and_exits_1(cli: CliFn, host_run: Path) -> None:
    data = result.to_json(failing())
    code, stdout, stderr = boot(cli, host_run, NOISE + framing.frame(data) + "login:\n")
    assert code == 1, stderr
    assert (host_run / "results/result.json").read_bytes() == data
    md = (host_run / "results/result.md").read_text()
    assert md == markdown.to_markdown(failing())
    assert "certification result: fail" in stdout
    assert "title: debian forky SEV version 3.0" in stdout
    assert "milestone: none" in stdout
    assert "sev_snp" in stdout and "kvm_amd is not loaded" in stdout
    args = (host_run / "args.txt").read_text()
    assert "-m 4096" in args and "-nic user,model=virtio-net-pci" in args
    assert "-accel tcg" in args


def test_a_pass_result_exits_0(cli: CliFn, host_run: Path) -> None:
    data = result.to_json(passing())
    code, stdout, stderr = boot(cli, host_run, framing.frame(data).replace("\n", "\r\n"))
    assert code == 0, stderr
    assert "milestone: c3.0.0-0" in stdout
    assert json.loads((host_run / "results/result.json").read_bytes())["result"] == "pass"


def test_no_result_times_out_with_the_console_tail(cli: CliFn, host_run: Path) -> None:
    code, _, stderr = boot(cli, host_run, NOISE + "sevimg: waiting for the network\n")
    assert code == 1
    assert "gave no certification result: no SEVIMG-CERT-RESULT-END within 5 s" in stderr
    assert "waiting for the network" in stderr
    # No result, only the console, kept as the evidence of what happened.
    kept = sorted(p.relative_to(host_run) for p in (host_run / "results").rglob("*") if p.is_file())
    assert [p.name for p in kept] == ["console.log"], kept
    assert "waiting for the network" in (host_run / kept[0]).read_text()
    assert str(kept[0]) in stderr


def test_a_frame_garbled_in_both_copies_is_refused(cli: CliFn, host_run: Path) -> None:
    lines = framing.frame(result.to_json(failing())).splitlines()
    half = lines.index(framing.NEXT_MARK) + 1
    del lines[half + 3], lines[3]  # the same data line, lost in both copies
    code, _, stderr = boot(cli, host_run, "\n".join(lines) + "\n")
    assert code == 1 and "unusable: " in stderr and "lost or garbled in every copy" in stderr
    assert not list((host_run / "results").rglob("result.*"))


def test_a_frame_garbled_in_one_copy_is_repaired(cli: CliFn, host_run: Path) -> None:
    data = result.to_json(failing())
    lines = framing.frame(data).splitlines()
    lines[3] = (
        lines[3][:20] + "[  201.5] rcu: INFO: rcu_preempt self-detected stall" + lines[3][20:]
    )
    lines[-1] = "SEVIMG-CERT-RESULT-E[  202.0] kvm: something"  # the last END is garbled too
    code, stdout, stderr = boot(cli, host_run, "\n".join(lines) + "\n")
    assert code == 1, stderr  # the fail result, read: not an unusable console
    assert "certification result: fail" in stdout
    assert (host_run / "results/result.json").read_bytes() == data


def test_a_result_that_contradicts_itself_is_refused(cli: CliFn, host_run: Path) -> None:
    doc = result.to_dict(failing())
    doc["title"] = "ubuntu 24.04 SEV version 3.0"
    data = json.dumps(doc).encode()
    code, _, stderr = boot(cli, host_run, framing.frame(data))
    assert code == 1 and "contradicts itself: title" in stderr
    doc = result.to_dict(failing())
    doc["milestone"] = "c3.0.0-0"
    code, _, stderr = boot(cli, host_run, framing.frame(json.dumps(doc).encode()))
    assert code == 1 and "does not match cert-result.schema.json" in stderr


def test_host_role_needs_no_sev_and_memory(cli: CliFn, host_run: Path) -> None:
    refused = cli("run", "debian-forky", "--role", "host")
    assert refused.code == 1 and "--role host --no-sev" in refused.stderr
    small = cli("run", "debian-forky", "--role", "host", "--no-sev", "--memory", "2048")
    assert small.code == 1 and "needs at least 4096 MB" in small.stderr
    wrong = cli("run", "guest-debian-forky", "--role", "host", "--no-sev")
    assert wrong.code == 1 and "is a guest image" in wrong.stderr
    dry = cli("run", "debian-forky", "--role", "host", "--no-sev", "--dry-run", "--accel", "tcg")
    assert dry.code == 0 and "-nic user,model=virtio-net-pci" in dry.stdout
    assert "host-debian-forky.efi" in dry.stdout and "-m 4096" in dry.stdout
