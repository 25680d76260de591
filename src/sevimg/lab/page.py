"""HTML pages from the package's templates (Jinja2, autoescaped): the matrix, and serve's pages.

Every value is escaped by Jinja; the few fragments built here (a cell's
link) go through :class:`markupsafe.Markup.format`, which escapes its
arguments. A link is made only for http(s) URLs and relative paths.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from sevimg.lab.markdown import CERTIFIED, FAILED, LEGEND, safe_link
from sevimg.lab.model import Matrix
from sevimg.lab.records import Record


@cache
def environment() -> jinja2.Environment:
    """The templates of sevimg.lab, autoescaped, strict about undefined names."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("sevimg.lab", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def asset(name: str) -> str:
    """A static file of the templates folder (lab.css, status.js)."""
    return resources.files("sevimg.lab").joinpath("templates", name).read_text(encoding="utf-8")


def link(label: str, url: str) -> Markup:
    """`<a href="url">label</a>` when `url` may be linked, else the label alone; escaped."""
    target = safe_link(url)
    if target is None:
        return Markup("{}").format(label)
    return Markup('<a href="{}" rel="noopener noreferrer">{}</a>').format(target, label)


def cell_html(record: Record) -> Markup:
    """`✅ c3.0.0-0` or `❌ failed`, linked."""
    if record.level is not None:
        return Markup("{} {}").format(CERTIFIED, link("c" + record.level, record.link))
    return Markup("{} {}").format(FAILED, link("failed", record.link))


def render(template: str, **values: Any) -> str:
    """One template with `values`."""
    values.setdefault("css_href", None)
    values.setdefault("css", "")
    values.setdefault("script_href", None)
    values.setdefault("nav", False)
    return environment().get_template(template).render(**values)


def matrix_page(matrix: Matrix, *, title: str, standalone: bool = True) -> str:
    """The matrix as an HTML page: standalone (its CSS inline, no script) or for serve."""
    records = [c.record for t in matrix.tables for r in t.rows for c in r.cells if c is not None]
    records += [r for r, _ in matrix.apart]
    cells = {r: cell_html(r) for r in records}
    if standalone:
        return render(
            "matrix.html.j2",
            matrix=matrix,
            title=title,
            cells=cells,
            legend=LEGEND,
            css=asset("lab.css"),
        )
    return render(
        "matrix.html.j2",
        matrix=matrix,
        title=title,
        cells=cells,
        legend=LEGEND,
        css_href="/lab.css",
        nav=True,
    )
