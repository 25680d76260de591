"""Checked command-line values: names, numbers and versions, refused before a command runs.

A refusal names the option (or argument) and the value, and exits 1 like any
other bad input (click's own usage errors exit 2). Numbers must be finite and
within bounds: `nan` compares false with everything, so a plain range check
lets it through, and `inf` seconds is a wait that never ends.
"""

from __future__ import annotations

import math
import re
from typing import Any, NoReturn

import click

from sevimg.catalog.index import IMAGE_NAME_HELP, split_image_name
from sevimg.catalog.schema import control_character
from sevimg.catalog.spec import ROLES
from sevimg.mkosi_versions import MIN_MKOSI, MKOSI_VERSIONS, parse_mkosi_version

ROLE_PREFIXES = tuple(f"{role}-" for role in ROLES)
# --role of build, show and run: the catalog's roles.
ROLE_CHOICE = click.Choice(ROLES)


class BadInput(click.BadParameter):
    """A bad option or argument value: the usual click message, exit status 1."""

    exit_code = 1


def _refuse(message: str, param: click.Parameter | None, ctx: click.Context | None) -> NoReturn:
    raise BadInput(message, ctx=ctx, param=param)


class ImageName(click.ParamType):  # type: ignore[type-arg]  # generic only in click >= 8.2
    """`<distro>-<release>`; optionally `guest-…`/`host-…`, or a path to a `.efi` file."""

    name = "image"

    def __init__(self, *, role_prefix: bool = False, efi_path: bool = False) -> None:
        self.role_prefix = role_prefix
        self.efi_path = efi_path

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """The name, checked."""
        text = str(value)
        if found := control_character(text):
            _refuse(f"{text!r} contains a control character ({found})", param, ctx)
        if self.efi_path and text.endswith(".efi"):
            return text
        name = text
        if self.role_prefix and name.startswith(ROLE_PREFIXES):
            name = name.partition("-")[2]
        if split_image_name(name) is None:
            also = " (or a path to a .efi file)" if self.efi_path else ""
            _refuse(f"{text!r} is not an image name: {IMAGE_NAME_HELP}{also}", param, ctx)
        return text


_WHOLE = re.compile(r"[+-]?[0-9]+")


class Number(click.ParamType):  # type: ignore[type-arg]  # generic only in click >= 8.2
    """A finite number between `low` and `high` (inclusive), of `unit`; whole when `integer`."""

    def __init__(self, low: float, high: float, unit: str, *, integer: bool = False) -> None:
        self.low, self.high, self.unit, self.integer = low, high, unit, integer
        self.name = "integer" if integer else "number"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float | int:
        """The number, checked."""
        bounds = f"between {self._show(self.low)} and {self._show(self.high)}"
        if self.unit:
            bounds += f" {self.unit}"
        # ASCII only: float() and int() also read other scripts' digits (U+0661 is 1).
        # No "_" either: Python reads 1_0 as 10, a user means something else.
        text = str(value)
        if isinstance(value, bool) or control_character(text) or not text.isascii() or "_" in text:
            _refuse(f"{value!r} is not a number {bounds}", param, ctx)
        if isinstance(value, int | float):
            number: float | int = value
        else:
            text = str(value)
            try:
                if self.integer and not _WHOLE.fullmatch(text):
                    raise ValueError(text)  # int() would take " 2" and "1_0" (as 10)
                number = int(text, 10) if self.integer else float(text)
            except ValueError:
                what = "a whole number" if self.integer else "a number"
                _refuse(f"{str(value)!r} is not {what} {bounds}", param, ctx)
        if isinstance(number, float) and not math.isfinite(number):
            _refuse(f"{str(value)!r} is not a finite number {bounds}", param, ctx)
        if not self.low <= number <= self.high:
            _refuse(f"{str(value)!r} is not {bounds}", param, ctx)
        return number

    @staticmethod
    def _show(bound: float) -> str:
        return str(int(bound)) if float(bound).is_integer() else str(bound)


class MkosiVersion(click.ParamType):  # type: ignore[type-arg]  # generic only in click >= 8.2
    """An mkosi version such as 25.3 or 27.1, supported by sevimg."""

    name = "version"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """'25.3', checked and normalised."""
        try:
            parsed = parse_mkosi_version(str(value))
        except ValueError:
            _refuse(
                f"{str(value)!r} is not a version such as {' or '.join(MKOSI_VERSIONS)}", param, ctx
            )
        if parsed < MIN_MKOSI:
            oldest = ".".join(map(str, MIN_MKOSI))
            _refuse(f"sevimg supports mkosi {oldest} and newer", param, ctx)
        return ".".join(map(str, parsed))
