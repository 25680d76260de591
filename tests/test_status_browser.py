"""`sevimg serve`'s status page in a real browser: Debian's headless Chromium.

Chromium loads the page from the real server on 127.0.0.1 and its DOM is
read back (`--dump-dom`): the page's own script must move a job from
Waiting to Reported while a fake host (the real harness on a fake root)
boots and reports, and a hostile host's report must show as text. The page
is held at its first poll until both hosts have reported, so nothing waits
on a clock: Chromium's virtual time only runs the page's timers. A
screenshot is kept under out/browser/ for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from sevimg.serve.files import load_jobs
from sevimg.serve.jobs import State
from sevimg.serve.results import Results
from sevimg.serve.server import Handle, serve
from sevimg.serve.status import Answer
from tests.artifactkit import make_folder
from tests.conftest import REPO
from tests.harnesskit import fake_host
from tests.test_certification_flow import run_harness

pytestmark = pytest.mark.browser

SHOTS = REPO / "out" / "browser"
HOSTILE = {
    "title": "evil 1 SEV version 3.0 <script>document.title='PWNED-TITLE'</script>",
    "body": (
        "# Failed to Achieve a Certification Level\n\n"
        "<script>document.body.setAttribute('data-pwned', 'script')</script>\n\n"
        "<img src=x onerror=\"document.body.setAttribute('data-pwned', 'img')\">\n\n"
        "[click](javascript:document.body.setAttribute('data-pwned','link'))\n"
    ),
    "labels": ["certificate", "os-evil-1", "proc-9004"],
}


def chromium(tmp_path: Path, url: str, *args: str) -> str:
    """Run headless Chromium on `url`; its standard output (the DOM with --dump-dom)."""
    binary = shutil.which("chromium")
    assert binary is not None, "chromium is missing: tools/setup installs it"
    argv = [
        binary,
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        # Timers run on virtual time, which stands still while a fetch is pending.
        "--virtual-time-budget=6000",
        *args,
        url,
    ]
    if os.geteuid() == 0:
        argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def rows(dom: str) -> dict[str, str]:
    """Job → the state cell's text, from the jobs table of a DOM dump."""
    return dict(re.findall(r'<tr data-job="([^"]+)"><td class="state state-\w+">([^<]*)</td>', dom))


def hold_first_poll(handle: Handle, hosts: Callable[[], None]) -> threading.Event:
    """The page's first /status.json is answered only after `hosts` ran (they boot and report)."""
    site = handle.config.status
    assert site is not None
    answer = site.answer
    ran = threading.Event()
    lock = threading.Lock()

    def held(path: str) -> Answer | None:
        if path == "/status.json":
            with lock:
                if not ran.is_set():
                    hosts()
                    ran.set()
        return answer(path)

    site.answer = held  # type: ignore[method-assign,assignment]
    return ran


def test_the_page_shows_jobs_move_to_reported_and_a_hostile_report_as_text(
    tmp_path: Path,
) -> None:
    folder = make_folder(tmp_path / "out", ("debian-13", "debian-forky"))
    results = Results(tmp_path / "results")
    results.prepare()
    handle = serve(load_jobs(folder), results=results)
    base = handle.url.removesuffix("/dispatch")
    try:
        waiting = chromium(tmp_path, base + "/", "--dump-dom")
        assert rows(waiting) == {
            "host-debian-13.efi": "⏳ Unassigned",
            "host-debian-forky.efi": "⏳ Unassigned",
        }

        # Two hosts download their images: the harness's host (127.0.0.1) and a hostile one.
        with httpx.Client(timeout=30) as firmware:
            assert firmware.get(handle.url).status_code == 200
        evil = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"), timeout=30)
        assert evil.get(handle.url).status_code == 200
        harness: list[subprocess.CompletedProcess[str]] = []

        def hosts() -> None:
            host = fake_host(
                tmp_path / "host",
                sev_snp="N",
                cmdline=f"console=ttyS0 sevimg.dispatch={handle.url} sevimg.after=stay",
            )
            harness.append(run_harness(host.root, host.bin))
            assert evil.post(handle.url).status_code == 200
            assert evil.put(handle.url, json=HOSTILE).status_code == 200

        ran = hold_first_poll(handle, hosts)
        # Served while both jobs are Downloading; the page's script redraws them as Reported.
        shot = SHOTS / "status-page.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        live = chromium(tmp_path, base + "/", "--dump-dom")
        assert ran.is_set(), "the page never polled /status.json"
        assert harness and "Traceback" not in harness[0].stderr, harness
        states = {j.name: j.state for j in handle.board.snapshot()}
        assert states == {
            "host-debian-13.efi": State.REPORTED,
            "host-debian-forky.efi": State.REPORTED,
        }
        assert rows(live) == {
            "host-debian-13.efi": "📝 Reported",
            "host-debian-forky.efi": "📝 Reported",
        }, live
        assert (
            "📥 Downloading" not in live
        )  # what the server rendered is gone: the script redrew it
        saved = re.findall(r'<a href="/results/([^"]+)">', live)
        assert len(set(saved)) == 2, live
        chromium(tmp_path, base + "/", f"--screenshot={shot}", "--window-size=1400,700")
        assert shot.stat().st_size > 10_000

        evil_name = next(n for n in set(saved) if "debian-forky" in n)
        page = chromium(tmp_path, f"{base}/results/{evil_name}", "--dump-dom")
        # Nothing of the report ran: no attribute set on <body>, the title untouched.
        assert not re.search(r"<body[^>]*data-pwned", page)
        assert "PWNED-TITLE</title>" not in page
        assert "&lt;script&gt;document.body.setAttribute" in page  # the report's script, as text
        assert "&lt;img src=x onerror=" in page
        assert "<title>evil 1 SEV version 3.0 &lt;script&gt;" in page
        assert 'href="javascript' not in page
        chromium(
            tmp_path,
            f"{base}/results/{evil_name}",
            f"--screenshot={SHOTS / 'hostile-report.png'}",
            "--window-size=1400,900",
        )
        evil.close()

        # The matrix of this serve's results: both runs failed on a 9004 (Genoa).
        matrix = chromium(tmp_path, base + "/matrix", "--dump-dom")
        assert "<h2>AMD EPYC 9004 (Genoa)</h2>" in matrix
        row = re.search(r'<th scope="row">Debian Forky</th><td>(.*?)</td>', matrix)
        assert row is not None and row[1].startswith('❌ <a href="/results/'), matrix
        assert '<th scope="row">Evil 1</th>' in matrix
        chromium(tmp_path, base + "/matrix", f"--screenshot={SHOTS / 'matrix.png'}")
    finally:
        handle.stop()
