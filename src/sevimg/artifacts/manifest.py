"""`<image-id>.manifest.json`: what one artifact is and what went into it.

The builder writes it (:meth:`Manifest.for_artifact`, :func:`write_manifest`);
the publisher reads it back (:func:`load_manifest`) through the same class,
so the writer and the reader cannot drift apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sevimg import __version__
from sevimg.artifacts.checksums import sha256_file
from sevimg.artifacts.manifest_check import check_manifest
from sevimg.artifacts.names import (
    ARTIFACT_SUFFIX,
    ArtifactRole,
    manifest_name,
    parse_image_id,
)
from sevimg.atomic import write_file_atomic
from sevimg.problems import SevimgError, parse_json, read_utf8

MANIFEST_SCHEMA = "sevimg-manifest/1"


@dataclass(frozen=True)
class SourceFile:
    """A catalog YAML file an image was built from."""

    path: str
    sha256: str


@dataclass(frozen=True)
class Tool:
    """A tool embedded in an image (snphost, snpguest, beacon), as pinned."""

    version: str
    sha256: str


@dataclass(frozen=True)
class Package:
    """A package installed in the image."""

    name: str
    version: str


@dataclass(frozen=True)
class EmbeddedGuest:
    """The guest UKI a host image carries."""

    image_id: str
    sha256: str


@dataclass(frozen=True)
class ExpectedMeasurement:
    """The guest's SNP launch measurement under a host's own OVMF, computed at build time.

    In a host's manifest: its embedded guest's. In the guest's manifest: the
    same value, naming the host whose OVMF it was computed for.
    """

    host_image_id: str
    ovmf: str  # the firmware's path in the host
    ovmf_sha256: str
    vcpus: int
    vcpu_type: str
    measurement: str  # 96 lower-case hex digits
    sev_snp_measure: str  # the version that computed it

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data, keys in the documented order."""
        return {
            "host_image_id": self.host_image_id,
            "ovmf": self.ovmf,
            "ovmf_sha256": self.ovmf_sha256,
            "vcpus": self.vcpus,
            "vcpu_type": self.vcpu_type,
            "measurement": self.measurement,
            "sev_snp_measure": self.sev_snp_measure,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExpectedMeasurement:
        """From a manifest's (schema-checked) `expected_measurement` object."""
        return cls(
            host_image_id=data["host_image_id"],
            ovmf=data["ovmf"],
            ovmf_sha256=data["ovmf_sha256"],
            vcpus=data["vcpus"],
            vcpu_type=data["vcpu_type"],
            measurement=data["measurement"],
            sev_snp_measure=data["sev_snp_measure"],
        )


@dataclass(frozen=True)
class Manifest:
    """What one artifact is and what went into it: `<image-id>.manifest.json`.

    `tools` maps a tool name to what was embedded, or None when the tool is
    known but not embedded in this image; it is stored as sorted pairs so the
    manifest stays hashable and its JSON deterministic.
    """

    image_id: str
    role: ArtifactRole
    image: str
    distro: str
    release: str
    artifact: str
    size: int
    sha256: str
    sources: tuple[SourceFile, ...]
    sevimg_version: str
    mkosi_version: str
    tools: tuple[tuple[str, Tool | None], ...]
    packages: tuple[Package, ...]
    embedded_guest: EmbeddedGuest | None
    built_at: str
    schema: str = field(default=MANIFEST_SCHEMA)
    # A --debug-image build (console autologin). Also in the name (-debug);
    # written so a reader need not trust the name alone. Manifests written
    # before the key existed read as their name says.
    debug: bool = False
    # The guest's expected SNP launch measurement (see ExpectedMeasurement);
    # None in manifests written before it existed, or without the pinned tool.
    expected_measurement: ExpectedMeasurement | None = None

    @property
    def file_name(self) -> str:
        """`<image-id>.manifest.json`."""
        return manifest_name(self.image_id)

    def tool(self, name: str) -> Tool | None:
        """The embedded tool called `name`, or None."""
        return dict(self.tools).get(name)

    @classmethod
    def for_artifact(
        cls,
        artifact: Path,
        *,
        distro: str,
        release: str,
        sources: Iterable[SourceFile],
        mkosi_version: str,
        tools: Mapping[str, Tool | None],
        packages: Iterable[Package],
        embedded_guest: EmbeddedGuest | None,
        built_at: datetime | None = None,
        sevimg_version: str = __version__,
        debug: bool | None = None,
        expected_measurement: ExpectedMeasurement | None = None,
    ) -> Manifest:
        """The manifest of a built artifact: role, image, size, sha256 and debug come from the file.

        `artifact` must be named `<image-id>.efi`. `built_at` defaults to
        SOURCE_DATE_EPOCH when set (reproducible builds), else now. `debug`,
        when given (the build's --debug-image), must agree with the name.
        """
        image_id = artifact.name.removesuffix(ARTIFACT_SUFFIX)
        parsed = parse_image_id(image_id) if artifact.name.endswith(ARTIFACT_SUFFIX) else None
        if parsed is None:
            raise SevimgError(
                f"{artifact.name} is not named <role>-<distro>-<release>.efi (e.g. host-debian-13.efi)"
            )
        role, image, named_debug = parsed
        if debug is not None and debug != named_debug:
            raise SevimgError(
                f"{artifact.name}: a {'debug' if debug else 'release'} build must "
                f"{'' if debug else 'not '}be named <role>-<distro>-<release>-debug.efi"
            )
        manifest = cls(
            image_id=image_id,
            role=role,
            image=image,
            distro=distro,
            release=release,
            artifact=artifact.name,
            size=artifact.stat().st_size,
            sha256=sha256_file(artifact),
            sources=tuple(sources),
            sevimg_version=sevimg_version,
            mkosi_version=mkosi_version,
            tools=tuple(sorted(tools.items())),
            packages=tuple(sorted(packages, key=lambda p: (p.name, p.version))),
            embedded_guest=embedded_guest,
            built_at=format_timestamp(built_at or default_build_time()),
            debug=named_debug,
            expected_measurement=expected_measurement,
        )
        problems = check_manifest(manifest.as_dict(), display=manifest.file_name)
        if problems:
            raise SevimgError(f"the manifest for {artifact.name} would not be valid", problems)
        return manifest

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data, keys in the documented order."""
        return {
            "schema": self.schema,
            "image_id": self.image_id,
            "role": self.role,
            "image": self.image,
            "debug": self.debug,
            "distro": self.distro,
            "release": self.release,
            "artifact": self.artifact,
            "size": self.size,
            "sha256": self.sha256,
            "sources": [{"path": s.path, "sha256": s.sha256} for s in self.sources],
            "sevimg_version": self.sevimg_version,
            "mkosi_version": self.mkosi_version,
            "tools": {
                name: None if tool is None else {"version": tool.version, "sha256": tool.sha256}
                for name, tool in self.tools
            },
            "packages": [{"name": p.name, "version": p.version} for p in self.packages],
            "embedded_guest": None
            if self.embedded_guest is None
            else {
                "image_id": self.embedded_guest.image_id,
                "sha256": self.embedded_guest.sha256,
            },
            "built_at": self.built_at,
            **(
                {}
                if self.expected_measurement is None
                else {"expected_measurement": self.expected_measurement.as_dict()}
            ),
        }

    def with_measurement(self, measurement: ExpectedMeasurement) -> Manifest:
        """This manifest carrying `measurement`, checked again."""
        updated = replace(self, expected_measurement=measurement)
        problems = check_manifest(updated.as_dict(), display=updated.file_name)
        if problems:
            raise SevimgError(f"the manifest for {self.artifact} would not be valid", problems)
        return updated

    def to_json(self) -> str:
        """The manifest file's text: indented JSON, documented key order, final newline."""
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, *, display: str = "manifest") -> Manifest:
        """Parse and validate a manifest; SevimgError with one problem per wrong field."""
        data = parse_json(text, display)
        problems = check_manifest(data, display=display, text=text)
        if problems:
            raise SevimgError(f"{display} is not a valid sevimg manifest", problems)
        return cls(
            schema=data["schema"],
            image_id=data["image_id"],
            role=data["role"],
            image=data["image"],
            distro=data["distro"],
            release=data["release"],
            artifact=data["artifact"],
            size=data["size"],
            sha256=data["sha256"],
            sources=tuple(SourceFile(s["path"], s["sha256"]) for s in data["sources"]),
            sevimg_version=data["sevimg_version"],
            mkosi_version=data["mkosi_version"],
            tools=tuple(
                (name, None if tool is None else Tool(tool["version"], tool["sha256"]))
                for name, tool in sorted(data["tools"].items())
            ),
            packages=tuple(Package(p["name"], p["version"]) for p in data["packages"]),
            embedded_guest=None
            if data["embedded_guest"] is None
            else EmbeddedGuest(
                data["embedded_guest"]["image_id"], data["embedded_guest"]["sha256"]
            ),
            built_at=data["built_at"],
            debug=data["debug"] if "debug" in data else _named_debug(data["image_id"]),
            expected_measurement=ExpectedMeasurement.from_dict(data["expected_measurement"])
            if data.get("expected_measurement") is not None
            else None,
        )


