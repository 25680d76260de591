"""Signals end sevimg cleanly: children stopped, scratch removed, the shell's exit code, one line.

Every test runs sevimg as a real process and its tools as real processes (a
fake mkosi and a fake QEMU that sleep, and the real QEMU), sends the signal
to the sevimg process only (never to its group: the children must be
stopped by sevimg itself), and then reads the process table.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sevimg import lock
from sevimg.atomic import is_stale
from sevimg.catalog.index import machine_families
from sevimg.imaging.mkosilog import MKOSI_GRACE
from sevimg.machine import run
from tests import fakes

# Signals raced against starting and writing processes: run alone (nox -s full),
# where no second worker decides the race.
pytestmark = pytest.mark.serial

# QEMU and firmware search paths from the catalog's family files, as `sevimg run` uses them.
PATHS = run.search_paths(machine_families(None))

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
SIGNAL_IDS = [s.name for s in SIGNALS]
CONSOLE_SCRIPT = Path(sys.executable).parent / "sevimg"


@dataclass
class Sandbox:
    """A workspace, fake tools and a private TMPDIR for one sevimg process."""

    root: Path
    tools: Path
    pids: Path
    tmp: Path
    cache: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *args: str, entry: str = "module", **env: str) -> subprocess.Popen[bytes]:
        """sevimg ARGS as a real process in its own session (a stray killpg cannot reach pytest)."""
        argv = [str(CONSOLE_SCRIPT)] if entry == "script" else [sys.executable, "-m", "sevimg"]
        stdout = (self.root / "stdout").open("wb")
        stderr = (self.root / "stderr").open("wb")
        popen = subprocess.Popen(
            [*argv, "--root", str(self.root), *args],
            cwd=self.root,
            env={**self.env, **env},
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        stdout.close()
        stderr.close()
        self.procs.append(popen)
        return popen

    def finish(self, popen: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, str, str]:
        """Exit status, stdout and stderr of a started sevimg."""
        code = popen.wait(timeout=timeout)
        return (
            code,
            (self.root / "stdout").read_text(errors="replace"),
            (self.root / "stderr").read_text(errors="replace"),
        )

    def recorded_pids(self) -> dict[str, int]:
        """name → pid of every fake tool process that recorded itself."""
        return {p.stem: int(p.read_text()) for p in self.pids.glob("*.pid") if p.read_text()}

    def debris(self) -> list[str]:
        """Temporary files and folders sevimg left: in $TMPDIR, the output folders, the cache."""
        found = [f"tmp/{p.name}" for p in self.tmp.iterdir()]
        for folder in (self.root / "build", self.root / "out", self.cache / "build" / "state"):
            if folder.is_dir():
                found += [f"{folder.name}/{p.name}" for p in folder.iterdir() if is_stale(p.name)]
        output = self.cache / "build" / "output"
        if output.is_dir():
            found += [f"cache output/{p.name}" for p in output.iterdir()]
        tools = self.cache / "build" / "tools"
        if tools.is_dir():
            found += [
                f"cache tools/{p.name}" for p in tools.iterdir() if not (p / ".complete").is_file()
            ]
        return found


@pytest.fixture
def sandbox(workspace: Path, tmp_path: Path) -> Iterator[Sandbox]:
    tools = tmp_path / "tools"
    fakes.install(tools, "mkosi", fakes.FAKE_MKOSI)
    fakes.install(tools, "qemu", fakes.FAKE_QEMU)
    ukis = fakes.write_guest_build(tmp_path / "ukis")
    box = Sandbox(
        root=workspace,
        tools=tools,
        pids=tmp_path / "pids",
        tmp=tmp_path / "tmpdir",
        cache=tmp_path / "cache",
    )
    box.pids.mkdir()
    box.tmp.mkdir()
    box.env = {
        **os.environ,
        "SEVIMG_MKOSI": str(tools / "mkosi"),
        "SEVIMG_CACHE": str(box.cache),
        "FAKE_UKIS": str(ukis),
        "FAKE_PIDS": str(box.pids),
        "TMPDIR": str(box.tmp),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    box.env.pop("SEVIMG_DEBUG", None)
    yield box
    for popen in box.procs:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
    fakes.reap_leftovers(box.recorded_pids().values())


def assert_gone(pids: dict[str, int], within: float = 3.0) -> None:
    """Every pid has ended (zombies count as gone), each within `within` seconds: a pidfd
    becomes readable when its process ends, so the wait is woken, not polled."""
    for pid in pids.values():
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue  # gone already
        try:
            select.select([fd], [], [], within)
        finally:
            os.close(fd)
    assert {name: pid for name, pid in pids.items() if fakes.alive(pid)} == {}


def assert_one_line_message(code: int, stderr: str, signum: int) -> None:
    assert code == 128 + signum, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    name = signal.Signals(signum).name
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1] == f"sevimg: interrupted by {name}", stderr
    assert sum("interrupted" in line for line in lines) == 1, stderr


BUILD = ("build", "debian-13", "--role", "guest", "--without-tools", "--force")


# --- build: mkosi ----------------------------------------------------------------------------


@pytest.mark.parametrize("signum", SIGNALS, ids=SIGNAL_IDS)
@pytest.mark.parametrize("hang_at", ["tools", "guest-debian-13"])
def test_signal_during_mkosi_stops_its_group_and_cleans_up(
    sandbox: Sandbox, signum: int, hang_at: str
) -> None:
    sevimg = sandbox.start(*BUILD, FAKE_MODE="sleep", FAKE_HANG_AT=hang_at)
    mkosi_pid = fakes.wait_for_file(sandbox.pids / f"mkosi-{hang_at}.pid")
    fakes.wait_for_file(sandbox.pids / f"grandchild-{hang_at}.pid")
    # mkosi runs in a process group of its own, not in sevimg's
    assert os.getpgid(mkosi_pid) == mkosi_pid != os.getpgid(sevimg.pid)

    os.kill(sevimg.pid, signum)
    code, _, stderr = sandbox.finish(sevimg)

    assert_one_line_message(code, stderr, signum)
    assert_gone(sandbox.recorded_pids())
    assert sandbox.debris() == []
    assert not list((sandbox.root / "out").glob("*.efi"))
    log = "tools-tree.log" if hang_at == "tools" else "guest-debian-13.log"
    text = (sandbox.root / "out" / "logs" / log).read_text()
    assert text.rstrip().endswith(
        f"interrupted by {signal.Signals(signum).name}; mkosi was stopped"
    )


def test_mkosi_that_ignores_sigterm_is_killed_after_the_grace_period(sandbox: Sandbox) -> None:
    sevimg = sandbox.start(*BUILD, FAKE_MODE="ignore-term", FAKE_HANG_AT="tools")
    fakes.wait_for_file(sandbox.pids / "mkosi-tools.pid")
    fakes.wait_for_file(sandbox.pids / "grandchild-tools.pid")
    os.kill(sevimg.pid, signal.SIGTERM)
    code, _, stderr = sandbox.finish(sevimg)
    assert_one_line_message(code, stderr, signal.SIGTERM)
    # mkosi got SIGTERM and lived on; it is gone now: sevimg SIGKILLed it after the grace
    assert (sandbox.pids / "term-tools").read_text().split() == ["TERM"]
    assert_gone(sandbox.recorded_pids())
    assert sandbox.debris() == []


def test_a_second_signal_skips_the_grace_period(sandbox: Sandbox) -> None:
    sevimg = sandbox.start(*BUILD, FAKE_MODE="ignore-term", FAKE_HANG_AT="tools")
    fakes.wait_for_file(sandbox.pids / "mkosi-tools.pid")
    fakes.wait_for_file(sandbox.pids / "grandchild-tools.pid")
    os.kill(sevimg.pid, signal.SIGINT)
    fakes.wait_for_text(sandbox.pids / "term-tools")  # mkosi was told to stop: the grace began
    os.kill(sevimg.pid, signal.SIGINT)
    # Well before the grace (MKOSI_GRACE) would end: the second signal cut it short.
    code, _, stderr = sandbox.finish(sevimg, timeout=MKOSI_GRACE * 0.8)
    assert_one_line_message(code, stderr, signal.SIGINT)
    assert_gone(sandbox.recorded_pids())
    assert sandbox.debris() == []


def test_leftovers_of_mkosi_are_killed_when_it_exits(sandbox: Sandbox) -> None:
    """A process mkosi leaves in its group would hold the output pipe open and outlive sevimg."""
    script = sandbox.tools / "mkosi"
    script.write_text(
        script.read_text().replace(
            'echo "‣ Building ${id:-tools tree}"',
            'echo "‣ Building ${id:-tools tree}"\n'
            'sleep 1000 & echo "$!" > "$FAKE_PIDS/leftover-${id:-tools}.pid"',
        )
    )
    code, stdout, stderr = sandbox.finish(sandbox.start(*BUILD), timeout=120)
    assert code == 0, stderr
    assert "guest-debian-13: built guest-debian-13.efi" in stdout
    pids = sandbox.recorded_pids()
    assert set(pids) == {"leftover-tools", "leftover-guest-debian-13"}
    assert_gone(pids)
    assert sandbox.debris() == []


@pytest.mark.parametrize("signum", SIGNALS, ids=SIGNAL_IDS)
def test_signal_during_validate_mkosi_stops_mkosi_and_removes_its_scratch(
    sandbox: Sandbox, signum: int
) -> None:
    sevimg = sandbox.start(
        "validate", "--mkosi", "debian-13", FAKE_MODE="sleep", FAKE_HANG_AT="guest-debian-13"
    )
    fakes.wait_for_file(sandbox.pids / "mkosi-guest-debian-13.pid")
    fakes.wait_for_file(sandbox.pids / "grandchild-guest-debian-13.pid")
    assert [p.name[:13] for p in sandbox.tmp.iterdir()] == ["sevimg-check-"]
    os.kill(sevimg.pid, signum)
    code, _, stderr = sandbox.finish(sevimg)
    assert_one_line_message(code, stderr, signum)
    assert_gone(sandbox.recorded_pids())
    assert sandbox.debris() == []


# --- run: QEMU -------------------------------------------------------------------------------


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    """Not a kernel: QEMU accepts it for -kernel and then sits in the firmware."""
    path = tmp_path / "guest.efi"
    path.write_bytes(b"MZ" + b"\0" * (1 << 20))
    return path


@pytest.mark.parametrize("signum", SIGNALS, ids=SIGNAL_IDS)
def test_signal_during_a_smoke_boot_stops_fake_qemu(
    sandbox: Sandbox, kernel: Path, signum: int
) -> None:
    sevimg = sandbox.start(
        "run",
        str(kernel),
        "--no-sev",
        "--accel",
        "tcg",
        "--qemu",
        str(sandbox.tools / "qemu"),
        "--firmware",
        str(kernel),
    )
    qemu_pid = fakes.wait_for_file(sandbox.pids / "qemu.pid")
    fakes.wait_for_file(sandbox.pids / "grandchild-qemu.pid")
    assert os.getpgid(qemu_pid) == qemu_pid != os.getpgid(sevimg.pid)
    assert next(p.name for p in sandbox.tmp.iterdir()).startswith("sevimg-run-")

    os.kill(sevimg.pid, signum)
    code, _, stderr = sandbox.finish(sevimg)

    assert_one_line_message(code, stderr, signum)
    assert_gone(sandbox.recorded_pids())
    assert sandbox.debris() == []


@pytest.mark.qemu
@pytest.mark.parametrize("signum", SIGNALS, ids=SIGNAL_IDS)
def test_signal_during_a_real_qemu_boot(sandbox: Sandbox, kernel: Path, signum: int) -> None:
    firmware = run.find_firmware(PATHS.plain_ovmf, None, "plain OVMF")
    sevimg = sandbox.start("run", str(kernel), "--no-sev", "--accel", "tcg", "--firmware", firmware)
    deadline = time.monotonic() + 60
    qemu: list[int] = []
    while not qemu and time.monotonic() < deadline:
        qemu = [
            pid
            for pid in fakes.children_of(sevimg.pid)
            if Path(f"/proc/{pid}/comm").read_text().startswith("qemu")
        ]
        time.sleep(0.1)
    assert qemu, "sevimg did not start QEMU"
    time.sleep(1)  # QEMU is in the firmware by now
    assert fakes.alive(qemu[0]) and sevimg.poll() is None

    os.kill(sevimg.pid, signum)
    code, _, stderr = sandbox.finish(sevimg)

    assert_one_line_message(code, stderr, signum)
    assert_gone({"qemu": qemu[0]})
    assert sandbox.debris() == []


# --- start-up --------------------------------------------------------------------------------


def _handlers_installed(pid: int) -> bool:
    """True once the process catches SIGTERM and SIGHUP (Python alone catches neither)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(
        next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16
    )
    wanted = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGHUP - 1))
    return caught & wanted == wanted


