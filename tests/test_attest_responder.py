"""The guest's attestation responder, run with bash on this machine against a fake root.

The rendered script reads every path below SEVIMG_ROOT; the test builds a
fake /etc, /proc, /sys and configfs-tsm there. Two things this
machine cannot give are faked on PATH: `dmesg` (the guest's kernel log) and
configfs's `mkdir`, which in the real configfs-tsm creates the entry with its
`provider` and `outblob` (copied here from a folder the test fills) or fails
with ENXIO when no provider registered. Requests and replies go through two
FIFOs. Everything else is the real bash and coreutils, and the replies are
read with the host's own parser.
"""

from __future__ import annotations

import os
import select
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sevimg.catalog.index import Catalog
from sevimg.catalog.resolve import resolve
from sevimg.render.trees import ATTEST_RESPONDER, EXTRA, Renderer
from sevimg.workspace import Workspace
from sevimg_cert import channel
from tests.conftest import REPO

KERNEL = "6.12.48+deb13-amd64"
SNP_LOG = "[    0.000000] Memory Encryption Features active: AMD SEV SEV-ES SEV-SNP"

DMESG = """#!/bin/bash
cat "$FAKE_DMESG"
"""
# configfs-tsm's mkdir: below the report folder, an entry appears with the
# provider's attributes, or the kernel refuses it (no provider: ENXIO).
MKDIR = """#!/bin/bash
target=${!#}
if [ "$(dirname "$target")" = "$FAKE_TSM_REPORTS" ]; then
  if [ ! -d "$FAKE_TSM_TEMPLATE" ]; then
    echo "mkdir: cannot create directory '$target': No such device or address" >&2
    exit 1
  fi
  /bin/mkdir "$target" && cp "$FAKE_TSM_TEMPLATE"/* "$target"/
  exit
fi
exec /bin/mkdir "$@"
"""


@dataclass
class Guest:
    """A fake guest root and the rendered responder."""

    root: Path
    script: Path
    bin: Path
    template: Path  # what configfs-tsm shows in a new entry; absent = no provider
    dmesg: Path

    @property
    def reports(self) -> Path:
        return self.root / "sys/kernel/config/tsm/report"

    def entries(self) -> list[Path]:
        return sorted(self.reports.iterdir())


@pytest.fixture
def guest(catalog: Catalog, tmp_path: Path) -> Guest:
    tree = Renderer(Workspace(REPO).search_path("templates")).render(
        resolve(catalog.entries["debian-13"], "guest")
    )
    script = tmp_path / "attest-responder"
    script.write_bytes(tree.file(f"{EXTRA}/{ATTEST_RESPONDER}").content)
    root = tmp_path / "root"
    for folder in (
        "etc/sevimg",
        "proc/sys/kernel",
        f"usr/lib/modules/{KERNEL}",
        "sys/module/sev_guest",
        "sys/module/configfs",
        "sys/kernel/config/tsm/report",
        "dev",
    ):
        (root / folder).mkdir(parents=True)
    (root / "etc/sevimg/image.env").write_bytes(tree.file(f"{EXTRA}/etc/sevimg/image.env").content)
    (root / "etc/os-release").write_text(
        'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nID=debian\nVERSION_ID="13"\n'
        "VERSION_CODENAME=trixie\n"
    )
    (root / "proc/sys/kernel/osrelease").write_text(KERNEL + "\n")
    (root / "proc/mounts").write_text(
        "sysfs /sys sysfs rw 0 0\nconfigfs /sys/kernel/config configfs rw 0 0\n"
    )
    (root / f"usr/lib/modules/{KERNEL}/modules.builtin").write_text(
        "kernel/arch/x86/kernel/msr.ko\nkernel/drivers/virt/coco/tsm.ko\n"
    )
    (root / "dev/sev-guest").touch()
    shims = tmp_path / "bin"
    shims.mkdir()
    for name, text in (("dmesg", DMESG), ("mkdir", MKDIR)):
        (shims / name).write_text(text)
        (shims / name).chmod(0o755)
    dmesg = tmp_path / "dmesg.txt"
    dmesg.write_text(f"[    0.000000] Linux version {KERNEL}\n{SNP_LOG}\n")
    template = tmp_path / "tsm-template"
    template.mkdir()
    (template / "provider").write_text("sev_guest\n")
    (template / "outblob").write_bytes(bytes(range(256)) * 4 + b"\x00" * 160)  # 1184 bytes
    return Guest(root, script, shims, template, dmesg)


