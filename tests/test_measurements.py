"""measurements.json: built from the manifests, valid under its schema, published beside the images."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sevimg.artifacts.checksums import write_sha256sums
from sevimg.artifacts.manifest import ExpectedMeasurement, load_manifest, write_manifest
from sevimg.catalog.load import Document
from sevimg.catalog.schema import MEASUREMENTS, schemas_for
from sevimg.release import measurements
from sevimg.release.github import GitHub, Token
from sevimg.release.publish import publish
from tests.artifactkit import make_folder
from tests.fakegithub import TOKEN, FakeClock, FakeGitHub

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = schemas_for((REPO / "schema",))
COMMIT = "0123456789abcdef0123456789abcdef01234567"
MEASURED = ExpectedMeasurement(
    host_image_id="host-debian-13",
    ovmf="/usr/share/ovmf/OVMF.amdsev.fd",
    ovmf_sha256="e" * 64,
    vcpus=1,
    vcpu_type="EPYC-v4",
    measurement="ab" * 48,
    sev_snp_measure="0.0.13",
)


def measured_folder(path: Path) -> Path:
    """An artifact folder whose host and guest manifests carry the guest's expected measurement."""
    folder = make_folder(path, ["debian-13"])
    for image_id in ("host-debian-13", "guest-debian-13"):
        manifest = load_manifest(folder / f"{image_id}.manifest.json")
        write_manifest(folder, replace(manifest, expected_measurement=MEASURED))
    write_sha256sums(folder)
    return folder


def problems_of(data: object) -> list[str]:
    doc = Document(Path("measurements.json"), "measurements.json", data, "")
    return [str(p) for p in SCHEMAS.validate(doc, MEASUREMENTS)]


def test_the_document_holds_each_image_and_is_valid(tmp_path: Path) -> None:
    folder = measured_folder(tmp_path / "out")
    manifests = [load_manifest(p) for p in sorted(folder.glob("*.manifest.json"))]
    text = measurements.document(manifests, COMMIT)
    assert text == measurements.document(list(reversed(manifests)), COMMIT)  # same bytes
    data = json.loads(text)
    assert problems_of(data) == []
    assert data["schema_version"] == 1
    host = data["images"]["host-debian-13"]
    assert host["uki_sha256"] == manifests[1].sha256
    assert host["source_commit"] == COMMIT
    assert host["expected_measurement"]["measurement"] == "ab" * 48
    assert host["expected_measurement"]["ovmf_sha256"] == "e" * 64
    assert host["expected_measurement"]["vcpus"] == 1
    assert host["embedded_guest"]["image_id"] == "guest-debian-13"
    assert data["images"]["guest-debian-13"]["embedded_guest"] is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.update(schema_version=2), "schema_version"),
        (lambda d: d["images"]["host-debian-13"].update(uki_sha256="XYZ"), "uki_sha256"),
        (lambda d: d["images"]["host-debian-13"].update(source_commit="main"), "source_commit"),
        (
            lambda d: d["images"]["host-debian-13"]["expected_measurement"].update(
                measurement="00"
            ),
            "measurement",
        ),
        (lambda d: d["images"].update({"vm\nx": {}}), "images"),
        (lambda d: d["images"]["host-debian-13"].update(extra=1), "extra"),
    ],
)
def test_the_schema_refuses_what_a_verifier_could_not_trust(
    tmp_path: Path, change: object, field: str
) -> None:
    folder = measured_folder(tmp_path / "out")
    manifests = [load_manifest(p) for p in sorted(folder.glob("*.manifest.json"))]
    data = json.loads(measurements.document(manifests, COMMIT))
    assert callable(change)
    change(data)
    found = problems_of(data)
    assert found and any(field in p for p in found), found


def test_source_commit_from_actions_or_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_SHA", COMMIT.upper())
    assert measurements.source_commit(tmp_path) == COMMIT
    monkeypatch.setenv("GITHUB_SHA", "not a commit")
    assert measurements.source_commit(tmp_path) is None
    monkeypatch.delenv("GITHUB_SHA")
    assert measurements.source_commit(tmp_path) is None  # not a checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert measurements.source_commit(tmp_path) == head.stdout.strip()


@pytest.fixture
def gh() -> Iterator[tuple[FakeGitHub, GitHub]]:
    clock = FakeClock()
    with (
        FakeGitHub(tokens={TOKEN: "write"}, now=clock.time) as fake,
        GitHub(
            f"{fake.owner}/{fake.repo}",
            Token(TOKEN, "GITHUB_TOKEN"),
            api_url=fake.api_url,
            clock=clock,
        ) as client,
    ):
        yield fake, client


def test_publish_uploads_it_beside_the_images(
    gh: tuple[FakeGitHub, GitHub], tmp_path: Path
) -> None:
    fake, client = gh
    folder = measured_folder(tmp_path / "out")
    _plan, outcome = publish(client, folder, "devel", commit=COMMIT)
    assert outcome is not None and "measurements.json" in outcome.created
    release = fake.release("devel")
    assert release is not None
    (asset,) = [a for a in release.assets if a.name == "measurements.json"]
    assert asset.content_type == "application/json"
    data = json.loads(asset.data)
    assert problems_of(data) == []
    assert sorted(data["images"]) == ["guest-debian-13", "host-debian-13"]
    assert data["images"]["host-debian-13"]["expected_measurement"]["measurement"] == "ab" * 48
    # The same folder again: kept, not uploaded twice.
    _plan, again = publish(client, folder, "devel", commit=COMMIT)
    assert again is not None and "measurements.json" in again.kept


def test_no_measurements_no_file(gh: tuple[FakeGitHub, GitHub], tmp_path: Path) -> None:
    fake, client = gh
    _plan, outcome = publish(client, make_folder(tmp_path / "out", ["debian-13"]), "devel")
    assert outcome is not None
    release = fake.release("devel")
    assert release is not None
    assert "measurements.json" not in [a.name for a in release.assets]
