"""Commands that read the catalog: list, show, validate."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from sevimg.catalog.pipeline import Checked, all_problems, check_catalog
from sevimg.catalog.policy import floor_verdicts
from sevimg.catalog.resolve import roles_of
from sevimg.catalog.versions import HOST_FLOORS, Verdict
from sevimg.cli.base import err, handle_errors, mkosi_version_option, out, print_problems, styled
from sevimg.cli.group import Context, main, pass_ctx
from sevimg.cli.params import ROLE_CHOICE, ImageName
from sevimg.problems import Problem, SevimgError, has_errors
from sevimg.settings import settings_problems

_VERDICT_STYLE = {
    Verdict.OK: ("ok", "green"),
    Verdict.WARN: ("warn", "yellow"),
    Verdict.FAIL: ("FAIL", "red"),
    Verdict.UNKNOWN: ("?", "dim"),
}


# --- list --------------------------------------------------------------------------


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
@handle_errors
def list_command(ctx: Context, as_json: bool) -> None:
    """List the catalog's releases, their roles and SEV floor verdicts.

    The floors (host only): kernel >= 6.11, QEMU >= 9.2 (9.1 warns), OVMF >=
    2024.11, judged on the versions each release file declares. A release
    whose files are broken is listed as invalid with its first problem; every
    problem is printed on stderr, and the exit status is 1.
    """
    catalog = ctx.catalog
    checked, orphans = check_catalog(catalog)
    problems = all_problems(checked, orphans)
    rows = [_list_row(c, loaded=c.entry.image not in catalog.broken) for c in checked]
    # A release file that could not be loaded (or has no distribution file) has no entry.
    listed = {row["image"] for row in rows}
    for image in sorted(catalog.broken - listed):
        own = [p for p in problems if p.is_error and Path(p.file).name == f"{image}.yaml"]
        rows.append(_broken_row(image, own))
    rows.sort(key=lambda row: str(row["image"]))
    if as_json:
        out.print_json(json.dumps(rows))
    else:
        from rich.table import Table  # noqa: PLC0415 - only the table needs it

        table = Table(title=styled(f"{len(rows)} releases in {ctx.ws.display(ctx.ws.images_dir)}/"))
        for column in (
            "image",
            "distro",
            "release",
            "mkosi Release=",
            "status",
            "roles",
            "kernel",
            "qemu",
            "ovmf",
        ):
            table.add_column(column, no_wrap=True)
        # The verdict never shrinks to "inval…": narrower columns give way first.
        table.add_column("check", no_wrap=True, min_width=len("invalid"))
        for row in rows:
            cells = [
                styled(row["image"]),
                styled(row["distro"]),
                styled(row["release"]),
                styled(row["mkosi_release"]),
                styled(row["status"]),
                styled(",".join(row["roles"])),
            ]
            for floor in HOST_FLOORS:
                info = row["floors"].get(floor.component)
                if info is None:
                    cells.append(styled("n/a", "dim"))
                else:
                    text, style = _VERDICT_STYLE[Verdict(info["verdict"])]
                    cells.append(styled(f"{info['version'] or '-'} {text}", style))
            cells.append(styled("valid", "green") if row["valid"] else styled("invalid", "red"))
            table.add_row(*cells)
        # The table has no room for a message: the first problem of each invalid
        # release goes below it, and every problem, located, to stderr.
        invalid = [f"{row['image']}: invalid: {row['problem']}" for row in rows if not row["valid"]]
        if invalid:
            table.caption = styled("\n".join(invalid), "red")
            table.caption_justify = "left"
        out.print(table)
    if has_errors(problems):
        print_problems(p for p in problems if p.is_error)
        err.print("some releases have errors: run `sevimg validate` for details", style="yellow")
        sys.exit(1)


def _text(value: Any) -> str:
    """A catalog scalar as shown in the list ('?' when missing or not a scalar)."""
    if value is None or isinstance(value, dict | list):
        return "?"
    return str(value)


def _first_problem(problems: Sequence[Problem]) -> str:
    """'debian-13.yaml:5: status: …' for the first error, '' when there is none."""
    errors = [p for p in problems if p.is_error]
    if not errors:
        return ""
    first = errors[0]
    where = f"{Path(first.file).name}:{first.line}" if first.line else Path(first.file).name
    what = f"{first.field}: {first.message}" if first.field else first.message
    return f"{where}: {what}"


def _list_row(c: Checked, *, loaded: bool) -> dict[str, Any]:
    """One release; roles and floors only when its files passed the schema (else they may be any shape)."""
    data = c.entry.release.data if isinstance(c.entry.release.data, dict) else {}
    roles = list(roles_of(c.entry)) if data and loaded else []
    declared = data.get("versions") if loaded else None
    floors: dict[str, Any] = {}
    if "host" in roles and isinstance(declared, dict):
        floors = {
            component: {"version": declared.get(component), "verdict": verdict.value}
            for component, verdict in floor_verdicts(c.entry).items()
        }
    return {
        "image": c.entry.image,
        "distro": c.entry.distro,
        "release": _text(data.get("release")),
        "mkosi_release": _text(data.get("codename") or data.get("release")),
        "status": _text(data.get("status")),
        "roles": roles,
        "floors": floors,
        "valid": c.ok,
        "errors": sum(p.is_error for p in c.problems),
        "warnings": sum(not p.is_error for p in c.problems),
        "problem": _first_problem(c.problems) or None,
    }


def _broken_row(image: str, problems: Sequence[Problem]) -> dict[str, Any]:
    """A release whose file could not be loaded at all."""
    return {
        "image": image,
        "distro": image.partition("-")[0],
        "release": "?",
        "mkosi_release": "?",
        "status": "?",
        "roles": [],
        "floors": {},
        "valid": False,
        "errors": max(len(problems), 1),
        "warnings": 0,
        "problem": _first_problem(problems) or "cannot be loaded",
    }


# --- show ----------------------------------------------------------------------------


@main.command()
@click.argument("image", type=ImageName())
@click.option("--role", type=ROLE_CHOICE, help="Only this role (default: every role).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of YAML.")
@click.option(
    "--debug-image",
    "debug",
    is_flag=True,
    help="Resolve the debug variant (autologin, -debug suffix).",
)
@pass_ctx
@handle_errors
def show(ctx: Context, image: str, role: str | None, as_json: bool, debug: bool) -> None:
    """Show the resolved spec of IMAGE (e.g. debian-13): what will be rendered."""
    catalog = ctx.catalog
    checked, _ = check_catalog(catalog, [image], debug=debug)
    c = checked[0]
    if not c.ok:
        raise SevimgError(f"{image} does not resolve", c.problems)
    specs = [c.spec(role)] if role else list(c.specs)  # type: ignore[arg-type]
    data = {s.image_id: s.as_dict() for s in specs}
    if as_json:
        out.print_json(json.dumps(data))
    else:
        out.print(
            yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100).rstrip(),
            markup=False,
        )
    print_problems(p for p in c.problems if not p.is_error)


# --- validate ------------------------------------------------------------------------


@main.command()
@click.argument("images", nargs=-1, type=ImageName())
@click.option("--json", "as_json", is_flag=True, help="Print problems as JSON.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option(
    "--mkosi",
    "with_mkosi",
    is_flag=True,
    help="Also render each image and let the real tools judge it: mkosi --json summary must accept "
    "the tree silently and resolve it to the spec; scripts pass bash -n and shellcheck; units pass "
    "systemd-analyze verify.",
)
@mkosi_version_option
@pass_ctx
@handle_errors
def validate(
    ctx: Context,
    images: Sequence[str],
    as_json: bool,
    strict: bool,
    with_mkosi: bool,
    mkosi_version: str | None,
) -> None:
    """Check IMAGES (default: the whole catalog): schema, resolution and SEV policy.

    The workspace's sevimg.yaml (pinned tools) and sevimg.local.yaml (this
    machine's mirrors, proxy, caches) are checked too.

    Problems are printed as FILE:LINE:COLUMN: SEVERITY: FIELD: MESSAGE. Exit
    status 1 on any error (or warning, with --strict), 0 when clean.
    """
    catalog = ctx.catalog
    checked, orphans = check_catalog(catalog, images)
    # The workspace's own settings too: a bad pin or mirror would stop every build.
    problems = sorted({*all_problems(checked, orphans), *settings_problems(ctx.ws, catalog)})
    if with_mkosi and not has_errors(problems):
        # The judges run programs: imported only when asked for (plain validate stays quick).
        from sevimg.imaging import judge, mkosi  # noqa: PLC0415

        tool = mkosi.require(ctx.ws.cache_dir, mkosi_version)
        renderer = ctx.renderer(tool.version)
        problems = sorted(
            {
                *problems,
                *judge.check_specs([s for c in checked for s in c.specs], renderer, tool),
            }
        )
    failed = has_errors(problems) or (strict and bool(problems))
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "valid": not failed,
                    "images": [c.entry.image for c in checked],
                    "problems": [p.as_dict() for p in problems],
                }
            )
        )
    else:
        print_problems(problems)
        errors = sum(p.is_error for p in problems)
        warnings = len(problems) - errors
        summary = f"{len(checked)} release{'s' if len(checked) != 1 else ''} checked: {errors} error{'s' if errors != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''}"
        (err if failed else out).print(summary, style="red" if failed else "green", markup=False)
    sys.exit(1 if failed else 0)
