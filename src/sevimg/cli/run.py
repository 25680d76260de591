"""`sevimg run`: boot a built UKI, as an SEV-SNP guest or without SEV (guests and hosts)."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.table import Table

from sevimg import lock
from sevimg.artifacts import names
from sevimg.artifacts.manifest import load_manifest
from sevimg.atomic import write_file_atomic
from sevimg.catalog.spec import Role
from sevimg.cli.base import artifact_folder_option, err, handle_errors, out, styled
from sevimg.cli.group import Context, main, pass_ctx
from sevimg.cli.params import ROLE_CHOICE, ImageName, Number
from sevimg.machine import hostrun, run
from sevimg.problems import SevimgError
from sevimg.progress import Board, shown
from sevimg.release import folder
from sevimg.render import launch
from sevimg.render.launch import MIN_MEMORY_MB
from sevimg.workspace import Workspace
from sevimg_cert import framing as cert_framing
from sevimg_cert import result as cert_result

SNP_SYSFS = Path("/sys/module/kvm_amd/parameters/sev_snp")


@main.command("run")
@click.argument("image", type=ImageName(role_prefix=True, efi_path=True))
@click.option(
    "--role",
    type=ROLE_CHOICE,
    default="guest",
    show_default=True,
    help="guest: the guest UKI; host: the host UKI with --no-sev, waiting for its certification result.",
)
@click.option(
    "--no-sev",
    is_flag=True,
    help="Boot without SEV under plain QEMU and OVMF and wait for the guest's readiness marker "
    "(--role host: for the host's framed result).",
)
@click.option("--dry-run", is_flag=True, help="Print the QEMU command instead of running it.")
@click.option(
    "--memory",
    type=Number(MIN_MEMORY_MB, run.MAX_MEMORY_MB, "MB", integer=True),
    default=None,
    help=f"Memory in MB ({MIN_MEMORY_MB} to {run.MAX_MEMORY_MB}; default {MIN_MEMORY_MB}, "
    f"--role host {hostrun.HOST_MIN_MEMORY_MB} and at least that).",
)
@click.option(
    "--timeout",
    type=Number(1, run.MAX_TIMEOUT, "seconds"),
    default=None,
    help=f"--no-sev: seconds to wait for the marker (default {run.GUEST_TIMEOUT:.0f}, "
    f"--role host {hostrun.HOST_TIMEOUT:.0f}).",
)
@click.option(
    "--accel",
    type=click.Choice(["auto", "kvm", "tcg"]),
    default="auto",
    show_default=True,
    help="--no-sev: KVM, TCG, or KVM falling back to TCG.",
)
@click.option(
    "--qemu",
    metavar="PATH",
    help="QEMU binary (default: qemu-system-x86_64 on PATH, or /usr/libexec/qemu-kvm).",
)
@click.option(
    "--firmware",
    metavar="PATH",
    help="OVMF build (default: the AMD SEV build for SNP, the ordinary one for --no-sev).",
)
@artifact_folder_option("from_dir")
@click.option(
    "--channel",
    "channel_socket",
    metavar="SOCKET",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Give the guest the attestation channel (a virtio-serial port) on this unix socket.",
)
@click.option(
    "--attest",
    is_flag=True,
    help="--no-sev: once ready, ask the guest for an attestation report over a fresh nonce "
    "on the channel and print its answer.",
)
@click.option(
    "--results",
    "results_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="--role host: write result.json and result.md here (default: "
    "<artifact folder>/results/host-<image>/).",
)
@click.option("-v", "--verbose", is_flag=True, help="--no-sev: echo the guest's console.")
@pass_ctx
@handle_errors
def run_command(
    ctx: Context,
    image: str,
    role: str,
    no_sev: bool,
    dry_run: bool,
    memory: int | None,
    timeout: float | None,
    accel: str,
    qemu: str | None,
    firmware: str | None,
    from_dir: Path | None,
    channel_socket: Path | None,
    attest: bool,
    results_dir: Path | None,
    verbose: bool,
) -> None:
    """Launch the guest UKI of IMAGE (debian-13, or a path to a .efi) as an SEV-SNP guest.

    The command is the one from AMD's SEV getting-started guide: q35, EPYC-v4,
    memory-backend-memfd, sev-snp-guest with kernel-hashes=on, the AMD SEV
    OVMF (OVMF.amdsev.fd) and the UKI as -kernel. The C-bit position is read
    from CPUID (51 when it cannot be). With --no-sev the same UKI boots under
    plain QEMU and OVMF as a smoke test: exit 0 when the guest prints its
    readiness marker, non-zero with the console's last lines otherwise;
    SIGINT, SIGTERM or SIGHUP stop that QEMU and exit 130, 143 or 129.
    --channel SOCKET adds the attestation channel (a virtio-serial port,
    org.sevimg.attest); --no-sev --attest then asks the guest for a report
    over a fresh nonce and prints its answer (exit 1 unless it echoes the nonce).

    --role host --no-sev boots the host UKI the same way (at least 4096 MB,
    with a virtio-net user network so its harness's network-online wait
    ends), reads the framed certification result off the serial console,
    writes result.json and result.md, prints the summary, and exits 0 only
    for a pass result.
    """
    if role == "host" and (attest or channel_socket):
        raise SevimgError(
            "--attest and --channel are for guests; a host image makes its own channel"
        )
    if attest and not no_sev:
        raise SevimgError("--attest needs --no-sev (under SNP, the host image attests)")
    if attest and channel_socket:
        raise SevimgError("--attest makes its own channel: leave out --channel")
    extra = launch.channel_args(str(channel_socket)) if channel_socket else []
    if role == "host":
        if not no_sev:
            raise SevimgError(
                "a host image boots on bare metal; under QEMU it runs without SEV only",
                hint=f"sevimg run {image} --role host --no-sev",
            )
        _run_host(
            ctx,
            image,
            dry_run,
            memory,
            timeout,
            accel,
            qemu,
            firmware,
            from_dir,
            results_dir,
            verbose,
        )
        return
    memory = MIN_MEMORY_MB if memory is None else memory
    timeout = run.GUEST_TIMEOUT if timeout is None else timeout
    kernel = _uki(ctx, image, from_dir)
    paths = _search_paths(ctx)
    if no_sev:
        qemu_path, ovmf = _plain_tools(ctx, qemu, firmware, dry_run)
        if dry_run:
            _print_plain(kernel, memory, qemu_path, ovmf, accel, extra=extra)
            return
        result = _boot_plain(
            kernel,
            "the readiness marker",
            (qemu_path, ovmf, memory, timeout, accel, verbose),
            extra=extra,
            attest=attest,
        )
        if result.ready and not result.reason:
            out.print(
                f"ready after {result.seconds:.1f} s ({result.accel}): {result.marker_line}",
                markup=False,
            )
            if attest:
                _print_answer(result)
            return
        if result.ready:  # the channel failed
            err.print(f"sevimg: error: {result.reason}", style="bold red", markup=False)
            sys.exit(1)
        _fail_with_console(f"{kernel.name} did not become ready: {result.reason}", result)

    position, origin = run.cbit_position()
    firmware_path = firmware or next(
        (p for p in paths.sev_firmware if Path(p).is_file()), paths.sev_firmware[0]
    )
    qemu_path = qemu or next((q for q in paths.qemu if shutil.which(q)), paths.qemu[0])
    argv = run.snp_argv(
        kernel,
        memory_mb=memory,
        qemu=qemu_path,
        firmware=firmware_path,
        cbitpos=position,
        extra=extra,
    )
    if dry_run:
        out.print(f"# cbitpos {position}: {origin}", markup=False)
        if not Path(firmware_path).is_file():
            out.print(f"# note: {firmware_path} does not exist on this machine", markup=False)
        out.print(shlex.join(argv), markup=False, soft_wrap=True)
        return
    snp = SNP_SYSFS.read_text().strip() if SNP_SYSFS.exists() else "missing"
    if snp not in ("Y", "1"):
        raise SevimgError(
            f"this machine cannot launch SEV-SNP guests (kvm_amd sev_snp: {snp})",
            hint="--dry-run prints the command; --no-sev boots the same UKI without SEV",
        )
    run.find_firmware([firmware_path], None, "AMD SEV firmware")
    run.find_qemu(qemu_path, paths.qemu)
    os.execvp(argv[0], argv)  # noqa: S606 - QEMU takes over the terminal, as a user would run it


def _print_answer(result: run.BootResult) -> None:
    """The guest's attestation answer, one field a line; exit 1 unless it echoed the nonce."""
    answer = result.answer
    assert answer is not None
    out.print(f"nonce sent: {result.nonce.hex()}", markup=False)
    out.print("the guest answered:", markup=False)
    for line in answer.text.splitlines()[1:-1]:
        key, _, value = line.partition("=")
        shown = f"{len(answer.report or b'')} bytes (base64)" if key == "report" else value
        out.print(f"  {key}: {shown}", markup=False, highlight=False)
    if answer.nonce != result.nonce:
        err.print(
            "sevimg: error: the guest's answer does not echo the nonce sent",
            style="bold red",
            markup=False,
        )
        sys.exit(1)


