"""sevimg_cert.after: sevimg.after=, the countdown, and a key press that keeps the host up.

Key presses arrive on a real pipe or a real pseudo-terminal (os.openpty);
the reboot itself goes to a recording `run` instead of systemctl.
"""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from sevimg_cert.after import (
    DEFAULT_GRACE,
    After,
    Clock,
    after_action,
    after_report,
    open_consoles,
)
from tests.dispatchkit import FakeRoot


class Recorder:
    """Stands in for `systemctl`: records the argv, returns `code`."""

    def __init__(self, code: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.code = code

    def __call__(self, argv: list[str]) -> int:
        self.calls.append(argv)
        return self.code


def _root(tmp_path: Path, cmdline: str) -> Path:
    FakeRoot(tmp_path).cmdline(cmdline)
    return tmp_path


@pytest.mark.parametrize(
    ("cmdline", "reported", "action", "grace"),
    [
        ("console=ttyS0", True, "reboot", DEFAULT_GRACE),
        ("console=ttyS0", False, "stay", DEFAULT_GRACE),
        ("sevimg.after=poweroff", True, "poweroff", DEFAULT_GRACE),
        ("sevimg.after=reboot", False, "reboot", DEFAULT_GRACE),
        ("sevimg.after=stay sevimg.grace=5", True, "stay", 5.0),
        ("sevimg.after=explode sevimg.grace=-3", True, "reboot", 0.0),
        ("sevimg.grace=99999", True, "reboot", 600.0),
        ("sevimg.after=reboot sevimg.after=poweroff", True, "poweroff", DEFAULT_GRACE),
    ],
)
def test_after_action_from_the_command_line(
    tmp_path: Path, cmdline: str, reported: bool, action: str, grace: float
) -> None:
    after = after_action(_root(tmp_path, cmdline), reported=reported)
    assert (after.action, after.grace) == (action, grace)


def test_a_bad_value_is_named_in_the_reason(tmp_path: Path) -> None:
    after = after_action(_root(tmp_path, "sevimg.after=explode sevimg.grace=soon"))
    assert "sevimg.after='explode' is not one of reboot, poweroff, stay" in after.why
    assert "sevimg.grace='soon' is not a number" in after.why
    assert after.grace == DEFAULT_GRACE


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    for fd in (read, write):
        with contextlib.suppress(OSError):
            os.close(fd)


class FakeClock(Clock):
    """Time moves only as the countdown waits; what is already readable is returned at once.

    `press` runs at the first wait: a key pressed during the countdown.
    """

    def __init__(self, press: Callable[[], object] | None = None) -> None:
        self.t = 0.0
        self.press = press

    def now(self) -> float:
        return self.t

    def wait(self, fds: Sequence[int], seconds: float) -> list[int]:
        press, self.press = self.press, None
        if press is not None:
            press()
            # The key is on its way through the terminal: a readiness wait, not a countdown.
            ready, _, _ = select.select(list(fds), [], [], 30)
            return ready
        ready, _, _ = select.select(list(fds), [], [], 0)
        if not ready:
            self.t += seconds
        return ready


def test_no_key_reboots_after_the_countdown(tmp_path: Path, pipe: tuple[int, int]) -> None:
    run, lines, clock = Recorder(), list[str](), FakeClock()
    done = after_report(
        After("reboot", 1.5, "the default"),
        root=tmp_path,
        console=pipe[0],
        run=run,
        say=lines.append,
        clock=clock,
    )
    assert done == "reboot"
    assert run.calls == [["systemctl", "reboot"]]
    assert clock.t == 1.5  # the whole countdown, no more
    assert lines[0] == "after the report: reboot (the default)"
    assert lines[1].startswith("reboot in 2 s: press Enter (or any key) on the console")
    assert lines[2:] == ["reboot in 1 s"]


def test_a_key_on_the_console_keeps_the_machine_up(tmp_path: Path, pipe: tuple[int, int]) -> None:
    run, lines = Recorder(), list[str]()
    clock = FakeClock(press=lambda: os.write(pipe[1], b"\n"))
    done = after_report(
        After("poweroff", 30, "sevimg.after=poweroff"),
        console=pipe[0],
        run=run,
        say=lines.append,
        clock=clock,
    )
    assert done == "kept"
    assert clock.t < 30
    assert run.calls == []
    assert lines[-1].startswith("key pressed: staying up for inspection")


def test_a_single_key_on_a_real_terminal_counts_without_enter(tmp_path: Path) -> None:
    controller, terminal = os.openpty()
    try:
        run = Recorder()
        os.write(controller, b"typed before the prompt\n")  # flushed: does not count
        # The line reached the terminal's input (readable) before the countdown flushes it.
        assert select.select([terminal], [], [], 30)[0] == [terminal]
        clock = FakeClock(press=lambda: os.write(controller, b"x"))
        done = after_report(
            After("reboot", 20, "t"), console=terminal, run=run, say=lambda _: None, clock=clock
        )
        assert done == "kept"
        assert run.calls == []
        # The terminal's mode is restored afterwards (canonical input again).
        import termios

        assert termios.tcgetattr(terminal)[3] & termios.ICANON
    finally:
        os.close(controller)
        os.close(terminal)


def test_a_console_at_end_of_file_still_counts_down(tmp_path: Path, pipe: tuple[int, int]) -> None:
    os.close(pipe[1])
    run, clock = Recorder(), FakeClock()
    assert after_report(
        After("reboot", 1, "t"), console=pipe[0], run=run, say=lambda _: None, clock=clock
    ) == ("reboot")
    assert clock.t == 1  # counted down, though the console can send no key
    assert run.calls == [["systemctl", "reboot"]]


def test_stay_does_nothing_and_says_where_the_result_is(tmp_path: Path) -> None:
    run, lines = Recorder(), list[str]()
    root = _root(tmp_path, "sevimg.after=stay")
    assert after_report(root=root, console=None, run=run, say=lines.append) == "stay"
    assert run.calls == []
    assert lines == ["staying up (sevimg.after=stay): the result is in /run/sevimg/"]


def test_not_reported_stays_by_default(tmp_path: Path) -> None:
    run, lines = Recorder(), list[str]()
    root = _root(tmp_path, "quiet")
    assert after_report(root=root, reported=False, console=None, run=run, say=lines.append) == (
        "stay"
    )
    assert run.calls == []
    assert "no server took the report" in lines[0]


def test_an_action_by_name_takes_the_grace_from_the_command_line(tmp_path: Path) -> None:
    run = Recorder()
    root = _root(tmp_path, "sevimg.grace=0")
    assert after_report("poweroff", root=root, console=None, run=run, say=lambda _: None) == (
        "poweroff"
    )
    assert run.calls == [["systemctl", "poweroff"]]
    with pytest.raises(ValueError, match="'halt' is not one of reboot, poweroff, stay"):
        after_report("halt", root=root, console=None, run=run)


def test_a_failed_systemctl_leaves_the_machine_up(tmp_path: Path) -> None:
    lines: list[str] = []
    done = after_report(
        After("reboot", 0, "t"), console=None, run=Recorder(code=1), say=lines.append
    )
    assert done == "stay"
    assert lines[-1] == "systemctl reboot failed with exit code 1: staying up"


def test_every_active_console_is_watched(tmp_path: Path) -> None:
    controller, terminal = os.openpty()
    try:
        (tmp_path / "sys/class/tty/console").mkdir(parents=True)
        (tmp_path / "sys/class/tty/console/active").write_text("tty0 ttyS0\n")
        (tmp_path / "dev").mkdir()
        os.mkfifo(tmp_path / "dev/tty0")  # a console no key arrives on
        (tmp_path / "dev/ttyS0").symlink_to(os.ttyname(terminal))
        fds = open_consoles(tmp_path)
        assert len(fds) == 2
        for fd in fds:
            os.close(fd)
        run = Recorder()
        clock = FakeClock(press=lambda: os.write(controller, b"q"))
        after = After("reboot", 20, "t")
        assert (
            after_report(after, root=tmp_path, run=run, say=lambda _: None, clock=clock) == "kept"
        )
        assert run.calls == []
    finally:
        os.close(controller)
        os.close(terminal)


def test_without_active_consoles_it_falls_back_to_dev_console(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    os.mkfifo(tmp_path / "dev/console")
    fds = open_consoles(tmp_path)
    assert len(fds) == 1
    os.close(fds[0])
    assert open_consoles(tmp_path / "nothing") == []
