"""Machine commands: doctor."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.table import Table

from sevimg import config, doctor
from sevimg.cli.base import Context, handle_errors, main, out, pass_ctx
from sevimg.cli.params import Number
from sevimg.problems import SevimgError

_STYLE = {doctor.Status.OK: "green", doctor.Status.WARN: "yellow", doctor.Status.FAIL: "bold red"}


@main.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for CI) instead of a table.")
@click.option("--no-network", is_flag=True, help="Skip the mirror reachability checks.")
@click.option(
    "--timeout",
    type=Number(0.1, 60, "seconds"),
    default=doctor.NETWORK_TIMEOUT,
    show_default=True,
    help="Seconds to wait for each mirror.",
)
@click.option(
    "--sysroot",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=Path("/"),
    hidden=True,
    help="Read /proc, /dev and /etc below this folder (to simulate another machine).",
)
@pass_ctx
@handle_errors
def doctor_command(
    ctx: Context, as_json: bool, no_network: bool, timeout: float, sysroot: Path
) -> None:
    """Check whether this machine can build images, and say how to fix what is missing.

    Checks mkosi (found, >= 25.3), root or unprivileged user namespaces,
    Ubuntu's AppArmor restriction on user namespaces, free disk, /dev/kvm,
    the package manager mkosi bootstraps its tools tree with, the script and
    unit checkers, and whether the catalog's mirrors answer. Exit status 1
    when any check FAILs.
    """
    machine = doctor.Machine(root=sysroot)
    local_result: doctor.Result | None = None
    local_mirror = False
    local_urls: list[tuple[str, str]] = []
    try:
        ws = ctx.ws
        try:
            local = config.load_local(ws)
        except SevimgError as exc:
            local_result = doctor.Result(
                "local settings",
                doctor.Status.FAIL,
                f"{config.LOCAL_FILE}: " + "; ".join(str(p) for p in exc.problems),
                "fix the file (sevimg.local.yaml.example documents it)",
            )
        else:
            local_mirror = "debian" in local.apt_mirrors
            # This machine's own mirrors are probed too (credentials and all; never shown).
            for name, mirror in sorted(local.apt_mirrors.items()):
                local_urls.append((f"{name} ({config.LOCAL_FILE})", mirror.url))
                if mirror.security_url:
                    local_urls.append(
                        (f"{name} security ({config.LOCAL_FILE})", mirror.security_url)
                    )
            for name, url in sorted(local.rpm_mirrors.items()):
                local_urls.append((f"{name} ({config.LOCAL_FILE})", url))
            detail = (
                f"{local.source}"
                if local.source
                else f"no {config.LOCAL_FILE}: mkosi's default mirrors and sources"
            )
            local_result = doctor.Result("local settings", doctor.Status.OK, detail)
        cache_dir, disk_at = ws.cache_dir, ws.root
        distributions = sorted(
            {
                d.data["mkosi"]["distribution"]
                for d in ctx.catalog.distros.values()
                if isinstance(d.data, dict) and "mkosi" in d.data
            }
        )
        extra = sorted(
            {
                (f"{name} archive", d.data["repository"]["url"])
                for name, d in ctx.catalog.distros.items()
                if isinstance(d.data, dict) and "repository" in d.data
            }
        )
    except SevimgError:  # outside a workspace: check the machine against every distribution
        cache_dir, disk_at = Path.cwd() / ".cache", Path.cwd()
        distributions, extra = sorted(doctor.DEFAULT_MIRRORS), []

    results = [
        doctor.check_mkosi(cache_dir),
        doctor.check_privileges(machine),
        doctor.check_apparmor(machine),
        doctor.check_disk(machine, disk_at),
        doctor.check_kvm(machine),
        doctor.check_package_manager(machine),
        doctor.check_checkers(),
    ]
    if local_result is not None:
        results.append(local_result)
    if not no_network:
        targets = doctor.mirror_targets(distributions, [*extra, *local_urls])
        results += doctor.check_mirrors(targets, timeout)
        results.append(doctor.check_debian_debug(local_mirror, timeout))

    failed = doctor.has_failures(results)
    if as_json:
        out.print_json(json.dumps({"ok": not failed, "checks": [r.as_dict() for r in results]}))
    else:
        table = Table(title="sevimg doctor")
        for column in ("check", "status", "detail", "fix"):
            table.add_column(column, overflow="fold")
        for r in results:
            style = _STYLE[r.status]
            table.add_row(r.check, f"[{style}]{r.status.value}[/{style}]", r.detail, r.fix)
        out.print(table)
    sys.exit(1 if failed else 0)