@pytest.mark.parametrize("entry", ["script", "module"])
@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.08, 0.15, 0.3, 0.5, 0.8])
@pytest.mark.parametrize("signum", SIGNALS, ids=SIGNAL_IDS)
def test_signal_at_any_point_of_start_up(
    sandbox: Sandbox, entry: str, delay: float, signum: int
) -> None:
    """From the moment sevimg's entry point runs: while importing, parsing, loading the catalog…"""
    sevimg = sandbox.start(*BUILD, entry=entry, FAKE_MODE="sleep", FAKE_HANG_AT="tools")
    deadline = time.monotonic() + 30
    while not _handlers_installed(sevimg.pid) and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(delay)
    os.kill(sevimg.pid, signum)
    code, _, stderr = sandbox.finish(sevimg)
    assert_one_line_message(code, stderr, signum)
    assert_gone(sandbox.recorded_pids())
    assert sandbox.debris() == []


# --- render: staging folders -----------------------------------------------------------------


@pytest.mark.parametrize("signum", SIGNALS, ids=SIGNAL_IDS)
@pytest.mark.parametrize("nth", [1, 3, 8, 15, 22])
def test_render_interrupted_while_writing_leaves_whole_trees_and_no_staging(
    sandbox: Sandbox, nth: int, signum: int
) -> None:
    """The signal comes once the nth staging folder has appeared: in the middle of the writes."""
    first = sandbox.start("render", "--all", "--mkosi-version", "25.3")
    assert sandbox.finish(first)[0] == 0
    build = sandbox.root / "build"
    trees = sorted(p.name for p in build.iterdir())
    reference = {
        tree.name: sorted(p.relative_to(tree) for p in tree.rglob("*")) for tree in build.iterdir()
    }
    new = len(trees)
    for _attempt in range(5):
        # Trees of an older render, so that the swap has old trees to move aside.
        for tree in build.iterdir():
            (tree / "mkosi.conf").write_text("# stale\n")
        again = sandbox.start("render", "--all", "--mkosi-version", "27.1")
        seen: set[str] = set()
        while len(seen) < nth and again.poll() is None:
            seen.update(p.name for p in build.iterdir() if ".new-" in p.name)
        if again.poll() is None:
            os.kill(again.pid, signum)
        code, _, stderr = sandbox.finish(again)
        if code == 0:
            continue  # polling missed a staging folder, or render ended before the kill: again
        assert_one_line_message(code, stderr, signum)
        assert sorted(p.name for p in build.iterdir()) == trees  # nothing hidden left, nothing lost
        new = 0
        for tree in build.iterdir():  # each tree is the old one or the new one, never a mix
            assert sorted(p.relative_to(tree) for p in tree.rglob("*")) == reference[tree.name]
            conf = (tree / "mkosi.conf").read_text()
            assert conf == "# stale\n" or "mkosi 27.1" in conf
            new += conf != "# stale\n"
        if new < len(trees):
            break  # interrupted in the middle of the writes, as wanted
        # a busy machine let render write every tree before the signal came: again
    assert len(seen) >= nth and new < len(trees), "no attempt was interrupted while writing"


