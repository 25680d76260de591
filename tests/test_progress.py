"""Progress of long work: mkosi's lines as stages, plain lines with a heartbeat, a live
display in a real pseudo-terminal, and the host run's measurement verdict.

No test waits on the wall clock: the board's clock is injected, and the pty
child is driven over a pipe.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sevimg.machine.hostrun import measurement_verdict
from sevimg.progress import Board, MkosiStages
from tests.conftest import REPO
from tests.test_measure import MEASURED, _manifest

# Lines as mkosi 27.1 printed them building this machine's tools tree.
MKOSI_LINES = [
    "‣ Syncing package manager metadata",
    "Get:1 http://deb.debian.org/debian trixie InRelease [140 kB]",
    "Get:2 http://deb.debian.org/debian trixie-updates InRelease [47.3 kB]",
    "Fetched 16.9 MB in 1s (11.4 MB/s)",
    "‣ [main]  Installing Debian",
    "Need to get 95.2 MB of archives.",
    "Selecting previously unselected package libc6:amd64.",
    "Unpacking libc6:amd64 (2.41-12) ...",
    "Unpacking bash (5.2.37-2+b5) ...",
    "Setting up libc6:amd64 (2.41-12) ...",
    "‣ [main]  Generating unified kernel image for kernel version 6.12.118",
    "add group 'users' in /etc/gshadow? No",
]


def test_mkosi_lines_become_stages() -> None:
    parser = MkosiStages()
    stages = [parser.feed(line) for line in MKOSI_LINES]
    assert stages == [
        "Syncing package manager metadata",
        "downloading packages (1 fetched)",
        "downloading packages (2 fetched)",
        None,
        "Installing Debian",
        "downloading packages: 95.2 MB to get",
        None,
        "installing packages: unpacking libc6:amd64 (1)",
        "installing packages: unpacking bash (2)",
        "installing packages: setting up libc6:amd64 (1)",
        "UKI: Generating unified kernel image for kernel version 6.12.118",
        None,
    ]


def test_cached_downloads_say_what_is_left() -> None:
    stage = MkosiStages().feed("Need to get 0 B/25.4 MB of archives.")
    assert stage == "downloading packages: 0 B/25.4 MB to get"


def test_rpm_lines_become_stages() -> None:
    parser = MkosiStages()
    assert parser.feed("[ 3/42] kernel-core-6.15.0-1.fc43.x86_64 100% |  12.0 MiB/s") == (
        "downloading packages: kernel-core-6.15.0-1.fc43.x86_64 (1)"
    )
    assert parser.feed("  Installing       : systemd-257-1.fc43.x86_64    12/42") == (
        "installing packages: systemd-257-1.fc43.x86_64 (1)"
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_once_per_kind_of_stage_and_a_heartbeat() -> None:
    clock, lines = FakeClock(), list[str]()
    board = Board(lines.append, clock=clock, heartbeat=30)
    board.start("guest-debian-13", stage="starting")
    clock.now += 5
    board.stage("guest-debian-13", "installing packages: unpacking libc6 (1)")
    clock.now += 1
    board.stage("guest-debian-13", "installing packages: unpacking bash (2)")  # same kind
    assert lines == [
        "[    0 s] guest-debian-13: starting",
        "[    5 s] guest-debian-13: installing packages: unpacking libc6 (1)",
    ]
    clock.now += 28  # 29 s since the last line: not yet
    board.tick()
    assert len(lines) == 2
    clock.now += 2
    board.tick()
    assert lines[-1] == "[   36 s] guest-debian-13: still installing packages: unpacking bash (2)"
    board.tick()  # once per quiet period, not on every tick
    assert len(lines) == 3
    board.stage("guest-debian-13", "console: Reached target", announce=False)
    assert len(lines) == 3
    clock.now += 30
    board.tick()
    assert lines[-1] == "[   66 s] guest-debian-13: still console: Reached target"
    board.finish("guest-debian-13", "built in 66 s")
    assert lines[-1] == "[   66 s] guest-debian-13: built in 66 s"
    assert board.tasks == {}


def test_each_repository_is_its_own_line() -> None:
    lines: list[str] = []
    board = Board(lines.append, clock=FakeClock())
    for suite in ("resolute", "resolute-updates", "resolute-updates"):
        board.stage("ubuntu-26.04", f"reading http://archive.ubuntu.com/ubuntu {suite} main (host)")
    assert [line.split("ubuntu ", 1)[1] for line in lines] == [
        "resolute main (host)",
        "resolute-updates main (host)",
    ]


def test_a_hostile_stage_is_shown_escaped() -> None:
    lines: list[str] = []
    board = Board(lines.append, clock=FakeClock())
    board.start("x", stage="evil \x1b[2J\x07 line")
    assert "\x1b" not in lines[0] and "\x07" not in lines[0]


CHILD = textwrap.dedent(
    """
    import sys
    from rich.console import Console
    from sevimg.progress import Board, shown

    now = [0.0]
    console = Console(stderr=True)
    assert console.is_terminal, "the pty is a terminal"
    board = Board(print, clock=lambda: now[0], console=console)
    with shown(board):
        for command in sys.stdin:
            verb, _, rest = command.strip().partition(" ")
            if verb == "clock":
                now[0] = float(rest)
            elif verb == "stage":
                board.stage("guest-debian-13", rest)
            elif verb == "done":
                board.finish("guest-debian-13", "")
            print("ack", rest, file=sys.__stdout__, flush=True)
    """
)


def test_live_display_in_a_pseudo_terminal(tmp_path: Path) -> None:
    """A real pty: the board redraws the stage and elapsed time in place."""
    primary, secondary = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=secondary,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "TERM": "xterm", "COLUMNS": "100"},
        text=True,
    )
    os.close(secondary)
    assert child.stdin is not None and child.stdout is not None
    seen = b""

    def send(command: str, want: bytes) -> None:
        nonlocal seen
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(command + "\n")
        child.stdin.flush()
        assert child.stdout.readline().startswith("ack")
        deadline_reads = 200  # the display refreshes 4 times a second; reads block until it does
        while want not in seen and deadline_reads:
            ready, _, _ = select.select([primary], [], [], 10)
            assert ready, f"no redraw showing {want!r}; saw {seen[-400:]!r}"
            seen += os.read(primary, 65536)
            deadline_reads -= 1
        assert want in seen

    try:
        send("stage installing packages: unpacking libc6 (1)", b"unpacking libc6 (1)")
        send("clock 42", b"   42 s")
        send("stage UKI: Generating unified kernel image", b"UKI: Generating unified")
        child.stdin.close()
        assert child.wait(timeout=60) == 0
        while True:
            ready, _, _ = select.select([primary], [], [], 0)
            if not ready:
                break
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if child.poll() is None:
            child.kill()
        os.close(primary)
    text = seen.decode(errors="replace")
    assert "guest-debian-13" in text
    assert "\x1b[" in text  # redrawn in place: cursor movement, not lines appended
    assert "\x1b[?25l" in text  # the cursor is hidden while live, as rich does


@pytest.mark.parametrize(
    ("computed", "expected", "status", "said"),
    [
        (bytes.fromhex("c" * 96), True, "match", "as"),
        (bytes.fromhex("d" * 96), True, "mismatch", "but"),
        (None, True, "unknown", "computed no measurement"),
        (bytes.fromhex("c" * 96), False, "unknown", "claims no expected measurement"),
    ],
)
def test_measurement_verdict(
    tmp_path: Path, computed: bytes | None, expected: bool, status: str, said: str
) -> None:
    manifest = _manifest(tmp_path, "host-debian-forky")
    if expected:
        manifest = manifest.with_measurement(MEASURED)
    verdict = measurement_verdict(computed, manifest, "out/host-debian-forky.manifest.json")
    assert verdict.status == status
    assert said in verdict.message
    if status == "mismatch":
        assert "c" * 96 in verdict.message and "d" * 96 in verdict.message
    assert measurement_verdict(computed, None, "m.json").status == "unknown"
