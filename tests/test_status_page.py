"""`sevimg serve`'s status page over real HTTP on 127.0.0.1: pages, JSON, escaping, confinement.

The dispatch path keeps dispatch's behaviour; the status page answers only
its own paths, reads only files listed in the results folder, and shows a
host's report as text.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sevimg.serve.files import load_jobs
from sevimg.serve.results import Results
from sevimg.serve.server import Handle, serve
from sevimg.serve.status import CSP
from tests.artifactkit import make_folder

HOSTILE_BODY = (
    "# Failed to Achieve a Certification Level\n\n"
    "<script>alert('report')</script>\n\n"
    '<img src=x onerror="alert(1)">\n\n'
    "[click me](javascript:alert(2)) and [docs](https://example.com/ok)\n\n"
    "| Test | Result |\n|---|---|\n| snp_enabled | <b>fail</b> |\n"
)
REPORT: dict[str, Any] = {
    "title": "debian 13 SEV version 3.0 <script>alert('title')</script>",
    "body": HOSTILE_BODY,
    "labels": ["certificate", "os-debian-13", "proc-9004"],
}


@dataclass
class Site:
    handle: Handle
    results: Path
    now: list[float]

    @property
    def base(self) -> str:
        return self.handle.url.removesuffix(self.handle.config.path)


def start(tmp_path: Path, *, path: str = "/dispatch", status_page: bool = True) -> Site:
    folder = make_folder(tmp_path / "out", ("debian-13", "ubuntu-26.04"), size=3 * 1024 * 1024 + 5)
    results = Results(tmp_path / "results")
    results.prepare()
    now = [1_780_000_000.0]
    handle = serve(
        load_jobs(folder),
        results=results,
        clock=lambda: now[0],
        path=path,
        status_page=status_page,
    )
    return Site(handle, tmp_path / "results", now)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    site = start(tmp_path)
    yield site
    site.handle.stop()


def raw_get(site: Site, path: str) -> tuple[int, bytes]:
    """GET `path` exactly as written (an HTTP client would remove its dot segments first)."""
    with socket.create_connection(("127.0.0.1", site.handle.port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def boot_and_report(site: Site, report: Mapping[str, Any]) -> None:
    with httpx.Client(timeout=30) as host:
        assert host.get(site.handle.url).status_code == 200
        site.now[0] += 60
        assert host.post(site.handle.url).status_code == 200
        site.now[0] += 240
        assert host.put(site.handle.url, json=report).status_code == 200


def status(site: Site) -> Any:
    answer = httpx.get(site.base + "/status.json", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json; charset=utf-8"
    data = answer.json()
    assert isinstance(data, dict)
    return data


def test_the_page_and_its_json_follow_a_job_from_waiting_to_reported(site: Site) -> None:
    page = httpx.get(site.base + "/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert page.headers["x-content-type-options"] == "nosniff"
    html = page.text
    assert '<script src="/status.js" defer></script>' in html
    assert "<script>" not in html  # no inline script at all
    assert "⏳ Unassigned" in html and "host-debian-13" in html

    before = status(site)
    jobs = {j["job"]: j for j in before["jobs"]}
    assert jobs["host-debian-13.efi"]["state"] == "Unassigned"
    assert jobs["host-debian-13.efi"]["icon"] == "⏳"
    assert before["counts"] == "2 jobs: 2 ⏳ Unassigned"

    boot_and_report(site, REPORT)
    after = status(site)
    job = next(j for j in after["jobs"] if j["job"] == "host-debian-13.efi")
    assert (job["state"], job["icon"], job["client"]) == ("Reported", "📝", "127.0.0.1")
    size = 3 * 1024 * 1024 + 5
    assert job["sent"] == job["size"] == size  # every byte counted, over 1 MiB chunks
    assert job["sent_text"] == "3.0 MiB of 3.0 MiB"
    assert job["assigned_text"] == "20:26:40" and job["booted_text"] == "20:27:40"
    assert job["reported_text"] == "20:31:40"
    assert job["result"] == "host-debian-13-20260528T203140Z"
    assert after["results"] == [job["result"]]
    assert "path" not in job and "sha256" not in job  # nothing of the server's disk
    # The page's requests are not the hosts': the log (and its events) hold only dispatch's.
    assert {e.path for e in site.handle.events} == {"/dispatch"}
    # The server-side page shows the same, and links the result.
    html = httpx.get(site.base + "/", timeout=30).text
    assert "📝 Reported" in html and f'href="/results/{job["result"]}"' in html


def test_a_report_is_rendered_as_text_never_as_html(site: Site) -> None:
    boot_and_report(site, REPORT)
    (name,) = status(site)["results"]
    page = httpx.get(f"{site.base}/results/{name}", timeout=30)
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    html = page.text
    assert "<script>alert" not in html and "<img" not in html and "<b>fail</b>" not in html
    assert "&lt;script&gt;alert(&#39;report&#39;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=" in html
    assert 'href="javascript' not in html  # markdown-it does not link it
    assert '<a href="https://example.com/ok">docs</a>' in html  # ordinary Markdown still works
    assert "<table>" in html and "<h1>Failed to Achieve a Certification Level</h1>" in html
    # The title (a host's text too) is escaped, and the JSON is beside the report.
    assert "<title>debian 13 SEV version 3.0 &lt;script&gt;" in html
    assert 'id="report-json"' in html and "&#34;proc-9004&#34;" in html
    raw = httpx.get(f"{site.base}/results/{name}.json", timeout=30)
    assert raw.headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(raw.content)["report"] == REPORT
    md = httpx.get(f"{site.base}/results/{name}.md", timeout=30)
    assert md.headers["content-type"] == "text/plain; charset=utf-8" and md.text == HOSTILE_BODY


def test_the_matrix_page_shows_the_results_of_this_serve(site: Site) -> None:
    boot_and_report(site, {**REPORT, "title": "debian 13 SEV version 3.0", "milestone": "c3.0.0-0"})
    (name,) = status(site)["results"]
    page = httpx.get(site.base + "/matrix", timeout=30)
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    assert "<h2>AMD EPYC 9004 (Genoa)</h2>" in page.text
    assert f'✅ <a href="/results/{name}" rel="noopener noreferrer">c3.0.0-0</a>' in page.text
    assert "<style>" not in page.text and 'href="/lab.css"' in page.text  # CSP: no inline style


@pytest.mark.parametrize(
    "path",
    [
        "/results/../results.json",
        "/results/..%2fresults.json",
        "/results/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/results/..",
        "/results/results",  # serve's summary is not a report
        "/results/results.json",
        "/results/.sevimg-serve.lock",
        "/results/outside",  # a symlink out of the folder
        "/results/outside.json",
        "/results/nothing-here",
        "/results/",
        "/results//etc/passwd",
        "/../../etc/passwd",
        "/etc/passwd",
        "/status.json/x",
        "/lab.css/../../x",
    ],
)
def test_nothing_outside_the_results_folder_is_served(
    site: Site, path: str, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"report": {"title": "SECRET"}}')
    (site.results / "outside.json").symlink_to(secret)
    (site.results / "outside.md").symlink_to(tmp_path / "secret.json")
    status_code, body = raw_get(site, path)
    assert status_code == 404, body
    assert b"SECRET" not in body and b"root:" not in body


def test_the_dispatch_path_and_other_methods_keep_dispatchs_answers(tmp_path: Path) -> None:
    site = start(tmp_path, path="/")
    try:
        with httpx.Client(timeout=30) as client:
            # The dispatch path wins: / is the image here, and the page moves to /status.
            image = client.get(site.base + "/")
            assert image.headers["content-type"] == "application/efi"
            assert "content-security-policy" not in image.headers
            assert client.get(site.base + "/status").headers["content-type"].startswith("text/html")
            # Methods other than GET and HEAD on the page's paths: 404, as dispatch answers off its path.
            assert client.post(site.base + "/status").status_code == 404
            assert client.put(site.base + "/status.json", json={}).status_code == 404
            head = client.head(site.base + "/status.json")
            assert head.status_code == 200 and head.content == b""
            assert int(head.headers["content-length"]) > 0
    finally:
        site.handle.stop()


def test_no_status_page_when_asked(tmp_path: Path) -> None:
    site = start(tmp_path, status_page=False)
    try:
        for path in ("/", "/status.json", "/status.js", "/matrix"):
            assert httpx.get(site.base + path, timeout=30).status_code == 404
    finally:
        site.handle.stop()


def test_the_script_and_style_are_served_from_the_same_origin(site: Site) -> None:
    script = httpx.get(site.base + "/status.js", timeout=30)
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert 'fetch("/status.json"' in script.text
    assert "innerHTML" not in script.text  # values go in as text
    style = httpx.get(site.base + "/lab.css", timeout=30)
    assert style.headers["content-type"] == "text/css; charset=utf-8" and "table" in style.text
