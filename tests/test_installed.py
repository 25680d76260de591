"""The package versions a host's build records, and the OVMF step that reads them.

mkosi drops the package database from a host (CleanPackageMetadata=yes), so
the rendered mkosi.postinst records the versions first. Here that script
runs for real against a small dpkg database, through this machine's
dpkg-query called the way mkosi's helper calls it (--admindir and --root on
the image); the harness's check then reads the file from a root without a
package database, as in a built host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sevimg.atomic import write_tree
from sevimg.catalog.index import Catalog
from sevimg.catalog.resolve import resolve
from sevimg.render.trees import POSTINST, Renderer
from sevimg.workspace import Workspace
from sevimg_cert import hostinfo, installed, prereqs
from sevimg_cert.result import Outcome
from tests.conftest import REPO
from tests.harnesskit import FIRMWARE, fake_host

TEMPLATES = Workspace(REPO).search_path("templates")
DEBIAN_PACKAGES = {
    "kernel": ("linux-image-amd64", "6.17.8-1"),
    "qemu": ("qemu-system-x86", "1:10.1.2+ds-1"),
    "ovmf": ("ovmf-amdsev", "2026.08-1"),
    "systemd": ("systemd", "258.2-1"),
}


def host_tree(catalog: Catalog, image: str, tmp: Path) -> Path:
    spec = resolve(catalog.entries[image], "host")
    return write_tree(Renderer(TEMPLATES, "25.3").render(spec), tmp / spec.image_id)


def dpkg_root(root: Path, packages: dict[str, tuple[str, str]]) -> None:
    """A dpkg database listing `packages` as installed, below `root`."""
    admin = root / "var/lib/dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "updates").mkdir()
    stanzas = [
        f"Package: {name}\nStatus: install ok installed\nPriority: optional\n"
        f"Maintainer: nobody <nobody@example.invalid>\nArchitecture: amd64\n"
        f"Version: {version}\nDescription: {name}\n"
        for name, version in sorted(packages.values())
    ]
    (admin / "status").write_text("\n".join(stanzas))


def mkosi_helpers(tmp: Path) -> Path:
    """dpkg-query as mkosi puts it on a script's PATH: the real one, on the image's database."""
    real = shutil.which("dpkg-query")
    assert real, "these tests run the real dpkg-query: apt-get install dpkg"
    helpers = tmp / "helpers"
    helpers.mkdir()
    wrapper = helpers / "dpkg-query"
    wrapper.write_text(
        f'#!/bin/sh\nexec {real} --admindir="$BUILDROOT/var/lib/dpkg" --root="$BUILDROOT" "$@"\n'
    )
    wrapper.chmod(0o755)
    return helpers


def run_postinst(tree: Path, buildroot: Path, helpers: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BUILDROOT": str(buildroot), "PATH": f"{helpers}:/usr/bin:/bin"}
    return subprocess.run(
        [str(tree / POSTINST), "final"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_host_postinst_records_what_the_package_database_says(
    catalog: Catalog, tmp_path: Path
) -> None:
    tree = host_tree(catalog, "debian-forky", tmp_path)
    buildroot = tmp_path / "buildroot"
    dpkg_root(buildroot, DEBIAN_PACKAGES)
    done = run_postinst(tree, buildroot, mkosi_helpers(tmp_path))
    assert done.returncode == 0, done.stderr
    data = json.loads((buildroot / installed.PACKAGES_JSON.lstrip("/")).read_text())
    assert data == {k: {"package": p, "version": v} for k, (p, v) in DEBIAN_PACKAGES.items()}
    assert list(data) == ["kernel", "qemu", "ovmf", "systemd"]
    assert not list((buildroot / "usr/lib/sevimg").glob("*.tmp"))

    # Then mkosi drops the database; the harness reads the record instead.
    shutil.rmtree(buildroot / "var/lib/dpkg")
    host = hostinfo.Host(root=buildroot, env={"SEVIMG_SEV_FIRMWARE": FIRMWARE})
    firmware = buildroot / FIRMWARE.lstrip("/")
    firmware.parent.mkdir(parents=True)
    firmware.write_bytes(b"\0" * 4096)  # compressed: no readable edk2 tag
    step, version = prereqs.check_ovmf(host)
    assert step.result is Outcome.PASS, step.detail
    assert version == "ovmf-amdsev 2026.08-1"
    assert step.detail == (
        "OVMF ovmf-amdsev 2026.08-1 (>= 2024.11, recorded at build time in "
        "/usr/lib/sevimg/packages.json)"
    )


def test_a_package_missing_from_the_database_fails_the_build_and_writes_nothing(
    catalog: Catalog, tmp_path: Path
) -> None:
    tree = host_tree(catalog, "debian-forky", tmp_path)
    buildroot = tmp_path / "buildroot"
    dpkg_root(buildroot, {k: v for k, v in DEBIAN_PACKAGES.items() if k != "ovmf"})
    done = run_postinst(tree, buildroot, mkosi_helpers(tmp_path))
    assert done.returncode != 0
    assert "cannot read the installed version of ovmf-amdsev (ovmf)" in done.stderr
    assert "no packages found matching ovmf-amdsev" in done.stderr  # dpkg-query's own word
    assert not (buildroot / "usr/lib/sevimg").exists()


def test_a_version_that_is_no_version_fails_the_build(catalog: Catalog, tmp_path: Path) -> None:
    tree = host_tree(catalog, "debian-forky", tmp_path)
    buildroot = tmp_path / "buildroot"
    dpkg_root(buildroot, {**DEBIAN_PACKAGES, "ovmf": ("ovmf-amdsev", "2026.08-1")})
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    # A query that prints what would break the JSON: the script must refuse it.
    (helpers / "dpkg-query").write_text('#!/bin/sh\nprintf \'1.0", "x": "y\'\n')
    (helpers / "dpkg-query").chmod(0o755)
    done = run_postinst(tree, buildroot, helpers)
    assert done.returncode != 0
    assert "linux-image-amd64 (kernel): not a version" in done.stderr
    assert not (buildroot / "usr/lib/sevimg").exists()


def test_each_family_queries_its_own_database(catalog: Catalog, tmp_path: Path) -> None:
    debian = (host_tree(catalog, "debian-forky", tmp_path) / POSTINST).read_text()
    fedora = (host_tree(catalog, "fedora-43", tmp_path) / POSTINST).read_text()
    assert "found=$(dpkg-query --show '--showformat=${Version}' \"$2\")" in debian
    assert "found=$(rpm --query '--queryformat=%{VERSION}-%{RELEASE}' \"$2\")" in fedora
    assert "ovmf=$(version ovmf ovmf-amdsev)" in debian
    assert "ovmf=$(version ovmf edk2-ovmf)" in fedora
    assert "qemu=$(version qemu qemu-system-x86-core)" in fedora


def test_only_hosts_record_packages(catalog: Catalog) -> None:
    host = resolve(catalog.entries["debian-forky"], "host")
    guest = resolve(catalog.entries["debian-forky"], "guest")
    assert host.payload.recorded_packages == tuple(
        (kind, package) for kind, (package, _) in DEBIAN_PACKAGES.items()
    )
    assert guest.payload.recorded_packages == ()
    renderer = Renderer(TEMPLATES, "25.3")
    assert POSTINST not in {str(f.path) for f in renderer.render(guest).files}
    assert renderer.render(host).file(POSTINST).mode == 0o755


def record(root: Path, data: object) -> None:
    path = root / installed.PACKAGES_JSON.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)


def test_the_build_record_comes_before_the_package_database(tmp_path: Path) -> None:
    host = fake_host(tmp_path, ovmf_version="2025.02-8")  # dpkg says 2025.02
    record(host.root, {"ovmf": {"package": "ovmf-amdsev", "version": "2021.08-2"}})
    step, version = prereqs.check_ovmf(hostinfo.Host(host.root, hostinfo.image_env(host.root)))
    assert step.result is Outcome.FAIL
    assert version == "ovmf-amdsev 2021.08-2"
    assert "older than 2022.02: no SEV-SNP support" in step.detail
    assert "recorded at build time in" in step.detail


def test_an_ovmf_below_the_guides_floor_passes_with_a_warning(tmp_path: Path) -> None:
    # SEV-SNP works since edk2-stable202202: 2024.05 is below the guide, not unsupported
    host = fake_host(tmp_path, ovmf_version="2025.02-8")
    record(host.root, {"ovmf": {"package": "ovmf-amdsev", "version": "2024.05-2"}})
    step, _ = prereqs.check_ovmf(hostinfo.Host(host.root, hostinfo.image_env(host.root)))
    assert step.result is Outcome.PASS
    assert step.warning.startswith("below the guide's floor 2024.11")
    assert step.as_dict()["warning"] == step.warning


def test_without_a_record_the_package_database_then_the_tag(tmp_path: Path) -> None:
    host = fake_host(tmp_path / "a", ovmf_version="2025.02-8")
    step, _ = prereqs.check_ovmf(hostinfo.Host(host.root, hostinfo.image_env(host.root)))
    assert step.result is Outcome.PASS
    assert step.detail == "OVMF ovmf 2025.02-8 (>= 2024.11, from the package database)"

    host = fake_host(tmp_path / "b")
    shutil.rmtree(host.root / "var/lib/dpkg")
    (host.root / FIRMWARE.lstrip("/")).write_bytes(
        b"\0" * 64 + "edk2-stable202411".encode("utf-16-le")
    )
    step, version = prereqs.check_ovmf(hostinfo.Host(host.root, hostinfo.image_env(host.root)))
    assert step.result is Outcome.PASS
    assert version == "edk2-stable202411"
    assert step.detail == f"OVMF edk2-stable202411 (>= 2024.11, edk2 tag in {FIRMWARE})"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{not json", "/usr/lib/sevimg/packages.json is not JSON"),
        ("[]", "/usr/lib/sevimg/packages.json is not a JSON object"),
        (
            {"ovmf": {"package": "ovmf-amdsev"}},
            "/usr/lib/sevimg/packages.json: 'ovmf' needs a package and a version string",
        ),
    ],
)
def test_an_unusable_record_is_named_when_nothing_else_knows(
    tmp_path: Path, content: object, why: str
) -> None:
    host = fake_host(tmp_path)
    shutil.rmtree(host.root / "var/lib/dpkg")
    record(host.root, content)
    step, version = prereqs.check_ovmf(hostinfo.Host(host.root, hostinfo.image_env(host.root)))
    assert step.result is Outcome.SKIP and version is None
    assert step.detail.startswith(
        f"version of {FIRMWARE} unknown (no build record, no package record, no edk2 tag; {why}"
    )
    assert step.detail.endswith("): floor 2024.11 not checked")


def test_a_record_that_names_no_edk2_release_is_a_skip_that_says_so(tmp_path: Path) -> None:
    host = fake_host(tmp_path)
    record(host.root, {"ovmf": {"package": "ovmf-amdsev", "version": "0~git-1"}})
    step, _ = prereqs.check_ovmf(hostinfo.Host(host.root, hostinfo.image_env(host.root)))
    assert step.result is Outcome.SKIP
    assert "ovmf-amdsev 0~git-1 (recorded at build time in" in step.detail
    assert "names no edk2 release" in step.detail


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("2026.08-1", (2026, 8)),  # Debian
        ("1:2025.02-8ubuntu1", (2025, 2)),  # an epoch
        ("2025.2-1", (2025, 2)),
        ("20241117-5.fc42", (2024, 11)),  # Fedora, EL: YYYYMMDD
        ("202502-1.1", (2025, 2)),  # SUSE: YYYYMM
        ("0~git-1", None),
        ("2024117-1", None),  # seven digits: neither form
        ("", None),
    ],
)
def test_edk2_versions_as_packaged(version: str, expected: tuple[int, int] | None) -> None:
    assert installed.edk2_version(version) == expected
