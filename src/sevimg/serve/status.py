"""The status page of `sevimg serve`: the jobs, the saved results and their matrix, for browsers.

| path                   | answer                                                   |
|------------------------|----------------------------------------------------------|
| `/`, `/status`         | every job (state with dispatch's icon, client, bytes, times), live |
| `/status.json`         | the same as JSON (the page polls it)                     |
| `/status.js`, `/lab.css` | the page's script and style (same origin: no inline script) |
| `/results/NAME`        | a saved report as a page, its Markdown rendered with raw HTML escaped, its JSON beside it |
| `/results/NAME.json`, `.md` | the saved files as they are                           |
| `/matrix`              | the certification matrix of the results folder           |

Everything else is not the status page's (None: the server answers 404 as
dispatch does). A result's NAME must be a file of the results folder's own
listing: no path is ever joined from what a client sent, and links and
symlinks are not followed. Every page carries a Content-Security-Policy
that allows only this origin's script and style, so a report cannot run
script even if it got past the escaping. Reports are untrusted input.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from sevimg.serve.jobs import Job, public
from sevimg.serve.results import SUMMARY, Results
from sevimg.serve.table import counts

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_RESULT = 2 * 1024 * 1024  # serve saves at most a 16 MiB report; a page of more is not useful
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_TYPES = {
    ".json": "application/json; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class Answer:
    """What to send: status, content type and body (headers: :data:`HEADERS`)."""

    status: int
    content_type: str
    body: bytes


def _clock(when: float | None) -> str:
    return "" if when is None else datetime.fromtimestamp(when, UTC).strftime("%H:%M:%S")


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


class StatusSite:
    """The pages of one serve: its jobs (read through :func:`sevimg.serve.jobs.public`) and results."""

    def __init__(
        self,
        jobs: Callable[[], tuple[Job, ...]],
        results: Results | None,
        clock: Callable[[], float],
        *,
        dispatch_path: str,
        names: Mapping[str, str] | None = None,
    ) -> None:
        self._jobs = jobs
        self._results = results
        self._clock = clock
        self._dispatch_path = dispatch_path
        self._names = names

    # --- data -----------------------------------------------------------------------------

    def saved(self) -> list[str]:
        """The saved reports' names (without .json), newest name last; [] without a folder."""
        folder = self._results.folder if self._results is not None else None
        if folder is None:
            return []
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return []
        names = []
        for entry in entries:
            stem, _, suffix = entry.name.rpartition(".")
            report = suffix == "json" and entry.name != SUMMARY and _NAME.fullmatch(stem)
            if report and entry.is_file(follow_symlinks=False):
                names.append(stem)
        return sorted(names)

    def status(self) -> dict[str, Any]:
        """What /status.json answers."""
        jobs = self._jobs()
        stems = self._results.saved_stems() if self._results is not None else {}
        rows = []
        for job in jobs:
            row = public(job)
            row.update(
                sent_text=f"{_size(job.sent)} of {_size(job.size)}",
                assigned_text=_clock(job.assigned_at),
                booted_text=_clock(job.booted_at),
                reported_text=_clock(job.reported_at),
                result=stems.get(job.name),
            )
            rows.append(row)
        now = self._clock()
        return {
            "schema_version": 1,
            "now": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "counts": counts(jobs),
            "jobs": rows,
            "results": self.saved(),
        }

    def _read(self, name: str) -> bytes | None:
        """A file of the results folder by its listed name; None when it is not one (or too big)."""
        if self._results is None or not _NAME.fullmatch(name) or ".." in name:
            return None
        folder = self._results.folder
        try:
            listed = {e.name for e in os.scandir(folder)}
        except OSError:
            return None
        if name not in listed:
            return None
        try:
            fd = os.open(folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            data = handle.read(MAX_RESULT + 1)
        return None if len(data) > MAX_RESULT else data

    # --- pages ----------------------------------------------------------------------------

    def answer(self, raw_path: str) -> Answer | None:
        """The answer for a request path (already without its query); None: not a status path."""
        from sevimg.lab import page  # noqa: PLC0415 - Jinja2 only when a browser asks

        path = unquote(raw_path)
        if path in ("/", "/status"):
            data = self.status()
            html = page.render(
                "status.html.j2",
                title="sevimg serve",
                jobs=data["jobs"],
                results=data["results"],
                counts=data["counts"],
                now=data["now"],
                dispatch_path=self._dispatch_path,
                css_href="/lab.css",
                script_href="/status.js",
                nav=True,
            )
            return _html(html)
        if path == "/status.json":
            body = json.dumps(self.status(), ensure_ascii=False, indent=1) + "\n"
            return Answer(200, "application/json; charset=utf-8", body.encode())
        if path == "/status.js":
            return Answer(200, "text/javascript; charset=utf-8", page.asset("status.js").encode())
        if path == "/lab.css":
            return Answer(200, "text/css; charset=utf-8", page.asset("lab.css").encode())
        if path == "/matrix":
            return _html(self._matrix())
        if path.startswith("/results/"):
            return self._result(path.removeprefix("/results/"))
        return None

    def _result(self, name: str) -> Answer:
        suffix = Path(name).suffix
        if suffix in _TYPES:
            data = self._read(name)
            if data is None or name.removesuffix(suffix) not in self.saved():
                return _not_found()
            return Answer(200, _TYPES[suffix], data)
        raw = self._read(f"{name}.json") if name in self.saved() else None
        if raw is None:
            return _not_found()
        markdown = self._read(f"{name}.md") or b""
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            record = None
        report = record.get("report") if isinstance(record, dict) else None
        title = report.get("title") if isinstance(report, dict) else None
        from sevimg.lab import page  # noqa: PLC0415
        from sevimg.lab.reports import pretty_json, report_html  # noqa: PLC0415

        html = page.render(
            "result.html.j2",
            title=title if isinstance(title, str) else name,
            name=name,
            report=report_html(markdown.decode("utf-8", errors="replace")),
            json=pretty_json(record) if record is not None else raw.decode("utf-8", "replace"),
            css_href="/lab.css",
            nav=True,
        )
        return _html(html)

    def _matrix(self) -> str:
        from sevimg.lab import page  # noqa: PLC0415
        from sevimg.lab.model import matrix_of  # noqa: PLC0415
        from sevimg.lab.names import catalog_names  # noqa: PLC0415
        from sevimg.lab.records import Record, parse_saved  # noqa: PLC0415

        if self._names is None:
            self._names = catalog_names()
        records = []
        for name in self.saved():
            raw = self._read(f"{name}.json")
            try:
                title, labels, milestone, when = parse_saved(json.loads(raw or b""))
            except (ValueError, RecursionError):
                continue  # not a report; the status page lists it, the matrix cannot place it
            records.append(Record(title, labels, milestone, when, f"/results/{name}", name))
        matrix = matrix_of(records, self._names)
        return page.matrix_page(
            matrix, title="Certification matrix of this serve", standalone=False
        )


def _html(text: str) -> Answer:
    return Answer(200, "text/html; charset=utf-8", text.encode())


def _not_found() -> Answer:
    return Answer(404, "text/plain; charset=utf-8", b"not found\n")
