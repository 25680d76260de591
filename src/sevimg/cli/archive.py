"""`sevimg archive`: check releases against their distributions' real repositories."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import click

from sevimg.cli.base import err, handle_errors, out
from sevimg.cli.group import Context, main, pass_ctx
from sevimg.cli.params import ImageName, Number
from sevimg.problems import SevimgError


@main.command()
@click.argument("images", nargs=-1, type=ImageName())
@click.option("--all", "all_images", is_flag=True, help="Check every release of the catalog.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option(
    "--markdown",
    "markdown_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also append the table as Markdown to this file (CI: $GITHUB_STEP_SUMMARY).",
)
@click.option(
    "--update",
    is_flag=True,
    help="Write the observed kernel, QEMU and OVMF versions into the release files.",
)
@click.option("--offline", is_flag=True, help="Use only the cache; say what it lacks.")
@click.option(
    "--timeout",
    type=Number(1, 600, "seconds"),
    default=30.0,
    show_default=True,
    help="Seconds a mirror may stay silent; each fetch as a whole ends within 10 minutes.",
)
@pass_ctx
@handle_errors
def archive(
    ctx: Context,
    images: Sequence[str],
    all_images: bool,
    as_json: bool,
    markdown_file: Path | None,
    update: bool,
    offline: bool,
    timeout: float,
) -> None:
    """Check IMAGES (or --all) against their distributions' real repositories.

    For each role: every package present (virtual packages resolved), the
    kernel, QEMU, OVMF and systemd versions the build would get against the
    declared versions and the SEV floors, and whether the OVMF package ships
    the SEV firmware file and the QEMU package the QEMU binary. Indexes are
    cached with HTTP validators (a second run asks only whether they changed).
    Exit 1 when a package is missing, a floor is not met, a file is missing,
    a declared version drifted (unless --update wrote it) or an archive
    cannot be read.
    """
    from sevimg.archive import report  # noqa: PLC0415 - lazy, see cli/group.py
    from sevimg.archive.fetch import Fetcher, Network  # noqa: PLC0415
    from sevimg.archive.run import check_entries  # noqa: PLC0415
    from sevimg.archive.update import update_file  # noqa: PLC0415
    from sevimg.catalog.index import families_by_distribution  # noqa: PLC0415
    from sevimg.progress import Board, shown  # noqa: PLC0415
    from sevimg.settings import load_local  # noqa: PLC0415

    if not images and not all_images:
        raise SevimgError(
            "name the images to check, or pass --all", hint="`sevimg list` shows them"
        )
    if images and all_images:
        raise SevimgError("pass image names or --all, not both")
    catalog = ctx.catalog
    names = list(images) if images else [n for n in catalog.names() if n not in catalog.broken]
    entries = catalog.select(names)
    if broken := [e.image for e in entries if e.records is None]:
        raise SevimgError(
            f"{', '.join(broken)} do not validate",
            [p for p in catalog.problems if p.is_error],
            hint="`sevimg validate` says why",
        )
    families = families_by_distribution(catalog)
    local = load_local(ctx.ws, {d for d, f in families.items() if f.is_apt})
    network = Network(
        proxy=local.proxy, offline=offline, timeout=timeout, settings=local.source or ""
    )
    fetcher = Fetcher(ctx.ws.cache_dir / "archive", network)
    board = Board(
        lambda line: err.print(line, markup=False),
        console=err if err.is_terminal else None,
    )

    def progress(image: str, what: str) -> None:
        for other in [key for key in board.tasks if key != image]:
            board.finish(other, "")
        board.stage(image, what)

    try:
        with shown(board):
            outcomes = check_entries(entries, local, fetcher, progress)
    finally:
        fetcher.close()

    updated: list[str] = []
    if update:
        by_image = {e.image: e for e in entries}
        for outcome in outcomes:
            if outcome.failure:
                continue
            observed: dict[str, str] = {}
            for rep in sorted(outcome.reports, key=lambda r: r.role != "host"):
                for c in rep.components:
                    if (
                        c.kind in ("kernel", "qemu", "ovmf")
                        and c.upstream
                        and c.kind not in observed
                    ):
                        observed[c.kind] = c.upstream
            entry = by_image[outcome.image]
            if observed and update_file(entry.release, observed):
                updated.append(entry.release.display)

    if markdown_file is not None:
        try:
            with markdown_file.open("a", encoding="utf-8") as handle:
                handle.write(report.markdown(outcomes))
        except OSError as exc:
            raise SevimgError(f"cannot write {markdown_file}: {exc.strerror or exc}") from None
    if as_json:
        data = report.as_json(outcomes, fetcher.requests, fetcher.not_modified)
        data["updated"] = updated
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        out.print(report.table(outcomes))
        for severity, message in report.problems(outcomes):
            err.print(
                f"{severity}: {message}",
                style="red" if severity == "error" else "yellow",
                markup=False,
            )
        out.print(
            f"{fetcher.requests} HTTP requests ({fetcher.not_modified} answered 'not modified'), "
            f"cache {ctx.ws.display(fetcher.cache)}",
            markup=False,
        )
        for path in updated:
            out.print(f"updated {path}", markup=False)
    failed = [o for o in outcomes if not o.ok]
    if updated:  # drift written is drift resolved; anything else still fails
        failed = [
            o
            for o in failed
            if o.failure
            or any(m for r in o.reports for m in r.errors if "`sevimg archive --update`" not in m)
        ]
    if failed:
        raise SystemExit(1)
