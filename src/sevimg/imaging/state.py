"""What a build remembers between runs: the inputs each artifact was built from.

An image is skipped when the digest of everything that decides its content
(sevimg and mkosi versions, the tools tree, the staged tools, the mirrors, the
rendered tree's bytes and modes) matches the one recorded when its artifact,
still in place with the same SHA-256, was built.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from sevimg import __version__
from sevimg.artifacts import checksums, names
from sevimg.problems import SevimgError, parse_json
from sevimg.settings import LocalConfig, ToolPin


def inputs_key(
    mkosi_version: str,
    tools_tree: tuple[str, ...],
    local: LocalConfig,
    tree: Path,
    staged: Mapping[str, ToolPin],
) -> str:
    """A digest of everything that decides the artifact's content."""
    h = hashlib.sha256()
    h.update(f"sevimg {__version__}\nmkosi {mkosi_version}\n".encode())
    h.update(json.dumps(tools_tree).encode())
    h.update(
        json.dumps(
            sorted((p.name, p.version, p.sha256, p.target) for p in staged.values())
        ).encode()
    )
    h.update(
        json.dumps([repr(local.apt_mirrors.get(d)) for d in sorted(local.apt_mirrors)]).encode()
    )
    h.update(json.dumps(sorted(local.rpm_mirrors.items())).encode())
    for path in sorted(tree.rglob("*")):
        if path.is_file():
            h.update(f"{path.relative_to(tree)}:{path.stat().st_mode & 0o777:o}:".encode())
            with path.open("rb") as handle:
                h.update(hashlib.file_digest(handle, "sha256").digest())
    return h.hexdigest()


def up_to_date(state_dir: Path, out_dir: Path, image_id: str, key: str) -> Path | None:
    """The existing artifact of `image_id` when it was built from exactly `key`, else None."""
    state = state_dir / f"{image_id}.json"
    artifact = out_dir / names.artifact_name(image_id)
    manifest = out_dir / names.manifest_name(image_id)
    try:
        recorded = parse_json(state.read_bytes(), str(state))
    except (OSError, SevimgError):
        return None
    if not isinstance(recorded, dict):
        return None
    if recorded.get("inputs") != key or not artifact.is_file() or not manifest.is_file():
        return None
    if checksums.sha256_file(artifact) != recorded.get("sha256"):
        return None
    return artifact
