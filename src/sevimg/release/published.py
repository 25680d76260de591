"""A published GitHub release as a local artifact folder, for `sevimg reproduce --release`.

The release is named `OWNER/NAME@TAG` or by its web address
(`https://github.com/OWNER/NAME/releases/tag/TAG`). Its assets are read as
data: a name is used as a file name only when it is a plain one, every
download has a size cap and the whole has one deadline
(:class:`~sevimg.release.download.ReleaseReader`), and each file must match
the release's SHA256SUMS (and GitHub's digest) before it counts. Files go
into a staging folder that replaces the destination only when all are in,
so a failed or interrupted download leaves no half-written folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sevimg import interrupt, lock
from sevimg.artifacts.checksums import SHA256SUMS, parse_sha256sums, sha256_file
from sevimg.artifacts.manifest import Manifest, load_manifest
from sevimg.artifacts.names import (
    ARTIFACT_SUFFIX,
    MANIFEST_SUFFIX,
    artifact_name,
    is_plain_name,
    parse_image_id,
)
from sevimg.atomic import remove_stale, replace_folder
from sevimg.problems import SevimgError, parse_json, read_utf8
from sevimg.release.download import ReleaseReader
from sevimg.release.github import Asset, ProgressFn, check_repo
from sevimg.release.measurements import MEASUREMENTS
from sevimg.release.plan import tag_problem
from sevimg.release.publish import human_size

# The web hosts whose release addresses map to the default API without --api-url.
GITHUB_WEB_HOSTS = ("github.com", "www.github.com")
_FOLDER_CHARS = re.compile(r"[^A-Za-z0-9._+-]")
_DOWNLOADED = (MANIFEST_SUFFIX, ARTIFACT_SUFFIX)
# name, size -> a context whose callback hears the bytes received so far.
ProgressFactory = Callable[[str, int], AbstractContextManager[ProgressFn | None]]
_COMMIT = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


@dataclass(frozen=True)
class Caps:
    """The most each kind of asset may be, in bytes."""

    image: int = 1024**3  # the largest hosts are ~300 MB; GitHub's limit is 2 GiB
    manifest: int = 8 * 1024**2  # a host with every package listed is well under 1 MB
    sums: int = 1024**2
    measurements: int = 8 * 1024**2


@dataclass(frozen=True)
class ReleaseRef:
    """Which release: repository and tag."""

    repo: str
    tag: str

    def __str__(self) -> str:
        return f"{self.repo}@{self.tag}"

    @property
    def folder_name(self) -> str:
        """A plain folder name for this release (`owner+name+tag`, odd characters replaced)."""
        raw = f"{self.repo.replace('/', '+')}+{self.tag}"
        name = _FOLDER_CHARS.sub("_", raw)
        if name != raw:  # keep two tags that differ only in odd characters apart
            name += "-" + hashlib.sha256(raw.encode()).hexdigest()[:8]
        return name


def parse_release_ref(text: str, *, api_url_set: bool, option: str = "--release") -> ReleaseRef:
    """`OWNER/NAME@TAG` or `https://github.com/OWNER/NAME/releases/tag/TAG` as a ReleaseRef.

    An address on another host is accepted only when the API URL is set
    (--api-url or GITHUB_API_URL): the token is never sent to a host taken
    from a pasted link.
    """
    shown = text if len(text) <= 200 else text[:200] + "..."
    if "://" in text:
        parts = urlsplit(text.strip())
        host = (parts.hostname or "").lower()
        match = re.fullmatch(r"/([^/]+)/([^/]+)/releases/tag/(.+?)/?", parts.path)
        if parts.scheme != "https" or match is None:
            raise SevimgError(
                f"{option}: {shown!r} is not a release's address",
                hint="e.g. https://github.com/OWNER/NAME/releases/tag/v1.2.3, or OWNER/NAME@v1.2.3",
            )
        if host not in GITHUB_WEB_HOSTS and not api_url_set:
            raise SevimgError(
                f"{option}: {shown!r} is on {host}, not github.com; name its API with --api-url "
                "(GitHub Enterprise: https://HOST/api/v3)",
            )
        repo, tag = f"{match[1]}/{match[2]}", unquote(match[3])
    else:
        repo, at, tag = text.partition("@")
        if not at:
            raise SevimgError(
                f"{option}: {shown!r} names no tag; write OWNER/NAME@TAG",
                hint="e.g. acme/sev-images@v1.2.3, or the release's https://github.com/... address",
            )
    check_repo(repo, option)
    why = tag_problem(tag)
    if why is not None:
        raise SevimgError(f"{option}: {tag!r} is not a usable tag name: {why}")
    return ReleaseRef(repo, tag)


def download_release(
    reader: ReleaseReader,
    ref: ReleaseRef,
    dest: Path,
    *,
    images: Sequence[str] = (),
    caps: Caps = Caps(),
    log: Callable[[str], None] = lambda _: None,
    progress: ProgressFactory | None = None,
) -> Path:
    """Download the manifests, UKIs, SHA256SUMS and measurements.json of `ref` into `dest`.

    `images` picks image ids or catalog names (all when empty). Files that
    `dest` already holds with the SHA-256 the release's SHA256SUMS names are
    kept, not downloaded again. Returns `dest`; SevimgError (and `dest` as it
    was) when the release, an asset or a check fails. `progress(name, size)`
    gives a context whose callback hears each download's bytes (a bar).
    """
    release = reader.release_by_tag(ref.tag)
    if release is None:
        raise SevimgError(
            f"{ref.repo} has no published release {ref.tag!r} (GitHub answered 404)",
            hint="check the tag on the repository's releases page; drafts are not published, "
            "and a private repository needs a token (GITHUB_TOKEN or `gh auth login`)",
        )
    assets = _usable_assets(reader.list_assets(release), ref)
    if SHA256SUMS not in assets:
        raise SevimgError(
            f"release {ref} has no {SHA256SUMS} asset; nothing there can be checked",
            hint="`sevimg publish` uploads one with every release",
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with lock.hold(dest.parent, "the download folder", option="--download-dir DIR"):
        remove_stale(dest.parent)
        _check_replaceable(dest)
        with interrupt.deferred():
            staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.new-", dir=dest.parent))
        try:
            fetch = _Fetcher(reader, ref, assets, staging, dest, log, progress)
            sums_text = fetch.text(SHA256SUMS, caps.sums)
            sums, problems = parse_sha256sums(sums_text, display=f"{ref}: {SHA256SUMS}")
            if problems:
                raise SevimgError(f"the {SHA256SUMS} of release {ref} is not valid", problems)
            for image_id in _chosen(assets, images, ref):
                manifest_file = f"{image_id}{MANIFEST_SUFFIX}"
                manifest = fetch.listed(manifest_file, caps.manifest, sums)
                uki = _check_manifest(manifest, image_id, ref)
                fetch.listed(uki, caps.image, sums)
            if MEASUREMENTS in assets:
                fetch.one(MEASUREMENTS, caps.measurements, sums.get(MEASUREMENTS))
            return replace_folder(staging, dest)
        except BaseException:
            with interrupt.deferred():
                shutil.rmtree(staging, ignore_errors=True)
            raise


def _check_replaceable(dest: Path) -> None:
    """SevimgError unless `dest` is absent, empty or an earlier download (it is replaced whole)."""
    if not dest.exists() and not dest.is_symlink():
        return
    if dest.is_symlink() or not dest.is_dir():
        raise SevimgError(f"{dest} exists and is not a folder; the download goes into a folder")
    others = sorted(
        p.name
        for p in dest.iterdir()
        if p.is_symlink()
        or not p.is_file()
        or not (p.name in (SHA256SUMS, MEASUREMENTS) or p.name.endswith(_DOWNLOADED))
    )
    if others:
        raise SevimgError(
            f"{dest} holds what a release download does not ({', '.join(others[:5])}); "
            "it is replaced by the download, so sevimg leaves it alone",
            hint="choose an empty folder, or an earlier download's, with --download-dir",
        )


def _usable_assets(listed: Iterable[Asset], ref: ReleaseRef) -> dict[str, Asset]:
    """The assets by name that sevimg may read; SevimgError for a name it cannot trust."""
    found: dict[str, Asset] = {}
    for asset in listed:
        name = asset.name
        ours = name in (SHA256SUMS, MEASUREMENTS) or name.endswith(
            (MANIFEST_SUFFIX, ARTIFACT_SUFFIX)
        )
        base = re.split(r"[/\\]", name)[-1]
        if not is_plain_name(name) and (ours or base in (SHA256SUMS, MEASUREMENTS)):
            raise SevimgError(
                f"release {ref} has an asset named {name[:120]!r}, which is not a plain file "
                "name; refusing to download from it"
            )
        if not ours:
            continue
        if name in found:
            raise SevimgError(f"release {ref} lists two assets named {name}")
        found[name] = asset
    return found


def _chosen(assets: Mapping[str, Asset], images: Sequence[str], ref: ReleaseRef) -> list[str]:
    """Image ids of the release's manifests, narrowed to `images` (ids or catalog names)."""
    ids = sorted(
        n.removesuffix(MANIFEST_SUFFIX)
        for n in assets
        if n.endswith(MANIFEST_SUFFIX) and parse_image_id(n.removesuffix(MANIFEST_SUFFIX))
    )
    if not ids:
        raise SevimgError(f"release {ref} has no image manifests (*{MANIFEST_SUFFIX})")
    if not images:
        return ids
    chosen = [i for i in ids if i in images or (parse_image_id(i) or ("", ""))[1] in images]
    unknown = [
        w for w in images if not any(w == i or (parse_image_id(i) or ("", ""))[1] == w for i in ids)
    ]
    if unknown:
        raise SevimgError(
            f"release {ref} has no image {', '.join(unknown)}",
            hint=f"it has {', '.join(ids)}",
        )
    return chosen


