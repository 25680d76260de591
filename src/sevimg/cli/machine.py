"""Machine commands: doctor, keyrings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.table import Table

from sevimg import settings
from sevimg.catalog.index import Catalog, machine_families
from sevimg.catalog.pipeline import all_problems, check_catalog
from sevimg.catalog.spec import FamilyFacts
from sevimg.cli.base import handle_errors, out, print_problems, styled
from sevimg.cli.group import Context, main, pass_ctx
from sevimg.cli.params import Number
from sevimg.machine import doctor
from sevimg.problems import Problem, SevimgError
from sevimg.redact import redact_text
from sevimg.workspace import Workspace

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
    "--sev-host",
    is_flag=True,
    help="Instead: check this machine as an SEV-SNP host (the certification run's prerequisites).",
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
    ctx: Context, as_json: bool, no_network: bool, timeout: float, sev_host: bool, sysroot: Path
) -> None:
    """Check whether this machine can build images, and say how to fix what is missing.

    Checks mkosi (found, >= 25.3), root or unprivileged user namespaces,
    Ubuntu's AppArmor restriction on user namespaces, free disk, /dev/kvm,
    the package manager mkosi bootstraps its tools tree with, the script and
    unit checkers, the catalog (a broken file FAILs, its problems go to
    stderr), and whether the catalog's mirrors answer. Exit status 1 when any
    check FAILs.

    --sev-host checks instead what a certification run needs of an SEV host
    (for a machine that runs its own host OS): SEV-SNP enabled in kvm_amd,
    the SEV firmware file, kernel, QEMU and OVMF versions (one without SEV-SNP
    support fails; one below the guide's floor of kernel 6.11, QEMU 9.2, OVMF
    2024.11 warns), and `snphost ok` when snphost is installed, each with its fix.
    """
    machine = doctor.Machine(root=sysroot)
    if sev_host:
        try:
            known = machine_families(ctx.ws)
        except SevimgError:  # outside a workspace: every family's paths
            known = machine_families(None)
        _print_results("sevimg doctor --sev-host", doctor.check_sev_host(machine, known), as_json)
        return
    local_result: doctor.Result | None = None
    sources_result: doctor.Result | None = None
    keyring_result: doctor.Result | None = None
    origins: dict[str, str] = {}
    catalog_result: doctor.Result | None = None
    catalog_errors: list[Problem] = []
    extra: list[tuple[str, str]] = []
    apt_mirrors: set[str] = set()
    families: list[FamilyFacts] = []
    local_urls: list[tuple[str, str]] = []
    try:
        ws = ctx.ws
    except SevimgError:  # outside a workspace: check the machine against every distribution
        cache_dir, disk_at = Path.cwd() / ".cache", Path.cwd()
        families = machine_families(None)
        probes = doctor.family_probes(families)
    else:
        try:
            local = settings.load_local(ws)
        except SevimgError as exc:
            local_result = doctor.Result(
                "local settings",
                doctor.Status.FAIL,
                f"{settings.LOCAL_FILE}: " + "; ".join(str(p) for p in exc.problems),
                "fix the file (sevimg.local.yaml.example documents it)",
            )
        else:
            apt_mirrors = set(local.apt_mirrors)
            # This machine's own mirrors are probed too (credentials and all; never shown).
            for name, mirror in sorted(local.apt_mirrors.items()):
                local_urls.append((f"{name} ({settings.LOCAL_FILE})", mirror.url))
                if mirror.security_url:
                    local_urls.append(
                        (f"{name} security ({settings.LOCAL_FILE})", mirror.security_url)
                    )
            for name, url in sorted(local.rpm_mirrors.items()):
                local_urls.append((f"{name} ({settings.LOCAL_FILE})", url))
            detail = (
                f"{local.source}"
                if local.source
                else f"no {settings.LOCAL_FILE}: the catalog's mirrors (see `sources`)"
            )
            local_result = doctor.Result("local settings", doctor.Status.OK, detail)
        cache_dir, disk_at = ws.cache_dir, ws.root
        families = machine_families(ws)
        try:
            catalog = ctx.catalog
            checked, orphans = check_catalog(catalog)
        except SevimgError as exc:  # e.g. a broken schema: the catalog cannot be read at all
            catalog_errors = [p for p in exc.problems if p.is_error]
            catalog_result = doctor.Result(
                "catalog", doctor.Status.FAIL, f"cannot be read: {exc.message}", exc.hint
            )
            probes = doctor.family_probes(families)
        else:
            catalog_errors = [p for p in all_problems(checked, orphans) if p.is_error]
            catalog_result = _catalog_result(catalog, catalog_errors)
            probes, extra = _mirror_sources(catalog, catalog_errors)
            if local_result is not None and local_result.status is doctor.Status.OK:
                extra += _release_urls(catalog, local)
                used = settings.with_default_mirrors(local, catalog)
                sources_result = _sources_result(used)
                origins = {d: m.origin for d, m in used.apt_mirrors.items()}
            keyring_result = _keyrings_result(ws, catalog, machine.root)

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
    if catalog_result is not None:
        results.append(catalog_result)
    results += [r for r in (sources_result, keyring_result) if r is not None]
    if not no_network:
        targets = doctor.mirror_targets(probes, [*extra, *local_urls])
        results += doctor.check_mirrors(targets, timeout)
        # A family's mirror in sevimg.local.yaml is keyed by the family's mkosi distribution.
        for family in families:
            if family.apt_debug_probe:
                origin = origins.get(family.name)
                has_mirror = family.name in apt_mirrors or origin is not None
                results.append(
                    doctor.check_debug_sources(
                        family, has_mirror, timeout, origin or settings.LOCAL_FILE
                    )
                )

    _print_results("sevimg doctor", results, as_json, catalog_errors)


@main.command("keyrings")
@click.option(
    "--install",
    is_flag=True,
    help="Install each missing keyring from its package pinned in sevimg.yaml (hash-checked).",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Install below this folder instead (for a chroot or a test).",
)
@pass_ctx
@handle_errors
def keyrings_command(ctx: Context, install: bool, root: Path) -> None:
    """List the archive keyrings the catalog needs; --install fetches missing ones (pinned).

    Each apt family (images/families/*.yaml `apt.keyring`) names the keyring
    its archive is signed with; mkosi's apt and `sevimg archive` check
    signatures with it. A keyring this machine's distribution does not carry
    (Debian 12 has no ubuntu-keyring) comes from the package pinned under
    `keyrings:` in sevimg.yaml: the distribution's own archive, checked
    against its SHA-256 before one file is taken out of it. tools/setup runs
    `sevimg keyrings --install`. Exit status 1 when a keyring is still missing.
    """
    from sevimg.imaging import keyrings  # noqa: PLC0415 - lazy, see cli/group.py

    wanted = keyrings.needed(ctx.catalog)
    pinned = keyrings.load_keyring_pins(ctx.ws)
    if install:
        local = settings.load_local(ctx.ws)
        cache = (local.cache_dir or ctx.ws.cache_dir / "build").resolve()
        for need, used in keyrings.install(wanted, pinned, cache, root=root, proxy=local.proxy):
            out.print(
                f"installed {root / need.path.lstrip('/')} from {used.package} {used.version} "
                f"({used.url}, sha256 {used.sha256}, checked)",
                markup=False,
            )
    table = Table(title="archive keyrings")
    for column in ("keyring", "status", "needed by", "pinned source"):
        table.add_column(column, overflow="fold")
    absent = keyrings.missing(wanted, root)
    for need in wanted:
        pin = keyrings.source_of(need.path, pinned)
        status = ("missing", "bold red") if need in absent else ("present", "green")
        table.add_row(
            styled(need.path),
            styled(*status),
            styled(", ".join(need.needed_by)),
            styled(f"{pin.package} {pin.version}" if pin else "(none)"),
        )
    out.print(table)
    if absent:
        raise SevimgError(
            f"missing keyrings: {', '.join(n.path for n in absent)}",
            hint="sevimg keyrings --install (as root), or tools/setup",
        )


def _print_results(
    title: str, results: list[doctor.Result], as_json: bool, problems: list[Problem] | None = None
) -> None:
    """The checks as a table (or JSON), the catalog's problems on stderr; exit 1 on any FAIL."""
    failed = doctor.has_failures(results)
    if as_json:
        out.print_json(json.dumps({"ok": not failed, "checks": [r.as_dict() for r in results]}))
    else:
        table = Table(title=title)
        for column in ("check", "status", "detail", "fix"):
            table.add_column(column, overflow="fold")
        for r in results:
            style = _STYLE[r.status]
            table.add_row(
                styled(r.check), styled(r.status.value, style), styled(r.detail), styled(r.fix)
            )
        out.print(table)
    print_problems(problems or [])
    sys.exit(1 if failed else 0)


def _release_urls(catalog: Catalog, local: settings.LocalConfig) -> list[tuple[str, str]]:
    """(releases, URL) for every repository index builds and `archive` read, per release:
    the same sources `sevimg archive` uses (this machine's mirrors, the archive mirror
    of an end-of-life release), each URL once with the releases that use it."""
    from sevimg.archive.sources import sources_for  # noqa: PLC0415 - lazy, see cli/group.py
    from sevimg.catalog.resolve import resolve_all  # noqa: PLC0415

    users: dict[str, list[str]] = {}
    what: dict[str, str] = {}
    for name in catalog.names():
        if name in catalog.broken:
            continue
        entry = catalog.entries[name]
        specs, problems = resolve_all(entry)
        for spec in specs if not problems else ():
            try:
                found = sources_for(spec, entry, local)
            except SevimgError:  # a release the catalog gives no repositories for
                continue
            for source in found:
                if source.kind == "apt":
                    url = f"{source.url.rstrip('/')}/dists/{source.suite}/InRelease"
                    what[url] = source.suite
                else:
                    url = f"{source.url.rstrip('/')}/repodata/repomd.xml"
                    what[url] = "/".join(source.url.rstrip("/").split("/")[-4:])
                if name not in users.setdefault(url, []):
                    users[url].append(name)
    return [
        (
            ", ".join(names[:2])
            + (f" +{len(names) - 2}" if len(names) > 2 else "")
            + f" ({what[url]})",
            url,
        )
        for url, names in sorted(users.items())
    ]


def _keyrings_result(ws: Workspace, catalog: Catalog, root: Path) -> doctor.Result:
    """Whether every archive keyring the catalog's apt families name is on this machine."""
    from sevimg.imaging import keyrings  # noqa: PLC0415 - lazy, see cli/group.py

    wanted = keyrings.needed(catalog)
    absent = keyrings.missing(wanted, root)
    if not absent:
        return doctor.Result(
            "keyrings", doctor.Status.OK, f"{len(wanted)} archive keyrings present"
        )
    try:
        pinned = keyrings.load_keyring_pins(ws)
    except SevimgError:
        pinned = ()
    said = [
        f"{n.path} ({', '.join(n.needed_by)}"
        + (
            f"; pinned: {pin.package} {pin.version}"
            if (pin := keyrings.source_of(n.path, pinned))
            else ""
        )
        + ")"
        for n in absent
    ]
    return doctor.Result(
        "keyrings",
        # WARN like an unreachable mirror: the other distributions still build.
        doctor.Status.WARN,
        "missing: " + "; ".join(said) + ": those distributions cannot be read or built",
        "sevimg keyrings --install (as root; tools/setup runs it)",
    )


def _sources_result(local: settings.LocalConfig) -> doctor.Result:
    """What builds and `archive` will install from: the mirror of each distribution, and why."""
    apt = [f"{d} {m.url} ({m.origin})" for d, m in sorted(local.apt_mirrors.items())]
    rpm = [f"{d} {url} ({local.source})" for d, url in sorted(local.rpm_mirrors.items())]
    detail = "sevimg writes the apt sources (release, -updates, -security; no debug suites): "
    detail += "; ".join(apt) if apt else "none"
    detail += ". rpm: " + ("; ".join(rpm) if rpm else "mkosi's default repositories")
    return doctor.Result(
        "sources",
        doctor.Status.OK,
        redact_text(detail),
        f"another mirror: `mirrors:` in {settings.LOCAL_FILE} (see sevimg.local.yaml.example)",
    )


def _catalog_result(catalog: Catalog, errors: list[Problem]) -> doctor.Result:
    """The catalog as a check: FAIL with the first problem when any file is broken."""
    files = len({p.file for p in errors})
    if not errors:
        return doctor.Result(
            "catalog", doctor.Status.OK, f"{len(catalog.entries)} releases, all valid"
        )
    return doctor.Result(
        "catalog",
        doctor.Status.FAIL,
        f"invalid: {errors[0]}"
        + (f" (and {len(errors) - 1} more problems in {files} files)" if len(errors) > 1 else ""),
        "sevimg validate lists every problem with its file and line",
    )


def _mirror_sources(
    catalog: Catalog, errors: list[Problem]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(mkosi distribution, probe URL) and extra archive URLs, from the valid distribution files."""
    broken = {p.file for p in errors}
    probes: set[tuple[str, str]] = set()
    extra: set[tuple[str, str]] = set()
    for name, doc in catalog.distros.items():
        if doc.display in broken or not isinstance(doc.data, dict):
            continue  # a broken file may hold anything; the catalog check reports it
        mkosi_section = doc.data.get("mkosi")
        family = catalog.families.get(str(doc.data.get("family")))
        probe = doc.data.get("mirror_probe") or (family[1].mirror_probe if family else None)
        if (
            isinstance(mkosi_section, dict)
            and isinstance(mkosi_section.get("distribution"), str)
            and isinstance(probe, str)
        ):
            probes.add((mkosi_section["distribution"], probe))
        repository = doc.data.get("repository")
        if isinstance(repository, dict) and isinstance(repository.get("url"), str):
            extra.add((f"{name} archive", repository["url"]))
    return sorted(probes), sorted(extra)
