"""Shared fixtures: a throwaway workspace copied from the real catalog, and CLI runners."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sevimg.catalog.index import Catalog, load_catalog
from sevimg.cli import main
from sevimg.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "images"
# Release files are <distro>-<release>.yaml; distribution files have no dash.
RELEASES = len(list(IMAGES.glob("*-*.yaml")))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked `qemu` or `browser` fails (never skips) when its tool is missing: it would prove nothing."""
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
