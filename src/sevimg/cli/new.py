"""`sevimg new`: start a release file, fill in its versions from the archive, render it."""

from __future__ import annotations

import click

from sevimg.atomic import write_file_atomic
from sevimg.catalog.pipeline import check_catalog
from sevimg.catalog.scaffold import check_new_release, new_release
from sevimg.cli.base import err, handle_errors, mkosi_version_option, out, print_problems
from sevimg.cli.group import Context, main, pass_ctx
from sevimg.cli.params import ImageName
from sevimg.cli.render import render_images
from sevimg.problems import SevimgError, has_errors


@main.command()
@click.argument("image", metavar="DISTRO-RELEASE")
@click.option(
    "--from",
    "from_image",
    metavar="IMAGE",
    type=ImageName(),
    help="Carry over the overrides of this release of the same distribution.",
)
@click.option(
    "--codename", metavar="NAME", help="The codename mkosi's Release= takes (Debian, Ubuntu)."
)
@click.option(
    "--prerelease",
    is_flag=True,
    help="Mark it a pre-release, built from the distribution's development repositories "
    "(Fedora rawhide, Debian testing; Ubuntu: pass the development series as --codename).",
)
@click.option("--no-render", is_flag=True, help="Only write the YAML file.")
@click.option(
    "--offline",
    is_flag=True,
    envvar="SEVIMG_OFFLINE",
    help="Do not read the release's archive (versions stay to be declared by hand).",
)
@mkosi_version_option
@pass_ctx
@handle_errors
def new(
    ctx: Context,
    image: str,
    from_image: str | None,
    codename: str | None,
    prerelease: bool,
    no_render: bool,
    offline: bool,
    mkosi_version: str | None,
) -> None:
    """Start a new release file images/DISTRO-RELEASE.yaml, then validate and render it.

    The file holds only what the distribution's defaults cannot: release,
    codename and status (plus, with --from, that release's own overrides).
    When the release's archive can be read (`sevimg archive`), the kernel,
    QEMU and OVMF versions it carries are written in, and missing packages or
    a missing SEV firmware file are reported.
    """
    catalog = ctx.catalog
    made = new_release(
        catalog, image, from_image=from_image, codename=codename, prerelease=prerelease
    )
    target = ctx.ws.images_dir / f"{made.image}.yaml"
    display = ctx.ws.display(target)

    check_new_release(catalog, made)  # before it touches the catalog: a refusal leaves no file

    write_file_atomic(target, made.text.encode())
    ctx._catalog = None  # reload with the new file
    try:
        checked, _ = check_catalog(ctx.catalog, [made.image])
        problems = list(checked[0].problems)
        if has_errors(problems):
            raise SevimgError(f"{display} does not validate", problems)
        from sevimg.archive.onboard import check_new  # noqa: PLC0415 - httpx only for `new`

        asked = check_new(ctx.catalog, made.image, offline=offline)
        if asked.versions:
            ctx._catalog = None  # the file now declares versions
            checked, _ = check_catalog(ctx.catalog, [made.image])
            problems = list(checked[0].problems)
        written = (
            []
            if no_render
            else render_images(ctx, [made.image], None, mkosi_version=mkosi_version)[0]
        )
    except SevimgError:
        target.unlink(missing_ok=True)
        raise

    out.print(f"wrote {display} ({len(made.text.splitlines())} lines)", markup=False)
    for path, image_id in written:
        out.print(f"wrote {path}  ({image_id})", markup=False)
    print_problems(p for p in problems if not p.is_error)
    if asked.checked:
        shown = ", ".join(f"{k} {v}" for k, v in asked.versions.items()) or "none found"
        out.print(f"archive: versions from the release's repositories: {shown}", markup=False)
        for message in asked.errors:
            err.print(f"archive: error: {message}", style="red", markup=False)
        for message in asked.warnings:
            err.print(f"archive: warning: {message}", style="yellow", markup=False)
    else:
        err.print(f"archive: could not check the release's archive: {asked.reason}", markup=False)
    out.print("\nNext:", style="bold")
    first = (
        f"review the `versions:` read from the archive in {display}"
        if asked.versions
        else f"declare `versions:` (kernel, qemu, ovmf) in {display} from the release's repositories, so the SEV floors are checked"
    )
    fix = (
        f"fix what the archive lacks (above): `host:`/`guest:` add_packages or remove_packages, or an extra repository, in {display}"
        if asked.errors
        else f"check package names against the release's archive; add `host:`/`guest:` add_packages or remove_packages where they differ from images/{made.image.partition('-')[0]}.yaml"
    )
    steps = [
        first,
        fix,
        f"sevimg archive {made.image}",
        f"sevimg validate {made.image}",
        f"sevimg build {made.image}",
    ]
    for number, step in enumerate(steps, 1):
        out.print(f"  {number}. {step}", markup=False)
