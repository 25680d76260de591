"""`sevimg serve` as users run it: a real process, real HTTP, the fake GitHub for issues."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from sevimg.artifacts.checksums import sha256_file, write_sha256sums
from sevimg.artifacts.manifest import load_manifest, write_manifest
from tests.artifactkit import make_folder
from tests.conftest import CliFn
from tests.fakegithub import READ_TOKEN, TOKEN, FakeGitHub

REPORT = {
    "title": "debian 13 SEV version 3.0",
    "body": "# Failed to Achieve a Certification Level\n\nSNP is not enabled in the firmware\n",
    "labels": ["certificate", "os-debian-13", "proc-9004"],
}


class Server:
    """`python -m sevimg serve …` in the background, its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sevimg", "serve", "--bind", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self.stderr = ""
        self._news = threading.Condition()
        self._ended = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        found = self.wait_for(r"listening on (http://\S+)")
        if found is None:
            self._reader.join(5)
            raise AssertionError(f"serve ended early: {self.text}{self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.url = found[1]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._news:
                self.lines.append(line)
                self._news.notify_all()
        with self._news:
            self._ended = True
            self._news.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str] | None:
        """The first match of `pattern` in the output, as soon as serve prints it (None: it ended)."""
        with self._news:
            while (found := re.search(pattern, self.text)) is None and not self._ended:
                assert self._news.wait(timeout), f"no {pattern!r} in: {self.text}"
            return found

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def host(n: int) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=f"127.0.0.{n}"), timeout=60)


def boot_and_report(url: str, n: int, report: Mapping[str, object] = REPORT) -> int:
    with host(n) as client:
        assert client.head(url).status_code == 200
        assert client.get(url).status_code == 200
        assert client.post(url).status_code == 200
        return client.put(url, json=report).status_code


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def test_serves_until_every_job_reported_then_exits_0(
    tmp_path: Path, servers: list[Server]
) -> None:
    folder = make_folder(tmp_path / "out", ["debian-13"])
    results = tmp_path / "results"
    server = Server(["--from", str(folder), "--results", str(results)])
    servers.append(server)
    with host(2) as client:  # its keep-alive connection stays open: the server must not wait for it
        for method in ("HEAD", "GET", "POST"):
            assert client.request(method, server.url).status_code == 200
        assert client.put(server.url, json=REPORT).status_code == 200
        assert server.wait(timeout=10) == 0, server.text + server.stderr
    assert "every job has reported" in server.text
    assert "1 job: 1 📝 Reported" in server.text
    assert "127.0.0.2 PUT 200 host-debian-13.efi Reported" in server.text
    summary = json.loads((results / "results.json").read_text())
    assert summary["states"] == {"Reported": 1}
    assert (results / summary["jobs"][0]["markdown"]).read_text() == REPORT["body"]
    assert "Traceback" not in server.stderr


def test_sigterm_stops_cleanly_and_keeps_the_results(tmp_path: Path, servers: list[Server]) -> None:
    folder = make_folder(tmp_path / "out", ["debian-13", "ubuntu-26.04"])
    results = tmp_path / "results"
    server = Server(["--from", str(folder), "--results", str(results), "ubuntu", "debian"])
    servers.append(server)
    assert boot_and_report(server.url, 2) == 200
    with host(3) as other:
        assert other.head(server.url).status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait() == 128 + signal.SIGTERM
    assert "2 jobs: 1 📝 Reported, 1 📌 Assigned; results in" in server.text
    assert "interrupted by SIGTERM" in server.stderr and "Traceback" not in server.stderr
    summary = json.loads((results / "results.json").read_text())
    assert [j["state"] for j in summary["jobs"]] == ["Reported", "Assigned"]
    assert len(list(results.glob("host-debian-13-*.md"))) == 1


def test_keep_going_serves_the_end_of_the_queue(tmp_path: Path, servers: list[Server]) -> None:
    folder = make_folder(tmp_path / "out", ["debian-13"])
    poweroff = tmp_path / "poweroff.efi"
    poweroff.write_bytes(b"MZ" + b"\0" * 1000)
    server = Server(
        [
            "--from",
            str(folder),
            "--results",
            str(tmp_path / "r"),
            "--keep-going",
            "--poweroff-efi",
            str(poweroff),
        ]
    )
    servers.append(server)
    assert boot_and_report(server.url, 2) == 200
    assert server.wait_for(r"still serving \(--keep-going\)") is not None
    assert server.proc.poll() is None  # still serving
    with host(2) as again:
        answer = again.get(server.url)
        assert answer.status_code == 200 and answer.content == poweroff.read_bytes()
    assert "still serving (--keep-going)" in server.text
    server.proc.send_signal(signal.SIGINT)
    assert server.wait() == 130


