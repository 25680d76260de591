"""`sevimg reproduce`: rebuild an artifact folder's (or a published release's) images and compare."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
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
from sevimg.progress import transfer_bar
from sevimg.release import github
from sevimg.release.download import ReleaseReader
from sevimg.release.published import (
    download_release,
    measurement_disagreements,
    parse_release_ref,
    source_commits,
)

# Tests replace this to run through rate limits, backoff and deadlines without sleeping.
CLOCK: github.Clock = github.SystemClock()
DEFAULT_DEADLINE = 3600.0  # seconds for the whole download of a release


@contextlib.contextmanager
def _bar(name: str, total: int) -> Iterator[github.ProgressFn | None]:
    """A rich bar on stderr for a large download on a terminal; else nothing."""
    with transfer_bar(err, name, total) as bar:
        yield bar


@main.command(name="reproduce")
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--release",
    "release_ref",
    metavar="OWNER/NAME@TAG | URL",
    help="Reproduce a published GitHub release instead of a FOLDER: OWNER/NAME@TAG, or its "
    "address https://github.com/OWNER/NAME/releases/tag/TAG.",
)
@click.option(
    "--image",
    "images",
    multiple=True,
    metavar="IMAGE",
    help="Only this image: an image id (ROLE-NAME, as in the manifests' names), or a "
    "catalog name for both roles; repeatable. Default: every image.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the rebuilt images go (default: reproduce/<folder name> in the build cache).",
)
@click.option(
    "--download-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="--release: where the release's files are downloaded (default: "
    "releases/OWNER+NAME+TAG in the build cache). Files already there with the SHA-256 "
    "the release lists are not downloaded again.",
)
@click.option(
    "--api-url",
    metavar="URL",
    help="--release: GitHub's REST API (default: GITHUB_API_URL, else https://api.github.com).",
)
@click.option(
    "--token",
    metavar="TOKEN",
    help="--release: a token, for private repositories and GitHub's higher rate limits "
    "(public releases need none). Default: GITHUB_TOKEN, else `gh auth token`. "
    "Prefer the variable: a command-line argument is visible to other users of the machine.",
)
@click.option(
    "--deadline",
    type=click.FloatRange(min=1.0),
    default=DEFAULT_DEADLINE,
    show_default=True,
    metavar="SECONDS",
    help="--release: the whole download must finish within this.",
)
@click.option(
    "--tools-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Take the pinned payload tools from this folder (offline builds).",
)
@pass_ctx
@handle_errors
def reproduce_command(
    ctx: Context,
    folder: Path | None,
    release_ref: str | None,
    images: Sequence[str],
    output: Path | None,
    download_dir: Path | None,
    api_url: str | None,
    token: str | None,
    deadline: float,
    tools_dir: Path | None,
) -> None:
    """Rebuild the images of an artifact FOLDER, or of a published --release, and compare them.

    \b
    With --release the release's SHA256SUMS, manifests, UKIs and
    measurements.json are downloaded first (GitHub's API; a token only if
    one is configured), each checked against SHA256SUMS, into
    --download-dir; then they are reproduced like a folder.

    Every image is rebuilt from the inputs its manifest records: the catalog
    files (their SHA-256 must match this workspace's, else the differing files
    are named and nothing is built), the same mkosi version, the pinned payload
    tools, and exactly the recorded package versions (apt installs
    `name=version`; take them from the mirror or snapshot set in
    sevimg.local.yaml). Then each UKI is compared byte for byte with the
    folder's, and a host's expected measurement of its guest with the recorded
    one (and with measurements.json, when the folder has one). Where they
    differ the report says where: which UKI sections, and for the initrd
    which files and which of their attributes (mode, owner, mtime, content).

    Exit status 0 only when every image is identical; 1 when one differs,
    the inputs do, or the release cannot be read.

    \b
    Examples:
      sevimg reproduce out/
      sevimg reproduce --release acme/sev-images@v1.2.0
      sevimg reproduce --release https://github.com/acme/sev-images/releases/tag/devel \\
          --image debian-13
    """
    if (folder is None) == (release_ref is None):
        raise click.UsageError("name an artifact FOLDER or a --release, one of them")
    if release_ref is None:
        for name, value in (
            ("--download-dir", download_dir),
            ("--api-url", api_url),
            ("--token", token),
        ):
            if value is not None:
                raise click.UsageError(f"{name} is for --release")
    ws = ctx.ws
    if release_ref is not None:
        api = github.resolve_api_url(api_url, os.environ)
        ref = parse_release_ref(release_ref, api_url_set=api != github.DEFAULT_API_URL)
        secret = github.resolve_token(token, os.environ, api_url=api)
        local = settings.load_local(ws)
        cache_dir = (local.cache_dir or ws.cache_dir / "build").resolve()
        folder = (download_dir or cache_dir / "releases" / ref.folder_name).resolve()
        out.print(
            f"reading release {ref} from {api} "
            f"({'token from ' + secret.source if secret else 'no token'})",
            markup=False,
        )
        with ReleaseReader(
            ref.repo,
            secret,
            deadline=deadline,
            api_url=api,
            clock=CLOCK,
            log=lambda line: out.print(line, markup=False),
        ) as reader:
            download_release(
                reader,
                ref,
                folder,
                images=images,
                log=lambda line: out.print(f"  {line}", markup=False),
                progress=_bar,
            )
        out.print(f"release {ref} is in {folder}, checked against its SHA256SUMS", markup=False)
    assert folder is not None
    _reproduce(ctx, folder, images, output, tools_dir)


def _reproduce(
    ctx: Context,
    folder: Path,
    images: Sequence[str],
    output: Path | None,
    tools_dir: Path | None,
) -> None:
    """Rebuild the images of `folder` (those of `images`, or all) and report; exit 1 unless identical."""
    ws = ctx.ws
    recorded = reproduce.select(reproduce.recorded_images(folder.resolve()), images, folder)
    published = measurement_disagreements(folder, [r.manifest for r in recorded])
    debug = {r.manifest.debug for r in recorded}
    if len(debug) != 1:
        raise SevimgError(f"{folder} mixes debug and release images; reproduce them apart")
    catalog_images = sorted({r.manifest.image for r in recorded})
    checked, orphans = check_catalog(ctx.catalog, catalog_images, debug=debug.pop())
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
        commits = source_commits(folder, [r.manifest.image_id for r in recorded])
        where = (
            f"commit {' or '.join(commits)} (measurements.json's source_commit)"
            if commits
            else "the commit the images were built from"
        )
        raise SevimgError(
            f"this workspace's inputs differ from those {folder} was built from; nothing was built",
            hint=f"check out {where} (or the catalog files the manifests list), then retry",
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
    for line in published:
        out.print(f"DIFFERS: {line}", markup=False)
    out.print(reproduce.summary(verdicts), markup=False)
    if published:
        out.print(
            f"not reproduced: the folder's measurements.json disagrees with its manifests "
            f"({len(published)} difference{'s' if len(published) != 1 else ''})",
            markup=False,
        )
    if published or not all(v.identical for v in verdicts):
        raise SystemExit(1)
