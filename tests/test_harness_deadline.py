"""The harness always ends in a written, framed result: its deadline, SIGTERM, hostile dispatch servers.

Hostile servers are real sockets on 127.0.0.1 (tests/hostilekit.py); the
run's deadline runs on an injected clock where the test decides when time
passes, or is small and asserted by its outcome, never by timing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from sevimg_cert import after, framing, guard, harness, outputs, result
from sevimg_cert.harness import Config
from sevimg_cert.result import CertResult, Environment, Identity
from tests import certkit
from tests.conftest import REPO
from tests.harnesskit import FakeHost, fake_host, path_with
from tests.hostilekit import Peer, Script, answer, hang, hostile, stream
from tests.test_harness import signing_guest, steps

UNIT = REPO / "templates/payload/host/sevimg-host-check.service.j2"


class ManualClock:
    """Time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def unit_seconds(text: str) -> float:
    """TimeoutStartSec= of a unit, in seconds, as systemd itself reads it."""
    [value] = re.findall(r"^TimeoutStartSec=(.+)$", text, re.MULTILINE)
    out = subprocess.run(
        ["systemd-analyze", "timespan", value], capture_output=True, text=True, check=True
    ).stdout
    [micro] = re.findall(r"μs: (\d+)", out)
    return int(micro) / 1e6


def test_the_units_timeout_covers_the_deadline_and_the_countdown_with_room() -> None:
    unit = unit_seconds(UNIT.read_text())
    assert unit_seconds("TimeoutStartSec=1h 5min\n") == 3900
    # The run's own deadline is well below the unit's: systemd never kills a run
    # that would still write its result.
    deadline, boot, report = (
        guard.DEADLINE,
        guard.boot_budget(guard.DEADLINE),
        guard.report_budget(guard.DEADLINE),
    )
    assert 0.6 * unit >= deadline
    assert unit >= deadline + after.MAX_GRACE + 120
    # The budgets inside the deadline leave the checks most of it, the guest included.
    assert boot + report < deadline / 2
    assert deadline - boot - report > harness.GUEST_TIMEOUT


def config(host: FakeHost, **changes: Any) -> Config:
    return Config(
        root=host.root,
        kernel_release="6.12.38-amd64",
        path=path_with(host.bin),
        mdns_timeout=0,
        **changes,
    )


def test_a_guest_that_never_answers_ends_at_the_deadline_with_what_was_done(tmp_path: Path) -> None:
    host = fake_host(tmp_path, sev_snp="Y")
    clock = ManualClock()
    release = threading.Event()

    def ask(sock: Path, nonce: bytes, timeout: float) -> None:
        clock.now += 1000  # the run's time passes while the guest says nothing
        release.wait(30)

    run_config = config(
        host, deadline=100, clock=clock, ask_guest=ask, measure=lambda *a, **k: b"\1" * 48
    )
    try:
        outcome, log = harness.run(run_config, None)
    finally:
        release.set()
    assert outcome.result is result.Outcome.ERROR
    assert outcome.error is not None and "deadline (100 s) passed" in outcome.error
    assert "host_prerequisites" in outcome.error or "expected_measurement" in outcome.error
    assert [t.name for t in outcome.tests][:2] == ["host_prerequisites", "expected_measurement"]
    assert "deadline" in log.text()


def dispatch_host(tmp_path: Path, peer: Peer) -> FakeHost:
    return fake_host(
        tmp_path, cmdline=f"console=ttyS0 sevimg.dispatch={peer.url} sevimg.after=stay"
    )


