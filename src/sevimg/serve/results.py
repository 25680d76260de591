"""The results folder of `sevimg serve`: every report as files, and a summary of every job.

A report becomes `<image>-<UTC time>.md` (its body, the Markdown result)
and `<image>-<UTC time>.json` (the report as received, with the job, the
client and the time) the moment it arrives, before anything is sent to
GitHub, so no report is ever lost (and before its job is marked Reported).
`results.json` lists every job with its state, how many requests concerned
it and the first and last of them; it is rewritten when a job changes
state (and when serve stops), not on every request. All writes are atomic.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sevimg.atomic import write_file_atomic
from sevimg.problems import SevimgError
from sevimg.serve.jobs import Job, Report, Request

SUMMARY = "results.json"
SCHEMA_VERSION = 1


def stamp(when: float) -> str:
    """UTC time for a file name: 20260101T120000Z."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y%m%dT%H%M%SZ")


def iso(when: float | None) -> str | None:
    """UTC time as ISO 8601 (None stays None)."""
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Saved:
    """The two files of one report."""

    markdown: Path
    json: Path


class Results:
    """One results folder; safe to call from the server's threads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.RLock()
        self._saved: dict[str, Saved] = {}
        self._issues: dict[str, dict[str, Any]] = {}

    def prepare(self) -> None:
        """Create the folder and check it is writable (before serving anything)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / ".sevimg-serve-probe"
            write_file_atomic(probe, b"")
            probe.unlink()
        except OSError as exc:
            raise SevimgError(
                f"--results {self.folder}: cannot write there ({exc.strerror or exc})"
            ) from None

    def save_report(self, job: Job, report: Report, client: str, when: float) -> Saved:
        """Write the report's .md and .json; OSError when the disk refuses."""
        base = f"{job.image_id}-{stamp(when)}"
        with self._lock:
            n = 1
            name = base
            while (self.folder / f"{name}.md").exists() or (self.folder / f"{name}.json").exists():
                n += 1
                name = f"{base}-{n}"
            saved = Saved(self.folder / f"{name}.md", self.folder / f"{name}.json")
            body = (
                report.body if report.body.endswith("\n") or not report.body else report.body + "\n"
            )
            record = {
                "schema_version": SCHEMA_VERSION,
                "job": job.name,
                "image_sha256": job.sha256,
                "client": client,
                "reported_at": iso(when),
                "report": report.as_json(),
            }
            write_file_atomic(saved.markdown, body.encode())
            write_file_atomic(saved.json, _dump(record))
            self._saved[job.name] = saved
        return saved

    def note_issue(self, job: Job, issue: dict[str, Any]) -> None:
        """Remember what GitHub made of a job's report (shown in the summary)."""
        with self._lock:
            self._issues[job.name] = issue

    def saved_stems(self) -> dict[str, str]:
        """Job name → the name (without .md/.json) of its latest saved report."""
        with self._lock:
            return {name: saved.markdown.stem for name, saved in self._saved.items()}

    def summary(self, jobs: tuple[Job, ...]) -> dict[str, Any]:
        """results.json's content."""
        with self._lock:
            saved = dict(self._saved)
            issues = dict(self._issues)
        entries = []
        for job in jobs:
            files = saved.get(job.name)
            entries.append(
                {
                    "job": job.name,
                    "sha256": job.sha256,
                    "state": job.state.value,
                    "client": job.client,
                    "assigned_at": iso(job.assigned_at),
                    "booted_at": iso(job.booted_at),
                    "reported_at": iso(job.reported_at),
                    "note": job.note or None,
                    "markdown": files.markdown.name if files else None,
                    "json": files.json.name if files else None,
                    "issue": issues.get(job.name),
                    "requests": {
                        "count": job.request_count,
                        "first": _request(job.first_request),
                        "last": _request(job.last_request),
                    },
                }
            )
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job.state.value] = counts.get(job.state.value, 0) + 1
        return {"schema_version": SCHEMA_VERSION, "states": counts, "jobs": entries}

    def write_summary(self, jobs: Callable[[], tuple[Job, ...]]) -> None:
        """Rewrite results.json from the jobs as they are now (atomically, one writer at a time).

        `jobs` is read under the lock, so a slower writer never puts back an older state.
        """
        with self._lock:
            write_file_atomic(self.folder / SUMMARY, _dump(self.summary(jobs())))


def _request(entry: Request | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    at, client, method, status = entry
    return {"at": iso(at), "client": client, "method": method, "status": status}


def _dump(data: Any) -> bytes:
    # Reports are checked before they get here; a lone surrogate from elsewhere (a
    # GitHub message in a note) is written as its JSON escape rather than fail the write.
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode(
        "utf-8", errors="backslashreplace"
    )
