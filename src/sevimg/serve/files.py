"""The jobs of `sevimg serve`: the host images of a verified artifact folder.

The folder is read with :func:`sevimg.release.folder.load_artifact_folder`,
so `sevimg serve` refuses what `sevimg publish` refuses (a SHA256SUMS that
does not match, an image without its manifest, …) and debug images need
--allow-debug, as they do there. Each image's identity (device, inode,
size, modification time) is kept from the moment it was verified, so a file
replaced afterwards is noticed before it is served (:func:`unchanged`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sevimg.problems import SevimgError, error
from sevimg.release.folder import LocalArtifact, load_artifact_folder
from sevimg.serve.jobs import Job, ordered

Identity = tuple[int, int, int, int]


@dataclass(frozen=True)
class Served:
    """The verified host images, in name order, and how each looked when verified."""

    jobs: tuple[Job, ...]
    identities: dict[str, Identity]
    skipped: tuple[str, ...]  # host images left out by the filters


def identity(path: Path) -> Identity:
    """What changes when a file is replaced or rewritten."""
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def unchanged(path: Path, expected: Identity) -> bool:
    """True when `path` is still the file that was verified."""
    try:
        return identity(path) == expected
    except OSError:
        return False


def load_jobs(folder: Path, filters: Sequence[str] = (), *, allow_debug: bool = False) -> Served:
    """The host images of `folder` that match any of `filters` (substrings; all when none).

    SevimgError when the folder does not verify, when no host image is
    left, or when a debug image would be served without `allow_debug`.
    """
    try:
        found = load_artifact_folder(folder)
    except SevimgError as exc:
        raise SevimgError(
            f"{folder} cannot be served: {exc.message}",
            exc.problems,
            hint="rebuild it with `sevimg build`; `sevimg serve` serves only what `sevimg publish` would publish",
        ) from None
    hosts = [f for f in found.files if f.kind == "image" and f.role == "host"]
    if not hosts:
        raise SevimgError(
            f"{folder} holds no host image (host-*.efi); only hosts are HTTP-booted",
            hint="build one with `sevimg build IMAGE` (both roles by default)",
        )
    chosen = [f for f in hosts if not filters or any(s in f.name for s in filters)]
    if not chosen:
        raise SevimgError(
            f"no host image in {folder} matches {' or '.join(repr(s) for s in filters)}",
            hint=f"the host images there: {', '.join(f.name for f in hosts)} (filters are case-sensitive substrings)",
        )
    if not allow_debug:
        _refuse_debug(chosen)
    jobs = [Job(name=f.name, path=f.path, size=f.size, sha256=f.sha256) for f in chosen]
    return Served(
        jobs=ordered(jobs),
        identities={f.name: identity(f.path) for f in chosen},
        skipped=tuple(sorted(f.name for f in hosts if f not in chosen)),
    )


def _refuse_debug(files: Sequence[LocalArtifact]) -> None:
    debug = [f for f in files if f.debug]
    if not debug:
        return
    raise SevimgError(
        f"{', '.join(f.name for f in debug)}: debug image{'s' if len(debug) > 1 else ''}, "
        "not served without --allow-debug",
        [error(str(f.path), f"a debug image ({f.debug_reason}): console autologin") for f in debug],
        hint="pass --allow-debug to boot it in a lab anyway, or leave it out with a FILTER",
    )


def check_poweroff(path: Path) -> Path:
    """`path` if it can be served as the end-of-queue EFI program (a readable PE file)."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(2)
    except OSError as exc:
        raise SevimgError(f"--poweroff-efi {path}: {exc.strerror or exc}") from None
    if magic != b"MZ":
        raise SevimgError(f"--poweroff-efi {path}: not an EFI program (no MZ header)")
    return path
