"""sevimg_cert.dispatch: where the host finds dispatch, and what it sends (beacon's requests).

Discovery runs against fake roots; the requests go to a real HTTP server on
127.0.0.1 (tests/dispatchkit.py) that records them byte for byte.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from sevimg_cert import dispatch
from sevimg_cert.dispatch import Retry, Server
from tests.dispatchkit import (
    DISK,
    END,
    FILE,
    PCI,
    FakeRoot,
    http_option,
    load_option,
    mini_dispatch,
)

REPO = Path(__file__).resolve().parents[1]
FAST = Retry(attempts=3, first_delay=1.0, factor=3.0, max_delay=5.0, timeout=5.0)


class Console:
    """Collects the console lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def test_every_source_in_order_deduplicated_and_logged(tmp_path: Path) -> None:
    root = FakeRoot(tmp_path)
    root.cmdline("BOOT_IMAGE=x console=ttyS0 sevimg.dispatch=http://cmd:8080/dispatch quiet")
    root.loader_url("http://10.0.2.2:8080/dispatch?x.efi")
    root.boot(0x1, http_option("http://boot1/dispatch"))
    root.boot(0x2, http_option(""))  # DHCP HTTP boot: empty URI node
    root.boot(0x3, http_option("http://10.0.2.2:8080/dispatch?x.efi"))  # the loader's again
    root.boot(0x4, load_option("disk", PCI + DISK + FILE + END))
    root.boot(0x5, http_option("http://boot5/x")[:-3])  # malformed
    root.boot(0x6, http_option("tftp://boot6/x"))  # not http
    console = Console()
    servers = dispatch.find_servers(tmp_path, mdns_timeout=0, say=console)
    assert servers == [
        Server("http://cmd:8080/dispatch", "kernel command line sevimg.dispatch="),
        Server("http://10.0.2.2:8080/dispatch?x.efi", "EFI variable LoaderDeviceURL"),
        Server("http://boot1/dispatch", "EFI variable Boot0001 (URI node)"),
    ]
    assert "dispatch server http://cmd:8080/dispatch (from kernel command line" in console.text
    assert "ignoring the EFI variable Boot0005: " in console.text
    assert "ignoring 'tftp://boot6/x' from EFI variable Boot0006 (URI node)" in console.text
    assert dispatch.NO_SERVER not in console.lines


def test_the_last_sevimg_dispatch_on_the_command_line_wins(tmp_path: Path) -> None:
    FakeRoot(tmp_path).cmdline("sevimg.dispatch=http://a/d sevimg.dispatch=http://b/d")
    assert [s.url for s in dispatch.find_servers(tmp_path, mdns_timeout=0, say=Console())] == [
        "http://b/d"
    ]


def test_sevimg_dispatch_off_turns_reporting_off(tmp_path: Path) -> None:
    root = FakeRoot(tmp_path)
    root.cmdline("sevimg.dispatch=off")
    root.boot(0x1, http_option("http://boot1/dispatch"))
    console = Console()
    assert dispatch.find_servers(tmp_path, mdns_timeout=0, say=console) == []
    assert console.lines == ["sevimg.dispatch=off: not reporting to dispatch"]


def test_a_broken_loader_device_url_is_skipped_not_fatal(tmp_path: Path) -> None:
    root = FakeRoot(tmp_path)
    root.var("LoaderDeviceURL", b"\7\0\0\0h\0t", "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f")
    root.boot(0x1, http_option("http://boot1/dispatch"))
    console = Console()
    servers = dispatch.find_servers(tmp_path, mdns_timeout=0, say=console)
    assert [s.url for s in servers] == ["http://boot1/dispatch"]
    assert "ignoring the EFI variable LoaderDeviceURL: odd length 3" in console.text


def test_no_server_at_all_says_so_on_the_console(tmp_path: Path) -> None:
    FakeRoot(tmp_path).cmdline("console=ttyS0")
    console = Console()
    assert dispatch.find_servers(tmp_path, mdns_timeout=0, say=console) == []
    assert console.lines == [dispatch.NO_SERVER]
    assert "/run/sevimg/" in dispatch.NO_SERVER
    assert dispatch.booted([], say=console) is None
    assert console.lines[-1] == "no dispatch server took booted (POST): none was found"


def test_booted_is_a_post_without_a_body() -> None:
    with mini_dispatch() as server:
        console = Console()
        took = dispatch.booted([Server(server.url, "test")], retry=FAST, say=console)
    assert took == Server(server.url, "test")
    [seen] = server.requests
    assert (seen.method, seen.path, seen.body) == ("POST", "/dispatch", b"")
    assert seen.headers["content-length"] == "0"
    assert "content-type" not in seen.headers
    assert seen.headers["user-agent"] == "sevimg-cert"
    assert console.lines == [f"sent booted (POST) to {server.url} (from test)"]


