"""Sessions: `nox` runs lint, typecheck and tests; the others are named explicitly.

nox                     lint + typecheck + tests: the fast run (no mkosi, QEMU, network, browser)
nox -s tests -- -k render   pass pytest arguments after --
nox -s full             every test but e2e (markers mkosi, qemu, network, browser), full hypothesis counts
nox -s full -- -m qemu  one marker alone
nox -s e2e              real builds from the Debian archive and a real boot
nox -s golden           re-render the golden trees in tests/golden after an intended change
nox -s bench            speed and size numbers, and the fast run's wall time and test count
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

# The one home of the supported versions is the package; nox runs from the checkout.
sys.path.insert(0, str(Path(__file__).parent / "src"))
from sevimg.mkosi_versions import MKOSI_VERSIONS  # noqa: E402


def _install_mkosi(session: nox.Session) -> None:
    # Idempotent and offline once cached; the tests run the real mkosi.
    for version in MKOSI_VERSIONS:
        session.run("tools/install-mkosi", version, external=True, silent=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and shellcheck on the shell tools."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "src", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "noxfile.py")
    session.run(
        "shellcheck",
        "tools/install-mkosi",
        "tools/setup",
        "tools/build",
        "tools/publish",
        ".ci/run",
        external=True,
    )


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and this file."""
    session.install("-e", ".[dev]")
    session.run("mypy", "--strict")


# Line coverage of src/, printed as a summary (files at 100% left out).
COVERAGE = ("--cov=src", "--cov-report=term:skip-covered")


@nox.session
def tests(session: nox.Session) -> None:
    """The fast run: pyproject's addopts deselect mkosi, qemu, network, browser and e2e."""
    session.install("-e", ".[test]")
    session.run("pytest", *COVERAGE, *session.posargs)


@nox.session
def full(session: nox.Session) -> None:
    """Every test but e2e: real mkosi 25.3 and 27.1, QEMU, downloads; full hypothesis counts."""
    session.install("-e", ".[test]")
    _install_mkosi(session)
    session.run(
        "pytest", "-m", "not e2e", *COVERAGE, *session.posargs, env={"SEVIMG_HYPOTHESIS": "full"}
    )


@nox.session
def golden(session: nox.Session) -> None:
    """Re-render tests/golden/ from the catalog (review the diff, then commit it)."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/test_golden.py", "--update-golden", *session.posargs)


@nox.session
def e2e(session: nox.Session) -> None:
    """Real builds from the Debian archive and a real boot; fails loudly without the archive."""
    session.install("-e", ".[test]")
    _install_mkosi(session)
    session.run("pytest", "-m", "e2e", "tests/e2e", "-s", *session.posargs)


@nox.session
def browser(session: nox.Session) -> None:
    """serve's status page in Debian's headless Chromium (fails when chromium is missing)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "browser", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The fast run's wall time and test count; CPU seconds of --help and validate; serve's
    peak RSS under 200 hostile connections; cold, no-op and warm builds, image sizes, boot time.

    `nox -s bench -- --cli-only` measures the command line alone (no root, no mkosi),
    `-- --serve-only` serve under hostile connections alone,
    `-- --parsers-only` the parsers of peer data at their caps,
    `-- --tests-only` the fast test run alone.
    """
    session.install("-e", ".[test]")
    if not {"--cli-only", "--parsers-only", "--serve-only", "--tests-only"} & set(session.posargs):
        _install_mkosi(session)
    session.run("python", "-m", "tests.bench", *session.posargs)
