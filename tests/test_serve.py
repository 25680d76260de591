"""`sevimg serve`: the job state machine, and dispatch's HTTP API over real HTTP on 127.0.0.1.

Clients with different IP addresses are real: each connects from its own
loopback address (127.0.0.2, 127.0.0.3, …), as hosts in a lab would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sevimg.artifacts.checksums import sha256_file, write_sha256sums
from sevimg.artifacts.manifest import load_manifest, write_manifest
from sevimg.problems import SevimgError
from sevimg.serve import jobs as jobsm
from sevimg.serve.files import load_jobs
from sevimg.serve.jobs import IDLE_AFTER, Job, State, parse_report
from sevimg.serve.results import Results
from sevimg.serve.server import Handle, parse_bind, serve
from tests.artifactkit import efi_bytes, make_folder

A, B, C = "10.0.2.15", "10.0.2.16", "10.0.2.17"
REPORT = {
    "title": "debian forky SEV version 3.0",
    "body": "# Failed to Achieve a Certification Level\n\nSNP is not enabled\n",
    "labels": ["certificate", "os-debian-forky", "proc-9004"],
}


def three_jobs() -> tuple[Job, ...]:
    return tuple(
        Job(name=f"host-{n}.efi", path=Path(f"/nowhere/{n}"), size=1, sha256="0" * 64)
        for n in ("a-1", "b-2", "c-3")
    )


# --- the state machine, table-driven --------------------------------------------------------

Step = tuple[str, str, float, str | None]  # (transition, client, time, job it concerns or None)
STEPS: dict[str, Callable[..., tuple[tuple[Job, ...], int | None]]] = {
    "HEAD": jobsm.assign,
    "GET": jobsm.download,
    "POST": jobsm.boot,
    "PUT": jobsm.report,
}

SCENARIOS: dict[str, tuple[list[Step], dict[str, tuple[State, str | None]]]] = {
    "a whole boot, then the next job, in name order": (
        [
            ("HEAD", A, 0, "host-a-1.efi"),
            ("HEAD", A, 1, "host-a-1.efi"),  # firmware asks again: same job
            ("GET", A, 2, "host-a-1.efi"),
            ("GET", A, 3, "host-a-1.efi"),  # a retried download: still its own
            ("POST", A, 50, "host-a-1.efi"),
            ("POST", A, 51, None),  # booted once
            ("PUT", A, 200, "host-a-1.efi"),
            ("PUT", A, 201, None),  # one report per boot
            ("HEAD", A, 300, "host-b-2.efi"),  # rebooted: the next job
        ],
        {
            "host-a-1.efi": (State.REPORTED, A),
            "host-b-2.efi": (State.ASSIGNED, A),
            "host-c-3.efi": (State.UNASSIGNED, None),
        },
    ),
    "each client its own job, and none of another's": (
        [
            ("HEAD", A, 0, "host-a-1.efi"),
            ("HEAD", B, 0, "host-b-2.efi"),
            ("GET", B, 1, "host-b-2.efi"),
            ("POST", A, 2, None),  # A has not downloaded: 417
            ("PUT", B, 3, None),  # B is not booting: 417
            ("POST", C, 4, None),  # C has nothing
            ("GET", A, 5, "host-a-1.efi"),
            ("POST", B, 6, "host-b-2.efi"),
            ("PUT", A, 7, None),  # A downloads, B boots: A's PUT is refused
            ("PUT", B, 8, "host-b-2.efi"),
            ("HEAD", C, 9, "host-c-3.efi"),
        ],
        {
            "host-a-1.efi": (State.DOWNLOADING, A),
            "host-b-2.efi": (State.REPORTED, B),
            "host-c-3.efi": (State.ASSIGNED, C),
        },
    ),
    "no job left: nothing is assigned": (
        [
            ("HEAD", A, 0, "host-a-1.efi"),
            ("HEAD", B, 0, "host-b-2.efi"),
            ("HEAD", C, 0, "host-c-3.efi"),
            ("HEAD", "10.0.2.99", 10, None),
            ("GET", "10.0.2.99", 10, None),
        ],
        {
            "host-a-1.efi": (State.ASSIGNED, A),
            "host-b-2.efi": (State.ASSIGNED, B),
            "host-c-3.efi": (State.ASSIGNED, C),
        },
    ),
    "an idle assigned job goes to another client after five minutes, not before": (
        [
            ("HEAD", A, 0, "host-a-1.efi"),
            ("HEAD", B, 0, "host-b-2.efi"),
            ("GET", C, 0, "host-c-3.efi"),
            ("HEAD", "10.0.2.99", IDLE_AFTER, None),  # exactly five minutes: not yet
            ("HEAD", "10.0.2.99", IDLE_AFTER + 1, "host-a-1.efi"),
            ("POST", A, IDLE_AFTER + 2, None),  # A lost it
        ],
        {
            "host-a-1.efi": (State.ASSIGNED, "10.0.2.99"),
            "host-b-2.efi": (State.ASSIGNED, B),
            "host-c-3.efi": (State.DOWNLOADING, C),
        },
    ),
    "a booting job is never taken away": (
        [
            ("GET", A, 0, "host-a-1.efi"),
            ("POST", A, 1, "host-a-1.efi"),
            ("GET", B, 2, "host-b-2.efi"),
            ("GET", C, 3, "host-c-3.efi"),
            ("HEAD", "10.0.2.99", 10_000, "host-b-2.efi"),  # the oldest idle download
            ("PUT", A, 10_001, "host-a-1.efi"),
        ],
        {
            "host-a-1.efi": (State.REPORTED, A),
            "host-b-2.efi": (State.ASSIGNED, "10.0.2.99"),
            "host-c-3.efi": (State.DOWNLOADING, C),
        },
    ),
    "a host that HTTP-boots again before reporting abandons that boot": (
        [
            ("GET", A, 0, "host-a-1.efi"),
            ("POST", A, 1, "host-a-1.efi"),
            ("HEAD", A, 100, "host-b-2.efi"),
            ("PUT", A, 101, None),  # the new job is not booting
        ],
        {
            "host-a-1.efi": (State.FAILED, A),
            "host-b-2.efi": (State.ASSIGNED, A),
            "host-c-3.efi": (State.UNASSIGNED, None),
        },
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_state_machine(name: str) -> None:
    steps, final = SCENARIOS[name]
    jobs = three_jobs()
    for number, (method, client, now, expected) in enumerate(steps):
        jobs, index = STEPS[method](jobs, client, float(now))
        got = None if index is None else jobs[index].name
        assert got == expected, f"step {number} ({method} from {client} at {now})"
    assert {j.name: (j.state, j.client) for j in jobs} == final


def test_a_moving_download_is_not_idle() -> None:
    jobs, _ = jobsm.download(three_jobs()[:1], A, 0.0)
    jobs = jobsm.touch(jobs, A, 250.0)
    assert jobsm.assign(jobs, B, 500.0)[1] is None  # 250 s since the last chunk
    assert jobsm.assign(jobs, B, 551.0)[1] == 0


def test_settle_only_moves_a_reported_job() -> None:
    jobs, _ = jobsm.download(three_jobs(), A, 0.0)
    assert jobsm.settle(jobs, 0, ok=True, note="x") == jobs
    jobs, _ = jobsm.boot(jobs, A, 1.0)
    jobs, _ = jobsm.report(jobs, A, 2.0)
    assert jobsm.settle(jobs, 0, ok=True, note="#1")[0].state is State.FINISHED
    assert jobsm.settle(jobs, 0, ok=False, note="403")[0].state is State.FAILED
    assert [s.icon for s in State] == ["⏳", "📌", "📥", "⚡", "📝", "🏁", "❌"]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"{", "not JSON"),
        (b"\xff", "not UTF-8"),
        (b'{"title": "t\xed\xb2\x80"}', "not UTF-8"),  # a surrogate encoded in UTF-8
        (b'{"title": "t", "body": "\\udc80"}', "body holds a lone surrogate"),
        (b'{"title": "\\ud83d x"}', "title holds a lone surrogate"),
        (b'{"title": "t", "labels": ["\\udfff"]}', "labels holds a lone surrogate"),
        (b'{"title": "t", "x": ' + b"[" * 100 + b"]" * 100 + b"}", "nested deeper"),
        (b"[" * 200_000, "nested deeper"),
        (b'{"title": "t", "body": "' + b"x" * (512 * 1024) + b'"}', "larger than"),
        (b'{"title": "t", "title": "u"}', "not JSON"),
        (b"[]", "not a JSON object"),
        (b"{}", "no title"),
        (b'{"title": " "}', "no title"),
        (b'{"title": "t", "labels": "certificate"}', "labels is not a list of strings"),
        (b'{"title": "t", "assignees": [1]}', "assignees is not a list of strings"),
        (b'{"title": "t", "body": 3}', "body is not a string"),
        (b'{"title": "t", "milestone": 3}', "milestone is not a string"),
    ],
)
def test_bad_reports(raw: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_report(raw)


def test_a_report_as_beacon_sends_it() -> None:
    report = parse_report(json.dumps({**REPORT, "milestone": "c3.0.0-0"}).encode())
    assert report.labels == ("certificate", "os-debian-forky", "proc-9004")
    assert report.milestone == "c3.0.0-0" and report.assignees == ()
    assert report.as_json() == {**REPORT, "milestone": "c3.0.0-0"}
    assert parse_report(b'{"title": "t", "milestone": null}').as_json() == {"title": "t"}


# --- over HTTP ------------------------------------------------------------------------------


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_780_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Lab:
    handle: Handle
    folder: Path
    results: Path
    clock: Clock
    lines: list[str]

    def client(self, n: int = 2) -> httpx.Client:
        """A host at 127.0.0.n."""
        return httpx.Client(transport=httpx.HTTPTransport(local_address=f"127.0.0.{n}"), timeout=30)

    def job(self, name: str) -> Job:
        return next(j for j in self.handle.board.snapshot() if j.name == name)


def start(
    tmp_path: Path, images: tuple[str, ...] = ("debian-13", "ubuntu-26.04"), **kw: Any
) -> Lab:
    return start_on(tmp_path, make_folder(tmp_path / "out", images), **kw)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = start(tmp_path)
    yield lab
    lab.handle.stop()


def test_a_whole_boot_over_http(lab: Lab) -> None:
    url = lab.handle.url
    assert url.startswith("http://127.0.0.1:") and url.endswith("/dispatch")
    with lab.client(2) as host:
        head = host.head(url + "?x.efi")  # firmware may add a .efi suffix: only the path counts
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == "application/efi"
        assert head.headers["content-length"] == "4096"
        assert lab.job("host-debian-13.efi").state is State.ASSIGNED
        get = host.get(url)
        assert get.status_code == 200
        assert get.content == (lab.folder / "host-debian-13.efi").read_bytes()
        assert get.content == efi_bytes("host-debian-13")
        assert lab.job("host-debian-13.efi").state is State.DOWNLOADING
        assert host.post(url).status_code == 200
        assert lab.job("host-debian-13.efi").state is State.BOOTING
        assert host.put(url, content=b"{not json").status_code == 400
        assert lab.job("host-debian-13.efi").state is State.BOOTING  # a bad report changes nothing
        assert host.put(url, json=REPORT).status_code == 200
        assert host.put(url, json=REPORT).status_code == 417  # one report per boot
        job = lab.job("host-debian-13.efi")
        assert (job.state, job.client) == (State.REPORTED, "127.0.0.2")
        # the next boot of the same host gets the next job
        assert host.get(url).content == efi_bytes("host-ubuntu-26.04")
    summary = json.loads((lab.results / "results.json").read_text())
    first = summary["jobs"][0]
    assert first["state"] == "Reported" and first["client"] == "127.0.0.2"
    # Counted, with the first and the last: refused requests (the 400, the 417) concern no job.
    requests = first["requests"]
    assert requests["count"] == 4
    assert (requests["first"]["method"], requests["first"]["status"]) == ("HEAD", 200)
    assert (requests["last"]["method"], requests["last"]["status"]) == ("PUT", 200)
    assert requests["last"]["client"] == "127.0.0.2"
    assert summary["jobs"][1]["state"] == "Downloading"
    md = lab.results / first["markdown"]
    assert md.name.startswith("host-debian-13-2026") and md.name.endswith("Z.md")
    assert md.read_text() == REPORT["body"]
    saved = json.loads((lab.results / first["json"]).read_text())
    assert saved["report"] == REPORT and saved["client"] == "127.0.0.2"
    assert saved["job"] == "host-debian-13.efi"
    assert not [p for p in lab.results.iterdir() if p.name.startswith(".")]  # no temporaries


def test_methods_and_paths(lab: Lab) -> None:
    url = lab.handle.url
    with lab.client(3) as host:
        for method in ("DELETE", "PATCH", "OPTIONS", "BREW"):
            answer = host.request(method, url)
            assert answer.status_code == 405, method
            assert answer.headers["allow"] == "GET, POST, HEAD, PUT"
        for method in ("GET", "HEAD", "POST", "PUT", "DELETE"):
            assert host.request(method, url.replace("/dispatch", "/other")).status_code == 404
            assert host.request(method, url + "/x").status_code == 404
        assert host.post(url).status_code == 417  # no job held
        assert host.put(url, json=REPORT).status_code == 417
    # nothing above assigned a job
    assert all(j.state is State.UNASSIGNED for j in lab.handle.board.snapshot())


def test_no_job_left_is_404_or_the_poweroff_program(tmp_path: Path) -> None:
    poweroff = tmp_path / "poweroff.efi"
    poweroff.write_bytes(b"MZ power off" * 100)
    plain, with_poweroff = (
        start(tmp_path / "a", ("debian-13",)),
        start(tmp_path / "b", ("debian-13",), poweroff=poweroff),
    )
    try:
        for lab in (plain, with_poweroff):
            with lab.client(2) as first, lab.client(3) as second:
                assert first.get(lab.handle.url).status_code == 200
                head, get = second.head(lab.handle.url), second.get(lab.handle.url)
                if lab is plain:
                    assert (head.status_code, get.status_code) == (404, 404)
                else:
                    assert (head.status_code, get.status_code) == (200, 200)
                    assert get.headers["content-type"] == "application/efi"
                    assert get.content == poweroff.read_bytes() and head.content == b""
                    assert head.headers["content-length"] == str(len(poweroff.read_bytes()))
    finally:
        plain.handle.stop()
        with_poweroff.handle.stop()


@pytest.mark.parametrize(
    ("header", "status", "span"),
    [
        ("bytes=10-19", 206, (10, 19)),
        ("bytes=4000-", 206, (4000, 4095)),
        ("bytes=-96", 206, (4000, 4095)),
        ("bytes=4000-99999", 206, (4000, 4095)),
        ("bytes=-99999", 206, (0, 4095)),
        ("bytes=4096-", 416, None),
        ("bytes=-0", 416, None),
        ("bytes=0-1,5-6", 200, None),  # several ranges: the whole file
        ("bytes=9-3", 200, None),  # invalid: ignored
        ("lines=1-2", 200, None),
    ],
)
def test_ranges(lab: Lab, header: str, status: int, span: tuple[int, int] | None) -> None:
    whole = efi_bytes("host-debian-13")
    with lab.client(2) as host:
        answer = host.get(lab.handle.url, headers={"Range": header})
    assert answer.status_code == status
    assert answer.headers["accept-ranges"] == "bytes"
    if status == 416:
        assert answer.headers["content-range"] == "bytes */4096" and answer.content == b""
    elif span is None:
        assert answer.content == whole and "content-range" not in answer.headers
    else:
        first, last = span
        assert answer.headers["content-range"] == f"bytes {first}-{last}/4096"
        assert answer.content == whole[first : last + 1]
        assert answer.headers["content-length"] == str(last - first + 1)


def test_two_clients_download_at_once(tmp_path: Path) -> None:
    lab = start(tmp_path, ("debian-13", "ubuntu-26.04"))
    got: dict[int, bytes] = {}

    def boot(n: int) -> None:
        with lab.client(n) as host:
            got[n] = host.get(lab.handle.url).content
            assert host.post(lab.handle.url).status_code == 200

    try:
        threads = [threading.Thread(target=boot, args=(n,)) for n in (2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(got.values()) == sorted(
            [efi_bytes("host-debian-13"), efi_bytes("host-ubuntu-26.04")]
        )
        assert {j.client for j in lab.handle.board.snapshot()} == {"127.0.0.2", "127.0.0.3"}
        assert all(j.state is State.BOOTING for j in lab.handle.board.snapshot())
    finally:
        lab.handle.stop()


def test_a_client_that_hangs_up_mid_download(tmp_path: Path) -> None:
    lab = start(tmp_path, ("debian-13",))
    # A bigger image, so the download cannot fit in the socket buffers.
    big = lab.folder / "host-debian-13.efi"
    try:
        lab.handle.stop()
        size = 64 * 1024 * 1024
        with big.open("r+b") as handle:
            handle.truncate(size)
        rebuild(lab.folder)
        lab = start_on(tmp_path / "again", lab.folder)
        with socket.create_connection((lab.handle.host, lab.handle.port)) as raw:
            raw.sendall(b"GET /dispatch HTTP/1.1\r\nHost: x\r\n\r\n")
            assert raw.recv(65536).startswith(b"HTTP/1.1 200")
        # the server is fine, and the client's job is still its own
        with lab.client(1) as host:
            assert host.head(lab.handle.url).status_code == 200
            answer = host.get(lab.handle.url)
            assert len(answer.content) == size
            assert (
                hashlib.sha256(answer.content).hexdigest() == lab.job("host-debian-13.efi").sha256
            )
        assert lab.job("host-debian-13.efi").state is State.DOWNLOADING
    finally:
        lab.handle.stop()


def rebuild(folder: Path) -> None:
    """Make the manifests and SHA256SUMS of `folder` describe its images again."""

    for manifest_path in folder.glob("*.manifest.json"):
        manifest = load_manifest(manifest_path)
        artifact = folder / manifest.artifact
        write_manifest(
            folder,
            dataclasses.replace(
                manifest, size=artifact.stat().st_size, sha256=sha256_file(artifact)
            ),
        )
    write_sha256sums(folder)


def start_on(tmp_path: Path, folder: Path, **kw: Any) -> Lab:
    served = load_jobs(folder)
    results = Results(tmp_path / "results")
    results.prepare()
    clock = Clock()
    lines: list[str] = []
    handle = serve(served, results=results, clock=clock, log=lines.append, **kw)
    return Lab(handle, folder, tmp_path / "results", clock, lines)


def test_idle_reassignment_over_http(tmp_path: Path) -> None:
    lab = start(tmp_path, ("debian-13",))
    try:
        with lab.client(2) as slow, lab.client(3) as other:
            assert slow.head(lab.handle.url).status_code == 200
            lab.clock.now += IDLE_AFTER
            assert other.head(lab.handle.url).status_code == 404
            lab.clock.now += 1
            assert other.get(lab.handle.url).status_code == 200
            assert lab.job("host-debian-13.efi").client == "127.0.0.3"
            assert slow.post(lab.handle.url).status_code == 417
            assert other.post(lab.handle.url).status_code == 200
    finally:
        lab.handle.stop()


def test_an_image_changed_after_verification_is_not_served(lab: Lab) -> None:
    image = lab.folder / "host-debian-13.efi"
    replacement = image.with_suffix(".new")
    replacement.write_bytes(b"MZ something else")
    replacement.replace(image)
    with lab.client(2) as host:
        assert host.get(lab.handle.url).status_code == 500
    assert any("changed on disk after it was verified" in line for line in lab.lines)


def test_bad_requests_are_refused(lab: Lab) -> None:
    url = lab.handle.url
    with lab.client(2) as host:
        host.get(url)
        host.post(url)
        too_big = host.put(url, content=b"x" * (16 * 1024 * 1024 + 1))
        assert too_big.status_code == 413
        for body in (b"[]", b'{"title": 1}', b'{"labels": ["x"]}'):
            assert host.put(url, content=body).status_code == 400
        assert host.put(url, json=REPORT).status_code == 200


def test_filters_and_refusals(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "out", ["debian-13", "ubuntu-26.04"], guest_only=["fedora-43"])
    assert [j.name for j in load_jobs(folder).jobs] == [
        "host-debian-13.efi",
        "host-ubuntu-26.04.efi",
    ]
    chosen = load_jobs(folder, ["ubuntu", "nothing"])
    assert [j.name for j in chosen.jobs] == ["host-ubuntu-26.04.efi"]
    assert chosen.skipped == ("host-debian-13.efi",)
    with pytest.raises(SevimgError, match="no host image in .* matches 'Debian'"):
        load_jobs(folder, ["Debian"])  # case-sensitive, as dispatch's filters
    with pytest.raises(SevimgError, match="no host image"):
        load_jobs(make_folder(tmp_path / "guests", ["fedora-43"], guest_only=["fedora-43"]))
    debug = make_folder(tmp_path / "debug", ["debian-13"], debug=True)
    with pytest.raises(SevimgError, match="host-debian-13-debug.efi: debug image"):
        load_jobs(debug)
    assert [j.name for j in load_jobs(debug, allow_debug=True).jobs] == ["host-debian-13-debug.efi"]
    image = folder / "host-debian-13.efi"
    image.write_bytes(image.read_bytes()[:-1] + b"!")
    with pytest.raises(SevimgError, match="cannot be served") as caught:
        load_jobs(folder)
    assert any("SHA256SUMS says" in p.message for p in caught.value.problems)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),  # noqa: S104 - parsing, not binding
        (":9000", ("127.0.0.1", 9000)),
        ("[::1]:8080", ("::1", 8080)),
    ],
)
def test_bind(text: str, expected: tuple[str, int]) -> None:
    assert parse_bind(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "8080",
        "localhost:8080",
        "1.2.3.4:70000",
        "[::1]",
        "a:b",
        # Nothing around the value, and ASCII digits only.
        "127.0.0.1:8080\n",
        " 127.0.0.1:8080",
        "127.0.0.1:8080\t",
        "127.0.0.1:\u0668\u0660",
        "127.0.0.1:\uff18\uff10",
        "127.0.0.1 :8080",
        "127.0.0.1:-80",
        "127.0.0.1:+80",
        "127.0.0.1:8080\x00",
        "\u202e127.0.0.1:80",
    ],
)
def test_bad_bind(text: str) -> None:
    with pytest.raises(SevimgError, match="--bind"):
        parse_bind(text)


def test_a_busy_port(lab: Lab, tmp_path: Path) -> None:
    served = load_jobs(lab.folder)
    with pytest.raises(
        SevimgError, match=f"cannot listen on 127.0.0.1:{lab.handle.port}: Address already in use"
    ):
        serve(served, bind=("127.0.0.1", lab.handle.port))


def test_the_table_shows_states_with_dispatchs_icons() -> None:
    from rich.console import Console

    from sevimg.serve.table import counts, jobs_table

    jobs, _ = jobsm.download(three_jobs(), A, 1_780_000_000.0)
    jobs, _ = jobsm.assign(jobs, B, 1_780_000_001.0)
    console = Console(record=True, width=160)
    console.print(jobs_table(jobs))
    text = console.export_text()
    assert "📥 Downloading │ host-a-1.efi │ 10.0.2.15 │ 20:26:40" in text
    assert "📌 Assigned    │ host-b-2.efi │ 10.0.2.16 │ 20:26:41" in text
    assert "⏳ Unassigned  │ host-c-3.efi" in text
    assert counts(jobs) == "3 jobs: 1 📥 Downloading, 1 📌 Assigned, 1 ⏳ Unassigned"