def _check_manifest(path: Path, image_id: str, ref: ReleaseRef) -> str:
    """The UKI name a downloaded manifest describes, once it is the manifest of `image_id`."""
    manifest: Manifest = load_manifest(path)
    if manifest.image_id != image_id:
        raise SevimgError(
            f"release {ref}: {path.name} is the manifest of {manifest.image_id!r}, "
            f"not of {image_id!r}"
        )
    if manifest.artifact != artifact_name(image_id):
        raise SevimgError(
            f"release {ref}: {path.name} describes {manifest.artifact[:120]!r}; "
            f"expected {artifact_name(image_id)}"
        )
    return manifest.artifact


class _Fetcher:
    """Downloads into the staging folder, reusing files the destination already has."""

    def __init__(
        self,
        reader: ReleaseReader,
        ref: ReleaseRef,
        assets: Mapping[str, Asset],
        staging: Path,
        dest: Path,
        log: Callable[[str], None],
        progress: ProgressFactory | None,
    ) -> None:
        self.progress = progress
        self.reader = reader
        self.ref = ref
        self.assets = assets
        self.staging = staging
        self.dest = dest
        self.log = log

    def text(self, name: str, cap: int) -> str:
        """An asset read as UTF-8 text (SHA256SUMS)."""
        return read_utf8(self.one(name, cap, None))

    def listed(self, name: str, cap: int, sums: Mapping[str, str]) -> Path:
        """An asset SHA256SUMS must list, checked against it."""
        expected = sums.get(name)
        if expected is None:
            raise SevimgError(
                f"the {SHA256SUMS} of release {self.ref} does not list {name}; it cannot be checked"
            )
        return self.one(name, cap, expected)

    def one(self, name: str, cap: int, expected: str | None) -> Path:
        """Download (or reuse) one asset into the staging folder; its path there."""
        asset = self.assets.get(name)
        if asset is None:
            raise SevimgError(f"release {self.ref} has no asset {name}")
        if asset.state != "uploaded":
            raise SevimgError(
                f"release {self.ref}: asset {name} is an upload that never finished "
                f"(state {asset.state[:40]!r})"
            )
        if expected is not None and asset.sha256 is not None and asset.sha256 != expected:
            raise SevimgError(
                f"release {self.ref}: GitHub's digest of {name} is {asset.sha256}, "
                f"but {SHA256SUMS} says {expected}; the asset was replaced after publishing"
            )
        target = self.staging / name
        if expected is not None and self._reuse(name, target, expected):
            self.log(f"{name}: already downloaded (sha256 matches {SHA256SUMS})")
            return target
        self.log(f"downloading {name} ({human_size(asset.size)})")
        with self.progress(name, asset.size) if self.progress else _silent() as heard:
            digest = self.reader.download(asset, target, cap=cap, progress=heard)
        if asset.sha256 is not None and digest != asset.sha256:
            raise SevimgError(
                f"release {self.ref}: {name} arrived with SHA-256 {digest}, but GitHub's "
                f"digest is {asset.sha256}"
            )
        if expected is not None and digest != expected:
            raise SevimgError(
                f"release {self.ref}: {name} has SHA-256 {digest}, but {SHA256SUMS} says "
                f"{expected}; refusing it"
            )
        return target

    def _reuse(self, name: str, target: Path, expected: str) -> bool:
        """Link or copy `dest/name` into staging when it has the expected SHA-256."""
        kept = self.dest / name
        if kept.is_symlink() or not kept.is_file() or sha256_file(kept) != expected:
            return False
        try:
            os.link(kept, target)
        except OSError:
            shutil.copyfile(kept, target)
        return sha256_file(target) == expected or _drop(target)


