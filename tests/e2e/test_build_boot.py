"""End to end on this machine: build debian-13 and debian-forky from the Debian archive
with the real mkosi, check the artifacts, and boot the guest to its readiness marker.

Run with `nox -s e2e` (about ten minutes from scratch, less with a warm cache).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pefile
import pytest

from sevimg.artifacts import checksums
from sevimg.artifacts.manifest import load_manifest
from sevimg.catalog.index import machine_families
from sevimg.imaging import pins
from sevimg.imaging.uki import read_uki
from sevimg.machine import run
from sevimg.render.launch import MIN_MEMORY_MB
from sevimg.settings import load_tool_pins
from sevimg.workspace import Workspace
from tests.conftest import REPO
from tests.e2e.conftest import E2E, MKOSI_VERSION

pytestmark = pytest.mark.e2e

# The budgets of issue 10, with the certification payload in (MB as the build reports them).
GUEST_LIMIT = 36 * 1000**2
HOST_LIMIT = 200 * 1000**2  # host-debian-forky, its guest embedded


def test_artifacts_and_sizes(built: E2E) -> None:
    names = sorted(p.name for p in built.out.iterdir() if p.is_file())
    assert names == [
        "SHA256SUMS",
        "guest-debian-13.efi",
        "guest-debian-13.manifest.json",
        "guest-debian-forky.efi",
        "guest-debian-forky.manifest.json",
        "host-debian-forky.efi",
        "host-debian-forky.manifest.json",
    ]
    guest = (built.out / "guest-debian-13.efi").stat().st_size
    host = (built.out / "host-debian-forky.efi").stat().st_size
    print(f"guest-debian-13.efi {guest / 1e6:.1f} MB, host-debian-forky.efi {host / 1e6:.1f} MB")
    assert guest <= GUEST_LIMIT, f"guest-debian-13 is {guest / 1e6:.1f} MB, over 36 MB"
    assert host <= HOST_LIMIT, f"host-debian-forky is {host / 1e6:.1f} MB, over 200 MB"
    assert (built.out / "logs" / "host-debian-forky.log").is_file()


def test_sha256sums_pass_sha256sum(built: E2E) -> None:
    proc = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"],
        cwd=built.out,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": OK") == 6


def test_manifests_are_complete(built: E2E) -> None:
    for manifest_path in sorted(built.out.glob("*.manifest.json")):
        manifest = load_manifest(manifest_path)
        artifact = built.out / manifest.artifact
        assert manifest.sha256 == checksums.sha256_file(artifact)
        assert manifest.size == artifact.stat().st_size
        assert manifest.mkosi_version == MKOSI_VERSION
        names = {p.name for p in manifest.packages}
        assert {"systemd", "linux-image-amd64", "systemd-boot-efi"} <= names
        for source in manifest.sources:
            assert checksums.sha256_file(built.root / source.path) == source.sha256
        if manifest.role == "host":
            assert {"qemu-system-x86", "ovmf-amdsev"} <= names
            guest = manifest.embedded_guest
            assert guest is not None and guest.image_id == "guest-debian-forky"
            assert guest.sha256 == checksums.sha256_file(built.out / "guest-debian-forky.efi")
            snphost = manifest.tool("snphost")
            assert (
                snphost is not None and snphost.version == "0.7.0"
            )  # pinned from Debian's archive
            measure = manifest.tool("sev-snp-measure")
            assert measure is not None and measure.version == "0.0.13"  # pinned from PyPI
            assert {"python3", "python3-cryptography"} <= names
        else:
            assert manifest.embedded_guest is None and dict(manifest.tools) == {}


def test_host_carries_what_an_snp_host_needs(built: E2E) -> None:
    members = read_uki(built.out / "host-debian-forky.efi").members()
    assert "usr/share/ovmf/OVMF.amdsev.fd" in members
    assert "usr/bin/qemu-system-x86_64" in members and "usr/bin/qemu-system-i386" not in members
    assert members["usr/local/bin/snphost"].mode & 0o111
    assert "usr/local/lib/guest-image/guest.efi" in members
    # The certification code, byte for byte as in this checkout, and its pinned library.
    source = REPO / "src" / "sevimg_cert"
    shipped = [p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert any(p.name == "measure.py" for p in shipped)
    for path in shipped:
        member = members[f"usr/lib/sevimg/python/sevimg_cert/{path.relative_to(source)}"]
        assert member.data == path.read_bytes(), path
    for name in ("__init__.py", "guest.py", "ovmf.py", "LICENSES/LICENSE", "PIN"):
        assert f"usr/lib/sevimg/python/sevsnpmeasure/{name}" in members
    assert not [m for m in members if ".dist-info" in m and "sev_snp_measure" in m]
    assert any(m.startswith("usr/lib/python3/dist-packages/cryptography/") for m in members), (
        "python3-cryptography"
    )


def _linux_byte_flipped(uki: Path, target: Path) -> None:
    """A copy of `uki` with one byte of its .linux section changed."""
    pe = pefile.PE(str(uki), fast_load=True)
    section = next(s for s in pe.sections if s.Name.rstrip(b"\0") == b".linux")
    offset = section.PointerToRawData + section.SizeOfRawData // 2
    pe.close()
    data = bytearray(uki.read_bytes())
    data[offset] ^= 0x01
    target.write_bytes(bytes(data))


def test_expected_measurement_of_the_built_guest(built: E2E, tmp_path: Path) -> None:
    """Stable, in both manifests, what the pinned tool's own CLI prints, and UKI-sensitive."""
    runs = [
        built.sevimg("measure", "debian-forky", "--from", str(built.out), "--json")
        for _ in range(2)
    ]
    for proc in runs:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    first, second = (json.loads(proc.stdout) for proc in runs)
    assert first == second and len(bytes.fromhex(first["measurement"])) == 48

    host = load_manifest(built.out / "host-debian-forky.manifest.json")
    guest = load_manifest(built.out / "guest-debian-forky.manifest.json")
    assert host.expected_measurement is not None
    assert guest.expected_measurement == host.expected_measurement
    assert host.expected_measurement.measurement == first["measurement"]
    assert host.expected_measurement.ovmf == "/usr/share/ovmf/OVMF.amdsev.fd"
    assert host.expected_measurement.ovmf_sha256 == first["ovmf_sha256"]
    assert load_manifest(built.out / "guest-debian-13.manifest.json").expected_measurement is None

    # An independent run: the pinned wheel's own command line, on the OVMF taken out here.
    ovmf = tmp_path / "OVMF.amdsev.fd"
    ovmf.write_bytes(read_uki(built.out / "host-debian-forky.efi").members()[
        "usr/share/ovmf/OVMF.amdsev.fd"
    ].data)  # fmt: skip
    assert checksums.sha256_file(ovmf) == first["ovmf_sha256"]
    library = pins.python_libraries(load_tool_pins(Workspace(REPO)), tmp_path / "cache", None, None)
    assert library is not None
    proc = subprocess.run(
        [sys.executable, "-I", "-c",
         "import sys; sys.path.insert(0, sys.argv.pop(1)); from sevsnpmeasure.cli import main; "
         "sys.exit(main())",
         str(library), "--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC-v4",
         "--ovmf", str(ovmf), "--kernel", str(built.out / "guest-debian-forky.efi")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == first["measurement"]

    changed = tmp_path / "guest-debian-forky.efi"
    _linux_byte_flipped(built.out / "guest-debian-forky.efi", changed)
    proc = built.sevimg("measure", str(changed), "--ovmf", str(ovmf), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["measurement"] != first["measurement"]


def test_second_build_is_a_no_op(built: E2E) -> None:
    for args, images in ((["debian-13", "--role", "guest"], 1), (["debian-forky"], 2)):
        started = time.monotonic()
        proc = built.sevimg("build", *args, "-o", str(built.out), "--mkosi-version", MKOSI_VERSION)
        print(f"no-op build of {' '.join(args)}: {time.monotonic() - started:.1f} s")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("up to date") == images and "building" not in proc.stdout


def test_guest_boots_to_its_marker(built: E2E) -> None:
    proc = built.sevimg(
        "run", "debian-13", "--no-sev", "--from", str(built.out), "--timeout", "900"
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SEVIMG-GUEST-READY image=guest-debian-13 sev=none" in proc.stdout


def test_snp_dry_run(built: E2E) -> None:
    proc = built.sevimg("run", "debian-forky", "--dry-run", "--from", str(built.out))
    assert proc.returncode == 0 and "sev-snp-guest,id=sev0" in proc.stdout


def test_broken_yaml_gives_a_located_error_and_no_artifact(built: E2E, tmp_path: Path) -> None:
    root = tmp_path / "ws"
    shutil.copytree(built.root, root, ignore=shutil.ignore_patterns("out"))
    path = root / "images" / "debian-13.yaml"
    path.write_text(path.read_text().replace('release: "13"', "release: 13"))
    out = tmp_path / "out"
    proc = built.sevimg(
        "build", "debian-13", "-o", str(out), "--mkosi-version", MKOSI_VERSION, root=root
    )
    assert proc.returncode == 1
    assert "images/debian-13.yaml:3:10: error: release: expected a string" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_missing_package_gives_a_clear_error_and_no_artifact(built: E2E, tmp_path: Path) -> None:
    root = tmp_path / "ws"
    shutil.copytree(built.root, root, ignore=shutil.ignore_patterns("out"))
    path = root / "images" / "debian-13.yaml"
    path.write_text(path.read_text() + "guest:\n  add_packages: [sevimg-no-such-package]\n")
    out = tmp_path / "out"
    proc = built.sevimg(
        "build",
        "debian-13",
        "--role",
        "guest",
        "-o",
        str(out),
        "--mkosi-version",
        MKOSI_VERSION,
        root=root,
    )
    assert proc.returncode == 1
    assert "mkosi failed building guest-debian-13" in proc.stderr
    assert "sevimg-no-such-package" in proc.stderr  # apt's own words, from the log's tail
    assert f"full log: {out / 'logs' / 'guest-debian-13.log'}" in proc.stderr
    assert not list(out.glob("*.efi")) and not (out / "SHA256SUMS").exists()
    assert json.dumps([]) == json.dumps([p.name for p in out.glob("*.partial")])


def archive_matches_manifests(archive_json: dict[str, object], out: Path) -> list[str]:
    """Where `sevimg archive --json` and the built manifests disagree about a component."""
    wrong: list[str] = []
    releases: Any = archive_json["releases"]
    for manifest_path in sorted(out.glob("*.manifest.json")):
        manifest = load_manifest(manifest_path)
        installed = {p.name: p.version for p in manifest.packages}
        release = next(r for r in releases if r["image"] == manifest.image)
        report = next(r for r in release["reports"] if r["role"] == manifest.role)
        for component in report["components"]:
            got = installed.get(component["package"])
            if got != component["version"]:
                wrong.append(
                    f"{manifest.image} {manifest.role}: {component['package']} archive "
                    f"{component['version']}, built {got}"
                )
    return wrong


def test_archive_predicts_what_the_build_installed(built: E2E) -> None:
    """`sevimg archive` reads the same repositories: its versions are the installed ones."""
    proc = built.sevimg("archive", "--json", "debian-13", "debian-forky", timeout=1800)
    assert "Traceback" not in proc.stderr
    data = json.loads(proc.stdout)
    assert archive_matches_manifests(data, built.out) == []


def test_guest_answers_a_nonce_over_the_channel(built: E2E) -> None:
    """A real TCG boot with the attestation channel: a fresh nonce in, a well-formed answer out."""
    paths = run.search_paths(machine_families(None))
    result = run.smoke_boot(
        built.out / "guest-debian-13.efi",
        qemu=run.find_qemu(None, paths.qemu),
        firmware=run.find_firmware(paths.plain_ovmf, None, "plain OVMF"),
        memory_mb=MIN_MEMORY_MB,
        timeout=900,
        accel="tcg",
        attest=True,  # channel_args on the QEMU line, then channel.request with a random nonce
    )
    print(f"{result.seconds:.0f} s, {result.reason or 'ok'}")
    assert result.ready, result.reason + "\n" + "\n".join(result.console_tail)
    assert result.reason == "" and result.answer is not None
    answer = result.answer
    print(answer.text)
    assert len(result.nonce) == 64 and answer.nonce == result.nonce
    assert answer.image == "guest-debian-13" and answer.os_id == "debian"
    assert answer.os_version == "13" and answer.kernel.endswith("-amd64")
    assert answer.sev == "none" and not answer.sev_guest_device
    assert answer.tsm_provider is None and answer.report is None
    assert answer.configfs  # mounted: configfs-tsm is there, only the provider is not
    assert answer.error is not None and answer.error.startswith(
        "SNP not active: no configfs-tsm provider"
    )
    # The TSM report module (tsm on this kernel) came with sev-guest's dependencies.
    assert answer.modules.get("tsm") in ("loaded", "builtin"), answer.modules
    assert answer.modules["configfs"] in ("loaded", "builtin")


def test_host_certification_run_without_snp(built: E2E, tmp_path: Path) -> None:
    """The built host boots under TCG, its harness finds no SEV-SNP and still reports a fail result."""
    results = tmp_path / "results"
    proc = built.sevimg(
        "run", "debian-forky", "--role", "host", "--no-sev", "--from", str(built.out),
        "--timeout", "1800", "--results", str(results),
        timeout=2400,
    )  # fmt: skip
    print(proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a fail result, read and written
    raw = (results / "result.json").read_bytes()
    doc = json.loads(raw)
    schema = json.loads((REPO / "schema" / "cert-result.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)
    assert doc["result"] == "fail" and doc["certified_level"] is None and doc["milestone"] is None
    assert doc["title"] == "debian forky SEV version 3.0"
    assert doc["labels"][:2] == ["certificate", "os-debian-forky"]
    tests = {t["name"]: t for t in doc["levels"][0]["tests"]}
    steps = {s["name"]: s for s in tests["host_prerequisites"]["steps"]}
    assert steps["sev_snp"]["result"] == "fail"
    # kvm_amd loads under TCG on an AMD machine and says N; elsewhere it is not there at all.
    assert steps["sev_snp"]["detail"].startswith(
        ("SEV-SNP is not enabled", "SEV-SNP is not available")
    )
    assert steps["sev_firmware"]["result"] == "pass"  # the image carries OVMF.amdsev.fd
    assert steps["guest_image"]["result"] == "pass"
    md = (results / "result.md").read_text()
    assert md.startswith("# Failed to Achieve a Certification Level\n")
    assert "**First failure:** host_prerequisites / sev_snp: SEV-SNP is not" in md
    # The image's own sev-snp-measure, for its own OVMF, agrees with the build machine's.
    measured = {s["name"]: s for s in tests["expected_measurement"]["steps"]}["measure"]
    assert measured["result"] == "pass", measured
    manifest = load_manifest(built.out / "host-debian-forky.manifest.json")
    assert manifest.expected_measurement is not None
    assert doc["evidence"]["expected_measurement"] == manifest.expected_measurement.measurement
