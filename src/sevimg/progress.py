"""Progress of long work (build, run, archive): live on a terminal, plain lines in a log.

A :class:`Board` holds named tasks (an image, the tools tree, a repository),
each with its current stage and start time. On a terminal it is drawn with
rich's Live display (every task's stage and elapsed time, redrawn a few times
a second). Elsewhere (CI logs) each change of stage is one plain line, and a
task whose stage has not changed for `heartbeat` seconds gets a "still ..."
line, so a log never goes quiet for long. The clock is injected: tests drive
:meth:`Board.tick` with a fake clock instead of waiting.

:class:`MkosiStages` turns mkosi's output lines into stages: its own `‣`
steps, apt/dnf/zypper downloading and installing packages (with a count), and
the UKI.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from sevimg.display import printable

Clock = Callable[[], float]
HEARTBEAT = 30.0  # seconds without a new line before a plain log says "still ..."


@dataclass
class Task:
    """One piece of work on the board."""

    label: str
    started: float
    stage: str = "starting"
    kind: str = ""  # the stage without its details: plain output prints a line when it changes
    changed: float = 0.0  # when the plain output last said something about it
    done: str = ""  # its final word, once finished


def _kind(stage: str) -> str:
    """A stage without its details ('installing packages: unpacking libc6 (12)' → 'installing packages')."""
    # ": " and " (" begin details; a URL's "://" does not.
    return re.split(r": | \(", stage, maxsplit=1)[0].strip()


class Board:
    """Tasks with stages and elapsed times, shown live (`live`) or as plain lines."""

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        clock: Clock = time.monotonic,
        heartbeat: float = HEARTBEAT,
        console: Console | None = None,
    ) -> None:
        self.write = write
        self.clock = clock
        self.heartbeat = heartbeat
        self.console = console  # a terminal's console: live display
        self.tasks: dict[str, Task] = {}
        self._lock = threading.Lock()

    @property
    def live(self) -> bool:
        """Whether the board is drawn live (a terminal) rather than printed as lines."""
        return self.console is not None

    def print(self, line: str) -> None:
        """A line that stays: above the live display on a terminal, else written."""
        if self.console is not None:
            self.console.print(line, markup=False, highlight=False)
        else:
            self.write(line)

    def elapsed(self, key: str) -> float:
        """Seconds since task `key` started."""
        return self.clock() - self.tasks[key].started

    def start(self, key: str, label: str | None = None, stage: str = "starting") -> None:
        """Put task `key` on the board (again: restarted)."""
        now = self.clock()
        with self._lock:
            self.tasks[key] = Task(label or key, now, stage, _kind(stage), now)
        if not self.live:
            self.write(f"[{0:5.0f} s] {label or key}: {printable(stage)}")

    def stage(self, key: str, stage: str, *, announce: bool = True) -> None:
        """Task `key` is now at `stage`. Plain output: a line when the kind of stage
        changes (`announce`; else only the heartbeat shows it)."""
        if key not in self.tasks:
            self.start(key, stage=stage)
            return
        now = self.clock()
        with self._lock:
            task = self.tasks[key]
            task.stage = stage
            kind = _kind(stage)
            if self.live or not announce or kind == task.kind:
                return
            task.kind, task.changed = kind, now
        self.write(f"[{now - task.started:5.0f} s] {task.label}: {printable(stage)}")

    def finish(self, key: str, word: str) -> None:
        """Task `key` ended with `word` ('built in 35 s'; '' says nothing); it leaves the board."""
        with self._lock:
            task = self.tasks.pop(key, None)
        if task is not None and word and not self.live:
            self.write(f"[{self.clock() - task.started:5.0f} s] {task.label}: {printable(word)}")

    def tick(self) -> None:
        """Plain output: a "still ..." line for each task quiet for `heartbeat` seconds."""
        if self.live:
            return
        now = self.clock()
        quiet = []
        with self._lock:
            for task in self.tasks.values():
                if now - task.changed >= self.heartbeat:
                    task.changed = now
                    quiet.append(task)
        for task in quiet:
            self.write(f"[{now - task.started:5.0f} s] {task.label}: still {printable(task.stage)}")

    def __rich__(self) -> RenderableType:
        with self._lock:
            tasks = list(self.tasks.values())
        # The time and the name keep their width; a long stage is cut, never them.
        table = Table.grid(padding=(0, 1))
        table.add_column(justify="right", style="cyan", no_wrap=True, min_width=7)
        table.add_column(
            style="bold", no_wrap=True, min_width=max((len(t.label) for t in tasks), default=1)
        )
        table.add_column(overflow="ellipsis", no_wrap=True)
        now = self.clock()
        for task in tasks:
            table.add_row(
                f"{now - task.started:5.0f} s", Text(task.label), Text(printable(task.stage))
            )
        return Group(table) if tasks else Text("")


@contextmanager
def shown(board: Board, *, every: float = 1.0) -> Iterator[Board]:
    """Show `board` for the duration: a rich Live display on a terminal, else a heartbeat
    thread calling :meth:`Board.tick` every `every` seconds."""
    if board.console is not None:
        with Live(board, console=board.console, refresh_per_second=4, transient=True):
            yield board
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            board.tick()

    thread = threading.Thread(target=beat, name="sevimg-heartbeat", daemon=True)
    thread.start()
    try:
        yield board
    finally:
        stop.set()
        thread.join()


_GET = re.compile(r"^Get:\d+ ")
_NEED = re.compile(r"^Need to get (.{1,40}?) of archives")
_UNPACK = re.compile(r"^Unpacking (\S+)")
_SETUP = re.compile(r"^Setting up (\S+)")
_RPM_DOWNLOAD = re.compile(r"^(?:\[\s*\d+/\d+\]|\(\d+/\d+\):)\s+(\S+)")
_RPM_INSTALL = re.compile(r"^\s*(?:Installing|Upgrading)\s*:\s+(\S+)")
_UKI = re.compile(r"(?i)\bukify\b|unified kernel image|\bUKI\b")


class MkosiStages:
    """mkosi's output lines → stages: its `‣` steps, package downloads and installs, the UKI."""

    def __init__(self) -> None:
        self.fetched = 0
        self.unpacked = 0
        self.configured = 0
        self.step = ""

    def feed(self, line: str) -> str | None:
        """The stage `line` shows, or None when it shows none."""
        text = line.strip()
        if text.startswith("‣"):
            step = re.sub(r"^\[[^\]]*\]\s*", "", text.lstrip("‣ ").strip())
            self.step = step
            if _UKI.search(step):
                return f"UKI: {step}"
            return step
        if _GET.match(text):
            self.fetched += 1
            return f"downloading packages ({self.fetched} fetched)"
        if match := _NEED.match(text):
            return f"downloading packages: {match[1]} to get"
        if match := _UNPACK.match(text):
            self.unpacked += 1
            return f"installing packages: unpacking {match[1]} ({self.unpacked})"
        if match := _SETUP.match(text):
            self.configured += 1
            return f"installing packages: setting up {match[1]} ({self.configured})"
        if match := _RPM_INSTALL.match(text):
            self.unpacked += 1
            return f"installing packages: {match[1]} ({self.unpacked})"
        if match := _RPM_DOWNLOAD.match(text):
            self.fetched += 1
            return f"downloading packages: {match[1]} ({self.fetched})"
        if _UKI.search(text):
            return "UKI: " + text[:120]
        return None


# Transfers smaller than this finish before a bar helps.
TRANSFER_BAR_MIN_BYTES = 8 * 1024 * 1024


@contextmanager
def transfer_bar(console: Console, name: str, total: int) -> Iterator[Callable[[int], None] | None]:
    """A rich bar for one large upload or download when `console` is a terminal, fed the
    bytes moved so far; None (no bar) for a small transfer or when not on a terminal."""
    if total < TRANSFER_BAR_MIN_BYTES or not console.is_terminal:
        yield None
        return
    with Progress(
        # an asset's name is shown as it is, never read as markup
        TextColumn("{task.description}", style="progress.description", markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(name, total=total)
        yield lambda moved: bar.update(task, completed=moved)
