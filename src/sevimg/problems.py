"""Problems found in user input, and the one exception type the CLI turns into an exit code.

Every message a user sees about their input is a :class:`Problem`: it names the
file, line, column and field, so editors and CI logs can jump straight to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sevimg.redact import redact_text


class Severity(StrEnum):
    """How bad a problem is: errors fail a command, warnings do not."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with an input file (or with the machine), with where it is."""

    file: str
    line: int
    column: int
    severity: Severity
    field: str
    message: str

    def __post_init__(self) -> None:
        # Messages quote values, and a value may be a URL with a password in it.
        object.__setattr__(self, "message", redact_text(self.message))

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}:{self.column or 1}"
        what = f"{self.field}: {self.message}" if self.field else self.message
        return f"{where}: {self.severity.value}: {what}"

    @property
    def is_error(self) -> bool:
        """True for errors, False for warnings."""
        return self.severity is Severity.ERROR

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly form, for `--json` outputs."""
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "severity": self.severity.value,
            "field": self.field,
            "message": self.message,
        }


def error(file: str, message: str, *, line: int = 0, column: int = 0, field: str = "") -> Problem:
    """Shorthand for an error problem."""
    return Problem(file, line, column, Severity.ERROR, field, message)


def warning(file: str, message: str, *, line: int = 0, column: int = 0, field: str = "") -> Problem:
    """Shorthand for a warning problem."""
    return Problem(file, line, column, Severity.WARNING, field, message)


def has_errors(problems: Iterable[Problem]) -> bool:
    """True when any of the problems is an error."""
    return any(p.is_error for p in problems)


class SevimgError(Exception):
    """A failure the user can act on. The CLI prints it without a traceback and exits 1."""

    def __init__(self, message: str, problems: Iterable[Problem] = (), *, hint: str = "") -> None:
        message, hint = redact_text(message), redact_text(hint)  # no password from a URL
        super().__init__(message)
        self.message = message
        self.problems = tuple(sorted(set(problems)))
        self.hint = hint

    def __str__(self) -> str:
        return self.message


def read_utf8(path: Path) -> str:
    """The text of a UTF-8 file; a SevimgError naming `path` when it is missing, unreadable or not UTF-8."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SevimgError(f"{path} not found") from None
    except UnicodeDecodeError:
        raise SevimgError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise SevimgError(f"cannot read {path}: {exc.strerror or exc}") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a repeated key."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"duplicate key {key!r}")
        found[key] = value
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_json(text: str | bytes, display: str) -> Any:
    """`text` parsed as JSON; a SevimgError naming `display` (and the line) when it is not.

    Stricter than :func:`json.loads` where files from elsewhere need it:
    `NaN` and `Infinity` are refused (they are not JSON and compare false
    with every bound), and so are numbers too long for Python to convert
    and nesting too deep to parse, which json.loads reports as a bare
    ValueError or RecursionError. A repeated key is refused too: json keeps
    the last one, so `"debug": true, "debug": false` would read as false.
    """
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise SevimgError(
            f"{display} is not valid JSON",
            [error(display, exc.msg, line=exc.lineno, column=exc.colno)],
        ) from None
    except UnicodeDecodeError:
        raise SevimgError(f"{display} is not UTF-8 text") from None
    except (
        RecursionError,
        ValueError,
    ) as exc:  # nested too deep; a repeated key; NaN; a huge number
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise SevimgError(f"{display} is not usable JSON: {why}", [error(display, why)]) from None
