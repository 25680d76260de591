"""Shared fixtures: a throwaway workspace copied from the real catalog, and CLI runners."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import settings

from sevimg.catalog.index import Catalog, load_catalog
from sevimg.cli import main
from sevimg.workspace import Workspace
from tests import fakes
from tests.fakegithub import READ_TOKEN, TOKEN, FakeClock, FakeGitHub
from tests.toolguard import sitecustomize

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "images"
# Release files are <distro>-<release>.yaml; distribution files have no dash.
RELEASES = len(list(IMAGES.glob("*-*.yaml")))


# Programs a test may only start when it carries the marker: the fast run
# (`nox`, plain `pytest`) deselects these markers, and tests/toolguard fails a
# test that starts one of them (or connects beyond loopback) without its marker.
GUARDED_MARKERS = ("mkosi", "qemu", "network", "browser", "e2e")
_GUARD_DIR = Path(__file__).resolve().parent / "toolguard"
_QEMU_NAMES = ("qemu-system-x86_64", "qemu-kvm", "/usr/libexec/qemu-kvm")
_BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome", "headless_shell")


def _real(names: Iterable[str]) -> frozenset[str]:
    found = {shutil.which(name) for name in names}
    return frozenset(os.path.realpath(p) for p in found if p)


def _forbidden_programs() -> dict[str, frozenset[str]]:
    mkosis = [str(p) for p in (REPO / ".cache" / "mkosi").glob("*/bin/mkosi")]
    return {
        "mkosi": _real(["mkosi", *mkosis]),
        "qemu": _real(_QEMU_NAMES),
        "browser": _real(_BROWSER_NAMES),
    }


_FORBIDDEN = _forbidden_programs()
# `mkosi --version` (sevimg picks its templates by it) and `qemu-system-x86_64
# --version` (doctor) are version probes: quick, and allowed in the fast run.
_PROBES = _FORBIDDEN["mkosi"] | _FORBIDDEN["qemu"]
_GUARD_LOG = Path(tempfile.mkdtemp(prefix="sevimg-toolguard-")) / "log"
_saved_env: dict[str, str | None] = {}


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis: few examples in the fast run, the full counts with SEVIMG_HYPOTHESIS=full."""
    if config.getoption("hypothesis_profile", None) is None:
        settings.load_profile(os.environ.get("SEVIMG_HYPOTHESIS", "fast"))


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_GUARD_LOG.parent, ignore_errors=True)


settings.register_profile("fast", max_examples=10, deadline=None)
settings.register_profile("full", max_examples=100, deadline=None)


def examples(full: int) -> int:
    """A property test's example count: `full` in the full session, a tenth of it in the fast one."""
    scale = settings().max_examples / 100
    return max(5, round(full * scale))


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection reads the markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every hypothesis test `property`: `nox -s full` runs these again at full counts."""
    for item in items:
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.property)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked `qemu` or `browser` fails (never skips) when its tool is missing; arm the guard
    for what the test's markers do not allow."""
    if item.get_closest_marker("qemu") and shutil.which("qemu-system-x86_64") is None:
        pytest.fail(
            "qemu-system-x86_64 is not installed: tools/setup installs it (qemu-system-x86, ovmf)",
            pytrace=False,
        )
    if item.get_closest_marker("browser") and shutil.which("chromium") is None:
        pytest.fail(
            "chromium is not installed: tools/setup installs it (Debian's chromium package)",
            pytrace=False,
        )
    marked = {name for name in GUARDED_MARKERS if item.get_closest_marker(name)}
    if "e2e" in marked:
        return
    forbid = frozenset().union(*(p for kind, p in _FORBIDDEN.items() if kind not in marked))
    no_network = "network" not in marked
    log_file = _GUARD_LOG
    log_file.write_text("")
    env = {
        sitecustomize.FORBID_ENV: os.pathsep.join(sorted(forbid)),
        sitecustomize.PROBES_ENV: os.pathsep.join(sorted(_PROBES)),
        sitecustomize.NETWORK_ENV: "1" if no_network else "0",
        sitecustomize.LOG_ENV: str(log_file),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(_GUARD_DIR), os.environ.get("PYTHONPATH")) if p
        ),
    }
    for key, value in env.items():
        _saved_env[key] = os.environ.get(key)
        os.environ[key] = value
    sitecustomize.arm(forbid, _PROBES, no_network, str(log_file))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Disarm; a test that started a guarded program or reached the network without its marker fails."""
    log = os.environ.get(sitecustomize.LOG_ENV)
    sitecustomize.disarm()
    for key, value in _saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _saved_env.clear()
    seen = Path(log).read_text().split("\n") if log and Path(log).is_file() else []
    if any(seen):
        done = "; ".join(dict.fromkeys(s for s in seen if s))  # each once, in order
        pytest.fail(
            f"{item.nodeid} has no marker for what it did: {done}. "
            "Mark it @pytest.mark.mkosi / qemu / network / browser (it then runs in `nox -s full`).",
            pytrace=False,
        )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/golden from the current catalog instead of comparing",
    )


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the catalog (images/ only: templates and schema come from the package).

    Its cache is the checkout's, where tools/install-mkosi put mkosi.
    """
    root = tmp_path / "ws"
    shutil.copytree(IMAGES, root / "images")
    monkeypatch.setenv("SEVIMG_CACHE", str(REPO / ".cache"))
    # `sevimg new` reads the release's archive when it can; tests that want it
    # (tests/test_archive.py) serve one on 127.0.0.1 and unset this.
    monkeypatch.setenv("SEVIMG_OFFLINE", "1")
    return root


@pytest.fixture
def catalog(workspace: Path) -> Catalog:
    """The copied catalog, loaded."""
    return load_catalog(Workspace(workspace))


@dataclass
class Run:
    """Result of one CLI invocation."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


CliFn = Callable[..., Run]


@pytest.fixture
def cli(workspace: Path) -> CliFn:
    """Run `sevimg ARGS` in-process against the copied workspace."""

    def run(*args: str, root: Path | None = None, input: str | None = None) -> Run:
        runner = CliRunner()
        result: Result = runner.invoke(
            main, ["--root", str(root or workspace), *args], input=input, catch_exceptions=True
        )
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Run(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def sevimg_process(workspace: Path) -> Iterator[CliFn]:
    """Run the installed `sevimg` as a real process (tracebacks and exit codes as users see them)."""

    def run(*args: str, cwd: Path | None = None, root: Path | None = None) -> Run:
        argv = [sys.executable, "-m", "sevimg"]
        if root is not None:
            argv += ["--root", str(root)]
        proc = subprocess.run(
            [*argv, *args],
            cwd=cwd or workspace,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    yield run


@pytest.fixture
def fake_mkosi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake mkosi (tests/fakes.py) that writes a real, tiny guest UKI; a private build cache."""
    return fakes.use_fake_mkosi(tmp_path, monkeypatch.setenv)


@pytest.fixture
def clock() -> FakeClock:
    """The GitHub client's and the fake GitHub's clock: time moves only when a test says so."""
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> Iterator[FakeGitHub]:
    """The fake GitHub (tests/fakegithub.py) on 127.0.0.1, a write and a read token, on `clock`."""
    with FakeGitHub(tokens={TOKEN: "write", READ_TOKEN: "read"}, now=clock.time) as server:
        yield server
