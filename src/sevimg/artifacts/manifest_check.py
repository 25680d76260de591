"""Checking a manifest's parsed JSON: its shape (schema/manifest.schema.json), then the
rules the schema cannot say (the fields that name the same image agree).

:meth:`sevimg.artifacts.manifest.Manifest.from_json` runs it on every manifest read.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sevimg.artifacts.names import artifact_name, looks_debug, parse_image_id
from sevimg.catalog.load import Document, LoadError, load_text
from sevimg.catalog.schema import MANIFEST, schemas_for
from sevimg.problems import Problem, error
from sevimg.workspace import packaged


def check_manifest(data: Any, *, display: str, text: str | None = None) -> list[Problem]:
    """Every problem with a manifest's parsed JSON: its shape (schema), then how its fields agree.

    `text` is the file as read, used to place each problem at its line; a
    manifest still being built has none.
    """
    if not isinstance(data, dict):
        return [error(display, f"a manifest is a JSON object, not {_json_type(data)}")]
    schemas = schemas_for(packaged("schema"))
    problems = schemas.validate(Document(Path(display), display, data, ""), MANIFEST)
    if problems:
        located = _located(data, text, display)
        if located is None:  # no text to point into: name the field alone
            return [replace(p, line=0, column=0) for p in problems]
        return schemas.validate(located, MANIFEST)
    return _check_agreement(data, display)


def _located(data: dict[str, Any], text: str | None, display: str) -> Document | None:
    """The manifest with the line and column of each value, when its text is at hand.

    JSON is YAML, so the catalog's position-keeping loader reads it; a text
    it reads differently (JSON's rarer escapes) is reported without positions.
    """
    if text is None:
        return None
    try:
        doc = load_text(text, path=Path(display), display=display)
    except LoadError:
        return None
    # Without the text as written: the catalog's "quote it" hints speak of YAML.
    return replace(doc, scalars={}) if doc.data == data else None


def _check_agreement(data: dict[str, Any], display: str) -> list[Problem]:
    """What the schema cannot say: the fields that name the same image must agree."""
    problems: list[Problem] = []

    def bad(where: str, message: str) -> None:
        problems.append(error(display, message, field=where))

    image_id: str = data["image_id"]
    parsed = parse_image_id(image_id)
    if parsed is None:
        bad("image_id", f"{image_id!r} is not <role>-<distro>-<release>[-debug]")
    else:
        role, image, named_debug = parsed
        if role != data["role"]:
            bad("image_id", f"{image_id!r} does not start with its role {data['role']!r}")
        if image != data["image"]:
            bad("image", f"is {data['image']!r} but image_id {image_id!r} names {image!r}")
        if not image.startswith(f"{data['distro']}-"):
            bad("distro", f"{data['distro']!r} does not match image {image!r}")
        if "debug" in data and data["debug"] != named_debug:
            bad(
                "debug",
                f"is {str(data['debug']).lower()}, but image_id {image_id!r} "
                + (
                    "lacks the -debug suffix: a debug image is never named as a release image"
                    if data["debug"]
                    else "ends in -debug"
                ),
            )
    if data["artifact"] != artifact_name(image_id):
        bad("artifact", f"must be {artifact_name(image_id)!r}, not {data['artifact']!r}")

    guest = data["embedded_guest"]
    if data["role"] == "guest" and guest is not None:
        bad("embedded_guest", "must be null for a guest image")
    elif data["role"] == "host":
        if guest is None:
            bad("embedded_guest", "a host image must name the guest it embeds: {image_id, sha256}")
        else:
            parsed_guest = parse_image_id(guest["image_id"])
            if parsed_guest is None or parsed_guest[0] != "guest":
                bad("embedded_guest.image_id", f"{guest['image_id']!r} is not a guest image id")
            elif looks_debug(guest["image_id"]) and not looks_debug(image_id):
                bad(
                    "embedded_guest.image_id",
                    f"{guest['image_id']!r} is a debug guest, but {image_id!r} is not named "
                    "as a debug host: a release host never embeds a debug guest",
                )

    measured = data.get("expected_measurement")
    if measured is not None and data["role"] == "host" and measured["host_image_id"] != image_id:
        bad(
            "expected_measurement.host_image_id",
            f"is {measured['host_image_id']!r}, but a host's manifest carries the measurement "
            f"for its own OVMF ({image_id!r})",
        )

    built_at = data["built_at"]
    try:
        moment = datetime.fromisoformat(built_at)
    except ValueError:
        bad("built_at", f"{built_at!r} is not an ISO-8601 time such as 2026-05-09T07:35:25Z")
    else:
        if moment.utcoffset() is None or moment.utcoffset() != UTC.utcoffset(None):
            bad("built_at", f"{built_at!r} must be in UTC (end in Z or +00:00)")
    return problems


def _json_type(value: Any) -> str:
    """A JSON type name for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list"
