"""Sessions: `nox` runs lint, typecheck and tests; the others are named explicitly.

nox                     lint + typecheck + tests: the fast run (no mkosi, QEMU, network, browser)
nox -s tests -- -k render   pass pytest arguments after --
nox -s full             every test but e2e (markers mkosi, qemu, network, browser, serial), full
                        hypothesis counts, coverage
SEVIMG_COVERAGE=1 nox && SEVIMG_COVERAGE=1 nox -s full
                        the same, with no test run twice (what .ci/run does)
nox -s full -- -m qemu  one marker alone (a later -m wins)
nox -s e2e              real builds from the Debian and Ubuntu archives, real boots, rebuilds
nox -s golden           re-render the golden trees in tests/golden after an intended change
nox -s bench            speed and size numbers, and the fast run's wall time and test count
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.error_on_missing_interpreters = True

HERE = Path(__file__).parent
# Every session runs in the checkout's .venv, which tools/setup made with sevimg
# (editable) and its dev tools: no virtualenv per session to create and fill,
# which is most of a first run's time. Another Python (a system nox) falls back
# to the one nox runs with.
_VENV_PYTHON = HERE / ".venv" / "bin" / "python"
PYTHON = str(_VENV_PYTHON) if _VENV_PYTHON.exists() else sys.executable
# pytest-xdist: one worker per core (this machine and CI have two).
PARALLEL = ("-n", "auto")

# The one home of the supported versions is the package; nox runs from the checkout.
sys.path.insert(0, str(HERE / "src"))
from sevimg.mkosi_versions import MKOSI_VERSIONS  # noqa: E402


def _install_mkosi(session: nox.Session) -> None:
    # Idempotent and offline once cached; the tests run the real mkosi.
    for version in MKOSI_VERSIONS:
        session.run("tools/install-mkosi", version, external=True, silent=True)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and shellcheck on the shell tools."""
    session.run(PYTHON, "-m", "ruff", "check", "src", "tests", "noxfile.py", external=True)
    session.run(
        PYTHON, "-m", "ruff", "format", "--check", "src", "tests", "noxfile.py", external=True
    )
    session.run(
        "shellcheck",
        "tools/install-mkosi",
        "tools/setup",
        "tools/build",
        "tools/publish",
        ".ci/run",
        external=True,
    )


@nox.session(python=False)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and this file."""
    session.run(PYTHON, "-m", "mypy", "--strict", external=True)


# SEVIMG_COVERAGE=1: the fast run writes coverage data (.coverage) and `nox -s full`
# adds what the fast run left out to it: `.ci/run` measures the whole suite's
# coverage that way without running the fast tests twice.
COVERAGE_ENV = "SEVIMG_COVERAGE"
# What the fast run leaves out, and the property tests again at their full counts.
REST = "(mkosi or qemu or network or browser or property) and not e2e and not serial"


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The fast run: pyproject's addopts deselect mkosi, qemu, network, browser, serial, e2e.

    No coverage by default (it costs a quarter more time); with SEVIMG_COVERAGE=1 it
    writes .coverage for `nox -s full` to add to (what `.ci/run` does).
    """
    cover = ("--cov=src", "--cov-report=") if os.environ.get(COVERAGE_ENV) == "1" else ()
    session.run(PYTHON, "-m", "pytest", *PARALLEL, *cover, *session.posargs, external=True)


@nox.session(python=False)
def full(session: nox.Session) -> None:
    """Every test but e2e: real mkosi 25.3 and 27.1, QEMU, downloads, Chromium, full hypothesis
    counts, then the signal races alone; line coverage of src/.

    With SEVIMG_COVERAGE=1 it follows a fast run that wrote coverage with the same
    setting (`SEVIMG_COVERAGE=1 nox && SEVIMG_COVERAGE=1 nox -s full`, as `.ci/run`
    does): it runs only what that run left out (the marked tests, and the property
    tests again at full counts) and adds to its data, so nothing runs twice.
    """
    _install_mkosi(session)
    full_counts = {"SEVIMG_HYPOTHESIS": "full"}
    after_fast = os.environ.get(COVERAGE_ENV) == "1"
    session.run(
        PYTHON,
        "-m",
        "pytest",
        *PARALLEL,
        "-m",
        REST if after_fast else "not e2e and not serial",
        "--cov=src",
        *(("--cov-append",) if after_fast else ()),
        "--cov-report=",
        *session.posargs,
        env=full_counts,
        external=True,
    )
    # The races of signals against a process, alone: a busy second worker would decide them.
    session.run(
        PYTHON,
        "-m",
        "pytest",
        "-m",
        "serial",
        "--cov=src",
        "--cov-append",
        "--cov-report=term:skip-covered",
        *session.posargs,
        env=full_counts,
        external=True,
    )


@nox.session(python=False)
def golden(session: nox.Session) -> None:
    """Re-render tests/golden/ from the catalog (review the diff, then commit it)."""
    session.run(
        PYTHON,
        "-m",
        "pytest",
        "tests/test_golden.py",
        "--update-golden",
        *session.posargs,
        external=True,
    )


@nox.session(python=False)
def e2e(session: nox.Session) -> None:
    """Real builds from the Debian and Ubuntu archives, real boots and a second build to the same
    bytes; fails loudly without the archives."""
    _install_mkosi(session)
    session.run(
        PYTHON, "-m", "pytest", "-m", "e2e", "tests/e2e", "-s", *session.posargs, external=True
    )


@nox.session(python=False)
def browser(session: nox.Session) -> None:
    """serve's status page in Debian's headless Chromium (fails when chromium is missing)."""
    session.run(PYTHON, "-m", "pytest", "-m", "browser", *session.posargs, external=True)


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """The fast run's wall time and test count; CPU seconds of --help and validate; serve's
    peak RSS under 200 hostile connections; cold, no-op and warm builds, image sizes, boot time.

    `nox -s bench -- --cli-only` measures the command line alone (no root, no mkosi),
    `-- --serve-only` serve under hostile connections alone,
    `-- --parsers-only` the parsers of peer data at their caps,
    `-- --tests-only` the fast test run alone.
    """
    if not {"--cli-only", "--parsers-only", "--serve-only", "--tests-only"} & set(session.posargs):
        _install_mkosi(session)
    session.run(PYTHON, "-m", "tests.bench", *session.posargs, external=True)