STALE = [
    ".guest-debian-13.new-abc12_z9",
    ".host-debian-13.old-0123abcd",
    ".SHA256SUMS.tmp-a1b2c3d4",
    ".guest-debian-13.manifest.json.tmp-zzzzzzzz",
    ".guest-debian-13.efi.partial",
]
NOT_OURS = [
    ".keep",
    ".guest-debian-13.new-TOOLONG123",
    ".guest-debian-13.new-ABCDEFGH",
    "guest-debian-13.new-abcdefgh",
    ".new-abcdefgh",
    ".notes.partial.txt",
    "notes.tmp-abcdefgh",
]


@pytest.mark.parametrize("name", STALE)
def test_stale_names_are_sevimgs(name: str) -> None:
    assert is_stale(name)


@pytest.mark.parametrize("name", NOT_OURS)
def test_other_names_are_not(name: str) -> None:
    assert not is_stale(name)


def _plant(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in STALE + NOT_OURS:
        if ".new-" in name or ".old-" in name:
            (folder / name).mkdir()
            (folder / name / "mkosi.conf").write_text("half\n")
        else:
            (folder / name).write_text("half\n")


def test_render_removes_what_killed_runs_left(sandbox: Sandbox) -> None:
    build = sandbox.root / "build"
    _plant(build)
    code, _, stderr = sandbox.finish(sandbox.start("render", "debian-13"))
    assert code == 0, stderr
    assert sorted(
        p.name for p in build.iterdir() if p.name.startswith(".") or "." in p.name
    ) == sorted(n for n in NOT_OURS)


def test_build_removes_what_killed_runs_left(sandbox: Sandbox) -> None:
    for folder in (sandbox.root / "build", sandbox.root / "out"):
        _plant(folder)
    code, _, stderr = sandbox.finish(sandbox.start(*BUILD), timeout=120)
    assert code == 0, stderr
    for folder in (sandbox.root / "build", sandbox.root / "out"):
        left = {p.name for p in folder.iterdir()}
        assert not left & set(STALE)
        assert set(NOT_OURS) <= left


# --- locks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "folder"),
    [
        (("render", "debian-13"), "build"),
        (BUILD, "build"),
        (BUILD, "out"),
        (BUILD, "cache"),
        ((*BUILD, "-o", "elsewhere"), "cache"),
    ],
)
def test_a_second_run_on_a_folder_fails_naming_the_first(
    sandbox: Sandbox, command: tuple[str, ...], folder: str
) -> None:
    target = sandbox.cache / "build" if folder == "cache" else sandbox.root / folder
    _plant(target)  # a live run's staging folders must not be touched
    with lock.hold(target, "test"):
        started = time.monotonic()
        code, _stdout, stderr = sandbox.finish(sandbox.start(*command), timeout=120)
        waited = time.monotonic() - started
    assert code == 1, stderr
    assert f"is in use by another sevimg run (pid {os.getpid()}" in stderr
    assert str(target) in stderr and "Traceback" not in stderr
    assert waited >= lock.WAIT
    assert sorted(p.name for p in target.iterdir() if p.name in STALE) == sorted(STALE)
    assert not list((sandbox.root / "out").glob("*.efi"))
    # once the first run is done, the second goes through
    code, _, stderr = sandbox.finish(sandbox.start(*command), timeout=120)
    assert code == 0, stderr


