"""What `sevimg publish` will do, decided before anything is written.

1. :func:`select` verifies the folder (SHA256SUMS, manifests) and picks the
   files to publish;
2. :func:`make_plan` reads the release and decides, per asset, create,
   replace or keep (`--dry-run` stops here; :mod:`sevimg.release.publish`
   carries the plan out).

Also the rules both steps share: the content type of each file, and which
tags are valid and which make a prerelease.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from sevimg.artifacts.checksums import SHA256SUMS, format_sha256sums
from sevimg.artifacts.manifest import load_manifest
from sevimg.artifacts.names import ARTIFACT_SUFFIX, MANIFEST_SUFFIX, looks_debug, parse_image_id
from sevimg.display import UNSAFE
from sevimg.problems import SevimgError
from sevimg.release import measurements
from sevimg.release.folder import LocalArtifact, load_artifact_folder, refuse_debug
from sevimg.release.github import Asset, GitHub, Release

HOST_TYPE = "application/vnd.dispatch+efi"
DISPATCH_TYPES = frozenset(
    {"application/vnd.dispatch+efi", "application/vnd.dispatch+iso", "application/vnd.dispatch+img"}
)
GUEST_TYPE = "application/efi"
MANIFEST_TYPE = "application/json"
SUMS_TYPE = "text/plain"
OTHER_TYPE = "application/octet-stream"
TMP_PREFIX = "sevimg-tmp-"
MAX_ASSETS = 1000  # GitHub's limit per release
DEVEL_TAG = "devel"

Action = Literal["create", "replace", "keep"]


def content_type_for(name: str, *, debug: bool = False) -> str:
    """The Content-Type an asset is uploaded with: only release host images get a dispatch type.

    A debug image (named so, or `debug` by its manifest) never does, so
    dispatch never boots one, even when it is published with --allow-debug.
    """
    if name.endswith(ARTIFACT_SUFFIX):
        image_id = name.removesuffix(ARTIFACT_SUFFIX)
        parsed = parse_image_id(image_id)
        if parsed is not None and parsed[0] == "host" and not debug and not looks_debug(image_id):
            return HOST_TYPE
        return GUEST_TYPE
    if name.endswith(MANIFEST_SUFFIX):
        return MANIFEST_TYPE
    if name == SHA256SUMS:
        return SUMS_TYPE
    if name == measurements.MEASUREMENTS:
        return MANIFEST_TYPE
    return OTHER_TYPE


def is_prerelease(tag: str) -> bool:
    """`v*` tags make normal releases; `devel` (and any other tag) a prerelease."""
    return not (tag.startswith("v") and len(tag) > 1 and tag[1].isdigit())


# git check-ref-format's rules for refs/tags/<tag>, plus a leading `-` (it
# would read as an option to git and to scripts handling the tag).
_TAG_FORBIDDEN = frozenset(" ~^:?*[\\")
MAX_TAG_LENGTH = 255


def tag_problem(tag: str) -> str | None:
    """Why `tag` cannot name a git tag (git's ref rules), or None when it can."""
    if not tag:
        return "it is empty"
    if len(tag) > MAX_TAG_LENGTH:
        return f"it is longer than {MAX_TAG_LENGTH} characters"
    if UNSAFE.search(tag) or "\t" in tag or "\n" in tag:
        # C1 controls and bidi overrides too: GitHub would show `v1.0\u202e1.v` reversed.
        return "it holds control or bidirectional formatting characters (a newline, tab, ...)"
    if bad := sorted({c for c in tag if c in _TAG_FORBIDDEN}):
        return f"it holds {' '.join(repr(c) for c in bad)}, which git does not allow in a tag"
    if tag.startswith("-"):
        return "it starts with '-'"
    if tag.startswith("/") or tag.endswith("/") or "//" in tag:
        return "it starts or ends with '/', or has '//'"
    if ".." in tag:
        return "it holds '..'"
    if "@{" in tag or tag == "@":
        return "it is '@' or holds '@{'"
    if tag.endswith("."):
        return "it ends with '.'"
    for part in tag.split("/"):
        if part.startswith("."):
            return f"the part {part!r} starts with '.'"
        if part.endswith(".lock"):
            return f"the part {part!r} ends with '.lock'"
    return None


def check_tag(tag: str, source: str = "--tag") -> str:
    """`tag` if it can name a git tag, else a SevimgError saying why."""
    why = tag_problem(tag)
    if why is not None:
        raise SevimgError(
            f"{source}: {tag!r} is not a usable tag name: {why}",
            hint="use devel (a rolling prerelease) or vX.Y.Z",
        )
    return tag


# --- 1. what to publish --------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The verified local files chosen for publishing."""

    folder: Path
    files: tuple[LocalArtifact, ...]  # images and manifests, not SHA256SUMS
    images: tuple[str, ...]
    warnings: tuple[str, ...]


def select(folder: Path, images: Sequence[str] = (), *, allow_debug: bool = False) -> Selection:
    """Verify `folder` and pick the images and manifests of `images` (all when empty).

    Debug images among them are refused unless `allow_debug`.
    """
    found = load_artifact_folder(folder)
    available = found.images()
    wanted = list(dict.fromkeys(images)) or available
    missing = [i for i in wanted if i not in available]
    if missing:
        raise SevimgError(
            f"no artifacts for {', '.join(missing)} in {folder} (it has: {', '.join(available) or 'none'})"
        )
    if not wanted:
        raise SevimgError(f"{folder} holds no images to publish")
    files = tuple(f for f in found.files if f.kind != "sums" and f.image in wanted)
    if not allow_debug:
        refuse_debug(files, action="publish")
    return Selection(folder, files, tuple(wanted), tuple(str(p) for p in found.problems))


# --- 2. the plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One asset of the plan."""

    name: str
    action: Action
    content_type: str
    size: int
    sha256: str
    reason: str
    path: Path | None = None  # a local file
    content: bytes | None = None  # generated (SHA256SUMS)
    existing: Asset | None = None  # the asset it replaces or keeps


@dataclass(frozen=True)
class Plan:
    """What publishing will do to the release."""

    repo: str
    tag: str
    prerelease: bool
    release: Release | None  # None: it will be created
    items: tuple[Item, ...]
    cleanup: tuple[Asset, ...]  # leftovers of broken uploads, deleted first
    warnings: tuple[str, ...] = ()

    @property
    def release_action(self) -> str:
        """create, publish (a draft left by an earlier run), or update."""
        if self.release is None:
            return "create"
        return "publish" if self.release.draft else "update"

    def count(self, action: Action) -> int:
        """How many assets get `action`."""
        return sum(item.action == action for item in self.items)


def _is_leftover(asset: Asset) -> bool:
    return asset.state != "uploaded" or asset.name.startswith(TMP_PREFIX)


def make_plan(gh: GitHub, selection: Selection, tag: str, commit: str | None = None) -> Plan:
    """Read the release of `tag` and decide what to do with each asset; writes nothing.

    Besides the images, manifests and SHA256SUMS: measurements.json of the
    published images, built from `commit`, when any of them carries an
    expected measurement.
    """
    check_tag(tag)
    release = gh.release_by_tag(tag)
    if release is None:
        # A 404 by tag means missing, a draft, or no such repository; the
        # listing tells them apart (drafts only show up with a token).
        release = gh.draft_by_tag(tag)
    remote = gh.list_assets(release) if release is not None else []
    warnings = list(selection.warnings)
    cleanup = tuple(a for a in remote if _is_leftover(a))
    current = {a.name: a for a in remote if not _is_leftover(a)}

    items: list[Item] = []
    order = sorted(selection.files, key=lambda f: (f.kind != "image", f.name))
    for f in order:
        ctype = content_type_for(f.name, debug=f.debug)
        items.append(_decide(f.name, f.sha256, f.size, current.get(f.name), ctype, path=f.path))

    # SHA256SUMS covers every image and manifest the release will hold: ours
    # by their local checksum, the others (earlier builds) by GitHub's digest.
    sums = {f.name: f.sha256 for f in selection.files}
    for name, asset in sorted(current.items()):
        if name in sums or not name.endswith((ARTIFACT_SUFFIX, MANIFEST_SUFFIX)):
            continue
        stem = name.removesuffix(MANIFEST_SUFFIX).removesuffix(ARTIFACT_SUFFIX)
        if parse_image_id(stem) is None:
            continue
        if asset.sha256 is None:
            warnings.append(
                f"{name} on the release has no digest from GitHub; SHA256SUMS leaves it out"
            )
            continue
        sums[name] = asset.sha256
    content = format_sha256sums(sums)
    items.append(
        _decide(
            SHA256SUMS,
            _sha256(content),
            len(content),
            current.get(SHA256SUMS),
            content_type_for(SHA256SUMS),
            content=content,
        )
    )

    # Only a build with sev-snp-measure pinned (CI's) has measurements to publish.
    published = [load_manifest(f.path) for f in selection.files if f.kind == "manifest"]
    if any(m.expected_measurement for m in published):
        table = measurements.document(published, commit)
        items.append(
            _decide(
                measurements.MEASUREMENTS,
                _sha256(table),
                len(table),
                current.get(measurements.MEASUREMENTS),
                content_type_for(measurements.MEASUREMENTS),
                content=table,
            )
        )

    planned = {i.name: i.content_type for i in items}
    for name, asset in sorted(current.items()):
        if asset.content_type not in DISPATCH_TYPES or name in planned:
            continue  # no dispatch type, or this run uploads it with its right type
        if content_type_for(name) == HOST_TYPE:
            continue  # a release host image published earlier
        debug = looks_debug(name.removesuffix(ARTIFACT_SUFFIX))
        kind = "a debug image" if debug else "not a release host image"
        warnings.append(
            f"{name} on the release is {kind} but has the dispatch type {asset.content_type}, "
            "so dispatch will boot it; sevimg leaves assets it does not publish alone: delete it from the release"
        )
    total = len(current) + sum(i.action == "create" for i in items)
    if total > MAX_ASSETS:
        raise SevimgError(
            f"the release would hold {total} assets; GitHub allows {MAX_ASSETS} per release"
        )
    return Plan(
        repo=gh.repo,
        tag=tag,
        prerelease=release.prerelease if release else is_prerelease(tag),
        release=release,
        items=tuple(items),
        cleanup=cleanup,
        warnings=tuple(warnings),
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _decide(
    name: str,
    sha256: str,
    size: int,
    existing: Asset | None,
    ctype: str,
    *,
    path: Path | None = None,
    content: bytes | None = None,
) -> Item:
    if ctype in DISPATCH_TYPES and (ctype != HOST_TYPE or content_type_for(name) != HOST_TYPE):
        raise AssertionError(
            f"{name} would get the dispatch type {ctype}"
        )  # never, by construction
    item = Item(name, "create", ctype, size, sha256, "new", path, content, existing)
    if existing is None:
        return item
    if existing.content_type != ctype:
        return replace(
            item, action="replace", reason=f"content type is {existing.content_type or 'unset'}"
        )
    if existing.sha256 is None:
        return replace(item, action="replace", reason="GitHub has no digest of it")
    if existing.sha256 != sha256:
        return replace(item, action="replace", reason="content differs")
    return replace(item, action="keep", reason="same content and type")
