"""Certification runs as the matrix sees them, read from `sevimg serve`'s results folders.

A :class:`Record` is what a report says about itself: its title, its
labels (`certificate`, `os-<id>-<version>`, `proc-<series>`), its milestone
(`c<level>` when a level was achieved) and when it was reported, with a
link to the certificate (the issue) or to the saved result. Serve's folder
holds `<image>-<time>.json` per report (the report as received) and
`results.json` (which report became which issue); both are read with size
caps, and anything else in the folder is left alone. Every value here comes
from a host or from GitHub: it is data, checked against the label rules
before it names a row or a table.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sevimg.problems import Problem, SevimgError, error
from sevimg_cert.result import OS_LABEL, PROC_LABEL

SUMMARY = (
    "results.json"  # serve's summary (sevimg.serve.results.SUMMARY; not imported: no serve deps)
)
MAX_FILE = 2 * 1024 * 1024  # a saved report is at most 512 KiB of report plus its wrapper
MILESTONE = re.compile(r"^c(\d+)\.(\d+)\.\d+-\d+$")
TITLE_VERSION = re.compile(r"SEV version (\d+\.\d+)\b")


@dataclass(frozen=True)
class Record:
    """One certification run."""

    title: str
    labels: tuple[str, ...]
    milestone: str | None  # c3.0.0-0: the level achieved; None: no level (a failed run)
    when: str  # ISO 8601 UTC (2026-12-01T10:00:00Z); "" when unknown
    link: str  # the issue (the certificate), or the saved result
    key: str  # what tells two records apart when everything else is equal (file or issue)

    @property
    def os_label(self) -> str | None:
        """The first `os-…` label that follows the matrix's rule."""
        return next((x for x in self.labels if OS_LABEL.match(x)), None)

    @property
    def series(self) -> str | None:
        """The processor series of the first `proc-<digits>` label (7003, 9004, …)."""
        return next((x[5:] for x in self.labels if PROC_LABEL.match(x)), None)

    @property
    def level(self) -> str | None:
        """The certified level (3.0.0-0) from a `c<level>` milestone; None for a failed run."""
        if self.milestone is None or not MILESTONE.match(self.milestone):
            return None
        return self.milestone[1:]

    @property
    def version(self) -> str | None:
        """The certification version (3.0): the level's, else the title's `SEV version X.Y`."""
        match = MILESTONE.match(self.milestone or "")
        if match:
            return f"{int(match[1])}.{int(match[2])}"
        found = TITLE_VERSION.search(self.title)
        return found[1] if found else None


def read_capped(path: Path, cap: int = MAX_FILE) -> bytes:
    """A file's bytes, refused when larger than `cap` (never read whole)."""
    with path.open("rb") as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise ValueError(f"larger than {cap} bytes")
    return data


def _strings(value: Any) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return tuple(value)


def _issue_links(folder: Path) -> dict[str, str]:
    """Saved report (.md name) → issue URL, from serve's results.json (absent: none)."""
    path = folder / SUMMARY
    try:
        data = json.loads(read_capped(path, 64 * 1024 * 1024))
    except (OSError, ValueError, RecursionError):
        return {}
    links: dict[str, str] = {}
    for job in data.get("jobs") or [] if isinstance(data, dict) else []:
        if not isinstance(job, dict):
            continue
        issue = job.get("issue")
        markdown = job.get("markdown")
        url = issue.get("url") if isinstance(issue, dict) else None
        if isinstance(markdown, str) and isinstance(url, str) and url.startswith("https://"):
            links[markdown] = url
    return links


def parse_saved(data: Any) -> tuple[str, tuple[str, ...], str | None, str]:
    """(title, labels, milestone, reported_at) of a saved report; ValueError naming the field."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    report = data.get("report")
    if not isinstance(report, dict):
        raise ValueError("field 'report': missing or not an object (not a report saved by serve)")
    title = report.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ValueError("field 'report.title': missing or empty")
    labels = _strings(report.get("labels", []))
    if labels is None:
        raise ValueError("field 'report.labels': not a list of strings")
    milestone = report.get("milestone")
    if milestone is not None and not isinstance(milestone, str):
        raise ValueError("field 'report.milestone': not a string")
    when = data.get("reported_at")
    if when is not None and not isinstance(when, str):
        raise ValueError("field 'reported_at': not a string")
    return title, labels, milestone, when or ""


def read_folder(folder: Path, link_base: Path | None = None) -> list[Record]:
    """Every report saved in one of serve's results folders.

    Links go to the GitHub issue when serve filed one, else to the saved
    Markdown, relative to `link_base` (the folder the matrix is written to)
    or as the file's name. SevimgError naming each file that is not a report.
    """
    if not folder.is_dir():
        raise SevimgError(f"{folder}: not a folder (give serve's --results folder)")
    issues = _issue_links(folder)
    records: list[Record] = []
    problems: list[Problem] = []
    for path in sorted(folder.glob("*.json")):
        if path.name == SUMMARY or not path.is_file():
            continue
        try:
            data = json.loads(read_capped(path))
            title, labels, milestone, when = parse_saved(data)
        except OSError as exc:
            problems.append(error(str(path), f"cannot read it: {exc.strerror or exc}"))
            continue
        except (ValueError, RecursionError) as exc:
            problems.append(error(str(path), str(exc) or "not JSON"))
            continue
        markdown = path.with_suffix(".md")
        link = issues.get(markdown.name) or _relative(markdown, link_base)
        records.append(Record(title, labels, milestone, when, link, str(path)))
    if problems:
        raise SevimgError(
            f"{folder}: {len(problems)} file{'s' if len(problems) > 1 else ''} "
            "that are not reports saved by `sevimg serve`",
            problems,
            hint="a results folder holds serve's <image>-<time>.json and .md files and results.json",
        )
    return records


def _relative(path: Path, base: Path | None) -> str:
    if base is None:
        return path.name
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def read_folders(folders: Iterable[Path], link_base: Path | None = None) -> list[Record]:
    """The records of several folders, in folder order."""
    found: list[Record] = []
    for folder in folders:
        found.extend(read_folder(folder, link_base))
    return found
