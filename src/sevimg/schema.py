"""Validate loaded catalog files against the JSON Schemas in schema/, with located errors.

jsonschema's messages are written for programmers; each one here is rewritten
to say what was expected in the catalog's own words (the schema's
`x-expected` annotation), at the line and column of the offending value.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from sevimg.loader import Document, JsonPath, format_path
from sevimg.problems import Problem, SevimgError, error

DISTRO = "distro.schema.json"
RELEASE = "release.schema.json"
PROJECT = "project.schema.json"
LOCAL = "local.schema.json"
SCHEMA_FILES = ("common.schema.json", DISTRO, RELEASE, PROJECT, LOCAL)

_TYPE_NAMES = {
    "object": "a mapping (key: value)",
    "array": "a list",
    "string": "a string",
    "boolean": "true or false",
    "integer": "a whole number",
    "number": "a number",
    "null": "nothing",
}


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
            name: Draft202012Validator(documents[name], registry=registry)
            for name in (DISTRO, RELEASE, PROJECT, LOCAL)
        }
        self.documents = documents

    def validate(self, doc: Document, kind: str) -> list[Problem]:
        """All schema problems of `doc` as a `kind` file (DISTRO or RELEASE), sorted by position."""
        if doc.data is None:
            return [
                error(
                    doc.display, "file is empty; expected a mapping of settings", line=1, column=1
                )
            ]
        validator = self._validators[kind]
        problems = [p for err in validator.iter_errors(doc.data) for p in _explain(err, doc)]
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


def _explain(err: ValidationError, doc: Document) -> Iterator[Problem]:
    for leaf in _leaves(err):
        yield _problem(leaf, doc)


def _problem(err: ValidationError, doc: Document) -> Problem:
    path: JsonPath = tuple(err.absolute_path)
    schema = err.schema if isinstance(err.schema, dict) else {}
    validator = str(err.validator)
    value: Any = err.instance
    rule: Any = err.validator_value

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
        return doc.problem(path, f"{_show(value)} is not {expected}")

    if validator in ("enum", "const"):
        options = rule if validator == "enum" else [rule]
        shown = ", ".join(_show(o) for o in options)
        close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
        hint = f"; did you mean {close[0]!r}?" if close and close[0] != str(value) else ""
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
