"""The jobs as a table, with dispatch's state icons (rich), for the terminal and the summary."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.table import Table
from rich.text import Text

from sevimg.display import printable
from sevimg.serve.jobs import Job, State

_STYLE = {
    State.FINISHED: "green",
    State.REPORTED: "green",
    State.FAILED: "red",
    State.BOOTING: "yellow",
    State.DOWNLOADING: "cyan",
}


def _clock(when: float | None) -> str:
    return "" if when is None else datetime.fromtimestamp(when, UTC).strftime("%H:%M:%S")


def jobs_table(jobs: tuple[Job, ...], *, title: str = "") -> Table:
    """One row per job: state (icon and name), image, client, times, note."""
    table = Table(title=title or None, title_justify="left", show_edge=False, pad_edge=False)
    for column in ("state", "job", "client", "assigned", "booted", "reported", "note"):
        table.add_column(column, no_wrap=column != "note")
    for job in jobs:
        table.add_row(
            Text(f"{job.state.icon} {job.state.value}", style=_STYLE.get(job.state, "")),
            Text(printable(job.name)),
            Text(printable(job.client or "")),
            Text(_clock(job.assigned_at)),
            Text(_clock(job.booted_at)),
            Text(_clock(job.reported_at)),
            Text(printable(job.note)),  # never markup: notes quote GitHub's messages
        )
    return table


def counts(jobs: tuple[Job, ...]) -> str:
    """`2 jobs: 1 📝 Reported, 1 ⏳ Unassigned`."""
    found: dict[State, int] = {}
    for job in jobs:
        found[job.state] = found.get(job.state, 0) + 1
    parts = [f"{n} {state.icon} {state.value}" for state, n in found.items()]
    return f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}: {', '.join(parts)}"
