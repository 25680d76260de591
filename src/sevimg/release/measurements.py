"""`measurements.json`: what a verifier needs to check a published image without rebuilding it.

`sevimg publish` uploads it beside the images. Per image: the UKI's SHA-256,
the source commit it was built from, and the expected SNP launch measurement
of the guest with what it assumes (the OVMF and its SHA-256, the vCPU count
and type), as the build computed it. Described by
schema/measurements.schema.json; `sevimg verify --expect-from` reads it.

    {"schema_version": 1, "images": {"guest-debian-13": {...}, ...}}

Pure: manifests in, bytes out (sorted keys, the same bytes for the same input).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sevimg.artifacts.manifest import Manifest

MEASUREMENTS = "measurements.json"
SCHEMA_VERSION = 1
_COMMIT = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def entry(manifest: Manifest, commit: str | None) -> dict[str, Any]:
    """One image's record."""
    measured = manifest.expected_measurement
    return {
        "role": manifest.role,
        "uki": manifest.artifact,
        "uki_sha256": manifest.sha256,
        "source_commit": commit,
        "embedded_guest": (
            {
                "image_id": manifest.embedded_guest.image_id,
                "sha256": manifest.embedded_guest.sha256,
            }
            if manifest.embedded_guest
            else None
        ),
        "expected_measurement": (
            {
                "measurement": measured.measurement,
                "host_image_id": measured.host_image_id,
                "ovmf": measured.ovmf,
                "ovmf_sha256": measured.ovmf_sha256,
                "vcpus": measured.vcpus,
                "vcpu_type": measured.vcpu_type,
                "sev_snp_measure": measured.sev_snp_measure,
            }
            if measured
            else None
        ),
    }


def document(manifests: Iterable[Manifest], commit: str | None) -> bytes:
    """The measurements.json of these images, built from `commit` (None: not known)."""
    images = {m.image_id: entry(m, commit) for m in manifests}
    data = {"schema_version": SCHEMA_VERSION, "images": dict(sorted(images.items()))}
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def source_commit(root: Path) -> str | None:
    """The commit the images were built from: GITHUB_SHA in Actions, else the checkout's HEAD.

    None when neither is known (an installed sevimg on a plain folder).
    """
    found = os.environ.get("GITHUB_SHA", "").strip().lower()
    if not found:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "--verify", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        found = done.stdout.strip() if done.returncode == 0 else ""
    return found if _COMMIT.fullmatch(found) else None
