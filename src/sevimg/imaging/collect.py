"""After mkosi: a checked artifact into the artifact folder, with its manifests and SHA256SUMS.

The UKI is copied under a temporary name and renamed, then its manifest is
written (and, for a host, the expected measurement also into its embedded
guest's manifest), then SHA256SUMS; :mod:`sevimg.imaging.builder` calls it once
an image passed its checks.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sevimg import interrupt
from sevimg.artifacts import checksums, names
from sevimg.artifacts.manifest import (
    EmbeddedGuest,
    ExpectedMeasurement,
    Manifest,
    Package,
    SourceFile,
    Tool,
    load_manifest,
    write_manifest,
)
from sevimg.atomic import create_new
from sevimg.catalog.spec import ImageSpec
from sevimg.problems import SevimgError, parse_json
from sevimg.settings import ToolPin


@dataclass(frozen=True)
class Contents:
    """What went into a built image, for its manifest."""

    mkosi_version: str
    pins: Sequence[ToolPin]  # every pinned tool (those of other roles are left out)
    staged: Mapping[str, ToolPin]  # the ones staged into this image
    packages: Mapping[str, str]  # name → version, from mkosi's manifest
    guest_sha: str | None  # a host's embedded guest


def mkosi_packages(manifest: Path) -> dict[str, str]:
    """name → version from mkosi's JSON manifest (ManifestFormat=json)."""
    try:
        data = parse_json(manifest.read_bytes(), str(manifest))
        return {p["name"]: p["version"] for p in data["packages"]}
    except (OSError, SevimgError, KeyError, TypeError) as exc:
        raise SevimgError(f"cannot read mkosi's package manifest {manifest}: {exc}") from None


def publish(
    out_dir: Path,
    spec: ImageSpec,
    built: Path,
    contents: Contents,
    measured: ExpectedMeasurement | None,
    report: Callable[[str], None],
) -> Path:
    """Move the artifact into out/ (temporary name, then rename), then its manifest and SHA256SUMS."""
    final = out_dir / built.name
    temporary = out_dir / f".{built.name}.partial"
    try:
        # Never through a link planted at the temporary name (builds run as root).
        with built.open("rb") as source, os.fdopen(create_new(temporary), "wb") as sink:
            shutil.copyfileobj(source, sink, 2**20)
        temporary.replace(final)
    except BaseException:
        with interrupt.deferred():
            temporary.unlink(missing_ok=True)
        raise
    staged = contents.staged
    manifest = Manifest.for_artifact(
        final,
        distro=spec.distro,
        release=spec.release,
        sources=[
            SourceFile(path, sha)
            for path, sha in zip(spec.sources, spec.source_sha256, strict=True)
        ],
        mkosi_version=contents.mkosi_version,
        tools={
            pin.name: (
                Tool(staged[pin.name].version, staged[pin.name].sha256)
                if pin.name in staged
                else None
            )
            for pin in contents.pins
            if spec.role in pin.roles
        },
        packages=[Package(name, version) for name, version in contents.packages.items()],
        embedded_guest=EmbeddedGuest(spec.payload.guest_image or "", contents.guest_sha)
        if contents.guest_sha
        else None,
        debug=spec.debug,
        expected_measurement=measured,
    )
    write_manifest(out_dir, manifest)
    if measured is not None:
        record_in_guest(out_dir, spec, measured, report)
    checksums.write_sha256sums(out_dir)
    return final


def record_in_guest(
    out_dir: Path, spec: ImageSpec, measured: ExpectedMeasurement, report: Callable[[str], None]
) -> None:
    """Write the measurement into the embedded guest's manifest too, when it is in out/."""
    guest_id = spec.payload.guest_image or ""
    path = out_dir / names.manifest_name(guest_id)
    if not path.is_file():
        report(f"{spec.image_id}: {path.name} is not in {out_dir}; not updated")
        return
    write_manifest(out_dir, load_manifest(path).with_measurement(measured))
