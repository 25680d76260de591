"""Validate loaded catalog files against the JSON Schemas in schema/, with located errors.

jsonschema's messages are written for programmers; each one here is rewritten
to say what was expected in the catalog's own words (the schema's
`x-expected` annotation), at the line and column of the offending value.

Patterns are read the way JSON Schema defines them (ECMA-262): `$` is the end
of the text. Python's `$` also matches before a final newline, so
`"trixie\n"` would pass `^[a-z]+$` under plain jsonschema; the validator here
anchors `$` for real. The schemas also refuse control characters in every
string on their own (`not: control_character`), for any other validator.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from sevimg.catalog.load import Document, JsonPath, format_path
from sevimg.problems import Problem, SevimgError, error

DISTRO = "distro.schema.json"
RELEASE = "release.schema.json"
FAMILY = "family.schema.json"
PROJECT = "project.schema.json"
LOCAL = "local.schema.json"
MANIFEST = "manifest.schema.json"  # not the catalog's: an artifact's, read by release/
VERIFY_POLICY = "verify-policy.schema.json"  # `sevimg verify --policy FILE`
MEASUREMENTS = "measurements.schema.json"  # a release's measurements.json, read by verifiers
SCHEMA_FILES = (
    "common.schema.json",
    DISTRO,
    RELEASE,
    FAMILY,
    PROJECT,
    LOCAL,
    MANIFEST,
    VERIFY_POLICY,
    MEASUREMENTS,
)

_TYPE_NAMES = {
    "object": "a mapping (key: value)",
    "array": "a list",
    "string": "a string",
    "boolean": "true or false",
    "integer": "a whole number",
    "number": "a number",
    "null": "nothing",
}


# What the schemas' `control_character` matches, for the messages (and for
# schemas a workspace overrides without it).
CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_NAMES = {
    "\x00": "NUL",
    "\t": "tab",
    "\n": "line feed",
    "\r": "carriage return",
    "\x1b": "escape",
    "\x7f": "delete",
    "\x85": "next line",
    "\u2028": "line separator",
    "\u2029": "paragraph separator",
}


def control_character(text: str) -> str | None:
    """The first control character in `text`, described ('U+000A, line feed'), or None."""
    found = CONTROL_CHARACTER.search(text)
    if found is None:
        return None
    char = found.group()
    name = _CONTROL_NAMES.get(char)
    return f"U+{ord(char):04X}" + (f", {name}" if name else "")


@cache
def ecma_pattern(pattern: str) -> re.Pattern[str]:
    """`pattern` compiled so that `$` means the end of the text, as in ECMA-262.

    Every `$` outside a character class and not escaped becomes `\\Z`.
    """
    out: list[str] = []
    in_class = escaped = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            out.append("\\Z")
            continue
        out.append(char)
    return re.compile("".join(out))


def _pattern(
    validator: Validator, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if isinstance(instance, str) and not ecma_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_draft_type = Draft202012Validator.VALIDATORS["type"]


def _type(
    validator: Validator, types: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    yield from _draft_type(validator, types, instance, schema)
    # The shipped schemas refuse control characters with `not`; a workspace's
    # own schema without it still gets the same refusal.
    wants_string = types == "string" or (isinstance(types, list) and "string" in types)
    if (
        wants_string
        and isinstance(instance, str)
        and "not" not in schema
        and not schema.get("x-free-text")
        and control_character(instance)
    ):
        yield ValidationError(f"{instance!r} contains a control character", validator="x-control")


_Validator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"pattern": _pattern, "type": _type}
)


def _yaml_type(value: Any) -> str:
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class Schemas:
    """The catalog's schemas, loaded once, with a validator per file kind."""

    def __init__(self, search_path: Sequence[Path]) -> None:
        documents: dict[str, dict[str, Any]] = {}
        for name in SCHEMA_FILES:
            for folder in search_path:
                candidate = folder / name
                if candidate.is_file():
                    try:
                        documents[name] = json.loads(candidate.read_text(encoding="utf-8"))
                    except (OSError, ValueError) as exc:
                        raise SevimgError(
                            f"{candidate}: not a readable JSON Schema: {exc}"
                        ) from None
                    break
            else:
                raise SevimgError(f"schema {name} not found in {', '.join(map(str, search_path))}")
        resources = [
            (doc["$id"], Resource.from_contents(doc, default_specification=DRAFT202012))
            for doc in documents.values()
        ]
        registry: Registry[Any] = Registry().with_resources(resources)
        self._validators = {
            name: _Validator(document, registry=registry) for name, document in documents.items()
        }
        self.documents = documents

    def validate(self, doc: Document, kind: str) -> list[Problem]:
        """All schema problems of `doc` as a `kind` file (DISTRO, RELEASE, FAMILY, ...), sorted by position."""
        if doc.data is None:
            return [
                error(
                    doc.display, "file is empty; expected a mapping of settings", line=1, column=1
                )
            ]
        validator = self._validators[kind]
        leaves = [leaf for err in validator.iter_errors(doc.data) for leaf in _leaves(err)]
        # A control character also fails the value's pattern: say it once, precisely.
        controlled = {
            (tuple(e.absolute_path), e.instance)
            for e in leaves
            if e.validator in ("not", "x-control")
            and isinstance(e.instance, str)
            and control_character(e.instance)
        }
        problems = [
            _problem(e, doc)
            for e in leaves
            if not (e.validator == "pattern" and (tuple(e.absolute_path), e.instance) in controlled)
        ]
        return sorted(set(problems))