def _uki(ctx: Context, image: str, from_dir: Path | None, role: Role = "guest") -> Path:
    """The UKI of `role` for an image name (in the artifact folder), or the path given."""
    if image.endswith(names.ARTIFACT_SUFFIX):
        if not Path(image).is_file():
            raise SevimgError(f"{image} does not exist")
        return Path(image).resolve()
    return folder.built_uki(from_dir or ctx.ws.out_dir, image, role)


def _boot_plain(
    kernel: Path,
    waiting_for: str,
    how: tuple[str, str, int, float, str, bool],
    **options: Any,
) -> run.BootResult:
    """Say what is booted and awaited, then boot without SEV (`how`: qemu, ovmf, MB, s, accel, -v)."""
    qemu, ovmf, memory, timeout, accel, verbose = how
    out.print(
        f"booting {kernel.name} without SEV ({accel}), waiting up to {timeout:.0f} s for {waiting_for}…",
        markup=False,
    )
    # Elapsed time against the timeout and the console's last line: live on a
    # terminal, a heartbeat line in a log.
    board = Board(
        lambda line: err.print(line, markup=False),
        console=err if err.is_terminal else None,
    )
    board.start(kernel.name, f"{kernel.name} (timeout {timeout:.0f} s)", "booting")

    def on_line(line: str) -> None:
        if verbose:
            err.print(line, markup=False, highlight=False)
        if line.strip():
            board.stage(kernel.name, f"console: {line.strip()[:160]}", announce=False)

    with shown(board):
        booted = run.smoke_boot(
            kernel,
            qemu=qemu,
            firmware=ovmf,
            memory_mb=memory,
            timeout=timeout,
            accel=accel,
            on_line=on_line,
            **options,
        )
        board.finish(kernel.name, "")
    return booted


