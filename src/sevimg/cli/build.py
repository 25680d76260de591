"""`sevimg build`: the catalog's images built with mkosi into an artifact folder."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

import click
from rich.table import Table

from sevimg import settings
from sevimg.artifacts import checksums
from sevimg.catalog.index import families_by_distribution
from sevimg.catalog.pipeline import (
    all_problems,
    check_catalog,
    specs_or_raise,
    with_embedded_guests,
)
from sevimg.catalog.spec import Role
from sevimg.cli.base import err, handle_errors, mkosi_version_option, out, print_problems, styled
from sevimg.cli.group import Context, main, pass_ctx
from sevimg.cli.params import ROLE_CHOICE, ImageName
from sevimg.imaging import mkosi
from sevimg.imaging.builder import DEFAULT_TOOLS_TREE, Builder, BuildSettings, Outcome
from sevimg.imaging.sandbox import mirror_label
from sevimg.problems import SevimgError
from sevimg.progress import Board, shown


@main.command()
@click.argument("images", nargs=-1, type=ImageName())
@click.option("--all", "all_images", is_flag=True, help="Build every release of the catalog.")
@click.option(
    "--role",
    type=ROLE_CHOICE,
    help="Only this role (a host still builds the guest it embeds).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Artifact folder (default: out/ in the workspace).",
)
@click.option(
    "--force", is_flag=True, help="Rebuild even when nothing changed since the last build."
)
@click.option(
    "--tools-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Take the pinned payload tools from this folder (offline builds).",
)
@click.option(
    "--without-tools",
    is_flag=True,
    help="Build without the pinned payload tools (the manifests say so).",
)
@click.option(
    "--debug-image",
    "debug",
    is_flag=True,
    help="Build debug variants (console autologin, ids ending in -debug).",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Fail an image that is over its size budget (size_budget_mb in the catalog) "
    "instead of warning.",
)
@mkosi_version_option
@pass_ctx
@handle_errors
def build(
    ctx: Context,
    images: Sequence[str],
    all_images: bool,
    role: Role | None,
    output: Path | None,
    force: bool,
    tools_dir: Path | None,
    without_tools: bool,
    debug: bool,
    strict: bool,
    mkosi_version: str | None,
) -> None:
    """Build IMAGES (or --all) with mkosi: out/<role>-<image>.efi, manifests, SHA256SUMS.

    Guests are built first and embedded in their hosts (never mkosi inside
    mkosi, never a guest twice). An image whose inputs are unchanged since its
    last successful build is skipped. Full mkosi output goes to
    out/logs/<image>.log. Each artifact is checked before it reaches out/:
    installed kernel/QEMU/OVMF against the SEV floors, the host's SEV firmware,
    QEMU binary and guest, the guest's modules, no root password, and its
    size against the catalog's budget (a warning; an error with --strict).

    Machine-specific settings (mirrors, tools tree, proxy, caches) come from
    sevimg.local.yaml; pinned payload tools from sevimg.yaml.

    One build at a time uses an artifact folder, build/ and a build cache: a
    second run waits up to 3 seconds, then fails naming the first one's pid.
    SIGINT, SIGTERM or SIGHUP stop mkosi (SIGTERM to its process group,
    SIGKILL 10 s later), remove scratch files and exit 130, 143 or 129.
    """
    if not images and not all_images:
        raise SevimgError(
            "name the images to build, or pass --all", hint="`sevimg list` shows them"
        )
    ws = ctx.ws
    checked, orphans = check_catalog(ctx.catalog, images, debug=debug)
    specs = specs_or_raise(checked, orphans)
    print_problems(p for p in all_problems(checked, orphans) if not p.is_error)
    wanted = with_embedded_guests(specs, role)
    families = families_by_distribution(ctx.catalog)
    local = settings.with_default_mirrors(
        settings.load_local(ws, {d for d, f in families.items() if f.is_apt}), ctx.catalog
    )
    tool = mkosi.require(ws.cache_dir, mkosi_version)
    build_settings = BuildSettings(
        workspace_root=ws.root,
        build_dir=ws.build_dir,
        out_dir=(output or ws.out_dir).resolve(),
        cache_dir=(local.cache_dir or ws.cache_dir / "build").resolve(),
        mkosi=tool,
        renderer=ctx.renderer(tool.version),
        local=local,
        pins=settings.load_tool_pins(ws),
        with_tools=not without_tools,
        tools_dir=tools_dir or local.tools_dir,
        force=force,
        strict=strict,
        families=families,
    )
    if local.source:
        out.print(f"machine settings: {local.source}", markup=False)
    # Every repository a build uses is stated (the tools tree's too): sevimg writes them.
    used = {s.mkosi_distribution for s in wanted} | {(local.tools_tree or DEFAULT_TOOLS_TREE)[0]}
    for distribution in sorted(used):
        out.print(f"{distribution} mirror: {mirror_label(local, distribution)}", markup=False)
    board = Board(
        lambda line: err.print(line, markup=False),
        console=err if err.is_terminal else None,
    )
    current: list[str] = []

    def stage(task: str, line: str) -> None:
        # Images build one after another: a new task ends the previous one's row.
        if current and current[0] != task:
            board.finish(current.pop(), "")
        if not current:
            current.append(task)
        board.stage(task, line)

    with shown(board):
        # On a terminal the lines that stay go above the live display, not through it.
        report = board.print if board.live and out.is_terminal else _print_line
        builder = Builder(build_settings, report=report, stage=stage)
        outcomes = builder.run(wanted)
    _summary(outcomes, build_settings.out_dir, builder.shared_seconds)


def _print_line(line: str) -> None:
    out.print(line, markup=False)


def _summary(outcomes: Sequence[Outcome], out_dir: Path, shared: float = 0.0) -> None:
    table = Table(title=styled(f"artifacts in {out_dir}"))
    if shared >= 0.5:
        table.caption = styled(f"times exclude the tools tree, built once in {shared:.0f} s")
    for column in ("image", "result", "size", "time"):
        table.add_column(column)
    for o in outcomes:
        style = {"built": "green", "skipped": "dim", "failed": "red"}[o.status]
        size = f"{o.size / 1e6:.1f} MB" if o.size else ""
        table.add_row(styled(o.image_id), styled(o.status, style), size, f"{o.seconds:.0f} s")
    out.print(table)
    out.print(
        f"check them with: (cd {shlex.quote(str(out_dir))} && sha256sum -c {checksums.SHA256SUMS})",
        markup=False,
    )
