"""The jobs of a dispatch-compatible server and how they move between states.

The rules are dispatch's (AMDEPYC/dispatch `src/http/service.rs`): a job is
keyed by the client's IP address; HEAD and GET assign one (the job already
held by that IP, else the first unassigned, else one left idle for five
minutes), GET moves it to Downloading, POST moves Downloading to Booting,
PUT moves Booting to Reported, so a boot reports once. Each transition is a
pure function from a tuple of :class:`Job` to a new tuple; :class:`Board`
holds the current tuple behind a lock and reads time from an injectable
clock, so tests can walk through five idle minutes without waiting.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from sevimg.problems import SevimgError, parse_json

# dispatch hands an Assigned or Downloading job to another client after this long without activity.
IDLE_AFTER = 300.0


class State(Enum):
    """A job's state, named as dispatch names them."""

    UNASSIGNED = "Unassigned"
    ASSIGNED = "Assigned"
    DOWNLOADING = "Downloading"
    BOOTING = "Booting"
    REPORTED = "Reported"
    FINISHED = "Finished"  # reported, and the GitHub issue was filed
    FAILED = "Failed"  # the issue could not be filed, or the host came back without reporting

    @property
    def icon(self) -> str:
        """dispatch's icon for the state."""
        return _ICONS[self]

    @property
    def done(self) -> bool:
        """Nothing more will happen to a job in this state."""
        return self in (State.REPORTED, State.FINISHED, State.FAILED)


_ICONS = {
    State.UNASSIGNED: "⏳",
    State.ASSIGNED: "📌",
    State.DOWNLOADING: "📥",
    State.BOOTING: "⚡",
    State.REPORTED: "📝",
    State.FINISHED: "🏁",
    State.FAILED: "❌",
}

Request = tuple[float, str, str, int]  # (time, client, method, status)

# Holding a job: these states belong to the client that got the image.
_HELD = (State.ASSIGNED, State.DOWNLOADING)


@dataclass(frozen=True)
class Job:
    """One image to boot, and where it stands."""

    name: str  # the file name served, e.g. host-debian-13.efi
    path: Path
    size: int
    sha256: str
    state: State = State.UNASSIGNED
    client: str | None = None
    active: float = 0.0  # when the holder last did something (idle re-assignment)
    sent: int = 0  # bytes of the image sent so far, over every GET of it
    assigned_at: float | None = None
    booted_at: float | None = None
    reported_at: float | None = None
    note: str = ""  # an issue URL, or why the job failed
    # Requests that concerned the job: how many, and the first and last (time, client,
    # method, status). Never every request: a host (or anyone) asking in a loop would
    # grow the job, and results.json with it, without bound.
    request_count: int = 0
    first_request: Request | None = None
    last_request: Request | None = None

    @property
    def image_id(self) -> str:
        """The name without .efi (host-debian-13)."""
        return self.name.removesuffix(".efi")


def assign(jobs: tuple[Job, ...], client: str, now: float) -> tuple[tuple[Job, ...], int | None]:
    """HEAD and GET: the index of the job `client` gets, and the jobs after assigning it.

    The job it holds (Assigned or Downloading), else the first Unassigned,
    else the first held job idle for :data:`IDLE_AFTER` seconds; None when
    no job is left. A job this client left in Booting is marked Failed when
    it gets another: it HTTP-booted again, so that boot will never report.
    """
    index = next((i for i, j in enumerate(jobs) if j.client == client and j.state in _HELD), None)
    if index is not None:
        return _set(jobs, index, active=now), index
    index = next((i for i, j in enumerate(jobs) if j.state is State.UNASSIGNED), None)
    if index is None:
        index = next(
            (i for i, j in enumerate(jobs) if j.state in _HELD and now - j.active > IDLE_AFTER),
            None,
        )
    if index is None:
        return jobs, None
    jobs = tuple(
        replace(j, state=State.FAILED, note="HTTP-booted again before reporting")
        if j.client == client and j.state is State.BOOTING
        else j
        for j in jobs
    )
    return (
        _set(jobs, index, state=State.ASSIGNED, client=client, active=now, assigned_at=now),
        index,
    )


def download(jobs: tuple[Job, ...], client: str, now: float) -> tuple[tuple[Job, ...], int | None]:
    """GET: assign as HEAD does, then the job is Downloading."""
    jobs, index = assign(jobs, client, now)
    if index is None:
        return jobs, None
    return _set(jobs, index, state=State.DOWNLOADING, active=now), index


