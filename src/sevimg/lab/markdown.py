"""The matrix as Markdown (GitHub's dialect), deterministic to the byte.

Everything that came from a host or from GitHub (titles, names, links) is
escaped: punctuation gets a backslash, so a title cannot open a link,
a table cell or raw HTML; a link target is percent-encoded and only
http(s) URLs and relative paths are linked at all.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

from sevimg.display import printable
from sevimg.lab.model import Cell, Matrix

START = "<!-- sevimg-matrix:start -->"
END = "<!-- sevimg-matrix:end -->"
CERTIFIED = "✅"
FAILED = "❌"
LEGEND = (
    f"{CERTIFIED} the level achieved; the link is the certificate. "
    f"{FAILED} the newest run achieved no level; the link is its result."
)
# What can start Markdown or HTML inline, or end a table cell; a backslash makes each literal.
_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&!#$])")


def text(value: str) -> str:
    """Peer text as literal Markdown: one line, controls shown as escapes, specials backslashed."""
    return _SPECIAL.sub(r"\\\1", printable(" ".join(value.split())))


def safe_link(url: str) -> str | None:
    """`url` fit to link (http, https or a relative path), percent-encoded; None otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "") or (not parts.scheme and parts.netloc):
        return None
    if not url or any(ord(c) < 0x20 for c in url):
        return None
    return quote(url, safe=":/?#@!$&'*+,;=%~-._")


def _link(label: str, url: str) -> str:
    target = safe_link(url)
    return f"[{label}]({target})" if target else label


def cell(value: Cell | None) -> str:
    """`✅ [c3.0.0-0](url)`, `❌ [failed](url)`, or empty."""
    if value is None:
        return ""
    record = value.record
    if record.level is not None:
        return f"{CERTIFIED} {_link(text('c' + record.level), record.link)}"
    return f"{FAILED} {_link('failed', record.link)}"


def body(matrix: Matrix) -> str:
    """The matrix without a title: what goes between the markers of `--update`."""
    out: list[str] = []
    if not matrix.tables:
        out += ["No certification results yet.", ""]
    for table in matrix.tables:
        out += [f"### {text(table.generation.title)}", ""]
        out.append("| OS | " + " | ".join(f"{v} Certification" for v in table.versions) + " |")
        out.append("|---|" + "---|" * len(table.versions))
        for row in table.rows:
            out.append(f"| {text(row.os)} | " + " | ".join(cell(c) for c in row.cells) + " |")
        out.append("")
    if matrix.tables:
        out += [LEGEND, ""]
    if matrix.apart:
        out += ["### Results not in a table", ""]
        out += ["| Run | Reported | Result | Why |", "|---|---|---|---|"]
        for record, why in matrix.apart:
            result = cell(Cell(record))
            out.append(f"| {text(record.title)} | {text(record.when)} | {result} | {why} |")
        out.append("")
    out += ["### Certification level definitions", ""]
    out += ["| Level | Features certified |", "|---|---|"]
    out += [f"| {text(level)} | {text(what)} |" for level, what in matrix.levels]
    return "\n".join(out) + "\n"


def document(matrix: Matrix) -> str:
    """A Markdown file of its own: a title, then the matrix between the markers."""
    return f"# SEV-SNP certification matrix\n\n{START}\n{body(matrix)}{END}\n"
