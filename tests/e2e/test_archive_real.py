"""`sevimg archive` against the real Debian archive (deb.debian.org): true versions,
true firmware presence, and the debian-13 certification failure caught without a build.

Marked `network` and `e2e` (run by `nox -s e2e`, so by .ci/run): when the
archive cannot be reached the command says so and these tests fail; they
never skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sevimg.catalog.versions import compare
from tests.conftest import IMAGES

pytestmark = [pytest.mark.e2e, pytest.mark.network]

FIRMWARE = "/usr/share/ovmf/OVMF.amdsev.fd"


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with this checkout's catalog, reading deb.debian.org (no sevimg.local.yaml)."""
    root = tmp_path_factory.mktemp("archive-ws")
    shutil.copytree(IMAGES, root / "images")
    return root


def archive(root: Path, *args: str) -> tuple[int, dict[str, Any], float]:
    env = {**os.environ, "SEVIMG_CACHE": str(root / ".cache")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sevimg", "--root", str(root), "archive", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=1200,
    )
    took = time.monotonic() - started
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout), took


def components(data: dict[str, Any], image: str, role: str) -> dict[str, dict[str, Any]]:
    release = next(r for r in data["releases"] if r["image"] == image)
    assert not release["failure"], release["failure"]
    report = next(r for r in release["reports"] if r["role"] == role)
    return {c["kind"]: c for c in report["components"]} | {
        "_files": {f["what"]: f for f in report["files"]},
        "_errors": report["errors"],
    }


def test_debian_releases_report_plausible_versions_and_the_firmware(real: Path) -> None:
    _, first, took_first = archive(real, "debian-13", "debian-forky", "debian-sid")
    for image in ("debian-13", "debian-forky", "debian-sid"):
        host = components(first, image, "host")
        # Only drift (the archive moved past the catalog) may be an error here.
        assert all("declares" in e for e in host["_errors"]), host["_errors"]
        assert compare(host["kernel"]["upstream"], "6.12") >= 0
        assert compare(host["qemu"]["upstream"], "10.0") >= 0
        assert compare(host["ovmf"]["upstream"], "2025.02") >= 0
        assert compare(host["systemd"]["upstream"], "257") >= 0
        assert host["ovmf"]["package"] == "ovmf-amdsev"
        firmware = host["_files"]["SEV firmware"]
        assert firmware["path"] == FIRMWARE and "ovmf-amdsev" in firmware["owners"]
    # forky and sid are newer than trixie, and debian-13's OVMF comes from forky.
    assert (
        compare(
            components(first, "debian-forky", "host")["kernel"]["upstream"],
            components(first, "debian-13", "host")["kernel"]["upstream"],
        )
        > 0
    )
    assert (
        components(first, "debian-13", "host")["ovmf"]["version"]
        == components(first, "debian-forky", "host")["ovmf"]["version"]
    )

    # The second run asks only for the signed InRelease files (deb.debian.org here sends
    # no ETag or Last-Modified, so they come whole; tests/test_archive.py shows the 304s);
    # every index they name is served from the cache by its hash.
    _, second, took_second = archive(real, "debian-13", "debian-forky", "debian-sid")
    inreleases = 7  # trixie, -updates, -security; forky, -updates, -security; sid
    assert second["requests"] <= inreleases, second["requests"]
    assert took_second < took_first / 2, (took_first, took_second)


def test_debian_13_without_forky_lacks_the_firmware(real: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(real, ws, ignore=shutil.ignore_patterns(".cache"))
    (ws / ".cache").symlink_to(real / ".cache")
    release = ws / "images/debian-13.yaml"
    text = release.read_text()
    release.write_text(text[: text.index("extra_repositories:")])
    code, data, _ = archive(ws, "debian-13")
    assert code == 1
    host = components(data, "debian-13", "host")
    assert f"SEV firmware {FIRMWARE} is not in ovmf-amdsev: no package ships it" in host["_errors"]


def test_a_package_that_does_not_exist_is_caught(real: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(real, ws, ignore=shutil.ignore_patterns(".cache"))
    (ws / ".cache").symlink_to(real / ".cache")
    release = ws / "images/debian-forky.yaml"
    release.write_text(release.read_text() + "host:\n  add_packages: [sevimg-no-such-package]\n")
    code, data, _ = archive(ws, "debian-forky")
    assert code == 1
    host = components(data, "debian-forky", "host")
    assert any("'sevimg-no-such-package' is in no repository" in e for e in host["_errors"])
