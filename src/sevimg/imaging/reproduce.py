"""`sevimg reproduce`: rebuild an artifact folder's images from their recorded inputs, then compare.

Each image's manifest records what it was built from: the catalog files (by
SHA-256), the mkosi version, the pinned payload tools and every installed
package with its version. A rebuild takes the same catalog files (a
difference is reported, not papered over), the same mkosi, and installs
exactly the recorded package versions (apt is asked for `name=version`, so a
mirror without them fails the build rather than drifting). Then the UKIs are
compared byte for byte, and where they differ :mod:`sevimg.imaging.compare`
says where; the host's expected measurement of its guest is compared too.

Pure parts here (reading the folder, comparing inputs, judging); the CLI
runs the build in between.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sevimg import __version__
from sevimg.artifacts import checksums, names
from sevimg.artifacts.manifest import Manifest, load_manifest
from sevimg.catalog.spec import ImageSpec
from sevimg.imaging.compare import UkiDiff, compare_files
from sevimg.problems import SevimgError
from sevimg.settings import ToolPin


@dataclass(frozen=True)
class Recorded:
    """One image of the folder: its manifest and its UKI."""

    manifest: Manifest
    artifact: Path


def recorded_images(folder: Path) -> list[Recorded]:
    """The images of an artifact folder with their manifests, guests first.

    SevimgError when the folder has no manifest, or a manifest's UKI is missing.
    The UKI's bytes are not checked against the manifest here: an altered
    image is what :func:`judge` reports.
    """
    if not folder.is_dir():
        raise SevimgError(f"{folder}: no such folder")
    found: list[Recorded] = []
    for path in sorted(folder.glob(f"*{names.MANIFEST_SUFFIX}")):
        manifest = load_manifest(path)
        artifact = folder / manifest.artifact
        if not artifact.is_file():
            raise SevimgError(f"{path} describes {manifest.artifact}, which is not in {folder}")
        found.append(Recorded(manifest, artifact))
    if not found:
        raise SevimgError(
            f"{folder} holds no image manifests (*{names.MANIFEST_SUFFIX})",
            hint="point at a folder `sevimg build` wrote, or a downloaded release",
        )
    return sorted(found, key=lambda r: (r.manifest.role != "guest", r.manifest.image_id))


def select(recorded: Sequence[Recorded], images: Sequence[str], folder: Path) -> list[Recorded]:
    """The recorded images named in `images` (ids, or catalog names for both roles); all when empty."""
    if not images:
        return list(recorded)

    def named(r: Recorded, name: str) -> bool:
        return name in (r.manifest.image_id, r.manifest.image)

    unknown = [name for name in images if not any(named(r, name) for r in recorded)]
    if unknown:
        raise SevimgError(
            f"{folder} has no image {', '.join(unknown)}",
            hint=f"it has {', '.join(r.manifest.image_id for r in recorded)}",
        )
    return [r for r in recorded if any(named(r, name) for name in images)]


def input_differences(manifest: Manifest, spec: ImageSpec, pins: Sequence[ToolPin]) -> list[str]:
    """How this workspace's inputs for `spec` differ from those `manifest` records (empty: none)."""
    found: list[str] = []
    recorded = {s.path: s.sha256 for s in manifest.sources}
    here = dict(zip(spec.sources, spec.source_sha256, strict=True))
    for path in sorted(recorded.keys() | here.keys()):
        if path not in here:
            found.append(f"{path}: recorded in the manifest, not an input here")
        elif path not in recorded:
            found.append(f"{path}: an input here, not recorded in the manifest")
        elif recorded[path] != here[path]:
            found.append(
                f"{path}: sha256 {recorded[path][:16]}... in the manifest, "
                f"{here[path][:16]}... in this workspace"
            )
    if manifest.sevimg_version != __version__:
        found.append(
            f"sevimg {manifest.sevimg_version} built it, this is sevimg {__version__} "
            "(its templates and payload may differ)"
        )
    by_name = {p.name: p for p in pins if spec.role in p.roles}
    for name, tool in manifest.tools:
        pin = by_name.get(name)
        if tool is None:
            continue  # built --without-tools: the rebuild leaves it out too
        if pin is None:
            found.append(f"tool {name}: {tool.version} in the manifest, not pinned in sevimg.yaml")
        elif (pin.version, pin.sha256) != (tool.version, tool.sha256):
            found.append(
                f"tool {name}: {tool.version} in the manifest, {pin.version} pinned in sevimg.yaml"
                + (" (other sha256)" if pin.version == tool.version else "")
            )
    return found


