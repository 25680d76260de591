"""`sevimg reproduce`: rebuild an artifact folder's images and say whether they are identical."""

from __future__ import annotations

from pathlib import Path

import click

from sevimg import settings
from sevimg.catalog.index import families_by_distribution
from sevimg.catalog.pipeline import check_catalog, specs_or_raise
from sevimg.cli.base import err, handle_errors, out, styled
from sevimg.cli.group import Context, main, pass_ctx
from sevimg.imaging import mkosi, reproduce
from sevimg.imaging.builder import Builder, BuildSettings
from sevimg.problems import SevimgError


@main.command(name="reproduce")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the rebuilt images go (default: reproduce/<folder name> in the build cache).",
)
@click.option(
    "--tools-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Take the pinned payload tools from this folder (offline builds).",
)
@pass_ctx
@handle_errors
def reproduce_command(
    ctx: Context, folder: Path, output: Path | None, tools_dir: Path | None
) -> None:
    """Rebuild the images of an artifact FOLDER from their manifests and compare them.

    Every image is rebuilt from the inputs its manifest records: the catalog
    files (their SHA-256 must match this workspace's, else the differing files
    are named and nothing is built), the same mkosi version, the pinned payload
    tools, and exactly the recorded package versions (apt installs
    `name=version`; take them from the mirror or snapshot set in
    sevimg.local.yaml). Then each UKI is compared byte for byte with the
    folder's, and a host's expected measurement of its guest with the recorded
    one. Where they differ the report says where: which UKI sections, and for
    the initrd which files and which of their attributes (mode, owner, mtime,
    content).

    Exit status 0 only when every image is identical; 1 when one differs or
    the inputs do.
    """
    ws = ctx.ws
    recorded = reproduce.recorded_images(folder.resolve())
    debug = {r.manifest.debug for r in recorded}
    if len(debug) != 1:
        raise SevimgError(f"{folder} mixes debug and release images; reproduce them apart")
    images = sorted({r.manifest.image for r in recorded})
    checked, orphans = check_catalog(ctx.catalog, images, debug=debug.pop())
    specs = {s.image_id: s for s in specs_or_raise(checked, orphans)}
    pins = settings.load_tool_pins(ws)

    differences: list[str] = []
    for r in recorded:
        spec = specs.get(r.manifest.image_id)
        if spec is None:
            differences.append(f"{r.manifest.image_id}: this catalog does not define that image")
            continue
        differences += [
            f"{r.manifest.image_id}: {line}"
            for line in reproduce.input_differences(r.manifest, spec, pins)
        ]
    if differences:
        for line in differences:
            out.print(line, markup=False)
        raise SevimgError(
            f"this workspace's inputs differ from those {folder} was built from; nothing was built",
            hint="check out the commit the manifests name (or the catalog files they list), then retry",
        )

    families = families_by_distribution(ctx.catalog)
    local = settings.load_local(ws, {d for d, f in families.items() if f.is_apt})
    tool = mkosi.require(ws.cache_dir, reproduce.mkosi_version(recorded))
    cache_dir = (local.cache_dir or ws.cache_dir / "build").resolve()
    rebuilt = (output or cache_dir / "reproduce" / folder.resolve().name).resolve()
    if rebuilt == folder.resolve():
        raise SevimgError("the rebuild cannot go into the folder it is compared with")
    build_settings = BuildSettings(
        workspace_root=ws.root,
        build_dir=ws.build_dir,
        out_dir=rebuilt,
        cache_dir=cache_dir,
        mkosi=tool,
        renderer=ctx.renderer(tool.version),
        local=local,
        pins=pins,
        with_tools=reproduce.with_tools(recorded),
        tools_dir=tools_dir or local.tools_dir,
        force=True,
        families=families,
        pinned_packages=reproduce.pins_by_image(recorded),
    )
    out.print(
        f"rebuilding {len(recorded)} image(s) of {folder} with mkosi {tool.version} into {rebuilt}",
        markup=False,
    )
    with err.status(styled("rebuilding…")) as status:
        Builder(
            build_settings,
            report=lambda line: out.print(line, markup=False),
            stage=lambda task, text: status.update(styled(f"{task}: {text}")),
        ).run([specs[r.manifest.image_id] for r in recorded])

    verdicts = reproduce.judge(recorded, rebuilt)
    for verdict in verdicts:
        for line in verdict.report():
            out.print(line, markup=False)
    out.print(reproduce.summary(verdicts), markup=False)
    if not all(v.identical for v in verdicts):
        raise SystemExit(1)
