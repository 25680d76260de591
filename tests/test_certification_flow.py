"""The certification flow on this machine, end to end without an image build.

`sevimg serve` (the real server) hands out a host image; the host's harness
(the real `python3 -m sevimg_cert.harness`, run against a fake root without
SEV-SNP) finds the server on its kernel command line, reports booted, runs,
writes its result and PUTs it; the server files it as a result. What the
server keeps must be the harness's own result, title, labels and all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from sevimg.serve.files import load_jobs
from sevimg.serve.jobs import State
from sevimg.serve.results import Results
from sevimg.serve.server import serve
from tests.artifactkit import make_folder
from tests.conftest import REPO
from tests.harnesskit import fake_host, path_with


def run_harness(root: Path, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path_with(bin_dir), "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "sevimg_cert.harness", "--root", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_a_host_without_snp_reports_its_fail_result_to_sevimg_serve(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "out", ("debian-forky",))
    results = Results(tmp_path / "results")
    results.prepare()
    handle = serve(load_jobs(folder), results=results)
    try:
        # The firmware's download: the job is now this address's (127.0.0.1, as the harness's).
        with httpx.Client(timeout=30) as firmware:
            assert firmware.get(handle.url).status_code == 200
        host = fake_host(
            tmp_path / "host",
            sev_snp="N",
            cmdline=f"console=ttyS0 sevimg.dispatch={handle.url} sevimg.after=stay",
        )
        done = run_harness(host.root, host.bin)
        job = next(j for j in handle.board.snapshot() if j.name == "host-debian-forky.efi")
        assert job.state is State.REPORTED, done.stdout + done.stderr
    finally:
        handle.stop()

    assert done.returncode == 1, done.stderr  # a fail result, reported
    assert "Traceback" not in done.stderr
    mine = json.loads((host.root / "run/sevimg/result.json").read_text())
    assert mine["result"] == "fail" and mine["milestone"] is None
    saved = sorted((tmp_path / "results").glob("host-debian-forky-*.json"))
    assert len(saved) == 1, sorted(p.name for p in (tmp_path / "results").iterdir())
    filed = json.loads(saved[0].read_text())
    report = filed.get("report", filed)
    assert report["title"] == mine["title"] == "debian forky SEV version 3.0"
    assert report["labels"] == mine["labels"]
    assert "milestone" not in report or report["milestone"] in (None, "")
    assert report["body"] == (host.root / "run/sevimg/result.md").read_text()
    assert "staying up" in done.stderr  # sevimg.after=stay: no reboot asked of systemctl


def test_a_server_without_this_hosts_job_still_leaves_the_result(tmp_path: Path) -> None:
    """dispatch answers 417 to a host it did not boot: the result stays, and so does the host."""
    handle = serve(load_jobs(make_folder(tmp_path / "out", ("debian-forky",))))
    try:  # no download first: 127.0.0.1 holds no job, POST and PUT get 417
        host = fake_host(
            tmp_path / "host", sev_snp="N", cmdline=f"console=ttyS0 sevimg.dispatch={handle.url}"
        )
        done = run_harness(host.root, host.bin)
        states = {j.name: j.state for j in handle.board.snapshot()}
    finally:
        handle.stop()
    assert states == {"host-debian-forky.efi": State.UNASSIGNED}
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert json.loads((host.root / "run/sevimg/result.json").read_text())["result"] == "fail"
    # Nothing took the report: by default the host stays up with its result rather than reboot.
    assert "staying up" in done.stderr
    assert not (tmp_path / "host/systemctl.log").exists()


def test_after_the_report_the_host_reboots_for_the_next_job(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "out", ("debian-forky", "debian-13"))
    handle = serve(load_jobs(folder))
    try:
        with httpx.Client(timeout=30) as firmware:
            first = firmware.get(handle.url)
        host = fake_host(
            tmp_path / "host",
            sev_snp="N",
            cmdline=f"console=ttyS0 sevimg.dispatch={handle.url} sevimg.grace=1",
        )
        done = run_harness(host.root, host.bin)
        with httpx.Client(timeout=30) as firmware:
            second = firmware.get(handle.url)  # the reboot's HTTP boot: the next job
    finally:
        handle.stop()
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (tmp_path / "host/systemctl.log").read_text().split() == ["reboot"]
    assert first.content == (folder / "host-debian-13.efi").read_bytes()
    assert second.content == (folder / "host-debian-forky.efi").read_bytes()