def test_two_builds_at_once(sandbox: Sandbox) -> None:
    first = sandbox.start(*BUILD, FAKE_MODE="sleep", FAKE_HANG_AT="tools")
    fakes.wait_for_file(sandbox.pids / "mkosi-tools.pid")
    second = subprocess.run(
        [sys.executable, "-m", "sevimg", "--root", str(sandbox.root), *BUILD],
        env=sandbox.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1
    assert f"(pid {first.pid} (" in second.stderr and "in use" in second.stderr
    os.kill(first.pid, signal.SIGTERM)
    code, _, stderr = sandbox.finish(first)
    assert_one_line_message(code, stderr, signal.SIGTERM)
    assert_gone(sandbox.recorded_pids())


def test_build_into_its_own_tree_folder_does_not_wait_for_itself(sandbox: Sandbox) -> None:
    code, _, stderr = sandbox.finish(
        sandbox.start(*BUILD, "-o", str(sandbox.root / "build")), timeout=120
    )
    assert code == 0, stderr
    assert (sandbox.root / "build" / "guest-debian-13.efi").is_file()


@pytest.mark.skipif(shutil.which("flock") is None, reason="util-linux flock(1) is missing")
def test_lock_holder_is_named_for_any_process(sandbox: Sandbox) -> None:
    """The holder comes from /proc/locks: any process holding flock on the folder is named."""
    build = sandbox.root / "build"
    build.mkdir()
    held = sandbox.pids / "flock-held"
    holder = subprocess.Popen(
        ["flock", str(build), "sh", "-c", f"echo held > {held}; exec sleep 30"]
    )
    try:
        fakes.wait_for_text(held)  # flock(1) has the lock once its command runs
        assert lock.holder(build).startswith("pid ")
        code, _, stderr = sandbox.finish(sandbox.start("render", "debian-13"))
        assert code == 1 and "is in use by another sevimg run (pid " in stderr
    finally:
        holder.kill()
        holder.wait()


# --- threads: only the main thread's deferred blocks hold a signal ---------------------------

THREADS = r"""
import os, signal, sys, threading, time
from sevimg import interrupt


interrupt.install()
interrupt.running()
signum = int(sys.argv[1])
main_in_block = sys.argv[2] == "main-in-block"
inside, leave, seen = threading.Event(), threading.Event(), []

def worker():
    with interrupt.deferred():  # as serve's handler threads do while writing results.json
        inside.set()
        leave.wait(20)
    seen.append("worker left its block")
    try:
        interrupt.check()
    except interrupt.Interrupted as exc:
        seen.append(f"worker stopped at its check with {exc.code}")

thread = threading.Thread(target=worker)
thread.start()
inside.wait(20)
try:
    if main_in_block:
        with interrupt.deferred():
            os.kill(os.getpid(), signum)
            leave.set()  # the worker's block ends first; the main one's end must still raise
            thread.join(20)
            seen.append("main held it")
    else:
        os.kill(os.getpid(), signum)
    for _ in range(500):
        time.sleep(0.01)
    seen.append("main was never interrupted")
except interrupt.Interrupted as exc:
    seen.append(f"main interrupted with {exc.code}, worker in its block: {not leave.is_set()}")
leave.set()
thread.join(20)
print("\n".join(seen))
"""


# What each thread saw, in order; N is the shell's exit code for the signal.
THREAD_CASES = {
    # serve ran on after SIGTERM when a handler thread was writing results.json (CI, stop 14)
    "main-free": [
        "main interrupted with N, worker in its block: True",
        "worker left its block",
        "worker stopped at its check with N",
    ],
    "main-in-block": [
        "worker left its block",
        "worker stopped at its check with N",
        "main held it",
        "main interrupted with N, worker in its block: False",
    ],
}


@pytest.mark.parametrize("signum", SIGNALS, ids=SIGNAL_IDS)
@pytest.mark.parametrize("case", THREAD_CASES)
def test_only_the_main_threads_blocks_hold_a_signal(case: str, signum: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", THREADS, str(signum), case],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    expected = [line.replace(" N", f" {128 + signum}") for line in THREAD_CASES[case]]
    assert done.stdout.splitlines() == expected, done.stdout + done.stderr