def test_report_is_the_json_beacon_puts_with_empty_fields_left_out() -> None:
    payload: dict[str, object] = {
        "title": "debian forky SEV version 3.0",
        "body": "# Failed to Achieve a Certification Level\n\nno SNP: ünïcode",
        "labels": ["certificate", "os-debian-forky", "proc-9005"],
        "milestone": None,
    }
    with mini_dispatch() as server:
        assert dispatch.report([Server(server.url + "?x.efi", "t")], payload, say=Console())
    [seen] = server.requests
    assert (seen.method, seen.path) == ("PUT", "/dispatch?x.efi")
    assert seen.headers["content-type"] == "application/json"
    assert (
        seen.body
        == (
            '{"title":"debian forky SEV version 3.0",'
            '"body":"# Failed to Achieve a Certification Level\\n\\nno SNP: ünïcode",'
            '"labels":["certificate","os-debian-forky","proc-9005"]}'
        ).encode()
    )
    assert int(seen.headers["content-length"]) == len(seen.body)


def test_report_body_keeps_beacons_field_order_and_a_milestone() -> None:
    body = dispatch.report_body(
        {"milestone": "c3.0.0-0", "assignees": ["a"], "labels": [], "body": "", "title": "T"}
    )
    assert body == b'{"title":"T","assignees":["a"],"milestone":"c3.0.0-0"}'


def test_a_body_too_long_for_github_is_cut_with_a_note() -> None:
    body = json.loads(dispatch.report_body({"title": "T", "body": "é" * 70000}))["body"]
    assert len(body) == dispatch.MAX_BODY
    assert body.startswith("é" * 60000)
    assert body.endswith(
        "(cut here: the report had 70000 characters; the whole result is in /run/sevimg/)\n"
    )
    exact = "x" * dispatch.MAX_BODY
    assert json.loads(dispatch.report_body({"title": "T", "body": exact}))["body"] == exact


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"body": "x"}, "title is missing"),
        ({"title": ""}, "title is missing"),
        ({"title": "t", "labels": "certificate"}, "labels must be a list of strings"),
        ({"title": "t", "labels": [1]}, "labels must be a list of strings"),
        ({"title": "t", "milestone": 3}, "milestone must be a string"),
        ({"title": "t", "level": "3"}, "unknown field"),
    ],
)
def test_a_malformed_payload_is_refused_before_sending(
    payload: dict[str, object], message: str
) -> None:
    with mini_dispatch() as server, pytest.raises(ValueError, match=message):
        dispatch.report([Server(server.url, "t")], payload, say=Console())
    assert server.requests == []


def test_417_goes_on_to_the_next_server() -> None:
    with mini_dispatch(417) as first, mini_dispatch() as second:
        console = Console()
        servers = [Server(first.url, "one"), Server(second.url, "two")]
        assert dispatch.report(servers, {"title": "T"}, retry=FAST, say=console) == servers[1]
    assert [r.method for r in first.requests] == ["PUT"]
    assert [r.method for r in second.requests] == ["PUT"]
    assert f"{first.url}: 417, no job for this machine's address there" in console.text


def test_5xx_and_bad_answers_are_retried_with_backoff() -> None:
    delays: list[float] = []
    with mini_dispatch(500, "bad", 503) as server:
        console = Console()
        took = dispatch.booted(
            [Server(server.url, "t")],
            retry=Retry(attempts=4, first_delay=1, factor=3, max_delay=5),
            sleep=delays.append,
            say=console,
        )
    assert took is not None
    assert delays == [1, 3, 5]
    assert len(server.requests) == 4
    assert f"{server.url}: HTTP 500; retrying in 1 s" in console.lines
    assert any("no answer" in line for line in console.lines)


def test_retries_are_bounded_then_the_next_server() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/dispatch"  # bound, not listening
        delays: list[float] = []
        with mini_dispatch(502, 502, 502) as failing, mini_dispatch() as good:
            servers = [Server(dead, "dead"), Server(failing.url, "5xx"), Server(good.url, "ok")]
            took = dispatch.booted(servers, retry=FAST, sleep=delays.append, say=Console())
    assert took == servers[2]
    assert delays == [1, 3, 1, 3]
    assert len(failing.requests) == 3


