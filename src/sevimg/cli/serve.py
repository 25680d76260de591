"""`sevimg serve`: HTTP-boot the host images of an artifact folder, like dispatch does."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Group
from rich.live import Live
from rich.text import Text

from sevimg import interrupt, lock
from sevimg.cli.base import artifact_folder_option, handle_errors, out
from sevimg.cli.group import Context, main, pass_ctx
from sevimg.cli.kds import default_cache, kds_cache_option
from sevimg.problems import SevimgError
from sevimg.redact import redact_text
from sevimg.serve.files import check_poweroff, load_jobs
from sevimg.serve.jobs import Job, State
from sevimg.serve.mdns import SERVICE, advertise, publisher
from sevimg.serve.results import SUMMARY, Results
from sevimg.serve.server import Handle, parse_bind, serve
from sevimg.serve.table import counts, jobs_table

if TYPE_CHECKING:
    from sevimg.serve.issues import Issues
    from sevimg.serve.kds import KdsCache

KDS_DEFAULT = "https://kdsintf.amd.com"  # sevimg_cert.kds.DEFAULT_URL, without importing it


def _default_folder(ctx: Context) -> Path:
    """out/ of the workspace, or ./out outside one."""
    try:
        return ctx.ws.out_dir
    except SevimgError:
        return Path("out")


def _say(text: str) -> None:
    stamp = time.strftime("%H:%M:%S", time.gmtime())
    out.print(f"{stamp} {redact_text(text)}", markup=False, highlight=False)


def _kds_cache(folder: Path, url: str | None, *, offline: bool) -> KdsCache:
    """The KDS cache hosts are answered from; SevimgError for a bad --kds."""
    from sevimg.serve.kds import KdsCache  # noqa: PLC0415 - cryptography only when serving

    if offline and url:
        raise SevimgError("--kds and --kds-offline: give one (offline fetches from nowhere)")
    try:
        cache = KdsCache(folder, None if offline else (url or KDS_DEFAULT), log=_say)
    except ValueError as exc:
        raise SevimgError(f"--kds: {exc}") from None
    where = (
        "the cache only (--kds-offline)"
        if offline
        else f"filled from {redact_text(cache.upstream or '')}"
    )
    _say(f"KDS cache {folder}: {where}")
    return cache


def _open_issues(repo: str) -> Issues:
    """The GitHub issue filer for `repo`, its milestones loaded (which also checks the token)."""
    from sevimg.release import github_access  # noqa: PLC0415
    from sevimg.retry import RetryPolicy  # noqa: PLC0415
    from sevimg.serve.issues import Issues  # noqa: PLC0415 - httpx only with --github-issues

    github_access.check_repo(repo, "--github-issues")
    api_url = github_access.resolve_api_url(None, os.environ)
    token = github_access.resolve_token(None, os.environ, api_url=api_url)
    if token is None:
        raise SevimgError(
            "--github-issues needs a GitHub token: set GITHUB_TOKEN, or log in with `gh auth login`",
            hint="the token needs Issues: write on the repository (and read access to it)",
        )
    # A host waits for its PUT's answer while the issue is filed: never an hour-long rate-limit wait.
    patience = RetryPolicy(attempts=3, max_wait=60.0, max_rate_limit_waits=2)
    issues = Issues(repo, token, api_url=api_url, log=_say, retry=patience)
    try:
        milestones = issues.load_milestones()
    except BaseException:
        issues.close()
        raise
    _say(f"filing reports as issues of {repo} ({len(milestones)} milestones known)")
    return issues


@contextlib.contextmanager
def _display(handle: Handle) -> Iterator[Live | None]:
    """A live table on a terminal; plain lines elsewhere (logs, pipes)."""
    if not out.is_terminal:
        yield None
        return
    with Live(_view(handle), console=out, refresh_per_second=2, transient=True) as live:
        yield live


def _view(handle: Handle) -> Group:
    jobs = handle.board.snapshot()
    return Group(
        jobs_table(jobs, title=f"sevimg serve at {handle.url}"), Text(counts(jobs), style="dim")
    )


@main.command("serve")
@click.argument("filters", nargs=-1, metavar="[FILTER]...")
@artifact_folder_option("folder")
@click.option(
    "--bind",
    default="127.0.0.1:8080",
    show_default=True,
    metavar="ADDR:PORT",
    help="Where to listen. Serving a lab network is explicit: e.g. 0.0.0.0:8080. Port 0: any free port.",
)
@click.option("--path", "url_path", default="/dispatch", show_default=True, help="The URL path.")
@click.option(
    "--poweroff-efi",
    type=click.Path(dir_okay=False, path_type=Path),
    help="An EFI program served when no job is left (dispatch serves a power-off program); "
    "without it the answer is 404.",
)
@click.option(
    "--results",
    "results_dir",
    default=Path("results"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Where reports go: <image>-<UTC time>.md and .json, and {SUMMARY}.",
)
@click.option(
    "--github-issues",
    metavar="OWNER/REPO",
    help="Also file each report as an issue there, as dispatch does (token: GITHUB_TOKEN or "
    "`gh auth token`; API: GITHUB_API_URL).",
)
@click.option("--allow-debug", is_flag=True, help="Serve debug images (console autologin) too.")
@click.option(
    "--status-page/--no-status-page",
    default=True,
    show_default=True,
    help="Answer GET / with a live status page (jobs, saved results, their matrix) for browsers.",
)
@click.option(
    "--mdns",
    is_flag=True,
    help="Advertise the server as _dispatch._tcp (TXT path=…) through Avahi, as dispatch does.",
)
@click.option(
    "--kds",
    "kds_url",
    metavar="URL",
    help="Where the KDS cache fetches what it lacks (default: AMD's KDS, https://kdsintf.amd.com).",
)
@click.option(
    "--kds-offline",
    is_flag=True,
    help="Answer KDS requests from the cache only (fill it with `sevimg kds fetch`).",
)
@kds_cache_option
@click.option(
    "--keep-going",
    is_flag=True,
    help="Keep serving after every job reported (default: say so and exit).",
)
@pass_ctx
@handle_errors
def serve_command(
    ctx: Context,
    filters: Sequence[str],
    folder: Path | None,
    bind: str,
    url_path: str,
    poweroff_efi: Path | None,
    results_dir: Path,
    github_issues: str | None,
    allow_debug: bool,
    status_page: bool,
    mdns: bool,
    kds_url: str | None,
    kds_offline: bool,
    kds_cache: Path | None,
    keep_going: bool,
) -> None:
    """Serve the host images of an artifact folder to machines that HTTP-boot, like dispatch.

    \b
    The same API as dispatch: HEAD/GET hand the next job to a client (by IP)
    and stream its host-*.efi, POST marks it booting, PUT takes its one
    report. Reports land in --results; with --github-issues they also
    become issues. FILTERs keep images whose name contains any of them.
    Hosts get AMD's certificates and CRLs from serve too (/kds/…, from
    --kds-cache, filled from KDS on a miss), so they need to reach
    nothing but this machine.
    Ctrl-C stops it; the results stay. Exits 0 once every job reported,
    1 if a job failed (its issue could not be filed, or the host rebooted
    without reporting).
    """
    address = parse_bind(bind)
    source = folder or _default_folder(ctx)
    served = load_jobs(source, filters, allow_debug=allow_debug)
    poweroff = check_poweroff(poweroff_efi) if poweroff_efi is not None else None
    kds = _kds_cache(kds_cache or default_cache(ctx), kds_url, offline=kds_offline)
    results = Results(results_dir)
    results.prepare()
    # One server per results folder: two would overwrite each other's results.json.
    click.get_current_context().with_resource(
        lock.hold(results_dir, "the results folder", option="--results DIR")
    )
    avahi = publisher(address[0]) if mdns else None
    filer = _open_issues(github_issues) if github_issues else None
    try:
        handle = serve(
            served,
            bind=address,
            path=url_path,
            poweroff=poweroff,
            results=results,
            filer=filer,
            log=_say,
            kds=kds,
            status_page=status_page,
        )
        board = handle.board
        advert = None
        try:
            if avahi is not None:
                advert = advertise(avahi, handle.port, url_path)
                _say(f"advertised as {SERVICE} through Avahi")
            _run(handle, served.jobs, source, served.skipped, keep_going=keep_going)
        finally:
            if advert is not None:
                advert.stop()
            handle.stop()
            with contextlib.suppress(OSError):  # a failure to write it was said already
                results.write_summary(board.snapshot)
            final = board.snapshot()
            out.print(jobs_table(final))
            out.print(f"{counts(final)}; results in {results.folder}", markup=False)
    finally:
        if filer is not None:
            filer.close()
    failed = [j for j in final if j.state is State.FAILED]
    if failed:
        raise SevimgError(
            f"{len(failed)} job{'s' if len(failed) > 1 else ''} failed: "
            + "; ".join(f"{j.name}: {j.note}" for j in failed)
        )


def _run(
    handle: Handle,
    jobs: tuple[Job, ...],
    source: Path,
    skipped: tuple[str, ...],
    *,
    keep_going: bool,
) -> None:
    """Serve until every job is done (unless keep_going) or a signal comes."""
    names = ", ".join(j.name for j in jobs)
    _say(f"serving {len(jobs)} job{'s' if len(jobs) != 1 else ''} from {source}: {names}")
    if skipped:
        _say(f"left out by the filters: {', '.join(skipped)}")
    if handle.config.status is not None:
        shown = handle.url.removesuffix(handle.config.path)
        page = "/status" if handle.config.path == "/" else "/"  # / is the dispatch path then
        _say(f"status page: {shown}{page} (the jobs, saved results and their matrix)")
    _say(f"listening on {handle.url} (HTTP-boot from it; Ctrl-C stops)")
    if handle.host in ("127.0.0.1", "::1"):
        _say(
            f"QEMU reaches it as http://10.0.2.2:{handle.port}{handle.config.path} "
            "(-netdev user,bootfile=URL -device virtio-net-pci,netdev=…,romfile=); "
            "a lab network needs --bind 0.0.0.0:PORT"
        )
    announced = False
    with _display(handle) as live:
        while True:
            done = handle.board.all_done()
            if done and not announced:
                _say(
                    "every job has reported"
                    + ("; still serving (--keep-going)" if keep_going else "")
                )
                announced = True
            if done and not keep_going and handle.quiet():
                return
            handle.board.wait(0.5)
            interrupt.check()  # a safe point: a signal whose exception got lost still ends serve
            if live is not None:
                live.update(_view(handle))