def read_console(out: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(framing.unframe(out))
    return doc


def test_a_hanging_dispatch_cannot_hold_the_run_and_the_result_is_on_disk_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[bool] = []
    state = tmp_path / "state"

    def script(conn: socket.socket, request: bytes, peer: Peer) -> None:
        # While this server holds the request, a result is already on disk.
        seen.append((state / "result.json").exists())
        peer.release.wait(30)

    with hostile(script) as peer:
        host = dispatch_host(tmp_path, peer)
        code = harness.certify(config(host, state_dir=state, deadline=4), print)
        held = len(peer.requests)
    out = capsys.readouterr().out
    doc = json.loads((state / "result.json").read_text())
    assert read_console(out) == doc
    assert doc["result"] == "fail" and code == 1  # no SNP here: the checks ran to the end
    assert "did not finish" not in (doc["error"] or "")
    assert seen and all(seen)
    assert held >= 2  # the POST and the PUT were both tried, neither held the run
    methods = {r.split(b" ", 1)[0] for r in peer.requests}
    assert methods == {b"POST", b"PUT"}


def test_sigterm_while_dispatch_holds_the_boot_is_a_written_framed_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"

    def script(conn: socket.socket, request: bytes, peer: Peer) -> None:
        if request.startswith(b"POST"):
            os.kill(os.getpid(), signal.SIGTERM)  # systemd stopping the unit
            peer.release.wait(30)
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    before = signal.getsignal(signal.SIGTERM)
    with hostile(script) as peer:
        host = dispatch_host(tmp_path, peer)
        code = harness.certify(config(host, state_dir=state, deadline=60), print)
    assert signal.getsignal(signal.SIGTERM) == before
    doc = json.loads((state / "result.json").read_text())
    assert code == 2 and doc["result"] == "error" and "SIGTERM" in doc["error"]
    assert read_console(capsys.readouterr().out) == doc
    assert [r.split(b" ", 1)[0] for r in peer.requests] == [b"POST", b"PUT"]


def test_sigterm_during_the_checks_keeps_the_tests_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = fake_host(tmp_path, sev_snp="Y")
    state = tmp_path / "state"
    release = threading.Event()

    def ask(sock: Path, nonce: bytes, timeout: float) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        release.wait(30)

    run_config = config(
        host,
        state_dir=state,
        dispatch=False,
        ask_guest=ask,
        measure=lambda *a, **k: b"\1" * 48,
    )
    try:
        code = harness.certify(run_config, print)
    finally:
        release.set()
    doc = json.loads((state / "result.json").read_text())
    assert code == 2 and doc["result"] == "error"
    assert doc["error"].startswith("stopped by SIGTERM during")
    names = [t["name"] for t in doc["levels"][0]["tests"]]
    assert names[:2] == ["host_prerequisites", "expected_measurement"]
    assert read_console(capsys.readouterr().out) == doc


def test_a_result_that_cannot_be_rendered_falls_back_to_a_minimal_framed_error(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    broken = CertResult(
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:01Z",
        (),
        Environment(host_os_pretty_name="bad \udc80 name"),
        Identity("debian", "forky", "9004"),
    )
    log = outputs.Log(lines.append)
    outcome, data = guard.finish(tmp_path, broken, log, lines.append)
    doc = json.loads(data)
    assert doc["result"] == "error" and "cannot render the result" in doc["error"]
    assert json.loads((tmp_path / "result.json").read_bytes()) == doc
    assert json.loads(framing.unframe(framing.frame(data))) == doc
    assert any("ERROR" in line for line in lines)
    assert outcome.result is result.Outcome.ERROR


@pytest.mark.parametrize(
    "script",
    [
        hang(),
        stream(b"", b"HTTP/1.1 100 Continue\r\n\r\n"),
        stream(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n", b"x"),
        answer("503 \x1b[2J\x1b]0;owned\x07"),
    ],
    ids=["hanging", "endless-100-continue", "dripping", "escaping"],
)
def test_a_hostile_kds_cannot_hold_the_run_nor_reach_the_console(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], script: Script
) -> None:
    state = tmp_path / "state"
    with hostile(script) as kds:
        host = fake_host(
            tmp_path, sev_snp="Y", cmdline=f"console=ttyS0 sevimg.kds={kds.url.rstrip('/')}"
        )
        seen: list[list[str]] = []
        run_config = config(
            host,
            state_dir=state,
            dispatch=False,
            deadline=6,
            measure=lambda *a, **k: certkit.MEASUREMENT,
            ask_guest=signing_guest(host, seen),
        )
        code = harness.certify(run_config, print)
    out = capsys.readouterr().out
    doc = json.loads((state / "result.json").read_text())
    assert read_console(out) == doc and code in (1, 2)
    assert "did not finish" not in (doc["error"] or "")
    assert "\x1b" not in out and "\x07" not in out
    assert "\x1b" not in (state / "result.md").read_text()
    if doc["error"] is None:  # the checks ended before the deadline: KDS is the failure named
        verify = steps(doc, "attestation")
        assert any("KDS" in s["detail"] for s in verify.values()), verify
