"""The certification matrix as data: tables per processor generation, rows per OS, cells per version.

Pure: :func:`build` takes records and names and returns a :class:`Matrix`
whose order depends on nothing but its input (same records, same matrix,
whatever order they came in). The newest record per processor, OS and
certification version fills a cell; records that cannot be placed (no
`proc-` label, no OS label, no version) are kept in `apart`, newest first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from sevimg.lab.records import Record


@dataclass(frozen=True)
class Generation:
    """A processor generation: its series (7003) and AMD's name for it (Milan)."""

    series: str
    name: str

    @property
    def title(self) -> str:
        """`AMD EPYC 7003 (Milan)`, or `AMD EPYC 7004` for a series we have no name for."""
        return f"AMD EPYC {self.series} ({self.name})" if self.name else f"AMD EPYC {self.series}"


def load_generations() -> tuple[Generation, ...]:
    """The generations of processors.yaml, in its order."""
    text = resources.files("sevimg.lab").joinpath("processors.yaml").read_text(encoding="utf-8")
    data: Any = yaml.safe_load(text)
    return tuple(Generation(str(item["series"]), str(item["name"])) for item in data)


@dataclass(frozen=True)
class Cell:
    """The newest record for one OS, processor and version."""

    record: Record

    @property
    def certified(self) -> bool:
        """A level was achieved (the record is a certificate)."""
        return self.record.level is not None


@dataclass(frozen=True)
class Row:
    """One operating system: its name and a cell (or None) per version of its table."""

    os: str
    cells: tuple[Cell | None, ...]


@dataclass(frozen=True)
class Table:
    """One processor generation."""

    generation: Generation
    versions: tuple[str, ...]  # the certification versions, oldest first: the columns
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Matrix:
    """Every table, the records that fit none, and the level definitions."""

    tables: tuple[Table, ...]
    apart: tuple[tuple[Record, str], ...]  # (record, why it is not in a table)
    levels: tuple[tuple[str, str], ...]


def natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key that puts `Fedora 9` before `Fedora 41` and `25.04` before `25.10`."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part.casefold())
        for part in re.split(r"(\d+)", text)
        if part
    )


def os_name(label: str, names: Mapping[str, str]) -> str:
    """`os-debian-forky` → `Debian Forky`, `os-ubuntu-26.04` → `Ubuntu 26.04`.

    `names` maps an os-release ID as the label carries it (letters only,
    lower case) to the name people write (the catalog's `name`); an ID it
    does not know is shown as it is, capitalised. A release that is a word
    (a codename: forky, rawhide) is capitalised, a number is kept.
    """
    _, os_id, version = [*label.split("-", 2), ""][:3]
    name = names.get(os_id.casefold()) or os_id[:1].upper() + os_id[1:]
    if not version:
        return name
    shown = version if version[0].isdigit() else version[:1].upper() + version[1:]
    return f"{name} {shown}"


def _newer(a: Record, b: Record) -> bool:
    return (a.when, a.key) > (b.when, b.key)


def build(
    records: Iterable[Record],
    names: Mapping[str, str],
    generations: Sequence[Generation],
    levels: tuple[tuple[str, str], ...],
) -> Matrix:
    """The matrix of `records`: the newest per processor, OS and version wins a cell."""
    known = {g.series: g for g in generations}
    order = {g.series: i for i, g in enumerate(generations)}
    newest: dict[tuple[str, str, str], Record] = {}
    apart: list[tuple[Record, str]] = []
    seen: set[Record] = set()
    for record in records:
        if record in seen:  # the same run read twice (two folders, a copy) counts once
            continue
        seen.add(record)
        series, os_label, version = record.series, record.os_label, record.version
        if series is None:
            apart.append((record, "no proc- label"))
            continue
        if os_label is None:
            apart.append((record, "no os- label"))
            continue
        if version is None:
            apart.append((record, "no certification version (milestone or title)"))
            continue
        key = (series, os_label, version)
        if key not in newest or _newer(record, newest[key]):
            newest[key] = record
    tables = []
    for series in sorted(
        {s for s, _, _ in newest}, key=lambda s: (order.get(s, len(order)), natural(s))
    ):
        mine = {(o, v): r for (s, o, v), r in newest.items() if s == series}
        versions = tuple(sorted({v for _, v in mine}, key=natural))
        by_name: dict[str, dict[str, Record]] = {}
        for (label, version), record in mine.items():
            row = by_name.setdefault(os_name(label, names), {})
            # Two labels with one name (os-debian-13 and os-Debian-13): the newest wins.
            if version not in row or _newer(record, row[version]):
                row[version] = record
        rows = tuple(
            Row(name, tuple(Cell(c[v]) if v in c else None for v in versions))
            for name, c in sorted(by_name.items(), key=lambda item: natural(item[0]))
        )
        generation = known.get(series, Generation(series, ""))
        tables.append(Table(generation, versions, rows))
    apart.sort(key=lambda item: (item[0].when, item[0].key), reverse=True)
    return Matrix(tuple(tables), tuple(apart), levels)


def matrix_of(records: Iterable[Record], names: Mapping[str, str]) -> Matrix:
    """:func:`build` with the packaged generations and the harness's level definitions."""
    from sevimg_cert.result import LEVELS  # noqa: PLC0415 - the one home of the level names

    return build(records, names, load_generations(), LEVELS)
