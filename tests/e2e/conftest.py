"""The end-to-end workspace: this checkout's catalog, this machine's Debian mirror.

Real builds need the Debian archive. If it cannot be reached the session
fails, loudly, with the reason; it never passes by skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

MKOSI_VERSION = os.environ.get("SEVIMG_E2E_MKOSI", "25.3")


def machine_debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb.debian.org when it has none)."""
    found: list[str] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        found += re.findall(r"^URIs:\s*(\S+)", path.read_text(errors="replace"), re.M)
    for path in [
        Path("/etc/apt/sources.list"),
        *sorted(Path("/etc/apt/sources.list.d").glob("*.list")),
    ]:
        if path.is_file():
            found += re.findall(
                r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", path.read_text(errors="replace"), re.M
            )
    debian = [u.rstrip("/") for u in found if u.rstrip("/").endswith("/debian")]
    return os.environ.get(
        "SEVIMG_DEBIAN_MIRROR", debian[0] if debian else "http://deb.debian.org/debian"
    )


@dataclass(frozen=True)
class E2E:
    root: Path
    out: Path
    mirror: str

    def sevimg(
        self, *args: str, timeout: float = 3600, root: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The real CLI, as a user runs it."""
        return subprocess.run(
            [sys.executable, "-m", "sevimg", "--root", str(root or self.root), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    mirror = machine_debian_mirror()
    probe = f"{mirror}/dists/trixie/InRelease"
    try:
        response = httpx.get(probe, timeout=30, follow_redirects=True)
    except httpx.HTTPError as exc:
        pytest.fail(
            f"the Debian archive is unreachable ({probe}: {exc}); end-to-end builds need it",
            pytrace=False,
        )
    if response.status_code != 200:
        pytest.fail(
            f"the Debian archive answered HTTP {response.status_code} for {probe}", pytrace=False
        )

    root = tmp_path_factory.mktemp("e2e-workspace")
    shutil.copytree(REPO / "images", root / "images")
    shutil.copy(REPO / "sevimg.yaml", root / "sevimg.yaml")
    security = (
        mirror + "-security"
        if mirror.endswith("/debian")
        else "http://deb.debian.org/debian-security"
    )
    # The build cache (tools tree, packages) is the checkout's, shared with `nox -s bench`.
    (root / "sevimg.local.yaml").write_text(
        "schema_version: 1\n"
        f"mirrors:\n  debian:\n    url: {mirror}\n    security_url: {security}\n"
        "tools_tree:\n  distribution: debian\n  release: trixie\n"
        f"cache_dir: {REPO / '.cache' / 'build'}\n"
    )
    os.environ.setdefault("SEVIMG_CACHE", str(REPO / ".cache"))
    yield E2E(root=root, out=root / "out", mirror=mirror)


# What the end-to-end session builds: the debian-13 guest, and the
# debian-forky host with its guest (tests/e2e/test_reproducible.py builds them again).
BUILDS = (("debian-13", "--role", "guest"), ("debian-forky",))


@pytest.fixture(scope="session")
def built(e2e: E2E) -> E2E:
    """The images of BUILDS in e2e.out, built once per session."""
    for args in BUILDS:
        started = time.monotonic()
        proc = e2e.sevimg("build", *args, "-o", str(e2e.out), "--mkosi-version", MKOSI_VERSION)
        print(f"sevimg build {' '.join(args)}: {time.monotonic() - started:.0f} s\n{proc.stdout}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
    return e2e