def pinned_packages(manifest: Manifest) -> tuple[str, ...]:
    """`name=version` of every package the image had: apt must install exactly these."""
    return tuple(f"{p.name}={p.version}" for p in manifest.packages)


def with_tools(recorded: Sequence[Recorded]) -> bool:
    """Whether the images were built with the pinned payload tools (not --without-tools)."""
    return any(tool is not None for r in recorded for _, tool in r.manifest.tools)


@dataclass(frozen=True)
class Verdict:
    """One image: the folder's UKI against its rebuild."""

    image_id: str
    recorded_sha256: str  # the manifest's
    folder_sha256: str  # the file in the folder now
    rebuilt_sha256: str | None  # None: the rebuild wrote no such image
    diff: UkiDiff | None
    measurement_recorded: str | None = None
    measurement_rebuilt: str | None = None

    @property
    def identical(self) -> bool:
        """Same bytes as recorded and as rebuilt, and the same expected measurement."""
        return (
            self.diff is not None
            and self.diff.identical
            and self.recorded_sha256 == self.folder_sha256 == self.rebuilt_sha256
            and self.measurement_recorded == self.measurement_rebuilt
        )

    def report(self) -> list[str]:
        """Lines for the user: `identical`, or what differs."""
        if self.identical:
            return [f"{self.image_id}: identical (sha256 {self.rebuilt_sha256})"]
        lines = [f"{self.image_id}: DIFFERS"]
        if self.recorded_sha256 != self.folder_sha256:
            lines.append(
                f"  the folder's UKI is not the one its manifest records "
                f"(sha256 {self.folder_sha256[:16]}..., manifest {self.recorded_sha256[:16]}...)"
            )
        if self.rebuilt_sha256 is None or self.diff is None:
            lines.append("  the rebuild wrote no such image")
            return lines
        lines.append(f"  folder  sha256 {self.folder_sha256}")
        lines.append(f"  rebuilt sha256 {self.rebuilt_sha256}")
        if not self.diff.identical:
            lines += [f"  {line}" for line in self.diff.report()]
        if self.measurement_recorded != self.measurement_rebuilt:
            lines.append(
                f"  expected measurement: {self.measurement_recorded or 'none'} recorded, "
                f"{self.measurement_rebuilt or 'none'} rebuilt"
            )
        return lines


def _measurement(manifest: Manifest | None) -> str | None:
    found = manifest.expected_measurement if manifest else None
    return found.measurement if found else None


def judge(recorded: Sequence[Recorded], rebuilt_folder: Path) -> list[Verdict]:
    """Compare every recorded image with its rebuild in `rebuilt_folder`."""
    verdicts: list[Verdict] = []
    for r in recorded:
        image_id = r.manifest.image_id
        rebuilt = rebuilt_folder / names.artifact_name(image_id)
        rebuilt_manifest = rebuilt_folder / names.manifest_name(image_id)
        fresh = load_manifest(rebuilt_manifest) if rebuilt_manifest.is_file() else None
        present = rebuilt.is_file()
        verdicts.append(
            Verdict(
                image_id=image_id,
                recorded_sha256=r.manifest.sha256,
                folder_sha256=checksums.sha256_file(r.artifact),
                rebuilt_sha256=checksums.sha256_file(rebuilt) if present else None,
                diff=compare_files(r.artifact, rebuilt) if present else None,
                measurement_recorded=_measurement(r.manifest),
                measurement_rebuilt=_measurement(fresh),
            )
        )
    return verdicts


def summary(verdicts: Sequence[Verdict]) -> str:
    """The last line: how many images are identical."""
    same = sum(v.identical for v in verdicts)
    if same == len(verdicts):
        return f"reproduced: all {same} image{'s' if same != 1 else ''} identical"
    return f"not reproduced: {len(verdicts) - same} of {len(verdicts)} images differ"


def mkosi_version(recorded: Sequence[Recorded]) -> str:
    """The one mkosi version the folder's images were built with."""
    versions = {r.manifest.mkosi_version for r in recorded}
    if len(versions) != 1:
        raise SevimgError(
            "the folder's images were built with several mkosi versions: "
            + ", ".join(sorted(versions)),
            hint="reproduce them one at a time (copy each image and its manifest to a folder)",
        )
    return versions.pop()


def pins_by_image(recorded: Sequence[Recorded]) -> Mapping[str, tuple[str, ...]]:
    """image id → the `name=version` packages its rebuild must install."""
    return {r.manifest.image_id: pinned_packages(r.manifest) for r in recorded}