def sparse_folder(tmp_path: Path, size: int) -> Path:
    """An artifact folder whose host image is a sparse file of `size` bytes."""
    folder = make_folder(tmp_path / "out", ["debian-13"])
    image = folder / "host-debian-13.efi"
    with image.open("r+b") as handle:
        handle.truncate(size)
    manifest_path = folder / "host-debian-13.manifest.json"
    manifest = load_manifest(manifest_path)
    write_manifest(folder, dataclasses.replace(manifest, size=size, sha256=sha256_file(image)))
    write_sha256sums(folder)
    return folder


def memory_kb(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    assert found, text
    return int(found[1])


def test_a_200_mb_image_is_streamed_with_bounded_memory(
    tmp_path: Path, servers: list[Server]
) -> None:
    size = 200 * 1024 * 1024
    folder = sparse_folder(tmp_path, size)
    server = Server(["--from", str(folder), "--results", str(tmp_path / "r")])
    servers.append(server)
    before = memory_kb(server.proc.pid, "VmRSS")
    digest = hashlib.sha256()
    received = 0
    with host(2) as client, client.stream("GET", server.url) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-length"] == str(size)
        for chunk in answer.iter_bytes():
            digest.update(chunk)
            received += len(chunk)
    peak = memory_kb(server.proc.pid, "VmHWM")
    print(
        f"200 MiB streamed; server RSS {before / 1024:.1f} MiB before, peak {peak / 1024:.1f} MiB"
    )
    assert received == size
    assert digest.hexdigest() == sha256_file(folder / "host-debian-13.efi")
    assert peak - before < 32 * 1024, "the server held far more than a chunk in memory"


# --- GitHub issues ---------------------------------------------------------------------------


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub(tokens={TOKEN: "write", READ_TOKEN: "read"}) as fake:
        yield fake


def issue_env(fake: FakeGitHub, token: str = TOKEN) -> dict[str, str]:
    return {"GITHUB_API_URL": fake.api_url, "GITHUB_TOKEN": token}


def test_reports_become_issues_with_the_milestone_number(
    tmp_path: Path, servers: list[Server], github: FakeGitHub
) -> None:
    for n in range(1, 140):  # more than a page of 100: the wanted one is on page 2
        github.add_milestone(f"old-{n}", state="closed")
    number = github.add_milestone("c3.0.0-0")
    folder = make_folder(tmp_path / "out", ["debian-13", "ubuntu-26.04"])
    server = Server(
        [
            "--from",
            str(folder),
            "--results",
            str(tmp_path / "r"),
            "--github-issues",
            "acme/sev-images",
        ],
        env=issue_env(github),
    )
    servers.append(server)
    assert boot_and_report(server.url, 2, {**REPORT, "milestone": "c3.0.0-0"}) == 200
    assert boot_and_report(server.url, 3, {**REPORT, "milestone": "c9.9.9-9"}) == 200
    assert server.wait() == 0, server.text + server.stderr
    first, second = github.issues
    assert first["milestone"] == number and first["labels"] == REPORT["labels"]
    assert first["title"] == REPORT["title"] and first["body"] == REPORT["body"]
    assert "milestone" not in second  # unknown: dropped, the issue still filed
    assert "milestone 'c9.9.9-9' does not exist on GitHub; dropped" in server.text
    assert "2 jobs: 2 🏁 Finished" in server.text
    summary = json.loads((tmp_path / "r" / "results.json").read_text())
    assert summary["jobs"][0]["issue"]["url"].endswith("/issues/1")
    assert [r.query.get("state") for r in github.requests if r.path.endswith("/milestones")] == [
        ["all"],
        ["all"],
    ]
    assert TOKEN not in server.text + server.stderr


@pytest.mark.parametrize(
    ("token", "fault", "message"),
    [
        (READ_TOKEN, None, "lacks permission (403"),
        (TOKEN, 502, "GitHub answered 502"),
    ],
)
def test_a_refused_issue_fails_the_job_and_is_shown(
    tmp_path: Path,
    servers: list[Server],
    github: FakeGitHub,
    token: str,
    fault: int | None,
    message: str,
) -> None:
    if fault is not None:
        github.fail("POST", r".*/issues", fault)
    folder = make_folder(tmp_path / "out", ["debian-13"])
    server = Server(
        [
            "--from",
            str(folder),
            "--results",
            str(tmp_path / "r"),
            "--github-issues",
            "acme/sev-images",
        ],
        env=issue_env(github, token),
    )
    servers.append(server)
    assert boot_and_report(server.url, 2) == 500  # as dispatch answers when GitHub fails
    assert server.wait() == 1
    assert message in server.text
    assert "1 job failed: host-debian-13.efi:" in server.stderr
    assert [r.method for r in github.requests if r.path.endswith("/issues")] == [
        "POST"
    ]  # never twice
    assert not github.issues
    assert len(list((tmp_path / "r").glob("host-debian-13-*.md"))) == 1  # the report is kept
    assert (
        TOKEN not in server.text + server.stderr and READ_TOKEN not in server.text + server.stderr
    )


# --- refusals before serving ---------------------------------------------------------------


def test_cli_refusals(cli: CliFn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = make_folder(tmp_path / "good", ["debian-13"])
    bad = make_folder(tmp_path / "bad", ["debian-13"])
    (bad / "host-debian-13.efi").write_bytes(b"MZ changed")
    guests = make_folder(tmp_path / "guests", ["fedora-43"], guest_only=["fedora-43"])
    debug = make_folder(tmp_path / "debug", ["debian-13"], debug=True)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no gh
    results = ["--results", str(tmp_path / "results")]
    cases = [
        (["--from", str(tmp_path / "none")], "cannot be served", "no such folder"),
        (["--from", str(bad)], "cannot be served: ", "SHA256SUMS says"),
        (["--from", str(guests)], "holds no host image", ""),
        (["--from", str(good), "ubuntu"], "no host image in", "host-debian-13.efi"),
        (["--from", str(debug)], "debug image, not served without --allow-debug", ""),
        (["--from", str(good), "--bind", "localhost:80"], "is not an IP address", ""),
        (["--from", str(good), "--poweroff-efi", str(text)], "not an EFI program", ""),
        (["--from", str(good), "--poweroff-efi", str(tmp_path / "x.efi")], "No such file", ""),
        (["--from", str(good), "--path", "dispatch"], "must start with /", ""),
        (["--from", str(good), "--github-issues", "acme"], "not a repository name", ""),
        (["--from", str(good), "--github-issues", "acme/r"], "needs a GitHub token", ""),
        (["--from", str(good), "--results", str(text / "sub")], "cannot write there", ""),
        (["--from", str(good), "--mdns"], "no other machine can reach", "--bind 0.0.0.0"),
        (["--from", str(good), "--mdns", "--bind", "0.0.0.0:0"], "needs avahi-publish", ""),
    ]
    for args, message, detail in cases:
        run = cli("serve", *results, *args)
        assert run.code == 1, (args, run.output)
        assert message in run.stderr and detail in run.stderr, (args, run.stderr)
        assert "Traceback" not in run.output
    assert not (tmp_path / "results" / "results.json").exists()  # nothing served, nothing written


def test_a_busy_port_is_named(cli: CliFn, tmp_path: Path, servers: list[Server]) -> None:
    folder = make_folder(tmp_path / "out", ["debian-13"])
    server = Server(["--from", str(folder), "--results", str(tmp_path / "r")])
    servers.append(server)
    port = server.url.split(":")[2].split("/")[0]
    run = cli(
        "serve",
        "--from",
        str(folder),
        "--bind",
        f"127.0.0.1:{port}",
        "--results",
        str(tmp_path / "r2"),
    )
    assert run.code == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in run.stderr
    assert "another server" in run.stderr


def test_github_issues_with_a_bad_token_is_refused_at_start(
    cli: CliFn, tmp_path: Path, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_folder(tmp_path / "out", ["debian-13"])
    monkeypatch.setenv("GITHUB_API_URL", github.api_url)
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_WRONGtokenVALUE123")
    run = cli(
        "serve",
        "--from",
        str(folder),
        "--github-issues",
        "acme/sev-images",
        "--results",
        str(tmp_path / "r"),
    )
    assert run.code == 1
    assert "GitHub rejected the token from GITHUB_TOKEN (401" in run.stderr
    assert "ghs_WRONGtokenVALUE123" not in run.output


def test_the_status_page_is_announced_and_can_be_turned_off(
    tmp_path: Path, servers: list[Server]
) -> None:
    folder = make_folder(tmp_path / "out", ["debian-13"])
    on = Server(["--from", str(folder), "--results", str(tmp_path / "r1")])
    servers.append(on)
    base = on.url.removesuffix("/dispatch")
    # Said before the "listening on" line the test waits for.
    assert f"status page: {base}/ " in on.text
    page = httpx.get(base + "/", timeout=30)
    assert page.status_code == 200 and "host-debian-13" in page.text
    off = Server(["--from", str(folder), "--results", str(tmp_path / "r2"), "--no-status-page"])
    servers.append(off)
    assert "status page" not in off.text
    assert httpx.get(off.url.removesuffix("/dispatch") + "/", timeout=30).status_code == 404
