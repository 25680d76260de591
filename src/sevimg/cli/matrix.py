"""`sevimg matrix`: the certification matrix from serve's results folders and certificate issues."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import click

from sevimg.atomic import write_file_atomic
from sevimg.cli.base import handle_errors, out
from sevimg.cli.group import Context, main, pass_ctx
from sevimg.lab import markdown as md
from sevimg.lab.markers import planned_update
from sevimg.lab.model import Matrix, matrix_of
from sevimg.lab.names import catalog_names
from sevimg.lab.page import matrix_page
from sevimg.lab.records import Record, read_folders
from sevimg.problems import SevimgError


def _issues(repo: str) -> list[Record]:
    from sevimg.lab.issues import CertificateIssues  # noqa: PLC0415 - httpx only when asked
    from sevimg.release import github_access  # noqa: PLC0415

    github_access.check_repo(repo, "--github-issues")
    api_url = github_access.resolve_api_url(None, os.environ)
    # A public repository's issues need no token; one is used when there is one (rate limits).
    token = github_access.resolve_token(None, os.environ, api_url=api_url)
    with CertificateIssues(repo, token, api_url=api_url) as api:
        return api.records()


@main.command("matrix")
@click.argument(
    "folders", nargs=-1, type=click.Path(file_okay=False, path_type=Path), metavar="[RESULTS]..."
)
@click.option(
    "--github-issues",
    metavar="OWNER/REPO",
    help="Also read the repository's issues labelled `certificate` (token: GITHUB_TOKEN or "
    "`gh auth token`, optional for a public repository; API: GITHUB_API_URL).",
)
@click.option(
    "--markdown",
    "markdown_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the matrix as a Markdown file.",
)
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the matrix as a standalone HTML page.",
)
@click.option(
    "--update",
    "update_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Rewrite the part of FILE between {md.START} and {md.END} (each on a line of its own); "
    "the rest stays. Repeatable.",
)
@click.option("--title", default="SEV-SNP certification matrix", show_default=True)
@pass_ctx
@handle_errors
def matrix_command(
    ctx: Context,
    folders: Sequence[Path],
    github_issues: str | None,
    markdown_file: Path | None,
    html_file: Path | None,
    update_files: Sequence[Path],
    title: str,
) -> None:
    """Write the certification matrix from serve's results folders and/or certificate issues.

    \b
    One table per processor generation (its proc- label), a row per
    operating system (its os- label, named from the catalog), a column per
    certification version; each cell is the newest run's level with a link
    (✅ the certificate, ❌ a failed run). Runs without those labels are
    listed apart. Without --markdown, --html or --update the Markdown goes
    to standard output. The same input always gives the same bytes.
    """
    if not folders and not github_issues:
        raise SevimgError(
            "nothing to read: give serve's results folders, --github-issues OWNER/REPO, or both",
            hint="e.g. `sevimg matrix results/` or `sevimg matrix --github-issues AMDEPYC/sev-certify`",
        )
    issues = _issues(github_issues) if github_issues else []
    try:
        ws = ctx.ws
    except SevimgError:  # outside a workspace: rows are named by their labels' IDs
        ws = None
    names = catalog_names(ws)

    def matrix_for(target: Path | None) -> Matrix:
        # Links to saved results are relative to the folder each output is written to.
        base = target.parent if target is not None else None
        return matrix_of([*read_folders(folders, base), *issues], names)

    # Everything is made (and every --update document checked) before anything is written.
    writes: list[tuple[Path, str, str]] = []  # (path, new text, what to say)
    if markdown_file is not None:
        writes.append((markdown_file, md.document(matrix_for(markdown_file)), "wrote"))
    if html_file is not None:
        writes.append((html_file, matrix_page(matrix_for(html_file), title=title), "wrote"))
    for path in update_files:
        before, after = planned_update(path, md.body(matrix_for(path)))
        writes.append((path, after, "updated" if after != before else "unchanged"))
    for path, text, said in writes:
        if said != "unchanged":
            write_file_atomic(path, text.encode())
        out.print(f"{said} {path}", markup=False)
    if not writes:
        click.echo(md.document(matrix_for(Path.cwd() / "-")), nl=False)
