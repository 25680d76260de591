"""The artifact folder `sevimg build` writes and `sevimg publish` reads.

One folder (by default `out/`) holds, for each built image id such as
`host-debian-13`::

    host-debian-13.efi              the UKI
    host-debian-13.manifest.json    what went into it (:class:`Manifest`)
    SHA256SUMS                      `sha256sum -c` format, every .efi and manifest
    logs/                           build logs; never published

The builder writes it with :mod:`sevimg.artifacts.manifest` and
:mod:`sevimg.artifacts.checksums`; the publisher calls :func:`load_artifact_folder`,
and CI merges the folders of several builds with :func:`merge_artifact_folders`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from sevimg import interrupt
from sevimg.artifacts.checksums import SHA256SUMS, parse_sha256sums, sha256_file, write_sha256sums
from sevimg.artifacts.manifest import Manifest, load_manifest
from sevimg.artifacts.names import (
    ARTIFACT_SUFFIX,
    LOGS_DIR,
    MANIFEST_SUFFIX,
    MAX_ASSET_SIZE,
    ArtifactRole,
    artifact_name,
    looks_debug,
    manifest_name,
    parse_image_id,
)
from sevimg.problems import Problem, SevimgError, error, has_errors, warning
from sevimg.release.contents import ways_in


@dataclass(frozen=True)
class LocalArtifact:
    """One file of a verified folder: an image, a manifest or SHA256SUMS."""

    name: str
    path: Path
    size: int
    sha256: str
    kind: Literal["image", "manifest", "sums"]
    role: ArtifactRole | None  # images and manifests
    image: str | None  # catalog name, images and manifests
    # A debug build, by any account: its name, its manifest, the guest it embeds.
    debug: bool = False
    debug_reason: str = ""


@dataclass(frozen=True)
class ArtifactFolder:
    """A verified artifact folder: its files, and the manifests by image id."""

    folder: Path
    files: tuple[LocalArtifact, ...]
    manifests: Mapping[str, Manifest]
    problems: tuple[Problem, ...]  # warnings only, once verified

    def images(self) -> list[str]:
        """Catalog names of the images in the folder, sorted."""
        return sorted({f.image for f in self.files if f.image})

    def debug_images(self) -> list[LocalArtifact]:
        """The debug images (.efi files) in the folder."""
        return [f for f in self.files if f.kind == "image" and f.debug]


def built_uki(folder: Path, image: str, role: ArtifactRole = "guest") -> Path:
    """The UKI of `role` built for `image` (`debian-13` or `guest-debian-13`) in `folder`."""
    other = "host" if role == "guest" else "guest"
    if image.startswith(f"{other}-"):
        raise SevimgError(f"{image} is a {other} image; this run is for --role {role}")
    name = image if image.startswith(f"{role}-") else f"{role}-{image}"
    path = folder / artifact_name(name)
    if not path.is_file():
        base = name.removeprefix(f"{role}-")
        raise SevimgError(
            f"{path} does not exist", hint=f"build it first: sevimg build {base} --role {role}"
        )
    return path.resolve()


def refuse_debug(files: Sequence[LocalArtifact], *, action: str) -> None:
    """A SevimgError naming every debug image in `files`, unless there is none.

    `action` is the command (publish, merge-artifacts) whose --allow-debug
    lets them through.
    """
    images = [f for f in files if f.kind == "image" and f.debug]
    if not images:
        return
    problems = [
        error(
            str(f.path),
            f"a debug image ({f.debug_reason}): console autologin, not for a release; "
            f"refused without --allow-debug",
        )
        for f in images
    ]
    names = ", ".join(f.name for f in images)
    raise SevimgError(
        f"{names} {'is a debug image' if len(images) == 1 else 'are debug images'}; "
        f"nothing was {'published' if action == 'publish' else 'merged'}",
        problems,
        hint=f"to {action} {'it' if len(images) == 1 else 'them'} anyway, pass --allow-debug "
        "(a debug image never gets a dispatch content type, so dispatch never boots it); "
        "or build without --debug-image",
    )


def verify_artifacts(folder: Path) -> list[Problem]:
    """Every problem in an artifact folder; an empty list means it may be published.

    Checks that SHA256SUMS exists and parses, every file it lists exists and
    matches, every image and manifest in the folder is listed, every image
    has a manifest, and every manifest agrees with its image (name, size,
    sha256). Other files are warned about (they are not published).
    """
    return list(_scan(folder)[1])


def load_artifact_folder(folder: Path) -> ArtifactFolder:
    """Verify `folder` and return its files; SevimgError listing every error if it is not publishable."""
    found, problems = _scan(folder)
    if has_errors(problems):
        count = sum(p.is_error for p in problems)
        raise SevimgError(
            f"{folder} is not publishable: {count} problem{'s' if count != 1 else ''}",
            problems,
            hint="rebuild it with `sevimg build`, or fix the files and rerun `sevimg publish --dry-run`",
        )
    assert found is not None
    return found


def _scan(folder: Path) -> tuple[ArtifactFolder | None, list[Problem]]:
    problems: list[Problem] = []
    sums_path = folder / SHA256SUMS
    display_sums = str(sums_path)
    if not folder.is_dir():
        return None, [error(str(folder), "no such folder (build images with `sevimg build` first)")]
    if not sums_path.is_file():
        return None, [error(display_sums, "missing: every artifact folder has a SHA256SUMS")]
    try:
        sums_text = sums_path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return None, [error(display_sums, "is not UTF-8 text")]
    sums, sums_problems = parse_sha256sums(sums_text, display=display_sums)
    problems += sums_problems

    present = {p.name: p for p in folder.iterdir()}
    actual: dict[str, str] = {}
    for name, expected in sums.items():
        path = present.get(name)
        if path is None or not path.is_file():
            problems.append(error(display_sums, f"lists {name}, which is not in {folder}"))
            continue
        actual[name] = sha256_file(path)
        if actual[name] != expected:
            problems.append(
                error(
                    str(path),
                    f"SHA-256 is {actual[name]} but SHA256SUMS says {expected}; the file changed after the build",
                )
            )

    images: dict[str, Path] = {}
    manifest_files: dict[str, Path] = {}
    for name, path in sorted(present.items()):
        if name == SHA256SUMS or (name == LOGS_DIR and path.is_dir()):
            continue
        if path.is_symlink() or not path.is_file():
            problems.append(warning(str(path), "not a regular file; it is not published"))
            continue
        if name.endswith(MANIFEST_SUFFIX):
            image_id = name.removesuffix(MANIFEST_SUFFIX)
            target = manifest_files
        elif name.endswith(ARTIFACT_SUFFIX):
            image_id = name.removesuffix(ARTIFACT_SUFFIX)
            target = images
        else:
            problems.append(
                warning(str(path), "not an image, manifest or SHA256SUMS; it is not published")
            )
            continue
        if parse_image_id(image_id) is None:
            problems.append(
                error(
                    str(path),
                    "name is not <role>-<distro>-<release>[-debug] with .efi or .manifest.json",
                )
            )
            continue
        if name not in sums:
            problems.append(error(str(path), "not listed in SHA256SUMS"))
        target[image_id] = path

    manifests: dict[str, Manifest] = {}
    for image_id, path in sorted(manifest_files.items()):
        try:
            manifest = load_manifest(path)
        except SevimgError as exc:
            problems += exc.problems or [error(str(path), exc.message)]
            continue
        manifests[image_id] = manifest
        if manifest.image_id != image_id:
            problems.append(
                error(
                    str(path),
                    f"says image_id {manifest.image_id!r}; the file is named for {image_id!r}",
                    field="image_id",
                )
            )
            continue
        image_path = images.get(image_id)
        if image_path is None:
            problems.append(
                error(
                    str(path),
                    f"describes {manifest.artifact}, which is not in {folder}",
                    field="artifact",
                )
            )
            continue
        size = image_path.stat().st_size
        if manifest.size != size:
            problems.append(
                error(
                    str(path),
                    f"says {manifest.size} bytes; {manifest.artifact} has {size}",
                    field="size",
                )
            )
        digest = actual.get(manifest.artifact) or sha256_file(image_path)
        if manifest.sha256 != digest:
            problems.append(
                error(
                    str(path),
                    f"says {manifest.sha256}; {manifest.artifact} has SHA-256 {digest}",
                    field="sha256",
                )
            )
    for image_id, path in sorted(images.items()):
        if image_id not in manifest_files:
            problems.append(error(str(path), f"has no manifest ({manifest_name(image_id)})"))
        if path.stat().st_size >= MAX_ASSET_SIZE:
            problems.append(
                error(str(path), "is 2 GiB or larger; GitHub release assets must be smaller")
            )

    # A host carries its release's guest: when both are here they must be the same build.
    for image_id, manifest in sorted(manifests.items()):
        guest = manifest.embedded_guest
        if guest is None or guest.image_id not in manifests:
            continue
        if manifests[guest.image_id].sha256 != guest.sha256:
            problems.append(
                warning(
                    str(manifest_files[image_id]),
                    f"embeds {guest.image_id} with SHA-256 {guest.sha256}, but {artifact_name(guest.image_id)} here has {manifests[guest.image_id].sha256}",
                    field="embedded_guest.sha256",
                )
            )

    if has_errors(problems):
        return None, problems
    files: list[LocalArtifact] = []
    for image_id, path in sorted(images.items()):
        role, image, _ = cast(tuple[ArtifactRole, str, bool], parse_image_id(image_id))
        reason = _debug_reason(image_id, manifests[image_id], path)
        for name, kind in ((path.name, "image"), (manifest_name(image_id), "manifest")):
            file_path = folder / name
            files.append(
                LocalArtifact(
                    name=name,
                    path=file_path,
                    size=file_path.stat().st_size,
                    sha256=actual[name],
                    kind=cast(Literal["image", "manifest"], kind),
                    role=role,
                    image=image,
                    debug=bool(reason),
                    debug_reason=reason,
                )
            )
    files.append(
        LocalArtifact(
            name=SHA256SUMS,
            path=sums_path,
            size=sums_path.stat().st_size,
            sha256=sha256_file(sums_path),
            kind="sums",
            role=None,
            image=None,
        )
    )
    return ArtifactFolder(folder, tuple(files), manifests, tuple(problems)), problems


def _debug_reason(image_id: str, manifest: Manifest, path: Path) -> str:
    """Why the image is a debug build ('' when it is not), from every source there is:
    its name, its manifest, the guest it embeds, and what the UKI itself opens."""
    reasons = []
    if looks_debug(image_id):
        reasons.append(f"{image_id} is named as one")
    if manifest.debug:
        reasons.append("its manifest says debug: true")
    guest = manifest.embedded_guest
    if guest is not None and looks_debug(guest.image_id):
        reasons.append(f"it embeds the debug guest {guest.image_id}")
    if found := ways_in(path):
        reasons.append(f"its UKI opens a way in ({'; '.join(found)})")
    return "; ".join(reasons)


# --- merging the folders of several builds ---------------------------------------------


def merge_artifact_folders(
    sources: Sequence[Path], dest: Path, *, allow_debug: bool = False
) -> list[str]:
    """Merge verified artifact folders into `dest` and write one SHA256SUMS over the result.

    CI builds each release on its own runner, so each uploads its own folder
    with its own SHA256SUMS. Every source is verified first; the same file
    name in two sources must have the same content, and debug images are
    refused unless `allow_debug`. `dest` must be empty or missing. The merge
    is made in a temporary folder beside `dest` and renamed into place, so a
    failure (or an interrupt) leaves `dest` as it was. Logs are not merged.
    Returns the merged file names.
    """
    if not sources:
        raise SevimgError("name at least one artifact folder to merge")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise SevimgError(f"{dest} exists and is not an empty folder; merge into a new one")
    chosen: dict[str, tuple[str, Path]] = {}
    problems: list[Problem] = []
    debug: list[LocalArtifact] = []
    for source in sources:
        if source.resolve() == dest.resolve():
            raise SevimgError(f"{dest} cannot be both a source and the destination")
        found = load_artifact_folder(source)
        debug += found.debug_images()
        for f in found.files:
            if f.kind == "sums":
                continue
            if f.name in chosen and chosen[f.name][0] != f.sha256:
                problems.append(
                    error(
                        str(f.path),
                        f"differs from {chosen[f.name][1]}; two builds made different {f.name}",
                    )
                )
                continue
            chosen.setdefault(f.name, (f.sha256, f.path))
    if problems:
        raise SevimgError("the artifact folders disagree; nothing merged", problems)
    if not allow_debug:
        refuse_debug(debug, action="merge-artifacts")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with interrupt.deferred():  # no folder whose name a signal could lose
            work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.merging-", dir=dest.parent))
    except OSError as exc:
        raise SevimgError(f"cannot merge into {dest}: {exc.strerror or exc}") from None
    try:
        for name, (sha, path) in sorted(chosen.items()):
            target = work / name
            _link_or_copy(path, target)
            # Read back: a source changed since it was verified is not merged.
            if sha256_file(target) != sha:
                raise SevimgError(f"{path} changed while it was being merged; nothing merged")
        write_sha256sums(work, sorted(chosen))
        load_artifact_folder(work)  # the merged folder must verify like any other
        if dest.is_dir():
            dest.rmdir()  # empty, checked above
        work.rename(dest)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise SevimgError(f"cannot merge into {dest}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return sorted(chosen)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link when possible (images are hundreds of MB), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