class Port:
    """The responder reading requests from one FIFO and writing replies to another.

    (A pseudo-terminal would stand in for the port less well: on a terminal,
    bash's `read -n` turns CR into LF. The real virtio port is not a
    terminal; the e2e test boots a guest with one.)
    """

    def __init__(self, guest: Guest) -> None:
        requests, replies = guest.root.parent / "requests", guest.root.parent / "replies"
        os.mkfifo(requests)
        os.mkfifo(replies)
        env = {
            **os.environ,
            "PATH": f"{guest.bin}:{os.environ['PATH']}",
            "SEVIMG_ROOT": str(guest.root),
            "SEVIMG_ATTEST_PORT": str(requests),
            "SEVIMG_ATTEST_REPLIES": str(replies),
            "FAKE_DMESG": str(guest.dmesg),
            "FAKE_TSM_REPORTS": str(guest.reports),
            "FAKE_TSM_TEMPLATE": str(guest.template),
        }
        self.proc = subprocess.Popen(
            ["/bin/bash", str(guest.script)],
            env=env,
            cwd=guest.root.parent,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Read-write: the open does not wait for the responder (which may fail before it
        # opens its end), and select blocks until it writes instead of seeing EOF at once.
        self.replies = os.open(replies, os.O_RDWR | os.O_NONBLOCK)
        self.requests = os.open(requests, os.O_RDWR)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        os.write(self.requests, data)

    def read_replies(self, count: int, timeout: float = 20) -> list[bytes]:
        """The next `count` replies, each from its first line to its END line."""
        # Half-second looks, so that a responder that died is seen without waiting it all out.
        looks = int(timeout / 0.5)
        while self.buffer.count(b"SEVIMG-ATTEST-END\n") < count:
            assert looks > 0, f"only {self.buffer!r} within {timeout} s"
            assert self.proc.poll() is None, self.proc.communicate()[1]
            ready, _, _ = select.select([self.replies], [], [], 0.5)
            looks -= not ready
            if ready:
                self.buffer += os.read(self.replies, 65536)
        found = []
        for _ in range(count):
            head, _, self.buffer = self.buffer.partition(b"SEVIMG-ATTEST-END\n")
            found.append(head + b"SEVIMG-ATTEST-END\n")
        return found

    def ask(self, line: bytes) -> channel.GuestAnswer:
        self.send(line)
        return parse(self.read_replies(1)[0])

    def stop(self) -> str:
        """Stop the responder; its log (stderr)."""
        self.proc.terminate()
        _, log = self.proc.communicate(timeout=10)
        os.close(self.replies)
        os.close(self.requests)
        return log


def parse(raw: bytes) -> channel.GuestAnswer:
    lines = raw.decode("ascii").split("\n")
    assert lines[0] == channel.REPLY_BEGIN and lines[-2:] == [channel.REPLY_END, ""], raw
    return channel.parse_reply(lines[1:-2])


@pytest.fixture
def port(guest: Guest) -> Iterator[Port]:
    running = Port(guest)
    yield running
    if running.proc.poll() is None:
        running.stop()


NONCE = bytes.fromhex("00ff" * 32)


def test_a_good_nonce_gets_the_providers_report(guest: Guest, port: Port) -> None:
    answer = port.ask(channel.request_line(NONCE))
    assert answer.nonce == NONCE
    assert answer.report == (guest.template / "outblob").read_bytes() and answer.error is None
    assert answer.tsm_provider == "sev_guest"
    assert (answer.image, answer.os_id, answer.os_version) == ("guest-debian-13", "debian", "13")
    assert answer.kernel == KERNEL and answer.sev == "snp"
    assert answer.sev_guest_device and answer.configfs
    # tsm_report is unknown to this (6.12) kernel: the module is reported by its old name.
    assert answer.modules == {
        "sev-guest": "loaded",
        "tsm": "builtin",
        "configfs": "loaded",
        "msr": "builtin",
    }
    # The request data configfs-tsm got is exactly the 64 nonce bytes. (In the
    # real configfs the entry is removed; a plain folder with files is not.)
    entries = guest.entries()
    assert len(entries) == 1 and entries[0].name.startswith("sevimg-")
    assert (entries[0] / "inblob").read_bytes() == NONCE
    # Every request gets a fresh entry.
    second = bytes(range(64))
    assert port.ask(channel.request_line(second)).nonce == second
    assert {(e / "inblob").read_bytes() for e in guest.entries()} == {NONCE, second}
    log = port.stop()
    assert "answered nonce 00ff00ff00ff00ff...: sev_guest report" in log


def test_no_provider_says_snp_is_not_active(guest: Guest, port: Port) -> None:
    # Under TCG: no SEV in the kernel log, and configfs-tsm refuses the entry.
    guest.dmesg.write_text(f"[    0.000000] Linux version {KERNEL}\n")
    (guest.template / "provider").unlink()
    (guest.template / "outblob").unlink()
    guest.template.rmdir()
    (guest.root / "dev/sev-guest").unlink()
    answer = port.ask(channel.request_line(NONCE))
    assert answer.nonce == NONCE and answer.report is None
    assert answer.sev == "none" and answer.tsm_provider is None
    assert not answer.sev_guest_device
    assert answer.error == "SNP not active: no configfs-tsm provider (No such device or address)"
    assert guest.entries() == []


def test_a_provider_that_gives_no_report(guest: Guest, port: Port) -> None:
    (guest.template / "outblob").unlink()  # reading it fails, as when the firmware refuses
    answer = port.ask(channel.request_line(NONCE))
    assert answer.tsm_provider == "sev_guest" and answer.report is None
    assert answer.error == "the sev_guest provider produced no report: No such file or directory"
    assert (guest.entries()[0] / "inblob").read_bytes() == NONCE


def test_no_configfs_tsm_at_all(guest: Guest, port: Port) -> None:
    guest.reports.rmdir()
    (guest.root / "proc/mounts").write_text("sysfs /sys sysfs rw 0 0\n")
    (guest.root / "sys/module/configfs").rmdir()
    answer = port.ask(channel.request_line(NONCE))
    assert answer.report is None and not answer.configfs
    assert answer.error == (
        "SNP not active: no configfs-tsm (/sys/kernel/config/tsm/report is missing)"
    )
    assert answer.modules["configfs"] == "missing"


def test_a_newer_kernel_reports_tsm_report(guest: Guest, port: Port) -> None:
    (guest.root / f"usr/lib/modules/{KERNEL}/modules.builtin").write_text("")
    (guest.root / "sys/module/tsm_report").mkdir()
    answer = port.ask(channel.request_line(NONCE))
    assert answer.modules["tsm_report"] == "loaded" and "tsm" not in answer.modules
    assert answer.modules["msr"] == "missing"


BAD_REQUESTS = [
    b"SEVIMG-ATTEST-REQUEST v1 nonce=" + b"AB" * 64,  # upper case
    b"SEVIMG-ATTEST-REQUEST v1 nonce=" + b"ab" * 63 + b"a",  # 127 digits
    b"SEVIMG-ATTEST-REQUEST v1 nonce=" + b"ab" * 64 + b" ",  # trailing space
    b"SEVIMG-ATTEST-REQUEST v1 nonce=" + b"ab" * 64 + b"\r",  # CR LF
    b"SEVIMG-ATTEST-REQUEST v2 nonce=" + b"ab" * 64,
    b"SEVIMG-ATTEST-REQUEST v1 nonce=" + b"ab" * 63 + b"$(touch PWNED)",
    b"; touch PWNED",
    b"`touch PWNED`",
]


def test_bad_requests_get_a_bad_request_reply_and_run_nothing(
    guest: Guest, port: Port, tmp_path: Path
) -> None:
    for line in BAD_REQUESTS:
        answer = port.ask(line + b"\n")
        assert answer.nonce == b"" and answer.report is None, line
        assert answer.error is not None and answer.error.startswith("bad request: expected"), line
    # A line too long to be a request is refused once, its rest dropped, and
    # the next request is answered as usual.
    port.send(b"SEVIMG-ATTEST-REQUEST v1 nonce=" + b"0" * 5000 + b"\n")
    refused = parse(port.read_replies(1)[0])
    assert refused.error == "bad request: line longer than 512 characters"
    assert port.ask(channel.request_line(NONCE)).nonce == NONCE
    assert not list(tmp_path.rglob("PWNED"))  # the responder runs in tmp_path
    assert guest.entries() and all((e / "inblob").read_bytes() == NONCE for e in guest.entries())
    assert port.proc.poll() is None  # still serving


def test_blank_lines_are_ignored_and_requests_are_answered_in_order(port: Port) -> None:
    first, second = bytes([1]) * 64, bytes([2]) * 64
    port.send(b"\n" + channel.request_line(first) + b"\n\n" + channel.request_line(second))
    replies = [parse(r) for r in port.read_replies(2)]
    assert [r.nonce for r in replies] == [first, second]
    assert port.buffer == b""
