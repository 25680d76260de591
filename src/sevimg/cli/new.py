"""`sevimg new`: start a release file, fill in its versions from the archive, render it."""

from __future__ import annotations

import click

from sevimg.atomic import write_file_atomic
from sevimg.catalog.index import split_image_name
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
    help="Carry over the overrides of this release of the same distribution "
    "(default: the newest numbered release).",
)
@click.option("--bare", is_flag=True, help="Carry over no release's overrides.")
@click.option(
    "--codename", metavar="NAME", help="The codename mkosi's Release= takes (Debian, Ubuntu)."
)
@click.option(
    "--prerelease",
    is_flag=True,
    help="Mark it a pre-release, built from the distribution's development repositories: "
    "the codename is read from the archive (Ubuntu's devel, Debian's testing) or the "
    "catalog (Fedora rawhide); warns when the release is out already.",
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
    bare: bool,
    codename: str | None,
    prerelease: bool,
    no_render: bool,
    offline: bool,
    mkosi_version: str | None,
) -> None:
    """Start a new release file images/DISTRO-RELEASE.yaml, then validate and render it.

    The file holds only what the distribution's defaults cannot: release,
    codename and status, and the own overrides of the newest numbered release
    of the distribution (--from another, --bare none), which it lists. With
    --prerelease and no --codename the distribution's archive names the
    development series (images/<distro>.yaml repository.development_suite).
    When the release's archive can be read (`sevimg archive`), the kernel,
    QEMU and OVMF versions it carries are written in, and missing packages or
    a missing SEV firmware file are reported.
    """
    catalog = ctx.catalog
    note, asked_archive = "", ""
    parts = split_image_name(image)
    if prerelease and parts and parts[0] in catalog.distros:
        if offline:
            asked_archive = "offline: the archive was not asked for the development series"
        else:
            from sevimg.archive.onboard import development_verdict  # noqa: PLC0415

            try:
                verdict = development_verdict(catalog, *parts)
            except SevimgError as exc:
                asked_archive = (
                    f"the archive could not be asked for the development series: {exc.message}"
                )
            else:
                if verdict is not None:
                    if verdict.warning:
                        err.print(f"warning: {verdict.warning}", style="yellow", markup=False)
                    if codename is None and verdict.codename:
                        codename, note = verdict.codename, verdict.note
    try:
        made = new_release(
            catalog,
            image,
            from_image=from_image,
            codename=codename,
            prerelease=prerelease,
            bare=bare,
            codename_note=note,
        )
    except SevimgError as exc:
        if asked_archive and "--codename" in exc.message:
            raise SevimgError(
                f"{exc.message} ({asked_archive})", exc.problems, hint=exc.hint
            ) from None
        raise
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
    if note:
        out.print(f"codename {codename}: {note}", markup=False)
    if made.copied:
        out.print(
            f"carried over from images/{made.source}.yaml: {', '.join(made.copied)} "
            "(--from another release, --bare for none)",
            markup=False,
        )
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
    if asked.versions:
        first = f"review the `versions:` read from the archive in {display}"
    elif "versions" in made.copied:  # carried over, not read: they are another release's
        first = (
            f"the `versions:` in {display} are {made.source}'s: `sevimg archive {made.image} "
            "--update` writes the release's own once its archive can be read"
        )
    else:
        first = f"declare `versions:` (kernel, qemu, ovmf) in {display} from the release's repositories, so the SEV floors are checked"
    fix = (
        f"fix what the archive lacks (above): `host:`/`guest:` add_packages or remove_packages, or an extra repository, in {display}"
        if asked.errors
        else f"check package names against the release's archive; add `host:`/`guest:` add_packages or remove_packages where they differ from images/{made.image.partition('-')[0]}.yaml"
    )
    steps = [first]
    if made.copied:
        steps.append(
            f"check what was carried over from images/{made.source}.yaml "
            f"({', '.join(made.copied)}) still holds for {made.image}"
        )
    steps += [
        fix,
        f"sevimg archive {made.image}",
        f"sevimg validate {made.image}",
        f"sevimg build {made.image}",
    ]
    for number, step in enumerate(steps, 1):
        out.print(f"  {number}. {step}", markup=False)
