"""`sevimg render`: the catalog's images as mkosi trees in a folder (`sevimg new` renders too)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from sevimg import lock
from sevimg.atomic import remove_stale, write_trees
from sevimg.catalog.pipeline import all_problems, check_catalog, specs_or_raise
from sevimg.cli.base import handle_errors, mkosi_version_option, out, print_problems
from sevimg.cli.group import Context, main, pass_ctx
from sevimg.cli.params import ImageName
from sevimg.problems import Problem, SevimgError


@main.command()
@click.argument("images", nargs=-1, type=ImageName())
@click.option("--all", "all_images", is_flag=True, help="Render every release of the catalog.")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (default: build/ in the workspace).",
)
@click.option(
    "--debug-image",
    "debug",
    is_flag=True,
    help="Render debug variants: autologin on the console, image ids ending in -debug.",
)
@mkosi_version_option
@pass_ctx
@handle_errors
def render(
    ctx: Context,
    images: Sequence[str],
    all_images: bool,
    output: Path | None,
    debug: bool,
    mkosi_version: str | None,
) -> None:
    """Render mkosi trees for IMAGES (or --all) into OUTPUT/<role>-<image>/.

    Every tree is checked and rendered in memory first; if anything is wrong,
    nothing is written. Each tree is then replaced atomically. One sevimg at a
    time writes a folder: a second run waits up to 3 seconds, then fails
    naming the first one's pid.
    """
    if not images and not all_images:
        raise SevimgError(
            "name the images to render, or pass --all", hint="`sevimg list` shows them"
        )
    if images and all_images:
        raise SevimgError("pass image names or --all, not both")
    written, warnings = render_images(ctx, images, output, debug=debug, mkosi_version=mkosi_version)
    print_problems(warnings)
    for path, image_id in written:
        out.print(f"wrote {path}  ({image_id})", markup=False)


def render_images(
    ctx: Context,
    images: Sequence[str],
    output: Path | None,
    *,
    debug: bool = False,
    mkosi_version: str | None = None,
) -> tuple[list[tuple[str, str]], list[Problem]]:
    """Check, render and write trees: (displayed path, image id) per tree, and the warnings."""
    checked, orphans = check_catalog(ctx.catalog, images, debug=debug)
    specs = specs_or_raise(checked, orphans)
    renderer = ctx.renderer(mkosi_version)
    trees = [renderer.render(spec) for spec in specs]
    out_dir = output or ctx.ws.build_dir
    try:
        with lock.hold(out_dir, "the tree folder"):
            remove_stale(out_dir)  # staging folders of runs that were killed outright
            paths = write_trees(trees, out_dir)
    except OSError as exc:
        raise SevimgError(f"cannot write under {out_dir}: {exc.strerror or exc}") from None
    written = [(ctx.ws.display(p), t.image_id) for p, t in zip(paths, trees, strict=True)]
    return written, all_problems(checked, orphans)
