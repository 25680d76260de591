"""The real proof of `sevimg serve`: QEMU's firmware HTTP-boots a built host UKI from it.

QEMU (TCG) runs the ordinary OVMF as pflash with a user network whose DHCP
hands out `http://10.0.2.2:PORT/dispatch` (certification.md, last
paragraph). The server must see HEAD then GET, the job must go to
Downloading, and the kernel of the served image must start on the serial
console. Once the host image carries the reporter (sevimg_cert.dispatch),
the same boot goes on: POST (Booting), exactly one PUT (Reported) with the
certification title and labels, then a reboot whose next HTTP boot finds
the end of the queue.

The images come from `sevimg build debian-forky` in the e2e workspace, or
from SEVIMG_E2E_ARTIFACTS (an artifact folder built already). Set
SEVIMG_QEMU_LOCK to a file to take an exclusive lock on it around the boot
(machines that share one QEMU slot between several users).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sevimg.imaging.uki import read_uki
from tests.e2e.conftest import E2E, MKOSI_VERSION
from tests.test_status_browser import SHOTS, chromium, rows

pytestmark = [pytest.mark.e2e, pytest.mark.qemu]

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
JOB = "host-debian-forky.efi"
DOWNLOAD_TIMEOUT = 15 * 60  # firmware tries PXE first, then HTTP; 181 MB over slirp
REPORT_TIMEOUT = 40 * 60  # TCG on 2 cores: the whole host boot and its checks


@dataclass
class Boot:
    """One HTTP boot: the server process, QEMU, and what each said."""

    folder: Path
    results: Path
    console: Path
    server: subprocess.Popen[str]
    qemu: subprocess.Popen[bytes] | None = None
    server_lines: list[str] = field(default_factory=list)
    started: float = 0.0
    port: int = 0

    def server_text(self) -> str:
        return "".join(self.server_lines)

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def job(self) -> dict[str, Any]:
        path = self.results / "results.json"
        if not path.exists():
            return {}
        data = json.loads(path.read_text())
        return next(j for j in data["jobs"] if j["job"] == JOB)

    def wait_for(self, what: str, done: Callable[[], bool], timeout: float) -> float:
        """Seconds since QEMU started when `done()` became true; fails with both logs otherwise."""
        deadline = time.monotonic() + timeout
        while not done():
            if self.qemu is not None and self.qemu.poll() is not None:
                pytest.fail(f"QEMU ended ({self.qemu.returncode}) before {what}\n{self.tails()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout:.0f} s\n{self.tails()}")
            time.sleep(2)
        return time.monotonic() - self.started

    def tails(self) -> str:
        console = self.console_text().splitlines()[-40:]
        return (
            "--- server ---\n"
            + self.server_text()[-4000:]
            + "\n--- console ---\n"
            + "\n".join(console)
        )


def artifacts(e2e: E2E) -> Path:
    given = os.environ.get("SEVIMG_E2E_ARTIFACTS")
    if given:
        folder = Path(given)
        assert (folder / JOB).is_file(), f"SEVIMG_E2E_ARTIFACTS={given} has no {JOB}"
        return folder
    if not (e2e.out / JOB).is_file():
        proc = e2e.sevimg(
            "build", "debian-forky", "-o", str(e2e.out), "--mkosi-version", MKOSI_VERSION
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return e2e.out


@pytest.fixture(scope="module")
def boot(e2e: E2E, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Boot]:
    for firmware in (OVMF_CODE, OVMF_VARS):
        if not firmware.is_file():
            pytest.fail(f"{firmware} is missing: install Debian's ovmf package", pytrace=False)
    tmp = tmp_path_factory.mktemp("serve-boot")
    folder = artifacts(e2e)
    server = subprocess.Popen(
        [
            sys.executable, "-m", "sevimg", "serve",
            "--from", str(folder), "--bind", "127.0.0.1:0", "--results", str(tmp / "results"),
            "--keep-going", "debian-forky",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    run = Boot(folder, tmp / "results", tmp / "console.log", server)

    def read() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            run.server_lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 120
    while not (
        found := re.search(r"listening on http://127\.0\.0\.1:(\d+)/dispatch", run.server_text())
    ):
        assert server.poll() is None and time.monotonic() < deadline, run.server_text()
        time.sleep(0.2)
    run.port = int(found[1])
    vars_copy = tmp / "OVMF_VARS_4M.fd"
    shutil.copyfile(OVMF_VARS, vars_copy)
    argv = [
        "qemu-system-x86_64",
        "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "4096",
        "-nodefaults", "-display", "none", "-monitor", "none",
        "-serial", f"file:{run.console}",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
        "-netdev", f"user,id=n0,bootfile=http://10.0.2.2:{run.port}/dispatch",
        # romfile= leaves out QEMU's iPXE option ROM: OVMF's own HTTP boot runs, as on a real
        # server (HEAD, then GET; iPXE would send a GET only).
        "-device", "virtio-net-pci,netdev=n0,romfile=",
    ]  # fmt: skip
    lock_path = os.environ.get("SEVIMG_QEMU_LOCK")
    lock = Path(lock_path).open("a") if lock_path else None  # noqa: SIM115 - held for the boot
    try:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        run.started = time.monotonic()
        run.qemu = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield run
    finally:
        if run.qemu is not None:
            run.qemu.kill()
            run.qemu.wait()
        if lock is not None:
            lock.close()
        server.terminate()
        server.wait(30)
        print(run.tails())


def test_firmware_http_boots_the_served_host(boot: Boot) -> None:
    seconds = boot.wait_for(
        "download",
        lambda: boot.job().get("state") not in (None, "Unassigned", "Assigned"),
        DOWNLOAD_TIMEOUT,
    )
    print(f"GET of {JOB} began {seconds:.0f} s after QEMU started")
    # results.json keeps a count and the first and last request (written on state changes).
    requests = boot.job()["requests"]
    assert requests["count"] >= 2, requests
    assert (requests["first"]["method"], requests["first"]["status"]) == ("HEAD", 200), requests
    # QEMU's user network is NAT: the server sees the guest as the host's loopback.
    assert boot.job()["client"] == "127.0.0.1"
    assert re.search(r"127\.0\.0\.1 HEAD 200 host-debian-forky\.efi Assigned", boot.server_text())
    assert re.search(r"127\.0\.0\.1 GET 200 host-debian-forky\.efi Downloading", boot.server_text())
    uname = read_uki(boot.folder / JOB).uname
    seconds = boot.wait_for(
        f"kernel {uname} on the console",
        lambda: f"Linux version {uname}" in boot.console_text(),
        DOWNLOAD_TIMEOUT,
    )
    print(f"the served kernel {uname} started {seconds:.0f} s after QEMU started")


def test_the_host_reports_once_and_the_job_ends_reported(boot: Boot) -> None:
    # Needs the reporter (sevimg_cert.dispatch) in the host image.
    seconds = boot.wait_for(
        "report",
        lambda: boot.job().get("state") in ("Reported", "Finished", "Failed"),
        REPORT_TIMEOUT,
    )
    print(f"QEMU start to report: {seconds:.0f} s (TCG, {os.cpu_count()} cores)")
    job = boot.job()
    assert job["state"] == "Reported", job
    last = job["requests"]["last"]
    assert (last["method"], last["status"]) == ("PUT", 200), job["requests"]
    assert re.search(r"127\.0\.0\.1 POST 200 host-debian-forky\.efi Booting", boot.server_text())
    puts = re.findall(r"127\.0\.0\.1 PUT \d+ ", boot.server_text())
    assert puts == ["127.0.0.1 PUT 200 "], puts
    report = json.loads((boot.results / job["json"]).read_text())["report"]
    assert report["title"] == "debian forky SEV version 3.0"
    labels = report["labels"]
    assert "certificate" in labels and "os-debian-forky" in labels, labels
    # TCG's CPU is no EPYC: the harness gives no proc- label rather than a wrong one.
    assert not [label for label in labels if label.startswith("proc-")], labels
    assert "milestone" not in report
    assert "Failed to Achieve a Certification Level" in report["body"]
    assert "SNP" in report["body"]
    # The host reboots; its next HTTP boot finds the end of the queue (404: no --poweroff-efi).
    boot.wait_for(
        "the next HTTP boot",
        lambda: "127.0.0.1 HEAD 404 - -" in boot.server_text(),
        10 * 60,
    )


@pytest.mark.browser
def test_the_status_page_shows_the_real_boot(boot: Boot, tmp_path: Path) -> None:
    """After the real report: Chromium shows the job Reported and its result; a screenshot is kept."""
    boot.wait_for("report", lambda: boot.job().get("state") == "Reported", REPORT_TIMEOUT)
    base = f"http://127.0.0.1:{boot.port}"
    dom = chromium(tmp_path, base + "/", "--dump-dom")
    assert rows(dom) == {JOB: "📝 Reported"}, dom
    stem = boot.job()["json"].removesuffix(".json")
    assert f'href="/results/{stem}"' in dom
    result = chromium(tmp_path, f"{base}/results/{stem}", "--dump-dom")
    assert "Failed to Achieve a Certification Level</h1>" in result
    # TCG has no EPYC: no proc- label, so the matrix lists the run apart, never drops it.
    matrix = chromium(tmp_path, base + "/matrix", "--dump-dom")
    assert "Results not in a table" in matrix and "no proc- label" in matrix
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / "e2e-status-page.png"
    chromium(tmp_path, base + "/", f"--screenshot={shot}", "--window-size=1400,500")
    assert shot.stat().st_size > 10_000
    print(f"status page of the real boot: {shot}")
