"""`sevimg reproduce`: recorded inputs against the workspace, and the verdict on rebuilt UKIs.

The rebuild itself is real mkosi (tests/e2e/test_reproducible.py); here the
folder and the "rebuild" are synthetic UKIs, so every verdict is checked
without a build.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from sevimg.artifacts.checksums import write_sha256sums
from sevimg.artifacts.manifest import ExpectedMeasurement, SourceFile, load_manifest, write_manifest
from sevimg.catalog.index import Catalog
from sevimg.catalog.resolve import resolve
from sevimg.imaging import reproduce
from sevimg.problems import SevimgError
from sevimg.settings import ToolPin
from tests.artifactkit import make_folder
from tests.conftest import CliFn
from tests.fakes import FILE
from tests.test_compare import EPOCH, files, uki

GUEST = uki(files())
HOST = uki(files(), cmdline=b"console=tty0")


def folder_of(path: Path, guest: bytes = GUEST, host: bytes = HOST) -> Path:
    return make_folder(
        path, ["debian-13"], content={"guest-debian-13": guest, "host-debian-13": host}
    )


def measured(value: str) -> ExpectedMeasurement:
    return ExpectedMeasurement(
        "host-debian-13", "/usr/share/ovmf/OVMF.amdsev.fd", "f" * 64, 1, "EPYC-v4", value, "0.0.11"
    )


def test_an_identical_rebuild(tmp_path: Path) -> None:
    recorded = reproduce.recorded_images(folder_of(tmp_path / "published"))
    assert [r.manifest.image_id for r in recorded] == ["guest-debian-13", "host-debian-13"]
    verdicts = reproduce.judge(recorded, folder_of(tmp_path / "rebuilt"))
    assert all(v.identical for v in verdicts)
    assert verdicts[0].report() == [
        f"guest-debian-13: identical (sha256 {hashlib.sha256(GUEST).hexdigest()})"
    ]
    assert reproduce.summary(verdicts) == "reproduced: all 2 images identical"


def test_a_rebuild_with_another_file_time_names_file_and_attribute(tmp_path: Path) -> None:
    recorded = reproduce.recorded_images(folder_of(tmp_path / "published"))
    later = ("etc/os-release", FILE, b"ID=debian\n", 0, 0, EPOCH + 86400)
    rebuilt = folder_of(tmp_path / "rebuilt", guest=uki(files(**{later[0]: later})))
    guest, host = reproduce.judge(recorded, rebuilt)
    assert not guest.identical and host.identical
    text = "\n".join(guest.report())
    assert "guest-debian-13: DIFFERS" in text
    assert "sections that differ: .initrd" in text
    assert f"etc/os-release: mtime {EPOCH} -> {EPOCH + 86400}" in text
    assert reproduce.summary([guest, host]) == "not reproduced: 1 of 2 images differ"


def test_an_altered_image_in_the_folder_is_named(tmp_path: Path) -> None:
    published = folder_of(tmp_path / "published")
    # Someone swaps the guest's cmdline after the build; SHA256SUMS still lists the old bytes.
    (published / "guest-debian-13.efi").write_bytes(
        uki(files(), cmdline=b"console=ttyS0 init=/bin/sh")
    )
    verdicts = reproduce.judge(
        reproduce.recorded_images(published), folder_of(tmp_path / "rebuilt")
    )
    text = "\n".join(verdicts[0].report())
    assert "the folder's UKI is not the one its manifest records" in text
    assert "sections that differ: .cmdline" in text
    assert not verdicts[0].identical


def test_same_bytes_but_another_measurement_differs(tmp_path: Path) -> None:
    published = folder_of(tmp_path / "published")
    rebuilt = folder_of(tmp_path / "rebuilt")
    for folder, value in ((published, "a" * 96), (rebuilt, "b" * 96)):
        path = folder / "host-debian-13.manifest.json"
        write_manifest(folder, replace(load_manifest(path), expected_measurement=measured(value)))
    host = reproduce.judge(reproduce.recorded_images(published), rebuilt)[1]
    assert not host.identical
    assert f"expected measurement: {'a' * 96} recorded, {'b' * 96} rebuilt" in host.report()[-1]


def test_an_image_the_rebuild_did_not_write(tmp_path: Path) -> None:
    rebuilt = folder_of(tmp_path / "rebuilt")
    (rebuilt / "host-debian-13.efi").unlink()
    host = reproduce.judge(reproduce.recorded_images(folder_of(tmp_path / "published")), rebuilt)[1]
    assert not host.identical
    assert "  the rebuild wrote no such image" in host.report()


def test_folders_without_manifests_or_images(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SevimgError, match="holds no image manifests"):
        reproduce.recorded_images(tmp_path / "empty")
    published = folder_of(tmp_path / "published")
    (published / "host-debian-13.efi").unlink()
    with pytest.raises(SevimgError, match=r"describes host-debian-13\.efi, which is not in"):
        reproduce.recorded_images(published)


def test_inputs_that_differ_are_named(catalog: Catalog, tmp_path: Path) -> None:
    spec = resolve(catalog.entries["debian-13"], "host")
    recorded = reproduce.recorded_images(folder_of(tmp_path / "published"))[1].manifest
    same = replace(
        recorded,
        sources=tuple(
            SourceFile(p, s) for p, s in zip(spec.sources, spec.source_sha256, strict=True)
        ),
        tools=(),
    )
    assert reproduce.input_differences(same, spec, ()) == []
    changed = replace(same, sources=(SourceFile(spec.sources[0], "0" * 64), *same.sources[1:]))
    (found,) = reproduce.input_differences(changed, spec, ())
    assert found.startswith(f"{spec.sources[0]}: sha256 0000000000000000... in the manifest, ")
    older = replace(same, sevimg_version="0.0.1")
    (found,) = reproduce.input_differences(older, spec, ())
    assert found.startswith("sevimg 0.0.1 built it, this is sevimg ")
    pin = ToolPin("snphost", "0.7.1", "https://example.invalid/snphost", "b" * 64, ("host",))
    assert reproduce.input_differences(recorded, spec, (pin,))[-2:] == [
        "tool beacon: 1.2.0 in the manifest, not pinned in sevimg.yaml",
        "tool snphost: 0.7.0 in the manifest, 0.7.1 pinned in sevimg.yaml",
    ]


def test_pinned_packages_are_exact_versions(tmp_path: Path) -> None:
    recorded = reproduce.recorded_images(folder_of(tmp_path / "published"))
    assert reproduce.pins_by_image(recorded) == {
        "guest-debian-13": ("linux-image-amd64=6.12.117-1", "systemd=257.9-1"),
        "host-debian-13": ("qemu-system-x86=1:10.0.3+ds-1",),
    }
    assert reproduce.mkosi_version(recorded) == "25.3"
    assert reproduce.with_tools(recorded)


def test_the_command_refuses_other_inputs_before_building(cli: CliFn, tmp_path: Path) -> None:
    # make_folder records made-up catalog hashes: this workspace's files differ.
    published = folder_of(tmp_path / "published")
    run = cli("reproduce", str(published), "-o", str(tmp_path / "rebuilt"))
    assert run.code == 1
    assert "guest-debian-13: images/debian-13.yaml: sha256 " in run.output
    assert "nothing was built" in run.output
    assert not (tmp_path / "rebuilt").exists()


def test_the_command_on_a_folder_without_manifests(cli: CliFn, tmp_path: Path) -> None:
    published = folder_of(tmp_path / "published")
    for manifest in published.glob("*.manifest.json"):
        manifest.unlink()
    write_sha256sums(published)
    run = cli("reproduce", str(published))
    assert run.code == 1
    assert "holds no image manifests" in run.output
    shutil.rmtree(published)
    assert cli("reproduce", str(published)).code == 1