@cache
def schemas_for(search_path: tuple[Path, ...]) -> Schemas:
    """Schemas loaded from the first folder in `search_path` that has each file (cached)."""
    return Schemas(search_path)


def _leaves(err: ValidationError) -> Iterator[ValidationError]:
    """For anyOf/oneOf, report the most specific failures rather than the umbrella error."""
    if err.context:
        best = max(err.context, key=lambda e: len(e.absolute_path))
        yield from _leaves(best)
    else:
        yield err


def _problem(err: ValidationError, doc: Document) -> Problem:
    path: JsonPath = tuple(err.absolute_path)
    schema = err.schema if isinstance(err.schema, dict) else {}
    validator = str(err.validator)
    value: Any = err.instance
    rule: Any = err.validator_value
    at_key = False
    if "propertyNames" in err.relative_schema_path and isinstance(value, str):
        # A bad key: point at the key itself, not at the mapping holding it.
        path, at_key = (*path, value), True

    if validator in ("not", "x-control") and isinstance(value, str):
        found = control_character(value)
        if found:
            expected = schema.get("x-expected")
            what = f"is not {expected}; it contains" if expected else "contains"
            return doc.problem(
                path, f"{_show(value)} {what} a control character ({found})", key=at_key
            )

    if validator == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(schema.get("properties", {}))
        extras = sorted(k for k in value if k not in allowed)
        key = extras[0] if extras else ""
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = (
            f"; did you mean {close[0]!r}?" if close else f" (allowed here: {', '.join(allowed)})"
        )
        return doc.problem((*path, key), f"unknown key {key!r}{hint}", key=True)

    if validator == "required":
        missing = str(err.message).split("'")[1] if "'" in err.message else str(err.message)
        where = f"in {format_path(path)}" if path else "at the top level"
        description = _property_description(schema, missing)
        return doc.problem(path, f"missing required key {missing!r} {where}{description}")

    if validator == "type":
        expected = rule
        names = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
        message = f"expected {wanted}, got {_yaml_type(value)}"
        written = doc.source_text(path)
        if "string" in names and not isinstance(value, str | list | dict) and written is not None:
            message += f'; YAML read {written!r} as {_yaml_type(value)}: quote it, as "{written}"'
        return doc.problem(path, message)

    if validator == "pattern":
        expected = schema.get("x-expected") or f"a value matching {rule}"
        return doc.problem(path, f"{_show(value)} is not {expected}", key=at_key)

    if validator in ("enum", "const"):
        options = rule if validator == "enum" else [rule]
        shown = ", ".join(_show(o) for o in options)
        close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
        hint = f"; did you mean {close[0]!r}?" if close and close[0] != str(value) else ""
        if isinstance(value, str) and (found := control_character(value)):
            hint = f"; it contains a control character ({found})"
        return doc.problem(path, f"{_show(value)} is not one of: {shown}{hint}")

    if validator == "uniqueItems":
        seen: set[str] = set()
        dupe: Any = "?"
        for item in value:
            key = json.dumps(item, sort_keys=True)
            if key in seen:
                dupe = item
                break
            seen.add(key)
        return doc.problem(path, f"lists an item twice: {_show(dupe)}")

    if validator in ("minItems", "maxItems", "minLength", "maxLength"):
        bound = rule
        what = "item" if "Items" in validator else "character"
        what += "" if bound == 1 else "s"
        relation = "at least" if validator.startswith("min") else "at most"
        return doc.problem(path, f"must have {relation} {bound} {what}")

    return doc.problem(path, err.message)


def _property_description(schema: dict[str, Any], name: str) -> str:
    prop = schema.get("properties", {}).get(name, {})
    text = prop.get("description") if isinstance(prop, dict) else None
    return f" ({text})" if text else ""


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
