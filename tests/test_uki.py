"""Reading UKIs and checking built images: cpio parsing and the post-build checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import zstandard

from sevimg.catalog import payload
from sevimg.catalog.index import Catalog
from sevimg.catalog.resolve import resolve
from sevimg.imaging import examine
from sevimg.imaging.uki import Uki, read_uki
from sevimg.problems import SevimgError
from tests.fakes import DIR, EXE, FILE, LINK, newc

KVER = "6.12.119+deb13-amd64"


def guest_files(*, drop: str = "", root_password: str = "*") -> list[tuple[str, int, bytes]]:
    modules = {
        "msr": "arch/x86/kernel/msr",
        "sev-guest": "drivers/virt/coco/sev-guest/sev-guest",
        "virtio_net": "drivers/net/virtio_net",
        "vsock": "net/vmw_vsock/vsock",
        "vmw_vsock_virtio_transport": "net/vmw_vsock/vmw_vsock_virtio_transport",
        "configfs": "fs/configfs/configfs",
        "tsm": "drivers/virt/coco/tsm",
    }
    files = [
        ("usr", DIR, b""),
        ("lib", LINK, b"usr/lib"),
        (
            f"usr/lib/modules/{KVER}/modules.builtin",
            FILE,
            b"kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/char/virtio_console.ko\n",
        ),
        ("etc/passwd", FILE, f"root:{root_password}:0:0:root:/root:/bin/bash\n".encode()),
        (
            "etc/systemd/system/multi-user.target.wants/sevimg-guest-check.service",
            LINK,
            b"/usr/lib/systemd/system/sevimg-guest-check.service",
        ),
        ("usr/libexec/sevimg/guest-check", EXE, b"#!/bin/bash\n"),
        ("usr/libexec/sevimg/attest-responder", EXE, b"#!/bin/bash\n"),
        ("usr/lib/udev/rules.d/90-sevimg-attest.rules", FILE, b"SUBSYSTEM==...\n"),
    ]
    files += [
        (f"usr/lib/modules/{KVER}/kernel/{path}.ko.xz", FILE, b"x")
        for name, path in modules.items()
        if name != drop
    ]
    return files


def make_uki(files: list[tuple[str, int, bytes]], *, compress: bool = True) -> Uki:
    archive = newc(files)
    if compress:
        # two frames and zero padding, as PE section alignment leaves it
        half = len(archive) // 2
        z = zstandard.ZstdCompressor()
        archive = z.compress(archive[:half]) + z.compress(archive[half:]) + b"\0" * 512
    return Uki(Path("x.efi"), b"kernel", archive, "console=ttyS0", KVER, "ID=debian")


def test_members_of_compressed_concatenated_archives() -> None:
    uki = make_uki(guest_files())
    members = uki.members()
    assert members["usr/libexec/sevimg/guest-check"].mode & 0o111
    assert members["lib"].is_symlink and members["lib"].data == b"usr/lib"
    assert members["usr"].is_dir
    assert make_uki(guest_files(), compress=False).members().keys() == members.keys()


def test_early_uncompressed_archive_then_compressed() -> None:
    microcode = newc([("kernel/x86/microcode/AuthenticAMD.bin", FILE, b"ucode")])
    rest = make_uki(guest_files()).initrd
    uki = Uki(Path("x.efi"), b"", microcode + rest, "", KVER, "")
    members = uki.members()
    assert "kernel/x86/microcode/AuthenticAMD.bin" in members and "etc/passwd" in members


def test_corrupt_archive_is_a_clean_error() -> None:
    bad = Uki(Path("x.efi"), b"", b"070701" + b"Z" * 200, "", KVER, "")
    with pytest.raises(SevimgError, match="corrupt cpio archive"):
        bad.members()


def test_not_a_uki(tmp_path: Path) -> None:
    path = tmp_path / "x.efi"
    path.write_bytes(b"MZ not really")
    with pytest.raises(SevimgError, match="is not a PE/EFI binary"):
        read_uki(path)


def test_guest_checks_pass_and_fail(catalog: Catalog) -> None:
    spec = resolve(catalog.entries["debian-13"], "guest")
    ok = examine.check(
        spec,
        make_uki(guest_files()),
        {"linux-image-amd64": "6.12.118-1", "systemd-boot-efi": "257"},
    )
    assert ok.errors == () and ok.kernel == KVER
    lost = examine.check(spec, make_uki(guest_files(drop="sev-guest")), {"systemd-boot-efi": "257"})
    assert lost.errors == (
        "guest module sev-guest (drivers/virt/coco/sev-guest/sev-guest) is missing",
    )
    open_root = examine.check(
        spec, make_uki(guest_files(root_password="")), {"systemd-boot-efi": "257"}
    )
    assert open_root.errors == (
        "root has an empty password (login without one): published images must not",
    )
    hashed = examine.check(
        spec, make_uki(guest_files(root_password="$6$salt$hash")), {"systemd-boot-efi": "257"}
    )
    assert hashed.errors == ("root has a password: published images must not",)
    no_unit = [f for f in guest_files() if "multi-user.target.wants" not in f[0]]
    assert (
        "presets did not apply"
        in examine.check(spec, make_uki(no_unit), {"systemd-boot-efi": "257"}).errors[0]
    )
    no_stub = examine.check(spec, make_uki(guest_files()), {})
    assert no_stub.errors == ("systemd_boot package systemd-boot-efi is not installed",)


def test_guest_needs_configfs_tsm_and_its_responder(catalog: Catalog) -> None:
    spec = resolve(catalog.entries["debian-13"], "guest")
    stub = {"systemd-boot-efi": "257"}
    assert examine.check(spec, make_uki(guest_files(drop="tsm")), stub).errors == (
        "guest module for TSM reports (tsm_report or tsm: drivers/virt/coco/guest/tsm_report, "
        "drivers/virt/coco/tsm) is missing: no configfs-tsm attestation reports",
    )
    assert examine.check(spec, make_uki(guest_files(drop="configfs")), stub).errors == (
        "guest module configfs (fs/configfs/configfs) is missing",
    )
    # Newer kernels: tsm_report, here built in (listed in modules.builtin).
    newer = [
        (path, mode, data + b"kernel/drivers/virt/coco/guest/tsm_report.ko\n")
        if path.endswith("modules.builtin")
        else (path, mode, data)
        for path, mode, data in guest_files(drop="tsm")
    ]
    assert examine.check(spec, make_uki(newer), stub).errors == ()
    # tsm-core (the TDISP core of newer kernels) is not the report module.
    core = [
        (path, mode, data + b"kernel/drivers/virt/coco/tsm-core.ko\n")
        if path.endswith("modules.builtin")
        else (path, mode, data)
        for path, mode, data in guest_files(drop="tsm")
    ]
    assert "guest module for TSM reports" in examine.check(spec, make_uki(core), stub).errors[0]
    no_responder = [f for f in guest_files() if "attest-responder" not in f[0]]
    assert examine.check(spec, make_uki(no_responder), stub).errors == (
        "/usr/libexec/sevimg/attest-responder is missing or not executable",
    )
    no_rule = [f for f in guest_files() if "rules.d" not in f[0]]
    assert examine.check(spec, make_uki(no_rule), stub).errors == (
        "/usr/lib/udev/rules.d/90-sevimg-attest.rules is missing: "
        "nothing would start the attestation responder",
    )


def host_files(
    guest: bytes, *, firmware: bool = True, qemu: bool = True
) -> list[tuple[str, int, bytes]]:
    files = [
        ("etc/passwd", FILE, b"root:x:0:0:root:/root:/bin/bash\n"),
        ("etc/shadow", FILE, b"root:*:20000::::::\n"),
        ("etc/systemd/system/multi-user.target.wants/sevimg-host-check.service", LINK, b"/x"),
        ("usr/libexec/sevimg/host-check", EXE, b"#!/bin/bash\n"),
        ("usr/local/lib/guest-image/guest.efi", FILE, guest),
        ("bin", LINK, b"usr/bin"),
    ]
    files += [
        (f"usr/lib/modules/{KVER}/kernel/{path}.ko.zst", FILE, b"x")
        for path in (*payload.HOST_REQUIRED_MODULES.values(), *payload.HOST_NIC_MODULES.values())
    ]
    if firmware:
        files += [("usr/share/ovmf/OVMF.amdsev.fd", FILE, b"fw")]
    if qemu:
        files += [("usr/bin/qemu-system-x86_64", EXE, b"\x7fELF")]
    return files


HOST_PACKAGES = {
    "qemu-system-x86": "1:10.0.13+ds-0+deb13u1",
    "ovmf-amdsev": "2026.08+ds-2",
    "systemd-boot-efi": "257",
}


def test_host_checks(catalog: Catalog) -> None:
    spec = resolve(catalog.entries["debian-13"], "host")
    guest = b"guest uki"
    sha = hashlib.sha256(guest).hexdigest()
    ok = examine.check(spec, make_uki(host_files(guest)), HOST_PACKAGES, sha)
    assert ok.errors == ()
    assert ok.installed == {
        "kernel": KVER,
        "qemu": "1:10.0.13+ds-0+deb13u1",
        "ovmf": "2026.08+ds-2",
    }
    assert any("kernel: declared 6.12.118, installed" in w for w in ok.warnings)

    no_fw = examine.check(spec, make_uki(host_files(guest, firmware=False)), HOST_PACKAGES, sha)
    assert no_fw.errors == (
        "SEV firmware /usr/share/ovmf/OVMF.amdsev.fd is missing from the image (ovmf-amdsev does not ship it)",
    )
    no_qemu = examine.check(spec, make_uki(host_files(guest, qemu=False)), HOST_PACKAGES, sha)
    assert no_qemu.errors == ("QEMU binary /usr/bin/qemu-system-x86_64 is missing from the image",)
    wrong_guest = examine.check(spec, make_uki(host_files(guest)), HOST_PACKAGES, "0" * 64)
    assert "is not the guest just built" in wrong_guest.errors[0]
    old_qemu = examine.check(
        spec,
        make_uki(host_files(guest)),
        {**HOST_PACKAGES, "qemu-system-x86": "1:8.2.2+ds-0ubuntu1"},
        sha,
    )
    assert "qemu 1:8.2.2+ds-0ubuntu1 is below the SEV-SNP host floor 9.1" in old_qemu.errors


def test_symlinked_paths_resolve(catalog: Catalog) -> None:
    """RHEL-likes: /usr/libexec/qemu-kvm through a symlinked folder still counts."""
    spec = resolve(catalog.entries["centos-10"], "host")
    files = [
        ("usr/libexec", LINK, b"lib/real"),
        ("usr/lib/real/qemu-kvm", EXE, b"\x7fELF"),
        ("usr/share/edk2/ovmf/OVMF.amdsev.fd", FILE, b"fw"),
        ("usr/local/lib/guest-image/guest.efi", FILE, b"g"),
        ("etc/passwd", FILE, b"root:*:0:0::/root:/bin/bash\n"),
    ]
    findings = examine.check(
        spec,
        make_uki(files),
        {"qemu-kvm-core": "10.1.0", "edk2-ovmf": "20251119", "systemd-boot-unsigned": "257"},
    )
    assert not [e for e in findings.errors if "QEMU" in e or "firmware" in e]


@pytest.mark.parametrize("odd", ["git-20260101", "+dfsg", "unknown", "~rc1"])
def test_an_unreadable_installed_version_fails_its_floor_without_a_crash(
    catalog: Catalog, odd: str
) -> None:
    spec = resolve(catalog.entries["debian-13"], "host")
    guest = b"guest uki"
    found = examine.check(
        spec,
        make_uki(host_files(guest)),
        {**HOST_PACKAGES, "qemu-system-x86": odd},
        hashlib.sha256(guest).hexdigest(),
    )
    assert any(e.startswith(f"qemu {odd} is below the SEV-SNP host floor") for e in found.errors)
