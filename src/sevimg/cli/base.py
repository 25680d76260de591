"""Shared parts of the command line: error handling, output (the group is in cli/group.py).

Every failure a user can cause ends as a :class:`SevimgError`, printed as
`file:line:col: error: field: message` lines without a traceback, exit 1.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NoReturn, ParamSpec, TypeVar

import click
from rich.text import Text

from sevimg import interrupt
from sevimg.cli.params import MkosiVersion
from sevimg.display import SafeConsole, printable
from sevimg.mkosi_versions import OLDEST_MKOSI
from sevimg.problems import Problem, SevimgError
from sevimg.redact import redact_text

P = ParamSpec("P")
R = TypeVar("R")

# Pipes and CI logs get a fixed, wide layout instead of rich's 80-column guess.
_WIDTH = None if sys.stdout.isatty() else 132
# Text is printed as written: catalog values, paths and remote names may hold
# "[/red]" or ":smile:", which rich would otherwise read as markup or emoji
# (and crash on, or turn into a hyperlink). Styling goes through `style=` or
# rich.text.Text, never through markup in a string. Control and bidi
# characters in them are shown as escapes (sevimg.display).
out = SafeConsole(highlight=False, soft_wrap=True, width=_WIDTH, markup=False, emoji=False)
err = SafeConsole(
    stderr=True, highlight=False, soft_wrap=True, width=_WIDTH, markup=False, emoji=False
)


def styled(text: object, style: str = "") -> Text:
    """A table cell or status line shown literally (never parsed as markup), optionally styled."""
    return Text(printable(str(text)), style=style)


def print_problems(problems: Iterable[Problem]) -> None:
    """file:line:col: severity: field: message, one per line, on stderr."""
    for problem in problems:
        style = "red" if problem.is_error else "yellow"
        err.print(str(problem), style=style, markup=False)


def fail(exc: SevimgError) -> NoReturn:
    """Print a SevimgError the way users should see it and exit 1."""
    print_problems(exc.problems)
    err.print(f"sevimg: error: {exc.message}", style="bold red", markup=False)
    if exc.hint:
        err.print(f"hint: {exc.hint}", markup=False)
    sys.exit(1)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn SevimgError (and any unexpected crash) into a clean message and exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        interrupt.running()  # start-up is over: a signal now stops children and cleans up
        try:
            return func(*args, **kwargs)
        except SevimgError as exc:
            _after_signal()
            fail(exc)
        except KeyboardInterrupt:
            err.print("sevimg: interrupted")
            sys.exit(130)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:  # a bug in sevimg, not bad input: say so plainly
            _after_signal()
            report_internal(exc)
            sys.exit(EXIT_INTERNAL)

    return wrapper


EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug in sevimg


def internal_message(exc: BaseException) -> str:
    """One line naming an unexpected exception, without secrets."""
    return f"internal error: {type(exc).__name__}: {_without_secrets(str(exc))}"


def report_internal(exc: BaseException) -> None:
    """Say on stderr that `exc` is a bug in sevimg (its traceback with SEVIMG_DEBUG=1)."""
    if os.environ.get("SEVIMG_DEBUG"):
        err.print(_without_secrets(traceback.format_exc()), markup=False, end="")
    err.print(
        f"sevimg: {internal_message(exc)}\n"
        "This is a bug in sevimg; please report it (set SEVIMG_DEBUG=1 for a traceback).",
        style="bold red",
        markup=False,
    )


def _without_secrets(text: str) -> str:
    """`text` without credentials in URLs and without the GitHub token, from wherever it came."""
    secrets = [os.environ.get("GITHUB_TOKEN", "")]
    argv = sys.argv
    for i, arg in enumerate(argv):
        if arg == "--token" and i + 1 < len(argv):
            secrets.append(argv[i + 1])
        elif arg.startswith("--token="):
            secrets.append(arg.partition("=")[2])
    for secret in secrets:
        if secret.strip():
            text = text.replace(secret.strip(), "***")
    return redact_text(text)


def _after_signal() -> None:
    """A failure that follows a signal is the signal's doing (e.g. Interrupted turned into a RuntimeError)."""
    if (signum := interrupt.received()) is not None:
        raise interrupt.Interrupted(signum) from None


def artifact_folder_option(dest: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """`--from DIR`: the artifact folder a command reads, into the parameter `dest`."""
    return click.option(
        "--from",
        dest,
        metavar="DIR",
        type=click.Path(file_okay=False, path_type=Path),
        help="The artifact folder `sevimg build` wrote (default: out/ of the workspace).",
    )


def mkosi_version_option(func: Callable[P, R]) -> Callable[P, R]:
    return click.option(
        "--mkosi-version",
        metavar="VERSION",
        type=MkosiVersion(),
        help="Render for this mkosi version (default: the mkosi found, else "
        f"{OLDEST_MKOSI}). 26 and newer get KernelModules=, older ones KernelModulesInclude/Exclude=.",
    )(func)
