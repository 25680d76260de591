"""Text from users, files and remote servers, made safe to show on a terminal.

A catalog value, a file name, a key, a GitHub message or a console line may
hold an escape sequence (`\\x1b[2J` clears the screen, OSC 8 makes a
hyperlink, OSC 52 writes the clipboard), a carriage return that hides what
came before it, or a right-to-left override that shows `exe.txt` for
`txt.exe`. :func:`printable` shows each such character as a visible
`\\xNN`/`\\uNNNN` escape; :class:`SafeConsole` applies it to everything
it prints, so no command can forget. Rich markup is the other half: the
consoles are made with `markup=False`, so `[link=…]` stays text.

This module is the one home for showing untrusted text; redaction of
secrets is :mod:`sevimg.redact`'s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment
from rich.text import Text

# C0 controls but tab and line feed (kept: messages span lines), DEL, C1
# controls, the line/paragraph separators, and the bidirectional formatting
# characters (embeddings, overrides, isolates, marks).
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _shown(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every terminal control and bidi character written as an escape (`\\x1b`)."""
    return UNSAFE.sub(_shown, text)


class SafeConsole(Console):
    """A rich Console that prints every piece of text through :func:`printable`.

    Strings are escaped before they are measured (so tables keep their
    layout); the rendered segments are escaped again as a backstop for
    Text objects and renderables built elsewhere. Control segments (cursor
    moves of a live display) are rich's own and pass.
    """

    def render_str(self, text: str, **kwargs: Any) -> Text:
        """As rich's, on the escaped text."""
        return super().render_str(printable(text), **kwargs)

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        """As rich's, with unsafe characters escaped in every text segment."""
        for segment in super().render(renderable, options):
            if segment.control or not UNSAFE.search(segment.text):
                yield segment
            else:
                yield Segment(printable(segment.text), segment.style, segment.control)
