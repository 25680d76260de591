"""Reporting to dispatch from a booted host, as AMD's beacon does (issue 11).

Servers are found, in this order: `sevimg.dispatch=URL` on the kernel
command line (`sevimg.dispatch=off` turns reporting off); the
`LoaderDeviceURL` EFI variable; the URI nodes of the `Boot####` variables
(BootCurrent first); mDNS `_dispatch._tcp` (avahi-browse when installed,
else `sevimg_cert.mdns`). `booted` sends `POST <url>` with no body before
the checks, `report` one `PUT <url>` of `{title, body, labels, assignees,
milestone}` (empty fields left out, as beacon's serde does) once the result
is written. 200 ends; 417 means "no job of this IP here": the next server;
connection errors, bad answers and 5xx are retried with backoff, then the
next server. Each of `booted` and `report` ends within one deadline for all
of it (DELIVER_BUDGET, 2 minutes), however slowly a server answers; no
redirect is followed (a POST turned into a GET elsewhere is no report), and
what a server says is escaped before it reaches the console. dispatch keys jobs by client IP, so the report must leave from
the address that HTTP-booted; nothing here picks a source address.

Also `python3 -m sevimg_cert.dispatch find|boot|report|after`, for glue and
for debugging on a host.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sevimg_cert import efi, mdns, peerhttp
from sevimg_cert.after import (
    After,
    Say,
    after_action,
    after_report,
    cmdline_value,
    say_console,
)
from sevimg_cert.peerhttp import Deadline, PeerError, shown
from sevimg_cert.redact import redact
from sevimg_cert.retry import Retry

__all__ = [
    "After",
    "Retry",
    "Server",
    "after_action",
    "after_report",
    "booted",
    "find_servers",
    "report",
    "report_body",
]

FIELDS = ("title", "body", "labels", "assignees", "milestone")
NO_SERVER = (
    "no dispatch server found (no sevimg.dispatch= on the command line, no LoaderDeviceURL, "
    "no Boot#### URI, no _dispatch._tcp on mDNS): nothing is reported; "
    "the result is on this console and in /run/sevimg/"
)
# GitHub refuses an issue body over 65536 characters (dispatch then answers
# 500 and the report is lost), so a longer body is cut, with a margin.
MAX_BODY = 65000
TRUNCATED = "\n\n…(cut here: the report had {n} characters; the whole result is in /run/sevimg/)\n"
# What dispatch answers is read up to this much (it says little); no proxy is used:
# dispatch is on the lab's own network.
MAX_ANSWER = 1 << 16
# The reporter's whole time with dispatch, for each of booted and report, all
# servers and retries included (sevimg_cert.harness budgets its run with it).
DELIVER_BUDGET = 120.0


@dataclass(frozen=True)
class Server:
    """A dispatch URL and the source it was found in (for the console)."""

    url: str
    source: str


def kds_cache_url(url: str) -> str | None:
    """The KDS cache a dispatch server at `url` may keep: `<scheme>://<host>[:port]/kds`.

    `sevimg serve` answers AMD's KDS paths there, so a lab's hosts need to
    reach nothing but the lab machine. None for a URL that is not one.
    """
    if url_problem(url) is not None:
        return None
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/kds", "", ""))


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a dispatch URL, or None."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as error:
        return f"not a URL ({error})"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "holds spaces or control characters"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http:// or https:// URL"
    return None


def avahi_browse(timeout: float) -> list[tuple[str, str]] | None:
    """(instance, URL) from `avahi-browse -rpt _dispatch._tcp`; None when it cannot run."""
    program = shutil.which("avahi-browse")
    if program is None:
        return None
    try:
        run = subprocess.run(
            [program, "-rpt", "_dispatch._tcp"],
            capture_output=True,
            text=True,
            timeout=timeout + 5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if run.returncode != 0:
        return None
    return parse_avahi(run.stdout)


def parse_avahi(output: str) -> list[tuple[str, str]]:
    """Resolved (`=`) lines of `avahi-browse -p` output → (instance, URL), as beacon builds them."""
    found: list[tuple[str, str]] = []
    for line in output.splitlines():
        fields = line.split(";", 9)
        if len(fields) < 10 or fields[0] != "=":
            continue
        name, address, port, txt = fields[3], fields[7], fields[8], fields[9]
        path = None
        for item in txt.split('" "'):
            key, sep, value = item.strip('"').partition("=")
            if sep and key == "path":
                path = value
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])
            number = int(port)
        except ValueError:
            continue
        if ip.is_loopback or ip.is_link_local or not path or not path.startswith("/"):
            continue
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        found.append((name, f"http://{host}:{number}{path}"))
    return found


def find_servers(
    root: Path = Path("/"),
    *,
    mdns_timeout: float = 2.0,
    mdns_group: tuple[str, int] = mdns.GROUP,
    say: Say = say_console,
) -> list[Server]:
    """Every dispatch URL this host can find, in the order to try them, without duplicates.

    `mdns_timeout=0` skips mDNS. Each server found is logged with its source.
    """
    candidates: list[Server] = []
    given = cmdline_value(root, "sevimg.dispatch")
    if given == "off":
        say("sevimg.dispatch=off: not reporting to dispatch")
        return []
    if given:
        candidates.append(Server(given, "kernel command line sevimg.dispatch="))
    efivars = root / efi.EFIVARS
    try:
        loader = efi.loader_device_url(efivars)
    except efi.EfiError as error:
        say(f"ignoring the EFI variable {error}")
        loader = None
    if loader:
        candidates.append(Server(loader, "EFI variable LoaderDeviceURL"))
    boot, problems = efi.boot_urls(efivars)
    for line in problems:
        say(f"ignoring the EFI variable {line}")
    candidates.extend(Server(url, f"EFI variable {name} (URI node)") for name, url in boot)
    if mdns_timeout > 0:
        candidates.extend(_mdns(mdns_timeout, mdns_group, say))
    servers: list[Server] = []
    for server in candidates:
        problem = url_problem(server.url)
        if problem is not None:
            say(f"ignoring {redact(server.url)!r} from {server.source}: {problem}")
        elif server.url not in {s.url for s in servers}:
            say(f"dispatch server {redact(server.url)} (from {server.source})")
            servers.append(server)
    if not servers:
        say(NO_SERVER)
    return servers


def _mdns(timeout: float, group: tuple[str, int], say: Say) -> list[Server]:
    found = avahi_browse(timeout) if group == mdns.GROUP else None
    how = "avahi-browse"
    if found is None:
        how = "mDNS query"
        try:
            found = mdns.browse(timeout, group)
        except OSError as error:
            say(f"no mDNS browse for _dispatch._tcp: {error}")
            return []
    return [Server(url, f"{how} _dispatch._tcp {name!r}") for name, url in found]


def report_body(payload: Mapping[str, object]) -> bytes:
    """The PUT body beacon sends: JSON with the fields in its order, empty ones left out.

    ValueError names the field when `payload` is not `{title, body?, labels?,
    assignees?, milestone?}` with strings and lists of strings.
    """
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise ValueError(f"report payload: unknown field(s) {', '.join(unknown)}")
    out: dict[str, object] = {}
    for key in FIELDS:
        value = payload.get(key)
        if key in ("labels", "assignees"):
            if value is None:
                value = []
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"report payload: {key} must be a list of strings")
            if value:
                out[key] = list(value)
        elif value is not None:
            if not isinstance(value, str):
                raise ValueError(f"report payload: {key} must be a string")
            if value or key == "title":
                out[key] = value
    body = out.get("body")
    if isinstance(body, str) and len(body) > MAX_BODY:
        note = TRUNCATED.format(n=len(body))
        out["body"] = body[: MAX_BODY - len(note)] + note
    if not out.get("title"):
        raise ValueError("report payload: title is missing or empty")
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()


def send(
    url: str, method: str, body: bytes | None, timeout: float, deadline: Deadline | None = None
) -> int:
    """One request, no redirect followed; the HTTP status. PeerError when there is no proper answer.

    The whole exchange ends by `deadline` (default: `timeout` from now),
    however slowly the server answers.
    """
    headers = {"User-Agent": "sevimg-cert", "Accept": "*/*"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if (problem := url_problem(url)) is not None:
        raise ValueError(f"{redact(url)!r}: {problem}")
    # No redirect is followed: a POST or PUT that became a GET elsewhere is not a report.
    answer = peerhttp.exchange(
        url,
        method,
        body,
        headers,
        deadline=(deadline or Deadline(timeout)).within(timeout),
        max_body=MAX_ANSWER,
        read_timeout=timeout,
    )
    return answer.status


def deliver(
    servers: Sequence[Server],
    method: str,
    body: bytes | None,
    *,
    retry: Retry = Retry(),
    sleep: Callable[[float], None] = time.sleep,
    say: Say = say_console,
    deadline: Deadline | None = None,
) -> Server | None:
    """`method` to each server in turn until one answers 200; that server, or None.

    Everything (every server, attempt and pause) ends by `deadline`
    (default: DELIVER_BUDGET from now). No redirect is followed: a 3xx is
    an unexpected answer, as any other 4xx.
    """
    what = "booted (POST)" if method == "POST" else "the report (PUT)"
    deadline = deadline or Deadline(DELIVER_BUDGET)
    for server in servers:
        shown_url = shown(redact(server.url))
        server_error = False
        for attempt in range(retry.attempts):
            if deadline.expired():
                say(f"no time left to send {what} (the reporter's deadline passed)")
                return None
            try:
                status = send(server.url, method, body, retry.timeout, deadline)
            except ValueError as error:  # not a URL to send to: no point in retrying
                say(f"skipping {shown(error)}")
                break
            except PeerError as error:
                problem, status = f"no answer ({error})", 0
            else:
                problem = f"HTTP {status}"
            if status == 200:
                say(f"sent {what} to {shown_url} (from {shown(server.source)})")
                return server
            if status == 417:
                why = "no job for this machine's address there"
                if server_error and method == "PUT":
                    why = (
                        "dispatch took the report but could not file it on GitHub "
                        "(it answered 5xx, then 417)"
                    )
                say(f"{shown_url}: 417, {why}; trying the next server")
                break
            if 300 <= status < 400:
                say(
                    f"{shown_url}: {problem}, a redirect: not followed for {method}; "
                    "trying the next server"
                )
                break
            if status and status < 500:
                say(f"{shown_url}: unexpected {problem}; trying the next server")
                break
            server_error = server_error or status >= 500
            if attempt + 1 < retry.attempts:
                delay = retry.delay(attempt)
                if delay >= deadline.remaining():
                    say(f"{shown_url}: {problem}; no time left to retry")
                    break
                say(f"{shown_url}: {problem}; retrying in {delay:g} s")
                sleep(delay)
            else:
                say(
                    f"{shown_url}: {problem} after {retry.attempts} attempts; trying the next server"
                )
    say(f"no dispatch server took {what}" + ("" if servers else ": none was found"))
    return None


def booted(
    servers: Sequence[Server],
    *,
    retry: Retry = Retry(),
    sleep: Callable[[float], None] = time.sleep,
    say: Say = say_console,
    deadline: Deadline | None = None,
) -> Server | None:
    """Tell dispatch this host booted (POST, no body); the server that took it, or None."""
    return deliver(servers, "POST", None, retry=retry, sleep=sleep, say=say, deadline=deadline)


def report(
    servers: Sequence[Server],
    payload: Mapping[str, object],
    *,
    retry: Retry = Retry(),
    sleep: Callable[[float], None] = time.sleep,
    say: Say = say_console,
    deadline: Deadline | None = None,
) -> Server | None:
    """PUT the `{title, body, labels, milestone}` report; the server that took it, or None.

    ValueError (before anything is sent) when the payload is malformed.
    """
    body = report_body(payload)
    return deliver(servers, "PUT", body, retry=retry, sleep=sleep, say=say, deadline=deadline)


def main(argv: Sequence[str] | None = None) -> int:
    """`python3 -m sevimg_cert.dispatch`: find, boot, report, after (exit 0 on success)."""
    parser = argparse.ArgumentParser(
        prog="python3 -m sevimg_cert.dispatch", description="Talk to dispatch the way beacon does."
    )
    parser.add_argument("--root", type=Path, default=Path("/"), help="read /proc, /sys below it")
    parser.add_argument("--url", action="append", default=[], help="use this URL (repeatable)")
    parser.add_argument("--no-mdns", action="store_true", help="do not browse mDNS")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("find", help="list the dispatch servers found, in order")
    commands.add_parser("boot", help="POST: this host has booted")
    put = commands.add_parser("report", help="PUT a report (body from FILE or stdin)")
    put.add_argument("-t", "--title", required=True)
    put.add_argument("-b", "--body-file", type=Path)
    put.add_argument("-l", "--label", action="append", default=[])
    put.add_argument("-a", "--assignee", action="append", default=[])
    put.add_argument("-m", "--milestone")
    after = commands.add_parser("after", help="reboot/poweroff/stay as sevimg.after= says")
    after.add_argument("action", nargs="?", choices=("reboot", "poweroff", "stay"))
    after.add_argument("--not-reported", action="store_true", help="default to staying up")
    args = parser.parse_args(argv)
    if args.command == "after":
        after_report(args.action, root=args.root, reported=not args.not_reported)
        return 0
    payload: dict[str, object] = {}
    if args.command == "report":
        try:
            text = args.body_file.read_text() if args.body_file else sys.stdin.read()
        except (OSError, UnicodeDecodeError) as error:
            parser.error(f"cannot read the body: {error}")
        payload = {
            "title": args.title,
            "body": text,
            "labels": args.label,
            "assignees": args.assignee,
            "milestone": args.milestone,
        }
        try:
            report_body(payload)
        except ValueError as error:
            parser.error(str(error))
    if args.url:
        for url in args.url:
            if (problem := url_problem(url)) is not None:
                parser.error(f"--url {redact(url)!r}: {problem}")
        servers = [Server(url, "--url") for url in args.url]
    else:
        servers = find_servers(args.root, mdns_timeout=0 if args.no_mdns else 2.0)
    if args.command == "find":
        for server in servers:
            print(f"{server.url}\t{server.source}")
        return 0 if servers else 1
    if args.command == "boot":
        return 0 if booted(servers) else 1
    return 0 if report(servers, payload) else 1


if __name__ == "__main__":
    sys.exit(main())
