"""Names in an artifact folder: image ids, the files named for them, debug builds.

An image id is `<role>-<distro>-<release>[-debug]`, e.g. `host-debian-13`;
its image is `<id>.efi` and its manifest `<id>.manifest.json`.
"""

from __future__ import annotations

import re
from typing import cast

from sevimg.catalog.index import DISTRO_NAME, RELEASE_NAME
from sevimg.catalog.spec import ROLES, Role

ARTIFACT_SUFFIX = ".efi"
MANIFEST_SUFFIX = ".manifest.json"
LOGS_DIR = "logs"
# GitHub refuses release assets of 2 GiB and more.
MAX_ASSET_SIZE = 2 * 1024**3

ArtifactRole = Role  # an artifact is one of the catalog's roles

# Names that may appear in SHA256SUMS and in the folder: plain file names
# only, so a crafted SHA256SUMS can never point outside the folder.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,254}")
# role-distro-release with an optional -debug suffix, from the catalog's own patterns.
# Always fullmatch: `$` would also accept a final newline.
_IMAGE_ID = re.compile(
    rf"(?P<role>{'|'.join(ROLES)})"
    rf"-(?P<image>(?:{DISTRO_NAME.pattern})-(?:{RELEASE_NAME.pattern}))"
    r"(?P<debug>-debug)?"
)


def artifact_name(image_id: str) -> str:
    """`host-debian-13` → `host-debian-13.efi`."""
    return f"{image_id}{ARTIFACT_SUFFIX}"


def manifest_name(image_id: str) -> str:
    """`host-debian-13` → `host-debian-13.manifest.json`."""
    return f"{image_id}{MANIFEST_SUFFIX}"


def parse_image_id(image_id: str) -> tuple[ArtifactRole, str, bool] | None:
    """`host-debian-13-debug` → ('host', 'debian-13', True); None when it is no image id."""
    match = _IMAGE_ID.fullmatch(image_id)
    if not match:
        return None
    return cast(ArtifactRole, match["role"]), match["image"], bool(match["debug"])


def looks_debug(image_id: str) -> bool:
    """True for a debug image id: `-debug` at the end, or `debug` anywhere as a part of it.

    Deliberately wider than :func:`parse_image_id`'s flag: `host-debian-debug`
    parses as release "debug" of Debian, but a name that says debug is
    treated as one wherever it decides what gets published.
    """
    return "debug" in image_id.lower().split("-")


def is_plain_name(name: str) -> bool:
    """True for a plain file name (no folder, no traversal, no odd characters)."""
    return bool(_PLAIN_NAME.fullmatch(name)) and name not in (".", "..")
