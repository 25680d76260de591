"""Certification evidence read from files: an attestation report, a result's evidence block.

`sevimg verify` takes a bare report (binary or base64) or the result.json or
result.md of a certification run, whose evidence block also gives the nonce,
the expected measurement and the VCEK.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from sevimg.problems import SevimgError, parse_json
from sevimg_cert import certs
from sevimg_cert import markdown as cert_markdown
from sevimg_cert.report import REPORT_SIZE
from sevimg_cert.verify import pad_nonce

_HEX = re.compile(r"[0-9a-fA-F]*")
MAX_REPORT_FILE = 64 * 1024  # a report is 1184 bytes, its base64 about 1.6 KiB
MAX_RESULT_FILE = 16 * 1024 * 1024  # a result.md carries the harness log too


@dataclass(frozen=True)
class Evidence:
    """What a certification result's evidence block gives `verify`."""

    report: bytes
    nonce: bytes | None
    measurement: bytes | None
    vcek: x509.Certificate | None


def read_evidence(path: Path) -> Evidence:
    """The report, nonce, expected measurement and VCEK from a result.json or result.md."""
    try:
        if not path.is_file():
            raise SevimgError(
                f"{path}: {'not a regular file' if path.exists() else 'no such file'}"
            )
        if path.stat().st_size > MAX_RESULT_FILE:
            raise SevimgError(f"{path}: larger than {MAX_RESULT_FILE} bytes; not a result")
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise SevimgError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        found = cert_markdown.evidence_from_text(text)
    except ValueError as exc:
        raise SevimgError(f"{path}: {exc}") from None

    def field(name: str) -> str | None:
        value = found.get(name)
        if value is not None and not isinstance(value, str):
            raise SevimgError(f"{path}: evidence {name} is not a string")
        return value

    report_b64 = field("report")
    if not report_b64:
        raise SevimgError(f"{path}: the evidence holds no report (the run got none from its guest)")
    try:
        report = base64.b64decode(report_b64, validate=True)
    except (binascii.Error, ValueError):
        raise SevimgError(f"{path}: the evidence's report is not base64") from None
    nonce = field("nonce")
    measurement = field("expected_measurement")
    vcek_pem = field("vcek")
    try:
        vcek = certs.parse_cert(vcek_pem.encode(), f"{path} (evidence vcek)") if vcek_pem else None
    except certs.CertError as exc:
        raise SevimgError(str(exc)) from None
    return Evidence(
        report,
        pad_nonce(parse_hex(f"{path}: evidence nonce", nonce, size=64, exact=False))
        if nonce
        else None,
        parse_hex(f"{path}: evidence expected_measurement", measurement, size=48, exact=True)
        if measurement
        else None,
        vcek,
    )


def parse_hex(option: str, value: str, *, size: int, exact: bool) -> bytes:
    """Bytes from a hex option value (an optional 0x prefix); SevimgError names the option."""
    text = value.strip()
    if text[:2].lower() == "0x":
        text = text[2:]
    shown = value if len(value) <= 40 else value[:40] + "…"
    if not text or not _HEX.fullmatch(text):
        raise SevimgError(f"{option}: {shown!r} is not hexadecimal")
    if len(text) % 2:
        raise SevimgError(f"{option}: {shown!r} has an odd number of hex digits")
    data = bytes.fromhex(text)
    if exact and len(data) != size:
        raise SevimgError(f"{option}: {len(data)} bytes; it must be {size} ({2 * size} hex digits)")
    if len(data) > size:
        raise SevimgError(f"{option}: {len(data)} bytes; at most {size} ({2 * size} hex digits)")
    return data


def read_report(path: Path) -> bytes:
    """The report's bytes: the 1184-byte binary, or its base64 (as a certificate's evidence block has it)."""
    try:
        if not path.exists():
            raise SevimgError(f"{path}: no such file")
        if not path.is_file():
            raise SevimgError(f"{path}: not a regular file")
        size = path.stat().st_size
        if size > MAX_REPORT_FILE:
            raise SevimgError(f"{path}: {size} bytes; an attestation report is {REPORT_SIZE}")
        data = path.read_bytes()
    except OSError as exc:
        raise SevimgError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) != REPORT_SIZE:
        try:
            decoded = base64.b64decode(b"".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) == REPORT_SIZE:
            return decoded
    return data


MAX_MANIFEST_FILE = 4 * 1024 * 1024


def _entry_measurement(entry: Any) -> Any:
    """The hex measurement an entry names: `expected_measurement` (hex, or {measurement}) or `measurement`."""
    if not isinstance(entry, dict):
        return None
    found = entry.get("expected_measurement", entry.get("measurement"))
    if isinstance(found, dict):
        found = found.get("measurement")
    return found


def _image_entry(data: Any, image: str) -> Any:
    """The entry for `image` in a measurements.json: {images: {name: ..}}, {name: ..} or a list."""
    table = data.get("images", data) if isinstance(data, dict) else data
    if isinstance(table, dict):
        return table.get(image)
    if isinstance(table, list):
        for entry in table:
            if isinstance(entry, dict) and image in (
                entry.get("image"),
                entry.get("image_id"),
                entry.get("name"),
            ):
                return entry
    return None


def expected_from(path: Path, image: str | None) -> tuple[bytes, str]:
    """The expected measurement in an image's manifest, or in a measurements.json's entry for `image`.

    A manifest (`<image>.manifest.json`, as `sevimg build` writes it) holds
    `expected_measurement.measurement`; a measurements.json holds one entry
    per image (under `images`, keyed by image id, or as a list of entries with
    `image`), each naming `expected_measurement`. Returns the 48 bytes and a
    description of where they came from.
    """
    option = "--expect-from"
    try:
        if not path.is_file():
            raise SevimgError(
                f"{option}: {path}: {'not a regular file' if path.exists() else 'no such file'}"
            )
        if path.stat().st_size > MAX_MANIFEST_FILE:
            raise SevimgError(f"{option}: {path}: larger than {MAX_MANIFEST_FILE} bytes")
        text = path.read_bytes()
    except OSError as exc:
        raise SevimgError(f"{option}: {path}: cannot read: {exc.strerror or exc}") from None
    data = parse_json(text, str(path))
    is_manifest = isinstance(data, dict) and "image_id" in data
    if is_manifest:
        if image is not None and image != data.get("image_id"):
            raise SevimgError(
                f"{option}: {path} is the manifest of {data.get('image_id')!r}, not of {image!r}"
            )
        found, where = _entry_measurement(data), f"{path} ({data.get('image_id')})"
    elif image is None:
        raise SevimgError(
            f"{option}: {path} is not an image's manifest; for a measurements.json name the "
            "image with --expect-image NAME"
        )
    else:
        entry = _image_entry(data, image)
        if entry is None:
            raise SevimgError(f"{option}: {path} has no entry for image {image!r}")
        found, where = _entry_measurement(entry), f"{path} ({image})"
    if not isinstance(found, str):
        raise SevimgError(
            f"{option}: {where} names no expected measurement "
            "(expected_measurement.measurement; manifests from before it existed have none)"
        )
    return parse_hex(f"{option}: {where}", found, size=48, exact=True), where
