"""No catalog value, file name or remote text reaches the terminal as a control sequence.

An escape sequence in a value could clear the screen, fake a line, set the
window title, write the clipboard (OSC 52) or make a hyperlink (OSC 8); a
right-to-left override shows text in another order than it is. Every
command prints such characters as visible escapes (`\\x1b`, `\\u202e`),
on a pipe and on a terminal alike, while its own colours still work.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.table import Table
from rich.text import Text

from sevimg.display import UNSAFE, SafeConsole, printable
from tests.conftest import CliFn

HOSTILE = {
    "csi colour": "\x1b[31mred",
    "clear screen": "x\x1b[2J\x1b[H",
    "osc8 link": "\x1b]8;;file:///etc/passwd\x1b\\click\x1b]8;;\x1b\\",
    "osc52 clipboard": "\x1b]52;c;cm0gLXJmIH4=\x07",
    "title": "\x1b]0;owned\x07",
    "bell": "a\x07b",
    "backspace": "abc\x08\x08\x08xyz",
    "carriage return": "ok\rFAIL",
    "c1 csi": "x\x9b31my",
    "delete": "x\x7fy",
    "nul": "x\x00y",
    "vertical tab": "x\x0by",
    "rtl override": "gpj\u202eexe.txt",
    "rtl isolate": "a\u2067b\u2069c",
    "rtl mark": "a\u200fb",
    "line separator": "a\u2028b",
}


def _clean(text: str) -> bool:
    return UNSAFE.search(text) is None


# --- the helper and the console --------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_printable_leaves_no_unsafe_character(value: str) -> None:
    shown = printable(value)
    assert _clean(shown)
    assert printable(shown) == shown  # idempotent: escaping twice changes nothing


@pytest.mark.parametrize("keep", ["plain", "tab\there", "two\nlines", "ünïcødé ✓ 📝", "[/red]"])
def test_printable_keeps_ordinary_text(keep: str) -> None:
    assert printable(keep) == keep


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
def test_safe_console_escapes_strings_text_and_tables(value: str, terminal: bool) -> None:
    sink = io.StringIO()
    console = SafeConsole(
        file=sink, force_terminal=terminal, markup=False, highlight=False, width=200
    )
    table = Table("a", "b")
    table.add_row(value, Text(value, style="red"))
    console.print(value, style="bold")
    console.print(Text(value))
    console.print(table)
    written = sink.getvalue()
    assert printable(value) in written  # the string, escaped, in full
    if terminal:  # rich's own styling still works; nothing else is a control sequence
        assert "\x1b[1m" in written
        for code in ("\x1b[1m", "\x1b[31m", "\x1b[0m"):
            written = written.replace(code, "")
    assert _clean(written), repr(written)


# --- every command, the values in the catalog ------------------------------------------------


def _set(field: str) -> Callable[[Path, str], None]:
    def edit(workspace: Path, value: str) -> None:
        path = workspace / "images" / "debian-13.yaml"
        text = path.read_text()
        if field == "key":
            text += f"{json.dumps(value)}: 1\n"
        else:
            old = next(line for line in text.splitlines() if line.startswith(f"{field}:"))
            text = text.replace(old, f"{field}: {json.dumps(value)}")
        path.write_text(text)

    return edit


PLACES = {"status": _set("status"), "codename": _set("codename"), "key": _set("key")}
COMMANDS = [
    ("list",),
    ("validate",),
    ("validate", "debian-13"),
    ("show", "debian-13"),
    ("doctor", "--no-network"),
    ("render", "debian-13"),
    ("build", "debian-13"),
]


# Each kind once (the console test above takes them all).
SOME = {
    k: HOSTILE[k]
    for k in ("csi colour", "osc8 link", "carriage return", "c1 csi", "rtl override", "nul")
}


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("value", SOME.values(), ids=SOME.keys())
def test_catalog_values_never_reach_the_terminal_raw(
    cli: CliFn, workspace: Path, fake_mkosi: Path, place: str, value: str
) -> None:
    PLACES[place](workspace, value)
    for command in COMMANDS:
        run = cli(*command)
        assert run.code == 1, (command, run.output)
        assert _clean(run.output), (command, run.output)
        assert "internal error" not in run.output and "Traceback" not in run.output
        assert "debian-13" in run.output
    assert not (workspace / "build").exists()


@pytest.mark.parametrize(
    "value", [v for v in HOSTILE.values() if "/" not in v and "\x00" not in v], ids=str
)
def test_file_names_never_reach_the_terminal_raw(cli: CliFn, workspace: Path, value: str) -> None:
    (workspace / "images" / f"debian-{value}.yaml").write_text("schema_version: 1\n")
    for command in (("list",), ("validate",), ("doctor", "--no-network")):
        run = cli(*command)
        assert run.code == 1, run.output
        assert _clean(run.output), (command, run.output)
        assert "internal error" not in run.output


@pytest.mark.parametrize("value", ["\x1b[31mred", "a\u202eb", "x\x1b]52;c;eA==\x07"], ids=str)
def test_on_a_real_terminal_only_sevimgs_own_colours_are_sent(workspace: Path, value: str) -> None:
    """A real pseudo-terminal: rich colours the error, the value's ESC arrives as text."""
    PLACES["key"](workspace, value)
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sevimg", "--root", str(workspace), "validate"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 1
    written = b"".join(chunks).decode()
    assert "\x1b[31m" in written  # sevimg's own red for the error line
    assert "\x1b" not in re.sub(r"\x1b\[[0-9;]*m", "", written), repr(written)
    assert "\u202e" not in written and "\x07" not in written
    assert printable(value) in written


# --- a crash (a bug in sevimg) shows no secret, even with SEVIMG_DEBUG's traceback ------------

TOKEN_VALUE = "ghp_" + "T0k3n" * 7 + "x"


@pytest.mark.parametrize("debug", ["", "1"], ids=["plain", "SEVIMG_DEBUG"])
@pytest.mark.parametrize(
    "secret_in",
    ["http://user:s3cr3t@mirror.example/x", f"token {TOKEN_VALUE}", "proxy u:s3cr3t@p:3128"],
)
def test_an_internal_error_shows_no_secret(
    cli: CliFn, monkeypatch: pytest.MonkeyPatch, debug: str, secret_in: str
) -> None:
    import sevimg.cli.catalog as catalog_cli

    def crash(*_args: object) -> None:
        raise RuntimeError(f"boom \x1b[2J {secret_in}")

    monkeypatch.setattr(catalog_cli, "check_catalog", crash)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN_VALUE)
    monkeypatch.setenv("SEVIMG_DEBUG", debug)
    run = cli("list")
    assert run.code == 70, run.output
    assert "internal error: RuntimeError: boom" in run.stderr
    assert "s3cr3t" not in run.output and TOKEN_VALUE not in run.output
    assert _clean(run.output)
    assert ("Traceback" in run.stderr) == bool(debug)
