"""The certification flow on this machine, end to end without an image build.

`sevimg serve` (the real server) hands out a host image; the host's harness
(the real `python3 -m sevimg_cert.harness`, run against a fake root without
SEV-SNP) finds the server on its kernel command line, reports booted, runs,
writes its result and PUTs it; the server files it as a result. What the
server keeps must be the harness's own result, title, labels and all. With
SEV-SNP (a synthetic AMD chain behind a fake KDS), the host gets AMD's
certificates from serve's KDS cache and reaches nothing but serve.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from sevimg.serve.files import load_jobs
from sevimg.serve.jobs import State
from sevimg.serve.kds import KdsCache
from sevimg.serve.results import Results
from sevimg.serve.server import Handle, serve
from sevimg_cert import harness
from sevimg_cert.outputs import Dispatch, Log, write_results
from tests import certkit
from tests.artifactkit import make_folder
from tests.conftest import REPO
from tests.fakekds import FakeKds
from tests.fakekds import serve as serve_kds
from tests.harnesskit import FakeHost, fake_host, path_with
from tests.test_harness import Answer


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


# --- a pass, with AMD's certificates from serve's KDS cache -----------------------------


def _signing_guest(nonce_seen: list[bytes]) -> Any:
    """The guest's answer: a report signed by the synthetic VCEK over the harness's nonce."""

    def ask(socket: Path, nonce: bytes, timeout: float) -> Answer:
        nonce_seen.append(nonce)
        spec = certkit.ReportSpec(report_data=nonce, measurement=certkit.MEASUREMENT)
        return Answer(nonce=nonce, report=certkit.signed_report(spec))

    return ask


def _run_host(host: FakeHost, ark: Any) -> tuple[dict[str, Any], list[str]]:
    """The harness as its unit runs it (find dispatch, booted, run, write, report), in this process.

    In process only so the synthetic ARK can be trusted and the guest
    answered; everything else (finding the server on the kernel command
    line, the KDS client, the reporter) is the code a host image runs.
    """
    lines: list[str] = []
    log = Log(lines.append)
    reporter = Dispatch(host.root, log, True)
    reporter.booted()
    config = harness.Config(
        root=host.root,
        kernel_release="6.12.38-amd64",
        path=path_with(host.bin),
        guest_timeout=60,
        trusted_arks=(ark,),
        measure=lambda *a, **k: certkit.MEASUREMENT,
        ask_guest=_signing_guest([]),
        kds_mirrors=reporter.kds_mirrors(),
    )
    outcome, run_log = harness.run(config, lines.append)
    written = write_results(config.state, outcome, run_log)
    assert reporter.report(written), "\n".join(lines)
    return json.loads((config.state / "result.json").read_text()), lines


def _kds_requests(handle: Handle) -> list[tuple[str, int]]:
    return [(e.path, e.status) for e in handle.events if e.path.startswith("/kds/")]


def test_a_pass_gets_amds_chain_from_serves_kds_cache(tmp_path: Path) -> None:
    """The host reaches nothing but serve: serve's cache fetches from (fake) KDS, once."""
    chain = certkit.make_chain("Genoa")
    fake = FakeKds(chain, "Genoa", certkit.CHIP_ID.hex())
    folder = make_folder(tmp_path / "out", ("debian-forky",))
    results = Results(tmp_path / "results")
    results.prepare()
    with serve_kds(fake):
        cache = KdsCache(tmp_path / "kds", fake.url)
        handle = serve(load_jobs(folder), results=results, kds=cache)
        try:
            with httpx.Client(timeout=30) as firmware:
                assert firmware.get(handle.url).status_code == 200
            # No sevimg.kds=: the host finds its dispatch server and uses its KDS cache.
            host = fake_host(
                tmp_path / "host",
                sev_snp="Y",
                cmdline=f"console=ttyS0 sevimg.dispatch={handle.url} sevimg.after=stay",
            )
            doc, lines = _run_host(host, chain.ark)
            job = next(j for j in handle.board.snapshot() if j.name == "host-debian-forky.efi")
            served = _kds_requests(handle)
        finally:
            handle.stop()
    assert doc["result"] == "pass", json.dumps(doc["levels"], indent=1)
    assert doc["milestone"] == "c3.0.0-0" and job.state is State.REPORTED
    kds_base = f"http://127.0.0.1:{handle.port}/kds"
    assert any(f"certificates from KDS {kds_base}, then" in line for line in lines), lines
    # The host asked serve; serve asked (fake) KDS once for each document.
    assert ("/kds/vcek/v1/Genoa/cert_chain", 200) in served
    assert any(p.startswith(f"/kds/vcek/v1/Genoa/{certkit.CHIP_ID.hex()}") for p, _ in served)
    assert fake.seen("vcek") == 1 and fake.seen("chain") == 1
    (saved,) = (tmp_path / "results").glob("host-debian-forky-*.json")
    assert json.loads(saved.read_text())["report"]["milestone"] == "c3.0.0-0"


def test_a_lab_without_internet_passes_from_a_cache_filled_ahead(tmp_path: Path) -> None:
    """`sevimg kds fetch` elsewhere, then `serve --kds-offline`: no KDS anywhere during the run."""
    chain = certkit.make_chain("Genoa")
    fake = FakeKds(chain, "Genoa", certkit.CHIP_ID.hex())
    report = tmp_path / "report.bin"
    report.write_bytes(certkit.signed_report(certkit.ReportSpec()))
    with serve_kds(fake):
        filled = subprocess.run(
            [sys.executable, "-m", "sevimg", "kds", "fetch", str(report), "--kds", fake.url,
             "--kds-cache", str(tmp_path / "kds")],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert filled.returncode == 0, filled.stdout + filled.stderr
    fetched = len(fake.requests)
    folder = make_folder(tmp_path / "out", ("debian-forky",))
    handle = serve(load_jobs(folder), kds=KdsCache(tmp_path / "kds", None))
    try:
        with httpx.Client(timeout=30) as firmware:
            assert firmware.get(handle.url).status_code == 200
        host = fake_host(
            tmp_path / "host",
            sev_snp="Y",
            cmdline=f"console=ttyS0 sevimg.dispatch={handle.url} sevimg.after=stay",
        )
        doc, _ = _run_host(host, chain.ark)
        served = _kds_requests(handle)
    finally:
        handle.stop()
    assert doc["result"] == "pass", json.dumps(doc["levels"], indent=1)
    assert served and all(status == 200 for _, status in served)
    assert len(fake.requests) == fetched  # the fake KDS was stopped; nothing more reached it
