"""The expected launch measurement: sevimg_cert.measure, the build side, `sevimg measure`.

The real things where they run here: the sev-snp-measure wheel pinned in
sevimg.yaml (from PyPI) and the AMD SEV OVMF of Debian forky's ovmf-amdsev
(from the Debian archive); those tests carry the `network` marker and fail
when the downloads cannot be had. The measurement of a real built guest is
in tests/e2e/test_build_boot.py.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from sevimg.artifacts import checksums, names
from sevimg.artifacts.manifest import (
    EmbeddedGuest,
    ExpectedMeasurement,
    Manifest,
    load_manifest,
    write_manifest,
)
from sevimg.artifacts.manifest_check import check_manifest
from sevimg.catalog.index import Catalog
from sevimg.catalog.resolve import resolve
from sevimg.imaging import measurement, pins, unpack
from sevimg.imaging.builder import Builder, BuildSettings
from sevimg.imaging.mkosi import Mkosi
from sevimg.problems import SevimgError
from sevimg.render.trees import Renderer
from sevimg.settings import ToolPin, load_tool_pins
from sevimg.workspace import Workspace
from tests.conftest import REPO, CliFn
from tests.e2e.conftest import machine_debian_mirror
from tests.fakes import KVER, newc, pe

OVMF_PATH = "/usr/share/ovmf/OVMF.amdsev.fd"
FILE, LINK = 0o100644, 0o120777


def _fail_unreachable(what: str, exc: Exception | str) -> None:
    pytest.fail(f"{what} cannot be downloaded ({exc}); this test needs the network", pytrace=False)


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pinned sev-snp-measure wheel of sevimg.yaml, fetched and unpacked as the build does."""
    cache = tmp_path_factory.mktemp("pin-cache")
    try:
        folder = pins.python_libraries(load_tool_pins(Workspace(REPO)), cache, None, None)
    except SevimgError as exc:
        _fail_unreachable("the pinned sev-snp-measure wheel", exc.message)
    assert folder is not None, "sevimg.yaml pins sev-snp-measure"
    return folder


@pytest.fixture(scope="session")
def forky_ovmf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OVMF.amdsev.fd out of forky's ovmf-amdsev, found in and checked against its Packages index."""
    mirror = machine_debian_mirror()
    index = f"{mirror}/dists/forky/main/binary-all/Packages.xz"
    try:
        response = httpx.get(index, timeout=120, follow_redirects=True)
    except httpx.HTTPError as exc:
        _fail_unreachable(index, exc)
    if response.status_code != 200:
        _fail_unreachable(index, f"HTTP {response.status_code}")
    stanzas = lzma.decompress(response.content).decode().split("\n\n")
    stanza = next(s for s in stanzas if s.startswith("Package: ovmf-amdsev\n"))
    fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
    pin = ToolPin(
        name="ovmf-amdsev",
        version=fields["Version"],
        url=f"{mirror}/{fields['Filename']}",
        sha256=fields["SHA256"],
        roles=("host",),
        format="deb",
        member=OVMF_PATH,
    )
    cache = tmp_path_factory.mktemp("ovmf")
    try:
        data = pins.fetch(pin, cache)
    except SevimgError as exc:
        _fail_unreachable(pin.url, exc.message)
    target = cache / "OVMF.amdsev.fd"
    target.write_bytes(unpack.program(pin, data))
    return target


def _uki(linux: bytes, initrd: bytes = b"") -> bytes:
    return pe(
        [
            (".osrel", b"ID=debian\n"),
            (".uname", KVER.encode()),
            (".linux", linux),
            (".initrd", initrd),
        ]
    )


def _cli_measurement(library: Path, ovmf: Path, kernel: Path) -> str:
    """What the pinned wheel's own command line prints, run as its own process."""
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            "import sys; sys.path.insert(0, sys.argv.pop(1)); "
            "from sevsnpmeasure.cli import main; sys.argv[0] = 'sev-snp-measure'; sys.exit(main())",
            str(library),
            "--mode=snp",
            "--vcpus=1",
            "--vcpu-type=EPYC-v4",
            f"--ovmf={ovmf}",
            f"--kernel={kernel}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


# --- sevimg_cert.measure ---------------------------------------------------------------------


