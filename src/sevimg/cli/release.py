"""Release commands: publish, merge-artifacts, ci."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import click
from rich.table import Table

from sevimg.atomic import write_file_atomic
from sevimg.cli.base import artifact_folder_option, err, handle_errors, out
from sevimg.cli.group import Context, main, pass_ctx
from sevimg.problems import SevimgError
from sevimg.progress import transfer_bar
from sevimg.redact import redact_text
from sevimg.release import ci as ci_module
from sevimg.release import github, measurements
from sevimg.release.folder import merge_artifact_folders
from sevimg.release.plan import Plan, check_tag
from sevimg.release.publish import human_size
from sevimg.release.publish import publish as publish_folder

# Uploads smaller than this finish too fast for a progress bar to help.

# Tests replace this to run through rate limits and backoff without sleeping.
CLOCK: github.Clock = github.SystemClock()


class ConsoleReporter:
    """Steps on stdout, warnings on stderr (so a failure leaves one line there), bars on a terminal."""

    def info(self, message: str) -> None:
        """One step."""
        out.print(redact_text(message), markup=False, highlight=False)

    def warn(self, message: str) -> None:
        """Something to look at."""
        err.print(f"warning: {redact_text(message)}", style="yellow", markup=False, highlight=False)

    @contextlib.contextmanager
    def progress(self, name: str, total: int) -> Iterator[github.ProgressFn]:
        """A rich bar when stderr is a terminal and the upload is large; else nothing."""
        with transfer_bar(err, name, total) as bar:
            yield bar or (lambda _: None)


def print_plan(plan: Plan) -> None:
    """The plan as a table on stdout: per asset the action, type, size and why."""
    what = {
        "create": f"create it as a draft {'prerelease' if plan.prerelease else 'release'}, published after the uploads",
        "publish": "a draft left by an earlier run: finish it and publish it",
        "update": "exists: replace changed assets in place",
    }[plan.release_action]
    out.print(f"release {plan.tag} of {plan.repo}: {what}", markup=False)
    for leftover in plan.cleanup:
        out.print(
            f"  remove {leftover.name} (state {leftover.state}, left by an interrupted upload)",
            markup=False,
        )
    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in ("action", "asset", "content type", "size", "why"):
        table.add_column(column, no_wrap=True)
    for item in plan.items:
        table.add_row(item.action, item.name, item.content_type, human_size(item.size), item.reason)
    out.print(table)
    out.print(
        f"{plan.count('create')} to create, {plan.count('replace')} to replace, {plan.count('keep')} to keep",
        markup=False,
    )


def _default_folder(ctx: Context) -> Path:
    """out/ of the workspace, or ./out outside one."""
    try:
        return ctx.ws.out_dir
    except SevimgError:
        return Path("out")


@main.command()
@click.argument("images", nargs=-1)
@click.option(
    "--repo",
    metavar="OWNER/NAME",
    envvar="GITHUB_REPOSITORY",
    show_envvar=True,
    help="The GitHub repository to publish to.",
)
@click.option(
    "--tag", required=True, help="The release tag: devel (a prerelease) or vX.Y.Z (a release)."
)
@artifact_folder_option("folder")
@click.option(
    "--api-url",
    metavar="URL",
    help="GitHub's REST API (default: GITHUB_API_URL, else https://api.github.com).",
)
@click.option(
    "--token",
    metavar="TOKEN",
    help="A token with contents: write. Default: GITHUB_TOKEN, else `gh auth token`. "
    "Prefer the variable: a command-line argument is visible to other users of the machine.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print what would be created, replaced and kept; change nothing.",
)
@click.option(
    "--allow-debug",
    is_flag=True,
    help="Publish debug images (-debug, console autologin) too. They never get a dispatch "
    "content type, so dispatch does not boot them.",
)
@pass_ctx
@handle_errors
def publish(
    ctx: Context,
    images: Sequence[str],
    repo: str | None,
    tag: str,
    folder: Path | None,
    api_url: str | None,
    token: str | None,
    dry_run: bool,
    allow_debug: bool,
) -> None:
    """Publish the artifacts of IMAGES (default: all in the folder) to a GitHub release.

    \b
    Host images are uploaded as application/vnd.dispatch+efi, so dispatch
    boots them; guests, manifests and SHA256SUMS get ordinary types. The
    folder is verified first (SHA256SUMS, manifests). A new release is a
    draft until every asset is up; a changed asset is uploaded under a
    temporary name, checked against GitHub's digest, and only then takes
    the old one's place. Debug images are refused unless --allow-debug.
    Beside them goes measurements.json: each image's UKI SHA-256, the expected
    SNP measurement of its guest with the OVMF and vCPUs it assumes, and the
    source commit (GITHUB_SHA, else the checkout's HEAD).
    """
    if not repo:
        raise SevimgError("name the repository with --repo OWNER/NAME (or set GITHUB_REPOSITORY)")
    # Every name is checked before anything is read or sent: a bad one must
    # never take the token to another URL.
    from_env = (
        click.get_current_context().get_parameter_source("repo")
        is click.core.ParameterSource.ENVIRONMENT
    )
    github.check_repo(repo, "GITHUB_REPOSITORY" if from_env else "--repo")
    check_tag(tag)
    api = github.resolve_api_url(api_url, os.environ)
    folder = folder or _default_folder(ctx)
    secret = github.resolve_token(token, os.environ, api_url=api)
    if secret is None and not dry_run:
        raise SevimgError(
            "no GitHub token: pass --token, set GITHUB_TOKEN, or log in with `gh auth login`",
            hint="the token needs contents: write on the repository",
        )
    reporter = ConsoleReporter()
    try:
        with github.GitHub(repo, secret, api_url=api, clock=CLOCK, log=reporter.info) as gh:
            if secret is None:
                reporter.warn("no token: planning from what anyone can see (drafts are hidden)")
            plan, outcome = publish_folder(
                gh,
                folder,
                tag,
                images=images,
                reporter=reporter,
                dry_run=dry_run,
                on_plan=print_plan if dry_run else None,
                allow_debug=allow_debug,
                commit=measurements.source_commit(ctx.ws.root),
            )
    except SevimgError:
        raise
    except Exception as exc:
        # Not a failure we expected: still one line, and still without the token.
        text = redact_text(f"{type(exc).__name__}: {exc}")
        if secret is not None:
            text = secret.scrub(text)
        raise SevimgError(
            f"publishing failed unexpectedly ({text}); this is a bug in sevimg"
        ) from None
    if outcome is None:
        out.print("dry run: nothing was changed", markup=False)
        return
    out.print(
        f"published {len(plan.items)} assets to {outcome.release.html_url or plan.tag}: "
        f"{len(outcome.created)} created, {len(outcome.replaced)} replaced, {len(outcome.kept)} kept",
        markup=False,
    )


@main.command("merge-artifacts")
@click.argument(
    "sources", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path)
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The merged folder (new, or empty).",
)
@click.option(
    "--allow-debug",
    is_flag=True,
    help="Merge debug images (-debug, console autologin) too; refused by default.",
)
@handle_errors
def merge_artifacts(sources: Sequence[Path], output: Path, allow_debug: bool) -> None:
    """Merge the artifact folders of several builds into one, with one SHA256SUMS.

    CI builds each release on its own runner; this joins their out/ folders
    for `sevimg publish`. Every folder is verified first, and the same file
    from two builds must be identical. Debug images are refused unless
    --allow-debug. Logs are not merged; a failed merge leaves nothing behind.
    """
    names = merge_artifact_folders(list(sources), output, allow_debug=allow_debug)
    out.print(
        f"merged {len(sources)} folders into {output}: {len(names)} files and SHA256SUMS",
        markup=False,
    )


@main.command()
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Where the workflow goes (default: {ci_module.WORKFLOW_PATH} in the workspace).",
)
@click.option(
    "--stdout", "to_stdout", is_flag=True, help="Print the workflow instead of writing it."
)
@click.option(
    "--check", is_flag=True, help="Exit 1 if the file differs from what the catalog makes."
)
@pass_ctx
@handle_errors
def ci(ctx: Context, output: Path | None, to_stdout: bool, check: bool) -> None:
    """Generate the GitHub Actions workflow that builds and publishes the catalog.

    One matrix entry per release (with its roles): install mkosi, `sevimg
    build`, upload out/; then one job merges the builds and publishes them
    on pushes to main (release `devel`) and on v* tags. Releases with errors
    are left out, and said so.
    """
    if to_stdout and check:
        raise SevimgError("pass --stdout or --check, not both")
    workflow = ci_module.generate(ctx.catalog)
    target = output or ctx.ws.root / ci_module.WORKFLOW_PATH
    shown = ctx.ws.display(target)
    for image, errors in workflow.skipped:
        err.print(
            f"skipped {image}: {errors} error{'s' if errors != 1 else ''} (see `sevimg validate {image}`)",
            style="yellow",
            markup=False,
        )
    if to_stdout:
        click.echo(workflow.text, nl=False)
        return
    if check:
        if not target.is_file():
            raise SevimgError(f"{shown} does not exist", hint="run `sevimg ci` and commit the file")
        found = ci_module.differences(target.read_text(encoding="utf-8"), workflow)
        if found:
            for line in found:
                err.print(f"{shown}: {line}", markup=False)
            raise SevimgError(
                f"{shown} is stale: it does not match the catalog",
                hint=f"run `sevimg ci{'' if output is None else f' --output {shown}'}` and commit {shown}",
            )
        out.print(f"{shown} is up to date ({len(workflow.entries)} releases)", markup=False)
        return
    write_file_atomic(target, workflow.text.encode())
    out.print(f"wrote {shown} ({len(workflow.entries)} releases)", markup=False)
