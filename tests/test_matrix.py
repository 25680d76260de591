"""`sevimg matrix`: results and certificate issues become the certification matrix.

The records are built the way serve saves them and GitHub lists them; the
GitHub side is the fake on 127.0.0.1 (GITHUB_API_URL), reached through
the real client.
"""

from __future__ import annotations

import html
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from sevimg.display import printable
from sevimg.lab import markdown as md
from sevimg.lab.markers import replace_marked, update_file
from sevimg.lab.model import Generation, build, load_generations, matrix_of, os_name
from sevimg.lab.names import catalog_names, names_from_distros
from sevimg.lab.page import matrix_page
from sevimg.lab.records import Record, read_folder
from sevimg.problems import SevimgError
from sevimg.workspace import Workspace
from sevimg_cert.result import LEVEL, LEVELS
from tests.conftest import IMAGES, REPO

NAMES = {"debian": "Debian", "ubuntu": "Ubuntu", "almalinux": "AlmaLinux"}


def rec(
    os_label: str | None,
    proc: str | None,
    *,
    level: str | None = LEVEL,
    when: str = "2026-12-01T10:00:00Z",
    key: str = "",
    title: str = "a run SEV version 3.0",
) -> Record:
    labels = ["certificate"]
    labels += [os_label] if os_label else []
    labels += [f"proc-{proc}"] if proc else []
    return Record(
        title,
        tuple(labels),
        f"c{level}" if level else None,
        when,
        f"https://github.com/acme/certs/issues/{key or when}",
        key or f"{os_label}-{proc}-{when}",
    )