@contextlib.contextmanager
def _silent() -> Iterator[ProgressFn | None]:
    yield None


def _drop(path: Path) -> bool:
    with contextlib.suppress(OSError):
        path.unlink()
    return False


def source_commits(folder: Path, image_ids: Iterable[str]) -> list[str]:
    """The source commits the folder's measurements.json names for these images (sorted, unique)."""
    path = folder / MEASUREMENTS
    if not path.is_file():
        return []
    try:
        data = parse_json(read_utf8(path), str(path))
    except SevimgError:
        return []  # measurement_disagreements says what is wrong with it
    table = data.get("images") if isinstance(data, dict) else None
    if not isinstance(table, dict):
        return []
    found = {
        entry.get("source_commit")
        for image_id in image_ids
        if isinstance(entry := table.get(image_id), dict)
    }
    return sorted(c for c in found if isinstance(c, str) and _COMMIT.fullmatch(c))


def measurement_disagreements(folder: Path, manifests: Iterable[Manifest]) -> list[str]:
    """Where the folder's measurements.json and its manifests disagree (empty: they agree or it is absent).

    A published measurements.json is what verifiers check a machine against;
    it must name the same UKI SHA-256 and expected measurement as the
    manifest the rebuild is compared with.
    """
    path = folder / MEASUREMENTS
    if not path.is_file():
        return []
    data = parse_json(read_utf8(path), str(path))
    table = data.get("images") if isinstance(data, dict) else None
    if not isinstance(table, dict):
        raise SevimgError(f"{path}: no `images` object; not a sevimg measurements.json")
    found: list[str] = []
    for manifest in manifests:
        entry = table.get(manifest.image_id)
        if not isinstance(entry, dict):
            found.append(f"{MEASUREMENTS}: no entry for {manifest.image_id}")
            continue
        if entry.get("uki_sha256") != manifest.sha256:
            found.append(
                f"{MEASUREMENTS}: {manifest.image_id}: uki_sha256 {str(entry.get('uki_sha256'))[:64]}, "
                f"the manifest says {manifest.sha256}"
            )
        measured = entry.get("expected_measurement")
        published = measured.get("measurement") if isinstance(measured, dict) else None
        recorded = manifest.expected_measurement
        if published != (recorded.measurement if recorded else None):
            found.append(
                f"{MEASUREMENTS}: {manifest.image_id}: expected measurement "
                f"{str(published)[:96]}, the manifest says "
                f"{recorded.measurement if recorded else 'none'}"
            )
    return found