def _fail_with_console(message: str, booted: run.BootResult, kept: Path | None = None) -> NoReturn:
    """The error, the console's last lines (and where the whole of it is), exit 1."""
    err.print(f"sevimg: error: {message}", style="bold red", markup=False)
    where = f" ({kept} has it all)" if kept else ""
    err.print(f"last lines of the console{where}:", markup=False)
    for line in booted.console_tail:
        err.print(f"  {line}", markup=False, highlight=False)
    sys.exit(1)


def _plain_tools(
    ctx: Context, qemu: str | None, firmware: str | None, dry_run: bool
) -> tuple[str, str]:
    """QEMU and the plain OVMF for a boot without SEV (a dry run takes the first candidates)."""
    paths = _search_paths(ctx)
    if dry_run:
        return qemu or paths.qemu[0], firmware or paths.plain_ovmf[0]
    return (
        run.find_qemu(qemu, paths.qemu),
        run.find_firmware(paths.plain_ovmf, firmware, "plain OVMF"),
    )


def _print_plain(
    kernel: Path, memory: int, qemu: str, ovmf: str, accel: str, **options: Any
) -> None:
    """--dry-run: the QEMU command line of a boot without SEV."""
    argv = run.plain_argv(
        kernel,
        memory_mb=memory,
        qemu=qemu,
        firmware=ovmf,
        kvm=accel == "kvm",
        console=Path("console.log"),
        **options,
    )
    out.print(shlex.join(argv), markup=False, soft_wrap=True)


