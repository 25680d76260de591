"""Resolution: distro defaults + release overrides + role → one frozen spec."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sevimg.catalog.index import Catalog, load_catalog
from sevimg.catalog.pipeline import check_entry
from sevimg.catalog.resolve import ResolveError, resolve, roles_of
from sevimg.catalog.spec import ImageSpec
from sevimg.workspace import Workspace


def spec_of(catalog: Catalog, image: str, role: str) -> ImageSpec:
    return resolve(catalog.entries[image], role)  # type: ignore[arg-type]


def edit(
    workspace: Path, name: str, append: str = "", replace: tuple[str, str] | None = None
) -> Catalog:
    path = workspace / "images" / f"{name}.yaml"
    text = path.read_text()
    if replace:
        assert replace[0] in text
        text = text.replace(*replace)
    path.write_text(text + append)
    return load_catalog(Workspace(workspace))


def test_debian_13_guest(catalog: Catalog) -> None:
    spec = spec_of(catalog, "debian-13", "guest")
    assert spec.image_id == "guest-debian-13"
    assert (spec.mkosi_distribution, spec.mkosi_release, spec.release) == ("debian", "trixie", "13")
    assert spec.packages == ("linux-image-amd64", "systemd", "systemd-boot-efi", "udev")
    assert spec.kernel_command_line == ("quiet", "console=ttyS0,115200n8", "systemd.firstboot=off")
    assert spec.environment == (("VERSION", "13"),)
    assert spec.apt_sources == ()  # ovmf-amdsev from forky is for the host only
    assert spec.payload.modules_load == ("msr", "sev-guest")
    assert not spec.kernel_modules.keep_all
    assert spec.autologin is False and spec.debug is False
    assert spec.sources == (
        "images/debian-13.yaml",
        "images/debian.yaml",
        "images/families/debian.yaml",
    )


def test_debian_13_host_takes_ovmf_amdsev_from_forky(catalog: Catalog) -> None:
    spec = spec_of(catalog, "debian-13", "host")
    assert "ovmf-amdsev" in spec.packages and "ovmf" not in spec.packages
    assert "qemu-system-x86" in spec.packages and "qemu-system" not in spec.packages
    (source,) = spec.apt_sources
    assert (source.name, source.suites, source.only_packages) == (
        "forky",
        ("forky",),
        ("ovmf-amdsev",),
    )
    assert source.url == "http://deb.debian.org/debian"
    assert spec.payload.sev_firmware == "/usr/share/ovmf/OVMF.amdsev.fd"
    assert spec.payload.guest_image == "guest-debian-13"
    assert spec.kernel_command_line == (
        "console=tty0",
        "console=ttyS0,115200n8",
        "systemd.firstboot=off",
    )
    assert spec.kernel_modules.keep_all and "drivers/gpu/" in spec.kernel_modules.exclude


def test_numbered_and_named_releases(catalog: Catalog) -> None:
    assert spec_of(catalog, "fedora-43", "host").mkosi_release == "43"
    assert spec_of(catalog, "fedora-43", "host").environment == ()
    forky = spec_of(catalog, "debian-forky", "host")
    assert (forky.mkosi_release, forky.environment) == ("forky", ())
    ubuntu = spec_of(catalog, "ubuntu-25.10", "guest")
    assert (ubuntu.mkosi_release, ubuntu.environment) == ("questing", (("VERSION", "25.10"),))


def test_family_quirks(catalog: Catalog) -> None:
    ubuntu = spec_of(catalog, "ubuntu-26.04", "guest")
    assert "plymouth" in ubuntu.packages and ubuntu.repositories == ("universe",)
    assert spec_of(catalog, "ubuntu-26.04", "host").component("ovmf") == "ovmf-amdsev"
    centos = spec_of(catalog, "centos-10", "host")
    assert centos.repository_key_fetch and centos.payload.qemu_binary == "/usr/libexec/qemu-kvm"
    assert "kernel-modules-core" in spec_of(catalog, "centos-10", "guest").packages
    fedora = spec_of(catalog, "fedora-41", "guest")
    assert "selinux=0" in fedora.kernel_command_line
    assert all('"' not in t for t in fedora.kernel_command_line)


def test_archived_releases(catalog: Catalog) -> None:
    fedora = spec_of(catalog, "fedora-41", "host")
    assert fedora.mirror == "https://archives.fedoraproject.org/pub/archive/fedora"
    plucky = spec_of(catalog, "ubuntu-25.04", "guest")
    assert plucky.mirror is None and plucky.apt_replace_default_sources
    (source,) = plucky.apt_sources
    assert source.url == "http://old-releases.ubuntu.com/ubuntu"
    assert source.suites == ("plucky", "plucky-updates", "plucky-security")
    assert source.components == ("main", "universe")
    assert spec_of(catalog, "ubuntu-25.10", "guest").apt_sources == ()


def test_guest_only_release(catalog: Catalog) -> None:
    assert roles_of(catalog.entries["ubuntu-24.04"]) == ("guest",)
    checked = check_entry(catalog, catalog.entries["ubuntu-24.04"])
    assert [s.role for s in checked.specs] == ["guest"]


def test_specs_are_frozen_and_hashable(catalog: Catalog) -> None:
    spec = spec_of(catalog, "debian-13", "host")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.packages = ()  # type: ignore[misc]
    assert hash(spec) == hash(spec_of(catalog, "debian-13", "host"))


def test_release_overrides(workspace: Path) -> None:
    catalog = edit(
        workspace,
        "fedora-44",
        "host:\n  add_packages: [tpm2-tools]\n  remove_packages: [avahi]\n"
        "common:\n  add_kernel_command_line: [quiet]\n  remove_kernel_command_line: [selinux=0]\n",
    )
    host = spec_of(catalog, "fedora-44", "host")
    assert "tpm2-tools" in host.packages and "avahi" not in host.packages
    assert host.kernel_command_line == (
        "console=tty0",
        "console=ttyS0,115200n8",
        "quiet",
        "systemd.firstboot=off",
    )
    guest = spec_of(catalog, "fedora-44", "guest")
    assert "tpm2-tools" not in guest.packages and "quiet" in guest.kernel_command_line


def test_debug_variant(catalog: Catalog) -> None:
    spec = resolve(catalog.entries["debian-13"], "guest", debug=True)
    assert spec.image_id == "guest-debian-13-debug" and spec.autologin and spec.debug
    # a debug guest logs in on the console and shows the whole boot there
    assert "getty.target" not in spec.payload.masked_units
    assert "serial-getty@.service" not in spec.payload.masked_units
    assert "quiet" not in spec.kernel_command_line
    assert "ldconfig.service" in spec.payload.masked_units
    host = resolve(catalog.entries["debian-13"], "host", debug=True)
    # a debug host embeds the debug guest
    assert host.payload.guest_image == "guest-debian-13-debug"


@pytest.mark.parametrize(
    ("name", "append", "replace", "expected"),
    [
        (
            "debian-13",
            "host:\n  remove_packages: [nonexistent]\n",
            None,
            "images/debian-13.yaml:18:21: error: host.remove_packages[0]: 'nonexistent' is not among the host image's packages",
        ),
        (
            "debian-13",
            "guest:\n  remove_kernel_command_line: [splash]\n",
            None,
            "guest.remove_kernel_command_line[0]: 'splash' is not on the guest kernel command line",
        ),
        (
            "debian-13",
            "",
            ("codename: trixie\n", ""),
            "images/debian-13.yaml:3:10: error: release: Debian's mkosi Release= is a codename: add `codename:`",
        ),
        (
            "ubuntu-26.04",
            "roles: [host]\n",
            None,
            "roles: a host embeds its release's guest",
        ),
        (
            "debian-13",
            "",
            ("packages: [ovmf-amdsev]", "packages: [ovmf-amdsev, nothere]"),
            "extra_repositories[0].packages[1]: 'nothere' is taken from 'forky' but the host image does not install it",
        ),
        (
            "debian-13",
            "",
            ("suite: forky", "baseurl: http://example.org/repo"),
            "extra_repositories[0].baseurl: baseurl is for rpm repositories",
        ),
        (
            "fedora-44",
            "extra_repositories:\n  - name: x\n    suite: forky\n    packages: [kernel]\n",
            None,
            "extra_repositories[0].suite: suite is for apt repositories",
        ),
        (
            "fedora-44",
            "extra_repositories:\n  - name: x\n    packages: [kernel]\n",
            None,
            "extra_repositories[0]: an rpm repository needs `baseurl:`",
        ),
        (
            "rocky-10",
            "archived: true\n",
            None,
            "archived: images/rocky.yaml has no mkosi.archive_mirror",
        ),
    ],
)
def test_resolution_errors_are_located(
    workspace: Path, name: str, append: str, replace: tuple[str, str] | None, expected: str
) -> None:
    catalog = edit(workspace, name, append, replace)
    checked = check_entry(catalog, catalog.entries[name])
    messages = [str(p) for p in checked.problems if p.is_error]
    assert any(expected in m for m in messages), messages
    with pytest.raises(ResolveError):
        for role in roles_of(catalog.entries[name]):
            resolve(catalog.entries[name], role)


def test_rpm_extra_repository(workspace: Path) -> None:
    catalog = edit(
        workspace,
        "fedora-44",
        "host:\n  add_packages: [snphost]\nextra_repositories:\n  - name: copr\n"
        "    baseurl: https://download.copr.fedorainfracloud.org/results/x/snp/fedora-44-x86_64\n"
        "    roles: [host]\n    packages: [snphost]\n    gpgkey: /etc/pki/rpm-gpg/copr.gpg\n",
    )
    (repo,) = spec_of(catalog, "fedora-44", "host").rpm_repos
    assert (repo.name, repo.only_packages, repo.gpgkey, repo.gpgcheck) == (
        "copr",
        ("snphost",),
        "/etc/pki/rpm-gpg/copr.gpg",
        True,
    )


@pytest.mark.parametrize("image", ["debian-13", "debian-forky", "fedora-44", "ubuntu-26.04"])
def test_guest_boots_lean(catalog: Catalog, image: str) -> None:
    """Every published guest masks the units it never needs, its gettys too, and boots quietly."""
    guest = spec_of(catalog, image, "guest")
    masked = guest.payload.masked_units
    assert {"getty.target", "getty@.service", "serial-getty@.service"} <= set(masked)
    assert {"ldconfig.service", "systemd-journal-flush.service", "sys-kernel-debug.mount"} <= set(
        masked
    )
    assert guest.payload.transient_machine_id
    assert guest.kernel_command_line[0] == "quiet"
    # nothing the payload starts or the readiness check needs is masked
    needed = {*guest.payload.units, *guest.payload.enable, "sys-kernel-config.mount"}
    needed |= {"systemd-modules-load.service", "systemd-udevd.service", "modprobe@configfs.service"}
    assert needed.isdisjoint(masked)
    assert len(set(masked)) == len(masked)
    host = spec_of(catalog, image, "host")
    assert host.payload.masked_units == () and not host.payload.transient_machine_id
    assert "quiet" not in host.kernel_command_line


def test_a_release_can_drop_the_guest_quiet(workspace: Path) -> None:
    catalog = edit(workspace, "debian-13", "guest:\n  remove_kernel_command_line: [quiet]\n")
    assert spec_of(catalog, "debian-13", "guest").kernel_command_line == (
        "console=ttyS0,115200n8",
        "systemd.firstboot=off",
    )


def _removed(globs: tuple[str, ...], path: str) -> bool:
    """Whether mkosi's RemoveFiles= globs remove `path` (a glob's * stays within a folder)."""
    import re

    def matches(glob: str) -> bool:
        pattern = "".join("[^/]*" if c == "*" else re.escape(c) for c in glob)
        return re.fullmatch(pattern + "(/.*)?", path) is not None

    return any(matches(g) for g in globs)


@pytest.mark.parametrize("image", ["debian-13", "debian-forky"])
def test_a_guest_drops_initramfs_generators_and_disk_tools_but_not_what_it_runs(
    catalog: Catalog, image: str
) -> None:
    removes = spec_of(catalog, image, "guest").remove_files
    multiarch = "/usr/lib/x86_64-linux-gnu"
    for gone in (
        "/usr/bin/dracut",
        "/usr/lib/dracut/modules.d/80base/init.sh",
        "/usr/lib/systemd/system/sysinit.target.wants/dracut-shutdown.service",
        "/etc/systemd/system/multi-user.target.wants/e2scrub_reap.service",
        "/usr/sbin/e2fsck",
        "/usr/sbin/mkfs.ext4",
        f"{multiarch}/libext2fs.so.2.4",
        "/efi/EFI/BOOT/BOOTX64.EFI",
        "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        "/usr/lib/modules/7.2.12+deb14-amd64/config",
        "/usr/sbin/ldconfig",
    ):
        assert _removed(removes, gone), gone
    for kept in (
        "/usr/bin/bash",
        "/usr/bin/udevadm",
        "/usr/bin/kmod",
        "/usr/sbin/modprobe",
        "/usr/lib/systemd/systemd",
        "/usr/lib/systemd/systemd-networkd",
        "/usr/lib/modules/7.2.12+deb14-amd64/modules.builtin",
        "/usr/lib/modules/7.2.12+deb14-amd64/modules.dep.bin",
        "/usr/lib/modules/7.2.12+deb14-amd64/kernel/drivers/virt/coco/sev-guest/sev-guest.ko.xz",
        "/usr/libexec/sevimg/guest-check",
        "/usr/libexec/sevimg/attest-responder",
        "/etc/machine-id",
        f"{multiarch}/libcrypto.so.3",
        f"{multiarch}/libkmod.so.2",
        f"{multiarch}/libc.so.6",
        "/efi",
    ):
        assert not _removed(removes, kept), kept
    # a host keeps its file system tools and boot loader files
    host = spec_of(catalog, image, "host").remove_files
    assert not _removed(host, "/usr/sbin/e2fsck") and not _removed(
        host, "/usr/lib/systemd/boot/efi"
    )
