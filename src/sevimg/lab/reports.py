"""A saved report (untrusted: a host wrote it) as HTML.

The Markdown is rendered by markdown-it (CommonMark and GitHub's tables)
with raw HTML switched off: a `<script>` or `<img onerror>` in a report is
shown as text, never passed through. markdown-it refuses `javascript:`,
`vbscript:`, `file:` and `data:` links; the page's Content-Security-Policy
keeps images and scripts to serve's own origin besides.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup


@cache
def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
        ["table", "strikethrough"]
    )


def report_html(markdown: str) -> Markup:
    """The report's Markdown as HTML, every piece of raw HTML in it escaped."""
    return Markup(_parser().render(markdown))  # noqa: S704 - html=False: markdown-it escapes all text


def pretty_json(data: Any) -> str:
    """JSON for a <pre> (escaped by the template)."""
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False)
