"""`sevimg run --role host`: read a host image's certification result off its serial console.

The host harness (sevimg_cert.harness) frames its result JSON on the console
(contracts.md §2); this unframes it, checks it against
schema/cert-result.schema.json and against itself (the title, labels and
milestone must be what its own tests and identity give), and writes
result.json and result.md atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from sevimg.artifacts.manifest import Manifest
from sevimg.atomic import write_file_atomic
from sevimg.problems import SevimgError, parse_json
from sevimg.workspace import packaged
from sevimg_cert import framing as cert_framing
from sevimg_cert import markdown as cert_markdown
from sevimg_cert import result as cert_result

SCHEMA_FILE = "cert-result.schema.json"
HOST_MIN_MEMORY_MB = 4096  # the host UKI (~180 MB with its guest) unpacks into RAM
HOST_TIMEOUT = 1800.0  # TCG: the UKI, its initrd and the harness take minutes


@dataclass(frozen=True)
class HostResult:
    """The result as the host wrote it, and as sevimg reads it."""

    raw: bytes
    doc: dict[str, Any]
    result: cert_result.CertResult


def schema() -> dict[str, Any]:
    """The result schema shipped with sevimg."""
    for folder in packaged("schema"):
        path = folder / SCHEMA_FILE
        if path.is_file():
            loaded: dict[str, Any] = json.loads(path.read_text())
            return loaded
    raise SevimgError(f"{SCHEMA_FILE} is not installed with sevimg")


def read_console(console: str) -> HostResult:
    """The framed result in `console`, unframed and checked; SevimgError saying what is wrong."""
    try:
        raw = cert_framing.unframe(console)
    except cert_framing.FrameError as exc:
        raise SevimgError(f"the host's result on the console is unusable: {exc}") from None
    doc = parse_json(raw, "the host's result")
    try:
        Draft202012Validator(schema()).validate(doc)
    except ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        raise SevimgError(
            f"the host's result does not match {SCHEMA_FILE} at {where}: {exc.message}"
        ) from None
    try:
        parsed = cert_result.from_dict(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise SevimgError(f"the host's result cannot be read: {exc!r}") from None
    again = cert_result.to_dict(parsed)
    for key in ("result", "certified_level", "title", "labels", "milestone"):
        if again[key] != doc[key]:
            raise SevimgError(
                f"the host's result contradicts itself: {key} is {doc[key]!r}, "
                f"its tests and host give {again[key]!r}"
            )
    return HostResult(raw, doc, parsed)


def write(folder: Path, host: HostResult) -> tuple[Path, Path]:
    """result.json (the bytes the host wrote) and result.md in `folder`."""
    json_path, md_path = folder / "result.json", folder / "result.md"
    write_file_atomic(json_path, host.raw)
    write_file_atomic(md_path, cert_markdown.to_markdown(host.result).encode())
    return json_path, md_path


@dataclass(frozen=True)
class MeasurementVerdict:
    """The host's own computation of its guest's launch measurement against the manifest's."""

    status: str  # match | mismatch | unknown
    message: str


def measurement_verdict(
    computed: bytes | None, manifest: Manifest | None, manifest_path: str
) -> MeasurementVerdict:
    """Compare the measurement the host image computed (its result's evidence) with the
    manifest's expected one."""
    expected = manifest.expected_measurement if manifest else None
    if manifest is None:
        return MeasurementVerdict(
            "unknown", f"no manifest at {manifest_path} to compare the host's measurement with"
        )
    if expected is None:
        return MeasurementVerdict(
            "unknown",
            f"{manifest_path} claims no expected measurement (built --without-tools, or "
            "sev-snp-measure is not pinned)",
        )
    if computed is None:
        return MeasurementVerdict(
            "unknown",
            f"the host computed no measurement (see the expected_measurement test); "
            f"the manifest expects {expected.measurement}",
        )
    if computed.hex() == expected.measurement:
        return MeasurementVerdict(
            "match",
            f"the host computed {computed.hex()}, as {manifest_path} expects "
            f"(OVMF {expected.ovmf}, {expected.vcpus} x {expected.vcpu_type})",
        )
    return MeasurementVerdict(
        "mismatch",
        f"the host computed {computed.hex()}, but {manifest_path} expects "
        f"{expected.measurement}: the host's OVMF, vCPUs or guest differ from the build's",
    )
