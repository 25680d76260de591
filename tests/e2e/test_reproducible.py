"""Two builds, one UKI: the session's images built again from scratch are byte-identical.

The second build is `sevimg reproduce --release` of the first build's
folder published (as `sevimg publish` leaves a release: the images, their
manifests, SHA256SUMS and measurements.json) on the fake GitHub, after the
incremental image cache is dropped (the tools tree and the package cache are
kept: they are inputs, not outputs). It downloads and checks the release,
installs the package versions the manifests record and must end in
"identical"; the UKIs and expected measurements are then compared here too,
independently of its verdict.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sevimg.artifacts import checksums
from sevimg.artifacts.manifest import load_manifest
from sevimg.imaging import reproduce
from sevimg.imaging.compare import compare_files
from sevimg.release import measurements
from tests.conftest import REPO
from tests.e2e.conftest import E2E
from tests.fakegithub import FakeGitHub

pytestmark = pytest.mark.e2e

UKIS = ("guest-debian-13", "guest-debian-forky", "host-debian-forky")


@pytest.fixture(scope="module")
def rebuilt(built: E2E) -> Iterator[tuple[Path, str]]:
    """The first build's images, published, rebuilt from scratch by `sevimg reproduce --release`."""
    shutil.rmtree(REPO / ".cache" / "build" / "incremental", ignore_errors=True)
    again = built.root / "out-again"
    no_gh = built.root / "no-gh-config"
    no_gh.mkdir(exist_ok=True)
    with FakeGitHub() as fake, pytest.MonkeyPatch.context() as env:
        release = fake.add_release("v1.0.0")
        for path in sorted(built.out.iterdir()):
            if path.is_file():
                fake.add_asset(release, path.name, path.read_bytes())
        manifests = [load_manifest(p) for p in sorted(built.out.glob("*.manifest.json"))]
        fake.add_asset(release, measurements.MEASUREMENTS, measurements.document(manifests, None))
        env.setenv("GITHUB_API_URL", fake.api_url)
        env.delenv("GITHUB_TOKEN", raising=False)
        env.setenv("GH_CONFIG_DIR", str(no_gh))  # a public release: no token from `gh` either
        started = time.monotonic()
        proc = built.sevimg(
            "reproduce",
            "--release",
            "acme/sev-images@v1.0.0",
            "--download-dir",
            str(built.root / "release"),
            "-o",
            str(again),
        )
    print(f"sevimg reproduce: {time.monotonic() - started:.0f} s\n{proc.stdout}\n{proc.stderr}")
    assert "Traceback" not in proc.stderr
    yield again, proc.stdout + proc.stderr


def test_the_rebuilt_ukis_are_byte_identical(built: E2E, rebuilt: tuple[Path, str]) -> None:
    again, output = rebuilt
    for image_id in UKIS:
        first, second = built.out / f"{image_id}.efi", again / f"{image_id}.efi"
        assert second.is_file(), output
        if checksums.sha256_file(first) != checksums.sha256_file(second):
            report = "\n".join(compare_files(first, second).report())
            pytest.fail(f"{image_id} differs between two builds:\n{report}")


def test_the_expected_measurements_are_equal(built: E2E, rebuilt: tuple[Path, str]) -> None:
    again, _ = rebuilt
    for image_id in ("host-debian-forky", "guest-debian-forky"):
        first = load_manifest(built.out / f"{image_id}.manifest.json").expected_measurement
        second = load_manifest(again / f"{image_id}.manifest.json").expected_measurement
        assert first is not None and second is not None
        assert first == second


def test_reproduce_says_identical(built: E2E, rebuilt: tuple[Path, str]) -> None:
    _, output = rebuilt
    for image_id in UKIS:
        assert f"{image_id}: identical" in output, output
    assert "reproduced: all 3 images identical" in output
    assert "release acme/sev-images@v1.0.0 is in " in output
    assert "measurements.json disagrees" not in output


def test_an_altered_image_is_named(built: E2E, rebuilt: tuple[Path, str], tmp_path: Path) -> None:
    """A published guest with one byte of its kernel command line changed: reproduce names it."""
    again, _ = rebuilt
    altered = tmp_path / "altered"
    shutil.copytree(built.out, altered, ignore=shutil.ignore_patterns("logs"))
    guest = altered / "guest-debian-13.efi"
    data = bytearray(guest.read_bytes())
    at = data.index(b"console=ttyS0")
    data[at : at + 7] = b"CONSOLE"
    guest.write_bytes(bytes(data))
    (verdict,) = [
        v
        for v in reproduce.judge(reproduce.recorded_images(altered), again)
        if v.image_id == "guest-debian-13"
    ]
    text = "\n".join(verdict.report())
    assert not verdict.identical
    assert "sections that differ: .cmdline" in text
    assert "the folder's UKI is not the one its manifest records" in text