def _named_debug(image_id: str) -> bool:
    parsed = parse_image_id(image_id)
    return parsed is not None and parsed[2]


def default_build_time() -> datetime:
    """SOURCE_DATE_EPOCH when set (reproducible builds), else the current time, in UTC."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not epoch:
        return datetime.now(UTC)
    # ASCII digits only (str.isdigit takes other scripts' digits), and a year datetime can hold.
    if not (epoch.isascii() and epoch.isdigit()) or len(epoch) > 11:
        raise SevimgError(
            f"SOURCE_DATE_EPOCH={epoch[:40]!r} is not a number of seconds since 1970",
            hint="unset it, or set it to `git log -1 --format=%ct`",
        )
    try:
        return datetime.fromtimestamp(int(epoch), UTC)
    except (OverflowError, OSError, ValueError):
        raise SevimgError(f"SOURCE_DATE_EPOCH={epoch} is past the year 9999") from None


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC to the second: `2026-05-09T07:35:25Z`."""
    if moment.tzinfo is None:
        raise SevimgError("built_at must be a timezone-aware datetime")
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write `folder/<image-id>.manifest.json` atomically; returns its path."""
    target = folder / manifest.file_name
    write_file_atomic(target, manifest.to_json().encode())
    return target


def load_manifest(path: Path) -> Manifest:
    """Read and validate a manifest file; SevimgError naming the file and field on any problem."""
    text = read_utf8(path)
    return Manifest.from_json(text, display=str(path))
