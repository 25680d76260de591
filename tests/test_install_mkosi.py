"""tools/install-mkosi: idempotent, offline once cached, clear when the archive is out of reach."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sevimg.imaging import mkosi
from sevimg.mkosi_versions import MKOSI_VERSIONS
from tests.conftest import REPO

SCRIPT = REPO / "tools" / "install-mkosi"
CACHE = REPO / ".cache"


def install(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize("version", MKOSI_VERSIONS)
def test_cached_versions_need_no_network(version: str) -> None:
    """nox -s tests installed both; a second run must not touch the (here unreachable) mirror."""
    assert (CACHE / "mkosi" / version / ".complete").is_file(), (
        f"run tools/install-mkosi {version} first"
    )
    proc = install(version, SEVIMG_DEBIAN_MIRROR="http://127.0.0.1:1/debian")
    assert proc.returncode == 0, proc.stderr
    assert f"mkosi {version}-" in proc.stdout and f".cache/mkosi/{version}/bin/mkosi" in proc.stdout
    found = mkosi.find(CACHE, version)
    assert (
        found is not None
        and found.version == version
        and found.origin in ("cache", "PATH", "SEVIMG_MKOSI")
    )


def test_unreachable_archive_is_a_clear_error(tmp_path: Path) -> None:
    proc = install(
        "25.3", SEVIMG_CACHE=str(tmp_path), SEVIMG_DEBIAN_MIRROR="http://127.0.0.1:1/debian"
    )
    assert proc.returncode == 1
    assert "could not read the package indexes from http://127.0.0.1:1/debian" in proc.stderr
    assert "is the Debian archive reachable?" in proc.stderr
    assert not (tmp_path / "mkosi" / "25.3").exists()


def test_bad_version_is_refused(tmp_path: Path) -> None:
    proc = install("25.3;rm", SEVIMG_CACHE=str(tmp_path))
    assert proc.returncode == 1 and "is not an mkosi version" in proc.stderr


def test_mkosi_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "mkosi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'mkosi 26.0'\n")
    fake.chmod(0o755)
    monkeypatch.delenv("SEVIMG_MKOSI", raising=False)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    on_path = mkosi.find(CACHE)
    assert on_path is not None and (on_path.origin, on_path.version) == ("PATH", "26.0")
    cached = mkosi.find(CACHE, "25.3")  # a specific version still comes from the cache
    assert cached is not None and (cached.origin, cached.version) == ("cache", "25.3")
    monkeypatch.setenv("SEVIMG_MKOSI", str(CACHE / "mkosi" / "27.1" / "bin" / "mkosi"))
    chosen = mkosi.find(CACHE)
    assert chosen is not None and (chosen.origin, chosen.version) == ("SEVIMG_MKOSI", "27.1")
