"""The answer of `sevimg archive`: a rich table, Markdown (CI job summaries) or JSON."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

from rich.table import Table
from rich.text import Text

from sevimg.archive.run import Outcome
from sevimg.display import printable

_STYLE = {
    "ok": "green",
    "warn": "yellow",
    "not checked": "yellow",
    "FAIL": "bold red",
    "fail": "bold red",
    "drift": "red",
}


def rows(outcome: Outcome) -> Iterator[tuple[str, str, str, str, str, str]]:
    """(image, role, what, archive, declared, verdict) for each finding."""
    for report in outcome.reports:
        for c in report.components:
            verdict = "drift" if c.drift else (c.verdict or ("ok" if c.version else "missing"))
            got = f"{c.upstream} ({c.package} {c.version})" if c.version else f"{c.package}: none"
            yield (outcome.image, report.role, c.kind, got, c.declared or "", verdict)
        for f in report.files:
            where = ", ".join(f.owners) or "no package"
            verdict = "ok" if f.ok else ("unchecked" if not f.checked else "FAIL")
            yield (
                outcome.image,
                report.role,
                f.what,
                f"{f.path} in {where}",
                f"in {f.package}",
                verdict,
            )
        missing = [p.name for p in report.packages if not p.found]
        virtual = [f"{p.name}→{p.via}" for p in report.packages if p.via]
        found = f"{len(report.packages) - len(missing)}/{len(report.packages)} found"
        if virtual:
            found += f" (virtual: {', '.join(virtual)})"
        if missing:
            found += f"; missing: {', '.join(missing)}"
        yield (outcome.image, report.role, "packages", found, "", "FAIL" if missing else "ok")
    if outcome.failure:
        yield (outcome.image, "", "archive", outcome.failure, "", "FAIL")
    if outcome.skipped:
        yield (outcome.image, "", "archive", outcome.skipped, "", "not checked")


def table(outcomes: Sequence[Outcome]) -> Table:
    """One table for all releases."""
    grid = Table(title="What the archives carry", show_lines=False)
    for name in ("image", "role", "check", "archive", "declared", "verdict"):
        grid.add_column(name, overflow="fold")
    for outcome in outcomes:
        for row in rows(outcome):
            grid.add_row(
                *(Text(printable(cell)) for cell in row[:-1]),
                Text(row[-1], style=_STYLE.get(row[-1], "")),
            )
    return grid


def problems(outcomes: Sequence[Outcome]) -> Iterator[tuple[str, str]]:
    """(severity, message) for every error and warning, prefixed with image and role."""
    for outcome in outcomes:
        for report in outcome.reports:
            for message in report.errors:
                yield "error", f"{outcome.image} {report.role}: {message}"
            for message in report.warnings:
                yield "warning", f"{outcome.image} {report.role}: {message}"
        if outcome.failure:
            yield (
                "error",
                f"{outcome.image}: {outcome.failure}"
                + (f" (hint: {outcome.hint})" if outcome.hint else ""),
            )


def markdown(outcomes: Sequence[Outcome]) -> str:
    """The table and the problems as GitHub-flavoured Markdown (a job summary)."""
    lines = ["## sevimg archive", "", "| image | role | check | archive | declared | verdict |"]
    lines.append("|---|---|---|---|---|---|")
    for outcome in outcomes:
        for row in rows(outcome):
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    found = list(problems(outcomes))
    if found:
        lines += ["", *(f"- **{sev}**: {message}" for sev, message in found)]
    return "\n".join(lines) + "\n"


def as_json(outcomes: Sequence[Outcome], requests: int, not_modified: int) -> dict[str, Any]:
    """Plain data for --json."""
    return {
        "ok": all(o.ok for o in outcomes),
        "requests": requests,
        "not_modified": not_modified,
        "releases": [{**asdict(o), "ok": o.ok} for o in outcomes],
    }
