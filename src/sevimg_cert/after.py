"""What the host does once its result is reported: reboot, power off, or stay up.

In a certification lab the host reboots: its next HTTP boot gets the next
job from dispatch, and when no job is left dispatch serves a power-off EFI
program, so the image never needs to power itself off and rebooting is the
right default. `sevimg.after=poweroff` or `sevimg.after=stay` on the kernel
command line change that, and `sevimg.grace=SECONDS` the countdown (60 s).
A key press on the console during the countdown keeps the machine up for
inspection. When no server took the report (a host booted from a USB stick,
say) the default is to stay: rebooting would only lose the result from the
console and run the same checks again.
"""

from __future__ import annotations

import math
import os
import select
import subprocess
import sys
import termios
import time
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACTIONS = ("reboot", "poweroff", "stay")
DEFAULT_GRACE = 60.0
# Bounded so the countdown fits the unit's TimeoutStartSec after the run's deadline.
MAX_GRACE = 600.0
Say = Callable[[str], None]
Run = Callable[[list[str]], int]


class Clock:
    """The countdown's time: now, and waiting for a key on `fds` (tests pass a fake one)."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""
        return time.monotonic()

    def wait(self, fds: Sequence[int], seconds: float) -> list[int]:
        """The fds readable within `seconds` (a plain sleep when there are none)."""
        if not fds:
            time.sleep(seconds)
            return []
        ready, _, _ = select.select(list(fds), [], [], seconds)
        return ready


SYSTEM_CLOCK = Clock()


def say_console(line: str) -> None:
    """One line for the console (the harness's unit sends stderr to journal+console)."""
    print(f"sevimg: {line}", file=sys.stderr, flush=True)


def cmdline_value(root: Path, key: str) -> str | None:
    """The last `key=value` on <root>/proc/cmdline (the kernel's rule), None when absent."""
    try:
        words = (root / "proc/cmdline").read_text(errors="replace").split()
    except OSError:
        return None
    value = None
    for word in words:
        name, sep, rest = word.partition("=")
        if sep and name == key:
            value = rest.strip('"')
    return value


@dataclass(frozen=True)
class After:
    """The action to take and the countdown before it, with where they came from."""

    action: str
    grace: float
    why: str


def after_action(root: Path = Path("/"), *, reported: bool = True) -> After:
    """`sevimg.after=` and `sevimg.grace=` from the command line, with the defaults above."""
    default = "reboot" if reported else "stay"
    value = cmdline_value(root, "sevimg.after")
    if value is None:
        action, why = default, "the default" if reported else "no server took the report"
    elif value in ACTIONS:
        action, why = value, f"sevimg.after={value}"
    else:
        action = default
        why = f"sevimg.after={value!r} is not one of {', '.join(ACTIONS)}"
    grace = DEFAULT_GRACE
    text = cmdline_value(root, "sevimg.grace")
    if text is not None:
        try:
            grace = min(max(float(text), 0.0), MAX_GRACE)
        except ValueError:
            why += f"; sevimg.grace={text!r} is not a number of seconds"
    return After(action, grace, why)


def wait_for_key(
    fds: Sequence[int], seconds: float, action: str, say: Say, clock: Clock = SYSTEM_CLOCK
) -> bool:
    """Count `seconds` down on the console; True as soon as a key arrives on one of `fds`."""
    shown = math.ceil(seconds)
    say(
        f"{action} in {shown} s: press Enter (or any key) on the console "
        "to keep this machine up for inspection"
    )
    deadline = clock.now() + seconds
    live = list(fds)
    while (left := deadline - clock.now()) > 0:
        for fd in clock.wait(live, min(left, 1.0)):
            try:
                if os.read(fd, 64):
                    return True
                live.remove(fd)  # end of file: no key can come from it any more
            except BlockingIOError:
                pass
            except OSError:
                live.remove(fd)
        remaining = math.ceil(deadline - clock.now())
        if remaining < shown and (remaining % 10 == 0 or remaining <= 5) and remaining > 0:
            say(f"{action} in {remaining} s")
            shown = remaining
    return False


def open_consoles(root: Path = Path("/")) -> list[int]:
    """Read ends of every active console (/sys/class/tty/console/active), else /dev/console.

    The terminal devices themselves, not /dev/console: that one reads from
    the last console only, and a server has a keyboard and a serial line.
    """
    try:
        names = (root / "sys/class/tty/console/active").read_text().split()
    except OSError:
        names = []
    wanted = [n for n in names if n.replace("_", "").isalnum()] or ["console"]
    fds: list[int] = []
    for path in (root / "dev" / n for n in wanted):
        try:
            fds.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY))
        except OSError:
            continue
    return fds


def _systemctl(argv: list[str]) -> int:
    return subprocess.run(argv, check=False).returncode


def after_report(
    action: str | After | None = None,
    *,
    root: Path = Path("/"),
    reported: bool = True,
    console: int | None = -1,
    run: Run = _systemctl,
    say: Say = say_console,
    clock: Clock = SYSTEM_CLOCK,
) -> str:
    """Do `action` (None: read it from <root>/proc/cmdline); the action taken, or "kept".

    `console` is the fd a key press is read from (-1: every active console;
    None: no console, the countdown only). Reboot and power-off are
    `systemctl reboot|poweroff`, through `run`.
    """
    if action is None:
        action = after_action(root, reported=reported)
    elif isinstance(action, str):
        if action not in ACTIONS:
            raise ValueError(f"{action!r} is not one of {', '.join(ACTIONS)}")
        action = After(action, after_action(root, reported=reported).grace, "asked")
    if action.action == "stay":
        say(f"staying up ({action.why}): the result is in /run/sevimg/")
        return "stay"
    say(f"after the report: {action.action} ({action.why})")
    fds = open_consoles(root) if console == -1 else ([] if console is None else [console])
    saved: dict[int, list[Any]] = {}
    try:
        for fd in fds:
            if os.isatty(fd):
                saved[fd] = termios.tcgetattr(fd)
                tty.setcbreak(fd)  # a single key counts, not only a whole line
                termios.tcflush(fd, termios.TCIFLUSH)  # keys typed before the prompt do not count
        if wait_for_key(fds, action.grace, action.action, say, clock):
            say("key pressed: staying up for inspection; the result is in /run/sevimg/")
            return "kept"
    finally:
        for fd, mode in saved.items():
            termios.tcsetattr(fd, termios.TCSANOW, mode)
        if console == -1:
            for fd in fds:
                os.close(fd)
    code = run(["systemctl", action.action])
    if code != 0:
        say(f"systemctl {action.action} failed with exit code {code}: staying up")
        return "stay"
    return action.action