def save(folder: Path, name: str, report: dict[str, Any], when: str) -> Path:
    """A report as `sevimg serve` saves it: <name>.json (the report as received) and <name>.md."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "schema_version": 1,
        "job": "host-x.efi",
        "image_sha256": "0" * 64,
        "client": "10.0.2.15",
        "reported_at": when,
        "report": report,
    }
    (folder / f"{name}.json").write_text(json.dumps(record))
    (folder / f"{name}.md").write_text(report.get("body", ""))
    return folder / f"{name}.json"


# --- building -----------------------------------------------------------------------------


def test_tables_rows_columns_and_the_newest_run_per_cell() -> None:
    records = [
        rec("os-debian-forky", "7003", level=None, when="2026-11-01T00:00:00Z"),
        rec("os-debian-forky", "7003", when="2026-12-01T00:00:00Z"),  # newer: certified
        rec("os-ubuntu-26.04", "7003", when="2026-12-02T00:00:00Z"),
        rec("os-ubuntu-26.04", "7003", level=None, when="2026-12-03T00:00:00Z"),  # newer: failed
        rec("os-debian-13", "9005", level=None),
        rec("os-debian-13", "9005", level="3.1.1-0", when="2026-12-05T00:00:00Z"),
    ]
    matrix = matrix_of(records, NAMES)
    assert [t.generation.title for t in matrix.tables] == [
        "AMD EPYC 7003 (Milan)",
        "AMD EPYC 9005 (Turin)",
    ]
    milan, turin = matrix.tables
    assert milan.versions == ("3.0",)
    assert [r.os for r in milan.rows] == ["Debian Forky", "Ubuntu 26.04"]
    forky, ubuntu = (r.cells[0] for r in milan.rows)
    assert forky is not None and forky.certified and forky.record.when.startswith("2026-12-01")
    assert ubuntu is not None and not ubuntu.certified
    # A column per certification version; a version a row never ran is an empty cell.
    assert turin.versions == ("3.0", "3.1")
    (row,) = turin.rows
    assert row.os == "Debian 13"
    assert [c.record.level if c else "-" for c in row.cells] == [None, "3.1.1-0"]


def test_generations_come_from_data_in_amds_order_and_unknown_ones_are_kept() -> None:
    generations = load_generations()
    assert [(g.series, g.name) for g in generations if g.series in ("7003", "9004", "8005")] == [
        ("7003", "Milan"),
        ("9004", "Genoa"),
        ("8005", "Sorano"),
    ]
    records = [rec("os-debian-13", s) for s in ("9999", "9005", "7003", "9004", "8004")]
    titles = [t.generation.title for t in matrix_of(records, NAMES).tables]
    assert titles == [
        "AMD EPYC 7003 (Milan)",
        "AMD EPYC 9004 (Genoa)",
        "AMD EPYC 8004 (Siena)",
        "AMD EPYC 9005 (Turin)",
        "AMD EPYC 9999",  # not in processors.yaml: named by its number, never dropped
    ]


def test_runs_without_a_processor_or_os_label_are_listed_apart_not_dropped() -> None:
    records = [
        rec("os-debian-13", None, when="2026-12-01T00:00:00Z", title="no proc"),
        rec(None, "9004", when="2026-12-02T00:00:00Z", title="no os"),
        rec("os-debian-13", "9004", level=None, title="debian 13 no version"),
        rec("os-debian-13", "9004", when="2026-12-03T00:00:00Z"),
    ]
    matrix = matrix_of(records, NAMES)
    assert [(r.title, why) for r, why in matrix.apart] == [
        ("no os", "no os- label"),  # newest first
        ("debian 13 no version", "no certification version (milestone or title)"),
        ("no proc", "no proc- label"),
    ]
    assert len(matrix.tables) == 1


@pytest.mark.parametrize("seed", range(5))
def test_the_same_runs_in_any_order_give_the_same_bytes(seed: int) -> None:
    records = [
        rec(f"os-{d}", p, level=lvl, when=f"2026-12-0{day}T00:00:00Z", key=f"k{i}")
        for i, (d, p, lvl, day) in enumerate(
            [
                ("debian-forky", "7003", LEVEL, 1),
                ("debian-forky", "7003", None, 1),  # same time: the key decides, every time
                ("ubuntu-26.04", "9004", LEVEL, 2),
                ("almalinux-10.1", "9005", None, 3),
                ("debian-13", "8005", LEVEL, 4),
            ]
        )
    ]
    records.append(rec("os-debian-13", None, key="apart-1"))
    records.append(rec("os-debian-13", None, key="apart-2"))
    shuffled = records[:]
    random.Random(seed).shuffle(shuffled)
    first = matrix_of(records, NAMES)
    second = matrix_of(shuffled + shuffled[:2], NAMES)  # read twice: counted once
    assert md.document(first) == md.document(second)
    assert matrix_page(first, title="t") == matrix_page(second, title="t")


def test_rows_are_named_from_the_catalog_as_people_write_them() -> None:
    names = catalog_names(Workspace(REPO))
    assert os_name("os-debian-forky", names) == "Debian Forky"
    assert os_name("os-ubuntu-26.04", names) == "Ubuntu 26.04"
    assert os_name("os-fedora-rawhide", names) == "Fedora Rawhide"
    assert os_name("os-centos-10", names) == "CentOS Stream 10"
    # os-release IDs that differ from the catalog's distro name, from images/<distro>.yaml.
    assert os_name("os-almalinux-10.1", names) == "AlmaLinux 10.1"
    assert os_name("os-opensuseleap-16.0", names) == "openSUSE Leap 16.0"
    # Unknown to the catalog: the ID as it is, capitalised; never dropped.
    assert os_name("os-rhel-10.1", names) == "Rhel 10.1"
    assert os_name("os-debian", names) == "Debian"
    # Every distribution file of the catalog names its rows.
    distros = [p.stem for p in IMAGES.glob("*.yaml") if "-" not in p.stem]
    assert sorted(
        names_from_distros([{"distro": d, "name": d.upper()} for d in distros])
    ) == sorted(distros)
    assert all(d in names for d in distros)


def test_sorting_is_natural() -> None:
    records = [rec(f"os-fedora-{n}", "7003") for n in ("44", "9", "41")]
    (table,) = matrix_of(records, {"fedora": "Fedora"}).tables
    assert [r.os for r in table.rows] == ["Fedora 9", "Fedora 41", "Fedora 44"]


def test_build_takes_generations_and_levels_as_given() -> None:
    matrix = build([rec("os-debian-13", "1234")], {}, [Generation("1234", "Test")], (("x", "y"),))
    assert matrix.tables[0].generation.title == "AMD EPYC 1234 (Test)"
    assert matrix.levels == (("x", "y"),)
    assert matrix.tables[0].rows[0].os == "Debian 13"  # no names: the ID capitalised


# --- writing ------------------------------------------------------------------------------


def _rendered(markdown: str) -> str:
    """What GitHub would make of it: CommonMark with raw HTML allowed, and tables."""
    return str(MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown))


def test_markdown_cells_links_and_the_level_table_from_the_harness() -> None:
    records = [
        rec("os-debian-forky", "7003", key="1"),
        rec("os-ubuntu-26.04", "7003", level=None, key="2"),
    ]
    text = md.document(matrix_of(records, NAMES))
    assert "### AMD EPYC 7003 (Milan)" in text
    assert "| OS | 3.0 Certification |" in text
    issues = "https://github.com/acme/certs/issues"
    assert f"| Debian Forky | ✅ [c{LEVEL}]({issues}/1) |" in text
    assert f"| Ubuntu 26.04 | ❌ [failed]({issues}/2) |" in text
    # The level definitions: exactly sevimg_cert.result.LEVELS, the harness's own table.
    defined = re.findall(r"^\| ([0-9.]+-[0-9]+) \| (.+) \|$", text, re.M)
    assert defined == [(level, what) for level, what in LEVELS]
    html = _rendered(text)
    assert html.count("<table>") == 2 and "<h3>AMD EPYC 7003 (Milan)</h3>" in html


HOSTILE = (
    'debian 13 <script>alert(1)</script> <img src=x onerror="alert(2)"> | cell'
    " [click](javascript:alert(3)) ![i](http://evil.example/x.png) *bold* `code`"
)


def test_hostile_titles_and_links_stay_text_in_markdown_and_html() -> None:
    bad = Record(
        HOSTILE,
        ("certificate", "os-debian-13"),
        None,
        "2026-12-01T00:00:00Z",
        "javascript:alert(4)",
        "k",
    )
    good = rec("os-debian-13", "9004")
    matrix = matrix_of([bad, good], NAMES)
    text = md.document(matrix)
    html = _rendered(text)
    assert (
        "<script" not in html
        and "<img" not in html
        and "javascript:" not in html.replace("javascript:alert(3)", "")
    )
    assert 'href="javascript' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown, as text
    # One row per record: the title's | did not open another cell.
    apart = [line for line in text.splitlines() if "alert(1)" in line]
    assert len(apart) == 1 and apart[0].count(" | ") == 3
    page = matrix_page(matrix, title="<b>t</b>")
    assert "<script" not in page and "<img" not in page and 'href="javascript' not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;t&lt;/b&gt;" in page
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page  # standalone: CSS inside


def test_an_empty_matrix_says_so() -> None:
    text = md.document(matrix_of([], NAMES))
    assert "No certification results yet." in text and "Certification level definitions" in text


# --- --update markers -----------------------------------------------------------------------


DOC = f"# My lab\n\nintro\n\n{md.START}\nold rows\n{md.END}\n\n## Later\nkept\n"


def test_update_rewrites_only_between_the_markers() -> None:
    out = replace_marked(DOC, "new rows\n", where="README.md")
    assert out == f"# My lab\n\nintro\n\n{md.START}\nnew rows\n{md.END}\n\n## Later\nkept\n"
    assert replace_marked(out, "new rows\n", where="README.md") == out
    crlf = DOC.replace("\n", "\r\n")
    assert replace_marked(crlf, "a\nb\n", where="x") == (
        f"# My lab\r\n\r\nintro\r\n\r\n{md.START}\r\na\r\nb\r\n{md.END}\r\n\r\n## Later\r\nkept\r\n"
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("no markers\n", f"README.md: no {md.START} line"),
        (f"{md.START}\n", f"README.md: no {md.END} line"),
        (
            f"{md.START}\n{md.START}\n{md.END}\n",
            f"README.md: lines 1, 2: {md.START} appears 2 times",
        ),
        (
            f"{md.START}\n{md.END}\nx\n{md.END}\n",
            f"README.md: lines 2, 4: {md.END} appears 2 times",
        ),
        (f"{md.END}\n{md.START}\n", f"README.md:1: {md.END} comes before {md.START} (line 2)"),
        # Inside a line (quoted in prose) is not a marker.
        (f"see `{md.START}` and `{md.END}`\n", f"README.md: no {md.START} line"),
    ],
)
def test_update_refuses_missing_duplicate_or_reversed_markers(document: str, message: str) -> None:
    with pytest.raises(SevimgError) as caught:
        replace_marked(document, "x\n", where="README.md")
    assert caught.value.message == message


def test_update_file_leaves_a_bad_document_untouched(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_text("no markers\n")
    with pytest.raises(SevimgError):
        update_file(path, "x\n")
    assert path.read_text() == "no markers\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]  # no temporary left
    path.write_text(DOC)
    assert update_file(path, "rows\n") is True
    assert update_file(path, "rows\n") is False


# --- reading results folders ----------------------------------------------------------------


def test_a_results_folder_links_to_the_issue_when_serve_filed_one(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    report = {
        "title": "debian forky SEV version 3.0",
        "labels": ["certificate", "os-debian-forky", "proc-9004"],
        "milestone": "c3.0.0-0",
    }
    save(folder, "host-debian-forky-20261201T100000Z", report, "2026-12-01T10:00:00Z")
    save(
        folder,
        "host-debian-13-20261201T110000Z",
        {**report, "milestone": None, "labels": ["certificate", "os-debian-13", "proc-9004"]},
        "2026-12-01T11:00:00Z",
    )
    summary = {
        "jobs": [
            {
                "job": "host-debian-forky.efi",
                "markdown": "host-debian-forky-20261201T100000Z.md",
                "issue": {"url": "https://github.com/acme/c/issues/7"},
            }
        ]
    }
    (folder / "results.json").write_text(json.dumps(summary))
    records = {r.title + str(r.milestone): r for r in read_folder(folder, tmp_path / "docs")}
    assert (
        records["debian forky SEV version 3.0c3.0.0-0"].link == "https://github.com/acme/c/issues/7"
    )
    assert (
        records["debian forky SEV version 3.0None"].link
        == "../results/host-debian-13-20261201T110000Z.md"
    )


def test_a_file_that_is_not_a_report_is_an_error_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    save(folder, "good", {"title": "t", "labels": []}, "")
    (folder / "broken.json").write_text("{nope")
    (folder / "other.json").write_text(json.dumps({"report": {"title": "t", "labels": "x"}}))
    with pytest.raises(SevimgError) as caught:
        read_folder(folder)
    found = {Path(p.file).name: p.message for p in caught.value.problems}
    assert set(found) == {"broken.json", "other.json"}
    assert "report.labels" in found["other.json"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_any_title_in_a_cell_reads_back_as_the_same_text(title: str) -> None:
    """Whatever a host puts in a title, the cell shows that text: no markup, no extra cell."""
    rendered = _rendered(f"| a | b |\n|---|---|\n| {md.text(title)} | end |\n")
    cells = re.findall(r"<td>(.*?)</td>", rendered, re.S)
    assert len(cells) == 2 and cells[1] == "end", rendered
    assert "<" not in cells[0].replace("&lt;", "")  # no element at all
    # The text itself, on one line, with terminal controls and bidi marks shown as escapes.
    assert html.unescape(cells[0]) == printable(" ".join(title.split()))
