"""The `sevimg` click group, which imports each command's module only when that command runs.

`sevimg --help` lists every command from :data:`COMMANDS` (module and first
help paragraph) without importing any of them, and a command pulls in only
the libraries it uses: `validate` never loads Jinja2 or httpx. This module
therefore imports click and nothing heavy; the rest comes inside functions.
tests/test_cli_lazy.py checks that the table matches the commands the
modules register.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

try:  # click >= 8.2 suggests close names for an unknown command
    from click.exceptions import NoSuchCommand
except ImportError:  # click 8.1 says "No such command" alone
    NoSuchCommand = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from sevimg.catalog.index import Catalog
    from sevimg.render.trees import Renderer
    from sevimg.workspace import Workspace


@dataclass(frozen=True)
class Listed:
    """A command as `sevimg --help` lists it before its module is imported."""

    module: str  # under sevimg.cli; importing it registers the command on `main`
    help: str  # the first paragraph of its docstring


COMMANDS: dict[str, Listed] = {
    "archive": Listed(
        "archive", "Check IMAGES (or --all) against their distributions' real repositories."
    ),
    "build": Listed(
        "build",
        "Build IMAGES (or --all) with mkosi: out/<role>-<image>.efi, manifests, SHA256SUMS.",
    ),
    "ci": Listed(
        "release", "Generate the GitHub Actions workflow that builds and publishes the catalog."
    ),
    "doctor": Listed(
        "machine",
        "Check whether this machine can build images, and say how to fix what is missing.",
    ),
    "kds": Listed(
        "kds", "Fill the KDS cache that `sevimg serve` answers hosts from (AMD certificates, CRLs)."
    ),
    "keyrings": Listed(
        "machine",
        "List the archive keyrings the catalog needs; --install fetches missing ones (pinned).",
    ),
    "list": Listed("catalog", "List the catalog's releases, their roles and SEV floor verdicts."),
    "merge-artifacts": Listed(
        "release", "Merge the artifact folders of several builds into one, with one SHA256SUMS."
    ),
    "new": Listed(
        "new",
        "Start a new release file images/DISTRO-RELEASE.yaml, then validate and render it.",
    ),
    "publish": Listed(
        "release",
        "Publish the artifacts of IMAGES (default: all in the folder) to a GitHub release.",
    ),
    "matrix": Listed(
        "matrix",
        "Write the certification matrix from serve's results folders and/or certificate issues.",
    ),
    "measure": Listed(
        "measure", "Print the expected SEV-SNP launch measurement of the built guest of IMAGE."
    ),
    "render": Listed(
        "render", "Render mkosi trees for IMAGES (or --all) into OUTPUT/<role>-<image>/."
    ),
    "reproduce": Listed(
        "reproduce",
        "Rebuild the images of an artifact FOLDER, or of a published --release, and compare them.",
    ),
    "run": Listed(
        "run",
        "Launch the guest UKI of IMAGE (debian-13, or a path to a .efi) as an SEV-SNP guest.",
    ),
    "serve": Listed(
        "serve",
        "Serve the host images of an artifact folder to machines that HTTP-boot, like dispatch.",
    ),
    "show": Listed(
        "catalog", "Show the resolved spec of IMAGE (e.g. debian-13): what will be rendered."
    ),
    "validate": Listed(
        "catalog",
        "Check IMAGES (default: the whole catalog): schema, resolution and SEV policy.",
    ),
    "verify": Listed(
        "certify",
        "Verify an SEV-SNP attestation report (the 1184-byte binary, or its base64).",
    ),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (click's documented lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command, loaded or not, sorted."""
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, importing its module first if needed."""
        listed = COMMANDS.get(cmd_name)
        if cmd_name not in self.commands and listed is not None:
            importlib.import_module(f"sevimg.cli.{listed.module}")
        return self.commands.get(cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """click's, but "Did you mean" picks from every command, not only the ones imported."""
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            if NoSuchCommand is None or not isinstance(exc, NoSuchCommand):
                raise
            raise NoSuchCommand(
                exc.command_name, possibilities=self.list_commands(ctx), ctx=ctx
            ) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The Commands section, as click writes it, from the table for commands not yet imported."""
        commands = [(name, self._for_help(name)) for name in self.list_commands(ctx)]
        shown = [(name, cmd) for name, cmd in commands if not cmd.hidden]
        if not shown:
            return
        # click's own spacing: three times the default gap
        limit = formatter.width - 6 - max(len(name) for name, _ in shown)
        with formatter.section("Commands"):
            formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in shown])

    def _for_help(self, name: str) -> click.Command:
        """The registered command, or a stand-in with its listed help (shortened by click alike)."""
        if name in self.commands:
            return self.commands[name]
        return click.Command(name, help=COMMANDS[name].help)


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
            from sevimg.workspace import find_workspace  # noqa: PLC0415 - lazy, see the module doc

            self._ws = find_workspace(root=self.root_option)
        return self._ws

    @property
    def catalog(self) -> Catalog:
        """The loaded catalog (loaded once)."""
        if self._catalog is None:
            from sevimg.catalog.index import load_catalog  # noqa: PLC0415

            self._catalog = load_catalog(self.ws)
        return self._catalog

    def renderer(self, mkosi_version: str | None) -> Renderer:
        """A renderer for the requested mkosi version, else the one found, else the oldest supported."""
        from sevimg.imaging import mkosi  # noqa: PLC0415
        from sevimg.mkosi_versions import OLDEST_MKOSI  # noqa: PLC0415
        from sevimg.render.trees import Renderer  # noqa: PLC0415

        if mkosi_version is None:
            found = mkosi.find(self.ws.cache_dir)
            mkosi_version = found.version if found else OLDEST_MKOSI
        return Renderer(self.ws.search_path("templates"), mkosi_version)


pass_ctx = click.make_pass_decorator(Context)


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """`--version`, as click.version_option prints it; the version is looked up only here."""
    if not value or ctx.resilient_parsing:
        return
    from sevimg import __version__  # noqa: PLC0415 - importlib.metadata costs a noticeable moment

    click.echo(f"sevimg, version {__version__}", color=ctx.color)
    ctx.exit()


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version and exit.",
)
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