def _run_host(
    ctx: Context,
    image: str,
    dry_run: bool,
    memory: int | None,
    timeout: float | None,
    accel: str,
    qemu: str | None,
    firmware: str | None,
    from_dir: Path | None,
    results_dir: Path | None,
    verbose: bool,
) -> None:
    """`sevimg run IMAGE --role host --no-sev`: boot the host UKI and read its certification result."""
    memory = hostrun.HOST_MIN_MEMORY_MB if memory is None else memory
    if memory < hostrun.HOST_MIN_MEMORY_MB:
        raise SevimgError(
            f"--memory {memory} is too small: a host image needs at least {hostrun.HOST_MIN_MEMORY_MB} MB"
        )
    timeout = hostrun.HOST_TIMEOUT if timeout is None else timeout
    kernel = _uki(ctx, image, from_dir, role="host")
    qemu_path, ovmf = _plain_tools(ctx, qemu, firmware, dry_run)
    if dry_run:
        _print_plain(kernel, memory, qemu_path, ovmf, accel, network=True)
        return
    folder = results_dir or kernel.parent / "results" / kernel.name.removesuffix(
        names.ARTIFACT_SUFFIX
    )
    # Two runs writing one results folder would leave one's console beside the other's result.
    click.get_current_context().with_resource(
        lock.hold(folder, "the results folder", option="--results DIR")
    )
    booted = _boot_plain(
        kernel,
        "its certification result",
        (qemu_path, ovmf, memory, timeout, accel, verbose),
        marker=cert_framing.END_MARK,
        network=True,
        min_memory_mb=hostrun.HOST_MIN_MEMORY_MB,
    )
    # The console is kept: it is the evidence when the result cannot be read off it.
    console_path = folder / "console.log"
    write_file_atomic(console_path, booted.console.encode())
    try:  # without the last END line too: it may be what got garbled, and a copy whole
        host = hostrun.read_console(booted.console)
    except SevimgError as exc:
        if booted.ready:
            raise SevimgError(exc.message, hint=f"the whole console is in {console_path}") from None
        _fail_with_console(
            f"{kernel.name} gave no certification result: {booted.reason}", booted, console_path
        )
    json_path, md_path = hostrun.write(folder, host)
    _host_summary(host, booted.seconds, booted.accel)
    verdict = _measurement(kernel, host)
    out.print(f"written: {json_path} and {md_path}", markup=False)
    passed = host.result.result is cert_result.Outcome.PASS
    sys.exit(0 if passed and verdict.status != "mismatch" else 1)


def _measurement(kernel: Path, host: hostrun.HostResult) -> hostrun.MeasurementVerdict:
    """Print how the host's computed measurement compares with the manifest beside `kernel`."""
    path = kernel.parent / names.manifest_name(kernel.name.removesuffix(names.ARTIFACT_SUFFIX))
    try:
        manifest = load_manifest(path) if path.is_file() else None
    except SevimgError as exc:
        err.print(f"measurement: cannot read {path}: {exc.message}", markup=False)
        manifest = None
    verdict = hostrun.measurement_verdict(
        host.result.evidence.expected_measurement, manifest, str(path)
    )
    style = {"match": "bold green", "mismatch": "bold red"}.get(verdict.status, "yellow")
    out.print(styled(f"measurement: {verdict.status}: {verdict.message}"), style=style)
    return verdict


def _host_summary(host: hostrun.HostResult, seconds: float, accel: str) -> None:
    """The result as a table: each test, then the failed steps."""
    outcome = host.result
    style = {"pass": "bold green", "fail": "bold red", "error": "bold red"}[outcome.result.value]
    out.print(
        styled(f"certification result: {outcome.result.value} after {seconds:.0f} s ({accel})"),
        style=style,
    )
    out.print(f"title: {host.doc['title']}", markup=False)
    out.print(f"labels: {', '.join(host.doc['labels'])}", markup=False)
    out.print(f"milestone: {host.doc['milestone'] or 'none'}", markup=False)
    table = Table(title=styled(f"level {cert_result.LEVEL}"))
    for column in ("test", "step", "result", "detail"):
        table.add_column(column, overflow="fold")
    for test in outcome.tests:
        for step in test.steps:
            colour = {"pass": "green", "skip": "yellow"}.get(step.result.value, "bold red")
            table.add_row(
                styled(test.name),
                styled(step.name),
                styled(step.result.value, colour),
                styled(step.detail),
            )
    out.print(table)
    if outcome.error:
        err.print(f"harness error: {outcome.error}", markup=False)


def _search_paths(ctx: Context) -> run.SearchPaths:
    """QEMU and firmware search paths from the workspace's family files, else sevimg's."""
    try:
        ws: Workspace | None = ctx.ws
    except SevimgError:  # a .efi run outside any workspace
        ws = None
    return run.family_search_paths(ws)