def test_without_the_library_the_error_says_so(tmp_path: Path) -> None:
    # A fresh interpreter: this one may have imported sevsnpmeasure in another test.
    proc = subprocess.run(
        [sys.executable, "-c", "from pathlib import Path\nfrom sevimg_cert import measure\n"
         "try:\n    measure.expected(Path('a'), Path('b'))\n"
         "except measure.MeasureError as exc:\n    print(exc)\n"],
        capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "sev-snp-measure is not available" in proc.stdout
    assert "/usr/lib/sevimg/python/sevsnpmeasure/" in proc.stdout


@pytest.mark.network
def test_real_ovmf_measurement_is_stable_sensitive_and_what_the_tool_prints(
    library: Path, forky_ovmf: Path, tmp_path: Path
) -> None:
    linux = bytes(range(256)) * 256
    kernel = tmp_path / "guest.efi"
    kernel.write_bytes(_uki(linux))
    with measurement.library(library):
        from sevimg_cert import measure

        first = measure.expected(forky_ovmf, kernel)
        assert len(first) == 48
        assert measure.expected(forky_ovmf, kernel) == first
        changed = bytearray(linux)
        changed[1000] ^= 1
        other = tmp_path / "other.efi"
        other.write_bytes(_uki(bytes(changed)))
        assert measure.expected(forky_ovmf, other) != first
        assert measure.expected(forky_ovmf, kernel, vcpus=2) != first
        assert measure.expected(forky_ovmf, kernel, vcpu_type="EPYC-Milan") != first
        assert measure.library_version() == "0.0.13"
    assert _cli_measurement(library, forky_ovmf, kernel) == first.hex()


@pytest.mark.network
def test_an_ovmf_without_sev_metadata_or_a_bad_input_is_a_clear_error(
    library: Path, forky_ovmf: Path, tmp_path: Path
) -> None:
    plain = tmp_path / "OVMF.fd"
    plain.write_bytes(b"\xff" * (2 * 1024 * 1024))
    kernel = tmp_path / "guest.efi"
    kernel.write_bytes(_uki(b"kernel"))
    with measurement.library(library):
        from sevimg_cert import measure

        with pytest.raises(measure.MeasureError, match="has no SEV metadata: not an AMD SEV build"):
            measure.expected(plain, kernel)
        with pytest.raises(measure.MeasureError, match="OVMF .*: no such file"):
            measure.expected(tmp_path / "missing.fd", kernel)
        with pytest.raises(measure.MeasureError, match="kernel .*: no such file"):
            measure.expected(forky_ovmf, tmp_path / "missing.efi")
        with pytest.raises(measure.MeasureError, match="unknown vCPU type 'EPYC-v99'"):
            measure.expected(forky_ovmf, kernel, vcpu_type="EPYC-v99")
        with pytest.raises(measure.MeasureError, match="vcpus must be at least 1"):
            measure.expected(forky_ovmf, kernel, vcpus=0)
        # Not whole pages: the library would assert; this is the file's error, before reading it.
        odd = tmp_path / "odd.fd"
        odd.write_bytes(forky_ovmf.read_bytes()[:-1])
        with pytest.raises(measure.MeasureError, match=r"odd.fd is \d+ bytes, not whole 4096-byte"):
            measure.expected(odd, kernel)


# --- the build side: the host's firmware, the manifests ----------------------------------------


def test_the_host_firmware_is_read_from_the_uki_links_followed(tmp_path: Path) -> None:
    firmware = b"OVMF" * 1000
    host = tmp_path / "host.efi"
    host.write_bytes(
        _uki(
            b"kernel",
            newc(
                [
                    ("usr/share/qemu/OVMF.amdsev.fd", FILE, firmware),
                    ("usr/share/ovmf/OVMF.amdsev.fd", LINK, b"../qemu/OVMF.amdsev.fd"),
                    ("usr/share/abs.fd", LINK, b"/usr/share/ovmf/OVMF.amdsev.fd"),
                    ("usr/share/loop.fd", LINK, b"loop.fd"),
                ]
            ),
        )
    )
    assert measurement.host_firmware(host, OVMF_PATH) == firmware
    assert measurement.host_firmware(host, "/usr/share/abs.fd") == firmware
    with pytest.raises(SevimgError, match="has no /usr/share/OVMF/none.fd in its initrd"):
        measurement.host_firmware(host, "/usr/share/OVMF/none.fd")
    with pytest.raises(SevimgError, match="chain of more than 8 links"):
        measurement.host_firmware(host, "/usr/share/loop.fd")


def _manifest(tmp_path: Path, image_id: str) -> Manifest:
    artifact = tmp_path / names.artifact_name(image_id)
    artifact.write_bytes(b"uki")
    host = image_id.startswith("host-")
    return _manifest_for(artifact, EmbeddedGuest("guest-debian-forky", "a" * 64) if host else None)


MEASURED = ExpectedMeasurement(
    host_image_id="host-debian-forky",
    ovmf=OVMF_PATH,
    ovmf_sha256="b" * 64,
    vcpus=1,
    vcpu_type="EPYC-v4",
    measurement="c" * 96,
    sev_snp_measure="0.0.13",
)


def test_manifests_carry_the_measurement_and_old_ones_still_load(tmp_path: Path) -> None:
    for image_id in ("host-debian-forky", "guest-debian-forky"):
        plain = _manifest(tmp_path, image_id)
        assert "expected_measurement" not in json.loads(plain.to_json())  # as before
        assert Manifest.from_json(plain.to_json()) == plain
        measured = plain.with_measurement(MEASURED)
        data = json.loads(measured.to_json())
        assert data["expected_measurement"]["measurement"] == "c" * 96
        assert Manifest.from_json(measured.to_json()) == measured


def test_a_wrong_measurement_is_refused_by_field(tmp_path: Path) -> None:
    host = _manifest(tmp_path, "host-debian-forky")
    data = json.loads(host.with_measurement(MEASURED).to_json())
    data["expected_measurement"]["measurement"] = "C" * 96
    problems = check_manifest(data, display="m.json")
    assert [p.field for p in problems] == ["expected_measurement.measurement"]
    with pytest.raises(SevimgError) as caught:
        host.with_measurement(
            ExpectedMeasurement(**{**MEASURED.as_dict(), "host_image_id": "host-debian-13"})
        )
    assert "a host's manifest carries the measurement for its own OVMF" in str(
        caught.value.problems[0]
    )


# --- sevimg measure ----------------------------------------------------------------------------


def _shipped_workspace(workspace: Path) -> Path:
    shutil.copy(REPO / "sevimg.yaml", workspace / "sevimg.yaml")
    return workspace


def test_measure_names_what_is_missing(cli: CliFn, workspace: Path, tmp_path: Path) -> None:
    _shipped_workspace(workspace)
    out = tmp_path / "out"
    out.mkdir()
    run = cli("measure", "debian-forky", "--from", str(out))
    assert run.code == 1 and f"{out}/guest-debian-forky.efi: no such guest image" in run.stderr
    assert "sevimg build debian-forky" in run.stderr
    (out / "guest-debian-forky.efi").write_bytes(_uki(b"kernel"))
    run = cli("measure", "host-debian-forky", "--from", str(out))
    assert run.code == 1
    assert "host-debian-forky.efi: no such host image, whose OVMF is the default" in run.stderr
    run = cli("measure", "debian-forky", "--from", str(out), "--ovmf", str(tmp_path / "no.fd"))
    assert run.code == 1 and f"--ovmf: {tmp_path}/no.fd: no such file" in run.stderr
    run = cli("measure", str(out / "guest-debian-forky.efi"))
    assert run.code == 1 and "a guest given as a file needs --ovmf FILE" in run.stderr
    (out / "host-debian-forky.efi").write_bytes(
        _uki(b"kernel", newc([("etc/os-release", FILE, b"")]))
    )
    run = cli("measure", "debian-forky", "--from", str(out))
    assert run.code == 1 and "carries none of the SEV firmware files" in run.stderr
    assert OVMF_PATH in run.stderr
    run = cli("measure", "not an image")
    assert run.code != 0 and "is not an image name" in run.stderr
    assert "Traceback" not in run.output


def test_measure_without_a_pinned_wheel(cli: CliFn, tmp_path: Path) -> None:
    guest = tmp_path / "guest.efi"
    guest.write_bytes(_uki(b"kernel"))
    firmware = tmp_path / "OVMF.amdsev.fd"
    firmware.write_bytes(b"\0" * 4096)
    run = cli("measure", str(guest), "--ovmf", str(firmware))
    assert run.code == 1 and "sev-snp-measure is not pinned in sevimg.yaml" in run.stderr


@pytest.mark.network
def test_measure_prints_the_host_ovmf_measurement(
    cli: CliFn, workspace: Path, tmp_path: Path, library: Path, forky_ovmf: Path
) -> None:
    _shipped_workspace(workspace)
    out = tmp_path / "out"
    out.mkdir()
    guest = out / "guest-debian-forky.efi"
    guest.write_bytes(_uki(b"a guest kernel" * 1000))
    firmware = forky_ovmf.read_bytes()
    (out / "host-debian-forky.efi").write_bytes(
        _uki(b"host kernel", newc([(OVMF_PATH.lstrip("/"), FILE, firmware)]))
    )
    expected = _cli_measurement(library, forky_ovmf, guest)
    run = cli("measure", "debian-forky", "--from", str(out), "--json")
    assert run.code == 0, run.output
    data = json.loads(run.stdout)
    assert data["measurement"] == expected
    assert data["ovmf"] == f"{out}/host-debian-forky.efi:{OVMF_PATH}"
    assert data["ovmf_sha256"] == hashlib.sha256(firmware).hexdigest()
    assert (data["vcpus"], data["vcpu_type"], data["sev_snp_measure"]) == (1, "EPYC-v4", "0.0.13")
    run = cli("measure", str(guest), "--ovmf", str(forky_ovmf))
    assert run.code == 0 and run.stdout.splitlines()[-1] == expected
    plain = tmp_path / "OVMF.fd"
    plain.write_bytes(b"\xff" * (1024 * 1024))
    run = cli("measure", "debian-forky", "--from", str(out), "--ovmf", str(plain))
    assert run.code == 1 and "has no SEV metadata: not an AMD SEV build" in run.stderr
    assert "Traceback" not in run.output


@pytest.mark.network
def test_a_host_build_writes_the_measurement_into_both_manifests(
    catalog: Catalog, tmp_path: Path, library: Path, forky_ovmf: Path
) -> None:
    """The builder's own steps after mkosi: measure the embedded guest, publish both manifests."""
    out = tmp_path / "out"
    out.mkdir()
    guest = out / "guest-debian-forky.efi"
    guest.write_bytes(_uki(b"the guest kernel" * 500))
    write_manifest(out, _manifest_for(guest, None))
    built = tmp_path / "mkosi-output" / "host-debian-forky.efi"
    built.parent.mkdir()
    firmware = forky_ovmf.read_bytes()
    built.write_bytes(_uki(b"host kernel", newc([(OVMF_PATH.lstrip("/"), FILE, firmware)])))
    notes: list[str] = []
    builder = Builder(
        BuildSettings(
            workspace_root=tmp_path,
            build_dir=tmp_path / "build",
            out_dir=out,
            cache_dir=library.parents[1],  # where the library fixture unpacked the pinned wheel
            mkosi=Mkosi(Path("/nonexistent/mkosi"), "25.3", "test"),  # mkosi itself does not run
            renderer=Renderer(Workspace(REPO).search_path("templates")),
            pins=load_tool_pins(Workspace(REPO)),
        ),
        report=notes.append,
    )
    spec = resolve(catalog.entries["debian-forky"], "host")
    measured = builder.measure_guest(spec, built, guest)
    assert measured is not None
    assert measured.measurement == _cli_measurement(library, forky_ovmf, guest)
    assert measured.ovmf_sha256 == hashlib.sha256(firmware).hexdigest()
    builder.publish(spec, built, {}, {}, checksums.sha256_file(guest), measured)
    host_manifest = load_manifest(out / "host-debian-forky.manifest.json")
    guest_manifest = load_manifest(out / "guest-debian-forky.manifest.json")
    assert host_manifest.expected_measurement == guest_manifest.expected_measurement == measured
    sums = (out / "SHA256SUMS").read_text()
    assert checksums.sha256_file(out / "guest-debian-forky.manifest.json") in sums
    # Without the pinned tools (--without-tools) no manifest claims a measurement.
    bare = Builder(replace(builder.s, with_tools=False), report=notes.append)
    assert bare.measure_guest(spec, built, guest) is None
    assert "no expected measurement in the manifests" in notes[-1]


def _manifest_for(artifact: Path, guest: EmbeddedGuest | None) -> Manifest:
    return Manifest.for_artifact(
        artifact,
        distro="debian",
        release="forky",
        sources=[],
        mkosi_version="25.3",
        tools={},
        packages=[],
        embedded_guest=guest,
    )