def test_a_server_that_is_not_a_url_is_skipped_without_retrying() -> None:
    with mini_dispatch() as good:
        console = Console()
        servers = [Server("gopher://x/y", "given"), Server(good.url, "ok")]
        assert dispatch.booted(servers, sleep=_no_sleep, say=console) == servers[1]
    assert console.lines[0] == "skipping 'gopher://x/y': not an http:// or https:// URL"


def test_other_4xx_are_not_retried() -> None:
    delays: list[float] = []
    with mini_dispatch(404) as server:
        console = Console()
        assert dispatch.booted([Server(server.url, "t")], sleep=delays.append, say=console) is None
    assert delays == []
    assert len(server.requests) == 1
    assert console.lines == [
        f"{server.url}: unexpected HTTP 404; trying the next server",
        "no dispatch server took booted (POST)",
    ]


def test_5xx_then_417_on_put_says_dispatch_could_not_file_it() -> None:
    with mini_dispatch(500, 417) as server:
        console = Console()
        took = dispatch.report(
            [Server(server.url, "t")], {"title": "T"}, retry=FAST, sleep=lambda _: None, say=console
        )
    assert took is None
    assert "could not file it on GitHub" in console.text
    assert console.lines[-1] == "no dispatch server took the report (PUT)"


def _no_sleep(seconds: float) -> None:
    pytest.fail(f"slept {seconds} s: a 404 must not be retried")


def test_credentials_in_a_url_are_never_printed() -> None:
    with mini_dispatch(404) as server:
        url = server.url.replace("http://", "http://user:s3cret@")
        console = Console()
        dispatch.booted([Server(url, "t")], sleep=_no_sleep, say=console)
    assert "s3cret" not in console.text
    assert f"{server.url}: unexpected HTTP 404" in console.text
    [seen] = server.requests
    assert seen.headers["authorization"] == "Basic dXNlcjpzM2NyZXQ="  # user:s3cret


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "sevimg_cert.dispatch", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_cli_report_like_beacon(tmp_path: Path) -> None:
    (tmp_path / "body.md").write_text("# Failed\n")
    with mini_dispatch() as server:
        run = _cli(
            "--url",
            server.url,
            "report",
            "-t",
            "T",
            "-b",
            str(tmp_path / "body.md"),
            "-l",
            "certificate",
            "-l",
            "proc-9005",
            "-m",
            "c3.0.0-0",
        )
        assert run.returncode == 0, run.stderr
        run = _cli("--url", server.url, "report", "--title", "T2", stdin="from stdin")
        assert run.returncode == 0, run.stderr
        run = _cli("--url", server.url, "boot")
        assert run.returncode == 0, run.stderr
    assert [json.loads(r.body) if r.body else None for r in server.requests] == [
        {
            "title": "T",
            "body": "# Failed\n",
            "labels": ["certificate", "proc-9005"],
            "milestone": "c3.0.0-0",
        },
        {"title": "T2", "body": "from stdin"},
        None,
    ]


def test_cli_find_and_failures(tmp_path: Path) -> None:
    root = FakeRoot(tmp_path)
    root.boot(0x1, http_option("http://boot1/dispatch"))
    run = _cli("--root", str(tmp_path), "--no-mdns", "find")
    assert (run.returncode, run.stdout) == (
        0,
        "http://boot1/dispatch\tEFI variable Boot0001 (URI node)\n",
    )
    run = _cli("--root", str(tmp_path / "empty"), "--no-mdns", "boot")
    assert run.returncode == 1
    assert dispatch.NO_SERVER in run.stderr
    run = _cli("--url", "ftp://x/y", "boot")
    assert run.returncode == 2
    assert "not an http:// or https:// URL" in run.stderr
    assert "Traceback" not in run.stderr


def test_one_boot_against_dispatchs_job_machine() -> None:
    with mini_dispatch(jobs=True) as server:
        servers = [Server(server.url, "t")]
        console = Console()
        assert dispatch.booted(servers, say=console) is None  # no download yet: 417
        urllib.request.urlopen(server.url, timeout=10).close()  # noqa: S310 (the firmware's GET)
        assert dispatch.booted(servers, say=console) == servers[0]
        assert dispatch.report(servers, {"title": "T", "labels": ["certificate"]}, say=console)
        # One report per boot: a second PUT is refused with 417, and nothing is retried.
        assert dispatch.report(servers, {"title": "T"}, sleep=_no_sleep, say=console) is None
        assert server.jobs == {"127.0.0.1": "Reported"}
    assert [r.method for r in server.requests] == ["POST", "GET", "POST", "PUT", "PUT"]
    assert console.lines[-1] == "no dispatch server took the report (PUT)"