def boot(jobs: tuple[Job, ...], client: str, now: float) -> tuple[tuple[Job, ...], int | None]:
    """POST: the client's Downloading job is Booting; None (answer 417) when it has none."""
    index = _held(jobs, client, State.DOWNLOADING)
    if index is None:
        return jobs, None
    return _set(jobs, index, state=State.BOOTING, active=now, booted_at=now), index


def report(jobs: tuple[Job, ...], client: str, now: float) -> tuple[tuple[Job, ...], int | None]:
    """PUT: the client's Booting job is Reported; None (answer 417) when it has none."""
    index = _held(jobs, client, State.BOOTING)
    if index is None:
        return jobs, None
    return _set(jobs, index, state=State.REPORTED, active=now, reported_at=now), index


def settle(jobs: tuple[Job, ...], index: int, *, ok: bool, note: str) -> tuple[Job, ...]:
    """After a report was handed on: Finished (issue filed) or Failed, with a note."""
    if jobs[index].state is not State.REPORTED:
        return jobs
    return _set(jobs, index, state=State.FINISHED if ok else State.FAILED, note=note)


def touch(jobs: tuple[Job, ...], client: str, now: float, sent: int = 0) -> tuple[Job, ...]:
    """A download is still moving (`sent` more bytes): the client's held job is not idle."""
    index = next((i for i, j in enumerate(jobs) if j.client == client and j.state in _HELD), None)
    if index is None:
        return jobs
    return _set(jobs, index, active=now, sent=jobs[index].sent + sent)


def booting(jobs: tuple[Job, ...], client: str) -> Job | None:
    """The job `client` holds in Booting (the only one a PUT may report), without changing anything."""
    index = _held(jobs, client, State.BOOTING)
    return None if index is None else jobs[index]


def visible(job: Job) -> tuple[object, ...]:
    """What a change must touch to be worth telling (and writing to results.json)."""
    return (job.state, job.client, job.assigned_at, job.booted_at, job.reported_at, job.note)


def _held(jobs: tuple[Job, ...], client: str, state: State) -> int | None:
    return next((i for i, j in enumerate(jobs) if j.client == client and j.state is state), None)


def _set(jobs: tuple[Job, ...], index: int, **changes: Any) -> tuple[Job, ...]:
    return (*jobs[:index], replace(jobs[index], **changes), *jobs[index + 1 :])


# --- the report a host PUTs -------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """What beacon (or sevimg_cert.dispatch) PUTs: `{title, body?, labels?, assignees?, milestone?}`."""

    title: str
    body: str = ""
    labels: tuple[str, ...] = ()
    assignees: tuple[str, ...] = ()
    milestone: str | None = None  # a milestone *title*, e.g. c3.0.0-0

    def as_json(self) -> dict[str, Any]:
        """The report as it was sent (empty fields left out, as beacon does)."""
        data: dict[str, Any] = {"title": self.title}
        if self.body:
            data["body"] = self.body
        if self.labels:
            data["labels"] = list(self.labels)
        if self.assignees:
            data["assignees"] = list(self.assignees)
        if self.milestone is not None:
            data["milestone"] = self.milestone
        return data


# GitHub takes an issue body of up to 65,536 characters. In UTF-8 a character is up to
# 4 bytes, and JSON writes a control character as 6 (\u001b); with the title, labels and
# the JSON around them, 512 KiB holds any report GitHub would take.
MAX_REPORT = 512 * 1024
MAX_DEPTH = 8  # a report is an object holding lists of strings: depth 2
MAX_TITLE = 1024
MAX_NAMES = 100  # labels, assignees


def parse_report(raw: bytes) -> Report:
    """The report in a PUT body; ValueError saying what is wrong (the server answers 400).

    Everything that could stop the report from being saved is refused
    here, before any state changes: more than :data:`MAX_REPORT` bytes,
    text that is not strict UTF-8, JSON nested deeper than a report is, and
    strings holding lone surrogates (`"\\udc80"` is valid JSON but no file
    can hold it as UTF-8).
    """
    if len(raw) > MAX_REPORT:
        raise ValueError(f"larger than {MAX_REPORT} bytes")
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None
    if json_depth(text) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        data = parse_json(text, "the report")
    except SevimgError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    title = data.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ValueError("no title")
    if len(title) > MAX_TITLE:
        raise ValueError(f"the title is longer than {MAX_TITLE} characters")
    body = data.get("body")
    if body is not None and not isinstance(body, str):
        raise ValueError("body is not a string")
    milestone = data.get("milestone")
    if milestone is not None and not isinstance(milestone, str):
        raise ValueError("milestone is not a string (it is a milestone's title)")
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("labels", "assignees"):
        value = data.get(key)
        if value is None:
            value = []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{key} is not a list of strings")
        if len(value) > MAX_NAMES or any(len(v) > MAX_TITLE for v in value):
            raise ValueError(f"{key}: more than {MAX_NAMES}, or one longer than {MAX_TITLE}")
        lists[key] = tuple(value)
    report = Report(title, body or "", lists["labels"], lists["assignees"], milestone or None)
    for key, value in report.as_json().items():
        for item in value if isinstance(value, list) else [value]:
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    f"{key} holds a lone surrogate (\\u{ord(item[_bad(item)]):04x})"
                ) from None
    return report


