"""Shared parts of the command line: the `sevimg` group, error handling, output.

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
from rich.console import Console
from rich.text import Text

from sevimg import __version__, interrupt
from sevimg.build import mkosi
from sevimg.catalog.index import Catalog, load_catalog
from sevimg.cli.params import MkosiVersion
from sevimg.mkosi_versions import OLDEST_MKOSI
from sevimg.problems import Problem, SevimgError
from sevimg.redact import redact_text
from sevimg.render.trees import Renderer
from sevimg.workspace import Workspace, find_workspace

P = ParamSpec("P")
R = TypeVar("R")

# Pipes and CI logs get a fixed, wide layout instead of rich's 80-column guess.
_WIDTH = None if sys.stdout.isatty() else 132
# Text is printed as written: catalog values, paths and remote names may hold
# "[/red]" or ":smile:", which rich would otherwise read as markup or emoji
# (and crash on, or turn into a hyperlink). Styling goes through `style=` or
# rich.text.Text, never through markup in a string.
out = Console(highlight=False, soft_wrap=True, width=_WIDTH, markup=False, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH, markup=False, emoji=False)


def styled(text: object, style: str = "") -> Text:
    """A table cell or status line shown literally (never parsed as markup), optionally styled."""
    return Text(str(text), style=style)


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
            if os.environ.get("SEVIMG_DEBUG"):
                traceback.print_exc()
            err.print(
                f"sevimg: internal error: {type(exc).__name__}: {redact_text(str(exc))}\n"
                "This is a bug in sevimg; please report it (set SEVIMG_DEBUG=1 for a traceback).",
                style="bold red",
                markup=False,
            )
            sys.exit(70)

    return wrapper


def _after_signal() -> None:
    """A failure that follows a signal is the signal's doing (e.g. Interrupted turned into a RuntimeError)."""
    if (signum := interrupt.received()) is not None:
        raise interrupt.Interrupted(signum) from None


class Context:
    """Per-invocation state shared by the commands."""

    def __init__(self, root: Path | None) -> None:
        self.root_option = root
        self._ws: Workspace | None = None
        self._catalog: Catalog | None = None

    @property
    def ws(self) -> Workspace:
        """The workspace (found once)."""
        if self._ws is None:
            self._ws = find_workspace(root=self.root_option)
        return self._ws

    @property
    def catalog(self) -> Catalog:
        """The loaded catalog (loaded once)."""
        if self._catalog is None:
            self._catalog = load_catalog(self.ws)
        return self._catalog

    def renderer(self, mkosi_version: str | None) -> Renderer:
        """A renderer for the requested mkosi version, else the one found, else the oldest supported."""
        if mkosi_version is None:
            found = mkosi.find(self.ws.cache_dir)
            mkosi_version = found.version if found else OLDEST_MKOSI
        return Renderer(self.ws.search_path("templates"), mkosi_version)


pass_ctx = click.make_pass_decorator(Context)


def mkosi_version_option(func: Callable[P, R]) -> Callable[P, R]:
    return click.option(
        "--mkosi-version",
        metavar="VERSION",
        type=MkosiVersion(),
        help="Render for this mkosi version (default: the mkosi found, else "
        f"{OLDEST_MKOSI}). 26 and newer get KernelModules=, older ones KernelModulesInclude/Exclude=.",
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sevimg")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SEVIMG_ROOT",
    help="Workspace folder (holding images/). Default: the nearest folder above the current one "
    "that has images/.",
)
@click.pass_context
def main(ctx: click.Context, root: Path | None) -> None:
    """sevimg: AMD SEV-SNP host and guest images from one YAML file per release.

    \b
    Onboard a release:   sevimg new fedora-45 && $EDITOR images/fedora-45.yaml
    Check it:            sevimg validate fedora-45
    Render mkosi trees:  sevimg render fedora-45      (into build/)
    """
    ctx.obj = Context(root)
