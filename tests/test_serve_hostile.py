"""`sevimg serve` against hostile or broken peers, over real sockets on 127.0.0.x.

No report is lost (checked and saved before its job is Reported), bodies
are read only when they may be a report and only up to the cap, a client
cannot hold connections or threads without bound, a request that drips is
cut off by its deadline, and a peer's text never reaches the log raw.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from sevimg.serve.gate import Gate
from sevimg.serve.jobs import MAX_REPORT, Job, State
from tests.artifactkit import make_folder
from tests.test_serve import REPORT, Lab, start


def raw_exchange(lab: Lab, request: bytes, n: int = 2) -> bytes:
    """Send `request` from 127.0.0.n and read until the server closes or answers."""
    with socket.create_connection(
        (lab.handle.host, lab.handle.port), timeout=30, source_address=(f"127.0.0.{n}", 0)
    ) as raw:
        raw.sendall(request)
        return raw.recv(65536)


def booting(lab: Lab, n: int = 2) -> None:
    with lab.client(n) as host:
        assert host.get(lab.handle.url).status_code == 200
        assert host.post(lab.handle.url).status_code == 200


def saved_reports(lab: Lab) -> list[str]:
    return sorted(p.name for p in lab.results.glob("host-*"))


@pytest.mark.parametrize(
    "body",
    [
        b'{"title": "t", "body": "\\udc80"}',  # the lone surrogate that once lost a report
        b'{"title": "t\xed\xb2\x80"}',
        b'{"title": "t", "labels": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"\xff\xfe{}",
    ],
)
def test_a_report_that_cannot_be_saved_leaves_the_job_open(tmp_path: Path, body: bytes) -> None:
    lab = start(tmp_path, ("debian-13",))
    try:
        booting(lab)
        with lab.client(2) as host:
            assert host.put(lab.handle.url, content=body).status_code == 400
            job = lab.job("host-debian-13.efi")
            assert job.state is State.BOOTING and job.reported_at is None
            assert saved_reports(lab) == []
            # The host's retry with a report that can be saved is taken.
            assert host.put(lab.handle.url, json=REPORT).status_code == 200
        assert lab.job("host-debian-13.efi").state is State.REPORTED
        assert len(saved_reports(lab)) == 2  # .md and .json
    finally:
        lab.handle.stop()


def test_a_disk_that_refuses_the_report_leaves_the_job_booting(tmp_path: Path) -> None:
    lab = start(tmp_path, ("debian-13",))
    try:
        booting(lab)
        results = lab.handle.config.results
        assert results is not None
        # A "folder" below a file: every write fails (ENOTDIR), even as root.
        results.folder = lab.results / "results.json" / "below-a-file"
        with lab.client(2) as host:
            answer = host.put(lab.handle.url, json=REPORT)
            assert answer.status_code == 503  # the reporter retries 5xx
            assert lab.job("host-debian-13.efi").state is State.BOOTING
            assert any("cannot save the report" in line for line in lab.lines)
            results.folder = lab.results
            assert host.put(lab.handle.url, json=REPORT).status_code == 200
        job = lab.job("host-debian-13.efi")
        assert job.state is State.REPORTED
        (md,) = lab.results.glob("host-debian-13-*.md")
        assert md.read_text() == REPORT["body"]
    finally:
        lab.handle.stop()


def test_a_put_without_a_booting_job_is_not_read(tmp_path: Path) -> None:
    lab = start(tmp_path, ("debian-13",))
    try:
        # A gigabyte announced and never sent: answered at once, nothing waits for it.
        answer = raw_exchange(
            lab, b"PUT /dispatch HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n{"
        )
        assert answer.startswith(b"HTTP/1.1 417")
        booting(lab)
        over = raw_exchange(
            lab,
            b"PUT /dispatch HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + str(MAX_REPORT + 1).encode()
            + b"\r\n\r\n{",
        )
        assert over.startswith(b"HTTP/1.1 413")
        assert lab.job("host-debian-13.efi").state is State.BOOTING
    finally:
        lab.handle.stop()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /dispa",  # a request line that never ends
        b"GET /dispatch HTTP/1.1\r\nHost: x\r\n",  # headers that never end
        b"PUT /dispatch HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",  # a body that stops
    ],
)
def test_a_dripping_request_is_cut_off_by_its_deadline(
    tmp_path: Path, request_bytes: bytes
) -> None:
    lab = start(tmp_path, ("debian-13",), deadline=0.5)
    try:
        booting(lab)
        with socket.create_connection(
            (lab.handle.host, lab.handle.port), timeout=30, source_address=("127.0.0.2", 0)
        ) as raw:
            raw.sendall(request_bytes)
            got = raw.recv(65536)  # the server closes (or answers 400 and closes) at the deadline
            rest = raw.recv(65536)
        assert got == b"" or got.startswith(b"HTTP/1.1 400"), got
        assert rest == b""
        assert lab.handle.config.deadlines is not None and lab.handle.config.deadlines.expired >= 1
        assert lab.job("host-debian-13.efi").state is State.BOOTING
        with lab.client(2) as host:  # the server is fine
            assert host.put(lab.handle.url, json=REPORT).status_code == 200
    finally:
        lab.handle.stop()


def test_connections_are_bounded_per_client_and_in_total(tmp_path: Path) -> None:
    lab = start(tmp_path, ("debian-13",), gate=Gate(total=3, per_client=2))
    held: list[socket.socket] = []
    try:
        for _ in range(2):  # two half-open connections from 127.0.0.2: its share
            held.append(
                socket.create_connection(
                    (lab.handle.host, lab.handle.port), timeout=30, source_address=("127.0.0.2", 0)
                )
            )
        assert raw_exchange(lab, b"HEAD /dispatch HTTP/1.1\r\n\r\n", 2).startswith(b"HTTP/1.1 503")
        # Another client still gets in (the third place in total)...
        with socket.create_connection(
            (lab.handle.host, lab.handle.port), timeout=30, source_address=("127.0.0.3", 0)
        ) as third:
            third.sendall(b"HEAD /dispatch HTTP/1.1\r\nHost: x\r\n\r\n")
            assert third.recv(65536).startswith(b"HTTP/1.1 200")
            # ...and while it holds that place, a fourth does not.
            assert raw_exchange(lab, b"HEAD /dispatch HTTP/1.1\r\n\r\n", 4).startswith(
                b"HTTP/1.1 503"
            )
        gate = lab.handle.config.gate
        assert gate.refused == 2 and gate.peak == 3
    finally:
        for sock in held:
            sock.close()
        lab.handle.stop()


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("bytes=" + "9" * 4300 + "-", 416),
        ("bytes=" + "9" * 5000 + "-" + "9" * 5000, 416),
        ("bytes=-" + "9" * 4300, 206),  # the last "huge" bytes: the whole file
        ("bytes=0-" + "9" * 4300, 206),
    ],
)
def test_a_huge_range_number_is_answered_without_a_traceback(
    tmp_path: Path, header: str, status: int
) -> None:
    lab = start(tmp_path, ("debian-13",))
    try:
        with lab.client(2) as host:
            answer = host.get(lab.handle.url, headers={"Range": header})
        assert answer.status_code == status
        state = lab.job("host-debian-13.efi").state
        if status == 416:
            assert state is State.UNASSIGNED  # nothing was handed out
            assert answer.headers["content-range"] == "bytes */4096"
        else:
            assert len(answer.content) == 4096 and state is State.DOWNLOADING
        assert not any("Traceback" in line for line in lab.lines)
    finally:
        lab.handle.stop()


def test_a_job_keeps_counts_and_results_json_changes_with_states_only(tmp_path: Path) -> None:
    lab = start(tmp_path, ("debian-13",))
    told: list[tuple[Job, ...]] = []
    lab.handle.board.listeners.append(told.append)
    try:
        with lab.client(2) as host:
            for _ in range(300):
                assert host.head(lab.handle.url).status_code == 200
        before = (lab.results / "results.json").read_bytes()
        job = lab.job("host-debian-13.efi")
        assert job.request_count == 300 and job.first_request is not None
        assert job.first_request[2:] == ("HEAD", 200) and job.last_request is not None
        assert len(told) == 1  # Unassigned -> Assigned, once
        summary = json.loads(before)["jobs"][0]
        assert summary["state"] == "Assigned" and summary["requests"]["count"] == 1
        assert len(before) < 4096  # no history grows in it
    finally:
        lab.handle.stop()


def test_a_peers_text_is_escaped_in_the_log(tmp_path: Path) -> None:
    lab = start(tmp_path, ("debian-13",))
    try:
        answer = raw_exchange(lab, b"GE\x1b[2JT\xe2\x80\xae /dispatch HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 405")
        booting(lab)
        with lab.client(2) as host:
            assert host.put(
                lab.handle.url, content=b'{"title": "\x1b]52;c;x\x07"}'
            ).status_code in (
                200,
                400,
            )
        logged = "\n".join(lab.lines)
        assert "\x1b" not in logged and "\u202e" not in logged and "\x07" not in logged
        # http.server reads the request line as Latin-1: U+202E's bytes arrive as \xe2\x80\xae.
        assert "GE\\x1b[2JT\u00e2\\x80\u00ae 405" in logged
    finally:
        lab.handle.stop()


def test_a_client_that_reads_a_download_slowly_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sevimg.serve import http
    from tests.test_serve import rebuild, start_on

    folder = make_folder(tmp_path / "out", ("debian-13",))
    with (folder / "host-debian-13.efi").open("r+b") as image:
        image.truncate(64 * 1024 * 1024)  # more than the socket buffers hold
    rebuild(folder)
    # Any download now gets 0.3 s: the client below never reads it all in time.
    monkeypatch.setattr(http, "SEND_GRACE", 0.3)
    monkeypatch.setattr(http, "MIN_RATE", 1 << 40)
    lab = start_on(tmp_path, folder)
    try:
        with socket.create_connection(
            (lab.handle.host, lab.handle.port), timeout=30, source_address=("127.0.0.2", 0)
        ) as raw:
            raw.sendall(b"GET /dispatch HTTP/1.1\r\nHost: x\r\n\r\n")
            assert raw.recv(65536).startswith(b"HTTP/1.1 200")
            # Stop reading until serve has given up on this download, then read what is left.
            deadlines = lab.handle.config.deadlines
            assert deadlines is not None
            assert deadlines.wait_expired(1, timeout=30)
            received = 0
            while chunk := raw.recv(1 << 20):
                received += len(chunk)
        assert received < 64 * 1024 * 1024 - 65536
        with lab.client(3) as other:  # serve is fine
            assert other.head(lab.handle.url).status_code in (200, 404)
    finally:
        lab.handle.stop()