def _bad(text: str) -> int:
    return next(i for i, c in enumerate(text) if 0xD800 <= ord(c) <= 0xDFFF)


# Unrolled and possessive: one pass, no backtracking stack per character (memory stays flat).
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"')
_BRACKETS = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """How deep `text`'s arrays and objects nest (strings left out); linear in its length."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


# --- the board: the current jobs, shared by the server's threads -----------------------

Clock = Callable[[], float]
Listener = Callable[[tuple[Job, ...]], None]


@dataclass
class Board:
    """The jobs behind a lock, the clock, and listeners told of every change."""

    jobs: tuple[Job, ...]
    clock: Clock
    listeners: list[Listener] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _changed: threading.Condition = field(init=False)
    _pending: bool = False  # a change whose request is not recorded yet

    def __post_init__(self) -> None:
        self._changed = threading.Condition(self._lock)

    def snapshot(self) -> tuple[Job, ...]:
        """The jobs now."""
        with self._lock:
            return self.jobs

    def apply(
        self,
        step: Callable[[tuple[Job, ...], str, float], tuple[tuple[Job, ...], int | None]],
        client: str,
    ) -> Job | None:
        """Run one transition for `client`; the job it concerns, or None.

        A change that concerns a job is told once its request is recorded
        (:meth:`record`), so results.json holds the request that made it.
        """
        with self._lock:
            jobs, index = step(self.jobs, client, self.clock())
            changed = [visible(j) for j in jobs] != [visible(j) for j in self.jobs]
            self.jobs = jobs
            found = None if index is None else jobs[index]
            if changed and found is not None:
                self._pending = True
        if changed and found is None:
            self._tell()
        return found

    def record(self, name: str, client: str, method: str, status: int) -> None:
        """Count a request that concerned job `name`, keeping the first and the last.

        Not a change worth telling: results.json is written on state changes
        (and when serve stops), not once per request.
        """
        with self._lock:
            index = next(i for i, j in enumerate(self.jobs) if j.name == name)
            job = self.jobs[index]
            entry: Request = (self.clock(), client, method, status)
            self.jobs = _set(
                self.jobs,
                index,
                request_count=job.request_count + 1,
                first_request=job.first_request or entry,
                last_request=entry,
            )
            pending, self._pending = self._pending, False
        if pending:
            self._tell()

    def settle(self, name: str, *, ok: bool, note: str) -> None:
        """Finish or fail a Reported job."""
        with self._lock:
            index = next(i for i, j in enumerate(self.jobs) if j.name == name)
            self.jobs = settle(self.jobs, index, ok=ok, note=note)
        self._tell()

    def touch(self, client: str, sent: int = 0) -> None:
        """A download moved on by `sent` bytes (no listener is told: not a change worth showing)."""
        with self._lock:
            self.jobs = touch(self.jobs, client, self.clock(), sent)

    def wait(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the next change."""
        with self._changed:
            self._changed.wait(timeout)

    def all_done(self) -> bool:
        """Every job reported (or failed)."""
        with self._lock:
            return all(j.state.done for j in self.jobs)

    def _tell(self) -> None:
        with self._changed:
            self._changed.notify_all()
            jobs = self.jobs
        for listener in list(self.listeners):
            listener(jobs)


def ordered(jobs: Sequence[Job]) -> tuple[Job, ...]:
    """Jobs in name order, as dispatch hands them out."""
    return tuple(sorted(jobs, key=lambda j: j.name))


def public(job: Job) -> dict[str, Any]:
    """A job as the status page shows it: what anyone on the lab network may see.

    No paths and no internals; times as seconds since the epoch (None: not yet).
    """
    return {
        "job": job.name,
        "image": job.image_id,
        "state": job.state.value,
        "icon": job.state.icon,
        "client": job.client,
        "size": job.size,
        "sent": job.sent,
        "assigned_at": job.assigned_at,
        "booted_at": job.booted_at,
        "reported_at": job.reported_at,
        "note": job.note,
    }
