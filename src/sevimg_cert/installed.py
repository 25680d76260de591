"""The versions of the packages a host image was built from, as its build recorded them.

mkosi drops the package database from the image (CleanPackageMetadata=yes),
and the SEV firmware's own version string is compressed inside it. So the
host's `mkosi.postinst` script, which runs after the packages are installed
and before the database is dropped, records the installed version of the
packages that provide the kernel, QEMU, OVMF and systemd in
/usr/lib/sevimg/packages.json:

    {"ovmf": {"package": "ovmf-amdsev", "version": "2026.08-1"}, ...}

Standard library only: this runs inside the host image.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

PACKAGES_JSON = "/usr/lib/sevimg/packages.json"


@dataclass(frozen=True)
class Installed:
    """One recorded package: the kind it provides (ovmf), its name and installed version."""

    kind: str
    package: str
    version: str


def read_installed(root: Path) -> tuple[dict[str, Installed], str | None]:
    """The records in PACKAGES_JSON below `root`, by kind, and why the file is unusable (None: fine).

    A missing file is no problem (an image built before the file existed):
    ({}, None). A file that is not the expected JSON gives ({}, the reason).
    """
    path = root / PACKAGES_JSON.lstrip("/")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError) as exc:
        return {}, f"{PACKAGES_JSON} cannot be read: {exc}"
    try:
        data = json.loads(text)
    except ValueError as exc:
        return {}, f"{PACKAGES_JSON} is not JSON: {exc}"
    if not isinstance(data, dict):
        return {}, f"{PACKAGES_JSON} is not a JSON object"
    found: dict[str, Installed] = {}
    for kind, entry in sorted(data.items()):
        package = entry.get("package") if isinstance(entry, dict) else None
        version = entry.get("version") if isinstance(entry, dict) else None
        if not isinstance(package, str) or not isinstance(version, str) or not version:
            return {}, f"{PACKAGES_JSON}: {kind!r} needs a package and a version string"
        found[kind] = Installed(kind, package, version)
    return found, None


# edk2 as packaged: Debian's 2026.08-1 (after an epoch), Fedora's and EL's
# 20241117-5.fc42 (YYYYMMDD), SUSE's 202502-1.1 (YYYYMM).
_EDK2_VERSION = re.compile(r"^(\d{4})(?:\.(\d{1,2})|(\d{2}))(?:\d{2})?(?!\d)")


def edk2_version(version: str) -> tuple[int, int] | None:
    """(year, month) of the edk2 release an OVMF package version names, None when it names none."""
    match = _EDK2_VERSION.match(version.split(":", 1)[-1])
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2) or match.group(3))
