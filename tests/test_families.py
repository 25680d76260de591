"""The family layer: images/families/<family>.yaml as data, checked like every catalog file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sevimg.catalog import payload
from sevimg.catalog.index import load_catalog, machine_families
from sevimg.catalog.pipeline import check_catalog, check_entry
from sevimg.catalog.resolve import resolve
from sevimg.machine import run
from sevimg.workspace import Workspace
from tests.conftest import REPO, CliFn

FAMILY = "images/families/debian.yaml"


def family_errors(workspace: Path, old: str, new: str, name: str = FAMILY) -> list[str]:
    path = workspace / name
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    catalog = load_catalog(Workspace(workspace))
    return [str(p) for p in catalog.problems if p.is_error]


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("package_manager: apt", "package_manager: dpkg", "package_manager"),
        ("package_manager: apt", "package_manager: [apt]", "package_manager"),
        ("  udev: udev\n", "  udev: 'udev rules'\n", "payload.udev"),
        ("  udev: udev\n", "  udev: udev;reboot\n", "payload.udev"),
        ("  udev: udev\n", "", "payload"),  # a need without its package
        ("  jq: jq\n", "  jq: jq\n  ls: coreutils\n", "payload"),  # a need sevimg does not have
        ("  sev: [/usr/share/ovmf/OVMF.amdsev.fd]", "  sev: [usr/share/OVMF.fd]", "firmware.sev[0]"),
        ("  sev: [/usr/share/ovmf/OVMF.amdsev.fd]", "  sev: [/usr/../OVMF.fd]", "firmware.sev[0]"),
        ("  sev: [/usr/share/ovmf/OVMF.amdsev.fd]", "  sev: ['/a\\x07b']", "firmware.sev[0]"),
        ("  sev: [/usr/share/ovmf/OVMF.amdsev.fd]", "  sev: /usr/share/OVMF.fd", "firmware.sev"),
        ("qemu_binaries: [/usr/bin/qemu-system-x86_64]", "qemu_binaries: [qemu]", "qemu_binaries[0]"),
        ("qemu_binaries: [/usr/bin/qemu-system-x86_64]", "qemu_binaries: []", "qemu_binaries"),
        ("  sev: [/usr/share/ovmf/OVMF.amdsev.fd]", "  sev: []", "firmware.sev"),
        ("  security_suffix: -security", "  security_suffix: security", "apt.security_suffix"),
        ("  security_suffix: -security", "  security_suffix: '-sec urity'", "apt.security_suffix"),
        ("  suites_without_pockets: [sid, unstable]", "  suites_without_pockets: [Sid]", "apt.suites_without_pockets[0]"),
        ("  keyring: /usr/share/keyrings/debian-archive-keyring.gpg", "  keyring: keyring.gpg", "apt.keyring"),
        ("mirror_probe: http://deb.debian.org", "mirror_probe: ftp://deb.debian.org", "mirror_probe"),
        ("mirror_probe: http://deb.debian.org/debian/", "mirror_probe: http://deb.debian.org/a%20b/", "mirror_probe"),
        ("    - /var/cache/debconf\n", "    - '/var/cache/$HOME'\n", "remove_files.guest"),
        ("    - /var/cache/debconf\n", "    - /var/../etc\n", "remove_files.guest"),
        ("family: debian", "family: ubuntu", "family"),  # must agree with the file name
        ("schema_version: 1", "schema_version: 2", "schema_version"),
        ("package_manager: apt", "package_manager: apt\nflavour: stable", ""),  # unknown key
        ("  systemd_boot: systemd-boot-efi", "  systemd_boot: [systemd-boot-efi]", "common.systemd_boot"),
    ],
)  # fmt: skip
def test_a_bad_family_file_is_a_located_error(
    workspace: Path, cli: CliFn, old: str, new: str, field: str
) -> None:
    errors = family_errors(workspace, old, new)
    mine = [e for e in errors if e.startswith(f"{FAMILY}:")]
    assert mine, errors
    assert all(re.match(rf"{re.escape(FAMILY)}:\d+:\d+: error: ", e) for e in mine), mine
    assert any(f": error: {field}" in e for e in mine), mine
    # Its distributions cannot be built, and the command says so cleanly.
    run = cli("validate")
    assert run.code == 1 and FAMILY in run.stderr + run.stdout
    assert "Traceback" not in run.output


@pytest.mark.parametrize("family", ["debain", "suse2", "el9", "fedor"])
def test_a_distro_naming_no_family_is_a_located_error(workspace: Path, family: str) -> None:
    errors = family_errors(workspace, "family: debian", f"family: {family}", "images/debian.yaml")
    assert any(
        e.startswith("images/debian.yaml:")
        and f"family: no images/families/{family}.yaml (known families:" in e
        for e in errors
    ), errors


def test_the_family_gives_what_a_distribution_leaves_out(catalog) -> None:  # type: ignore[no-untyped-def]
    alma = catalog.get("alma-10")
    host = resolve(alma, "host")
    # alma.yaml names no kernel, QEMU, OVMF or packages: all come from el.yaml.
    assert "host" not in alma.distro_doc.data
    assert host.component("qemu") == "qemu-kvm-core"
    assert host.payload.qemu_binary == "/usr/libexec/qemu-kvm"
    for need in payload.NEEDS["host"]:
        assert alma.family.package(need) in host.packages


def test_a_distribution_overrides_its_family(workspace: Path) -> None:
    path = workspace / "images" / "alma.yaml"
    path.write_text(path.read_text() + "host:\n  qemu_binary: /usr/bin/qemu-system-x86_64\n")
    entry = load_catalog(Workspace(workspace)).get("alma-10")
    assert resolve(entry, "host").payload.qemu_binary == "/usr/bin/qemu-system-x86_64"
    assert resolve(entry, "host").component("qemu") == "qemu-kvm-core"  # the rest stays el's


@pytest.mark.parametrize(
    ("section", "key"),
    [("host", "kernel"), ("host", "qemu"), ("host", "ovmf"), ("host", "qemu_binary"),
     ("host", "sev_firmware"), ("guest", "kernel"), ("common", "systemd_boot")],
)  # fmt: skip
def test_a_setting_nobody_gives_is_a_located_error(workspace: Path, section: str, key: str) -> None:
    # Take the setting out of the el family: alma.yaml gives none of them either.
    path = workspace / "images" / "families" / "el.yaml"
    lines = path.read_text().splitlines(keepends=True)
    inside = None
    kept = []
    for line in lines:
        if not line.startswith(" "):
            inside = line.rstrip(":\n")
        if inside == section and line.strip().startswith(f"{key}:"):
            continue
        kept.append(line)
    assert len(kept) == len(lines) - 1
    path.write_text("".join(kept))
    catalog = load_catalog(Workspace(workspace))
    checked = check_entry(catalog, catalog.get("alma-10"))
    errors = [str(p) for p in checked.problems if p.is_error]
    assert any(
        e.startswith("images/alma.yaml:") and f"`{section}.{key}`" in e and "el.yaml" in e
        for e in errors
    ), errors


def test_firmware_that_does_not_check_kernel_hashes_is_a_warning(workspace: Path) -> None:
    path = workspace / "images" / "families" / "fedora.yaml"
    text = path.read_text()
    path.write_text(text.replace("firmware:\n", "firmware:\n  sev_kernel_hashes: false\n", 1))
    catalog = load_catalog(Workspace(workspace))
    checked = check_entry(catalog, catalog.get("fedora-43"))
    warnings = [str(p) for p in checked.problems if not p.is_error]
    assert any("does not verify the kernel hashes" in w for w in warnings), warnings
    assert checked.ok  # a warning, not an error


def test_every_family_file_is_valid_and_used() -> None:
    catalog = load_catalog(Workspace(REPO))
    assert not [p for p in catalog.problems if "families/" in p.file]
    used = {entry.family.name for entry in catalog.entries.values()}
    assert used == set(catalog.families)
    checked, _ = check_catalog(catalog)
    assert all(c.ok for c in checked)


def test_run_searches_every_family_s_qemu_and_firmware() -> None:
    """`sevimg run` looks where the family files say, every family's places in catalog order."""
    families = machine_families(Workspace(REPO))
    paths = run.search_paths(families)
    assert paths.qemu[0] == "qemu-system-x86_64"  # on PATH first, wherever it is
    for family in families:
        assert set(family.qemu_binaries) <= set(paths.qemu)
        assert set(family.plain_ovmf) <= set(paths.plain_ovmf)
        assert set(family.sev_firmware) <= set(paths.sev_firmware)
    assert "/usr/libexec/qemu-kvm" in paths.qemu
    assert paths.sev_firmware[:3] == (
        "/usr/share/ovmf/OVMF.amdsev.fd",
        "/usr/share/edk2/ovmf/OVMF.amdsev.fd",
        "/usr/share/qemu/ovmf-x86_64-sev.bin",
    )
    # Outside any workspace the packaged (here: the checkout's) family files answer.
    assert run.search_paths(machine_families(None)) == paths
