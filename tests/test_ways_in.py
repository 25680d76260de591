"""Nothing unsafe reaches a published image: refused before rendering, and in the built UKI.

Each class of way in (debug shells and rescue modes on the kernel command
line, login servers, getty autologin, accounts with passwords, SEV or the
IOMMU switched off), each required host module and each unsigned rpm
repository is fed many values: the whole table through the checker itself,
one of each class through the CLI where a user would meet it, and through
the post-build check of a UKI that carries it. Only a debug image may have them.

The second half is the second hostile review (issue 8, classes 1-4): more
command-line ways in, package names as package managers read them (upper
case, virtual names, guest-control agents), login servers brought in as a
component or a family's payload package, getty units and drop-ins as systemd
applies them (aliases, prefix drop-ins, agetty's getopt clusters and
abbreviations), modprobe.d lines that keep an SEV-SNP module from loading,
module rules as the real mkosi reads them, unsigned repositories supplying
the payload, and an image whose UKI opens a way in while its name and
manifest say it is no debug build. Its tables (MORE_*) join the first half's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import zstandard

from sevimg.catalog import payload, security
from sevimg.catalog.index import Catalog, load_catalog
from sevimg.catalog.resolve import resolve
from sevimg.catalog.spec import GUEST_EMBED_PATH, KernelModules
from sevimg.imaging import examine, mkosi
from sevimg.imaging.uki import Uki
from sevimg.problems import SevimgError
from sevimg.release.folder import merge_artifact_folders
from sevimg.render.trees import Renderer
from sevimg.workspace import Workspace
from tests.artifactkit import make_folder
from tests.conftest import REPO, CliFn
from tests.fakes import EXE, FILE, LINK, newc, pe
from tests.test_pam import DEBIAN_COMMON_AUTH, DEBIAN_LOGIN, DEBIAN_OTHER
from tests.test_uki import HOST_PACKAGES, guest_files, host_files, make_uki
from tests.waysinkit import assert_guest_way_in_fails

LOCATED = re.compile(r"^images/[a-z0-9.-]+\.yaml:\d+:\d+: (error|warning): ", re.MULTILINE)

UNSAFE_TOKENS = [
    "systemd.debug_shell",
    "systemd.debug_shell=1",
    "systemd.debug_shell=ttyS0",
    "systemd.debug-shell=/dev/tty9",
    "rd.systemd.debug_shell",
    "rd.break",
    "rd.break=pre-mount",
    "rd.shell",
    "rd.shell=1",
    "init=/bin/sh",
    "init=/bin/bash",
    "rdinit=/bin/sh",
    "single",
    "S",
    "s",
    "1",
    "-b",
    "emergency",
    "rescue",
    "systemd.unit=rescue.target",
    "systemd.unit=emergency.target",
    "rd.systemd.unit=emergency.target",
    "systemd.unit=debug-shell.service",
    "systemd.wants=sshd.service",
    "systemd.wants=ssh.socket",
    "systemd.set_credential=passwd.plaintext-password.root:x",
    "systemd.set_credential=passwd.hashed-password.root:$6$a$b",
    "systemd.set_credential=ssh.authorized_keys.root:ssh-ed25519",
    "systemd.set_credential_binary=ssh.listen:vsock",
    "systemd.ssh_auto",
    "systemd.ssh_auto=yes",
    "systemd.ssh_listen=0.0.0.0:22",
    "mem_encrypt=off",
    "kvm_amd.sev=0",
    "kvm-amd.sev=N",
    "kvm_amd.sev_snp=0",
    "kvm_amd.sev_es=off",
    "amd_iommu=off",
    "iommu=off",
]
WEAKENING_TOKENS = ["mitigations=off", "nokaslr", "nopti", "spectre_v2=off", "nospectre_v2"]
SAFE_TOKENS = [
    "console=ttyS0",
    "console=ttyS0,115200n8",
    "quiet",
    "systemd.debug_shell=0",
    "systemd.debug_shell=no",
    "rd.shell=0",
    "systemd.unit=multi-user.target",
    "systemd.unit=poweroff.target",
    "systemd.wants=systemd-networkd.service",
    "systemd.set_credential=network.hostname:sev",
    "systemd.ssh_auto=no",
    "mem_encrypt=on",
    "kvm_amd.sev=1",
    "iommu=pt",
    "amd_iommu=on",
    "selinux=0",
    "enforcing=0",
    "singleuser",
    "panic=30",
    "loglevel=4",
    "systemd.firstboot=off",
]
UNSAFE_PACKAGES = [
    "openssh-server",
    "openssh-server-gssapi",
    "openssh-sftp-server",
    "ssh",
    "task-ssh-server",
    "dropbear",
    "dropbear-bin",
    "dropbear-run",
    "tinysshd",
    "telnetd",
    "inetutils-telnetd",
    "telnetd-ssl",
    "telnet-server",
    "rsh-server",
    "rsh-redone-server",
    "xinetd",
    "openbsd-inetd",
    "x11vnc",
    "tigervnc-server",
    "tightvncserver",
    "cockpit",
    "cockpit-ws",
    "shellinabox",
    "ttyd",
    "qemu-guest-agent",
    "gdbserver",
]
SAFE_PACKAGES = [
    "openssh-client",
    "libssh-4",
    "telnet",
    "sshfs",
    "ssh-import-id-tools",
    "qemu-system-x86",
    "cockpit-bridge-docs",
    "vim",
]


def with_release(workspace: Path, name: str, append: str) -> Path:
    path = workspace / "images" / f"{name}.yaml"
    path.write_text(path.read_text() + append)
    return path


# --- before rendering -----------------------------------------------------------------


@pytest.mark.parametrize("token", WEAKENING_TOKENS)
def test_weakening_tokens_warn_and_fail_strict(cli: CliFn, workspace: Path, token: str) -> None:
    with_release(workspace, "debian-13", f"common:\n  add_kernel_command_line: ['{token}']\n")
    run = cli("validate", "debian-13")
    assert run.code == 0 and ": warning: " in run.stderr and token in run.stderr
    assert cli("validate", "--strict", "debian-13").code == 1


def test_a_distro_file_is_checked_too(cli: CliFn, workspace: Path) -> None:
    distro = workspace / "images" / "fedora.yaml"
    distro.write_text(distro.read_text() + "kernel_command_line:\n  - rd.break\n")
    run = cli("validate", "fedora-44")
    assert run.code == 1
    assert re.search(r"^images/fedora\.yaml:\d+:\d+: error: .*'rd\.break'", run.stderr, re.M)


def test_a_family_file_is_checked_too(cli: CliFn, workspace: Path) -> None:
    family = workspace / "images" / "families" / "fedora.yaml"
    text = family.read_text()
    assert "kernel_command_line:\n" in text
    family.write_text(
        text.replace("kernel_command_line:\n", "kernel_command_line:\n  - rd.break\n", 1)
    )
    run = cli("validate", "fedora-44")
    assert run.code == 1
    assert re.search(
        r"^images/families/fedora\.yaml:\d+:\d+: error: .*'rd\.break'", run.stderr, re.M
    )


def test_only_a_debug_image_takes_the_debug_section(cli: CliFn, workspace: Path) -> None:
    with_release(
        workspace,
        "debian-13",
        "debug:\n  add_packages: [openssh-server]\n"
        "  add_kernel_command_line: [systemd.debug_shell=ttyS0]\n",
    )
    assert cli("validate", "--strict", "debian-13").code == 0
    out = workspace / "out"
    assert cli("render", "debian-13", "-o", str(out)).code == 0
    published = (out / "host-debian-13" / "mkosi.conf").read_text()
    assert "openssh-server" not in published and "debug_shell" not in published
    assert cli("render", "debian-13", "--debug-image", "-o", str(out)).code == 0
    debug = (out / "host-debian-13-debug" / "mkosi.conf").read_text()
    assert "openssh-server" in debug and "systemd.debug_shell=ttyS0" in debug


def test_a_debug_image_may_carry_what_a_published_one_must_not(workspace: Path) -> None:
    with_release(workspace, "debian-13", "common:\n  add_packages: [openssh-server]\n")
    catalog = load_catalog(Workspace(workspace))
    from sevimg.catalog.pipeline import check_entry

    assert not check_entry(catalog, catalog.entries["debian-13"]).ok
    assert check_entry(catalog, catalog.entries["debian-13"], debug=True).ok


# --- required host modules ------------------------------------------------------------


@pytest.mark.parametrize(
    ("exclude", "lost"),
    [
        ("arch/", "kvm"),
        ("arch/x86/", "kvm-amd"),
        ("arch/x86/kvm/", "kvm"),
        ("kvm-amd", "kvm-amd"),
        ("kvm", "kvm"),
        ("drivers/crypto/", "ccp"),
        ("drivers/crypto/ccp/", "ccp"),
        ("ccp", "ccp"),
        ("msr", "msr"),
        ("arch/x86/kernel/", "msr"),
        ("drivers/net/", "e1000e"),
        ("drivers/net/ethernet/", "ice"),
        ("drivers/net/ethernet/intel/", "igb"),
        ("drivers/net/ethernet/mellanox/", "mlx5_core"),
        ("bnxt_en", "bnxt_en"),
        ("virtio_net", "virtio_net"),
    ],
)
def test_host_cannot_drop_what_snp_needs(
    cli: CliFn, workspace: Path, exclude: str, lost: str
) -> None:
    with_release(workspace, "debian-13", f"host:\n  kernel_modules:\n    exclude: ['{exclude}']\n")
    run = cli("validate", "debian-13")
    assert run.code == 1
    assert f"host.kernel_modules: the host would lose the {lost} module" in run.stderr
    assert LOCATED.search(run.stderr)


@pytest.mark.parametrize("exclude", ["drivers/gpu/", "sound/", "drivers/net/wireless/", "nouveau"])
def test_host_may_drop_what_it_does_not_need(cli: CliFn, workspace: Path, exclude: str) -> None:
    with_release(workspace, "debian-13", f"host:\n  kernel_modules:\n    exclude: ['{exclude}']\n")
    assert cli("validate", "debian-13").code == 0


def test_an_include_keeps_a_module_a_folder_rule_drops(cli: CliFn, workspace: Path) -> None:
    with_release(
        workspace,
        "debian-13",
        "host:\n  kernel_modules:\n    exclude: ['drivers/crypto/']\n    include: [ccp]\n",
    )
    assert cli("validate", "debian-13").code == 0


# --- unsigned rpm repositories -------------------------------------------------------

RPM_REPO = (
    "extra_repositories:\n  - name: extra\n    roles: [host]\n    baseurl: {url}\n"
    "    packages: [{pkg}]\n{more}"
)


def rpm_repo(url: str = "https://example.org/repo/", pkg: str = "vim", more: str = "") -> str:
    return "host:\n  add_packages: [vim]\n" + RPM_REPO.format(url=url, pkg=pkg, more=more)


@pytest.mark.parametrize(
    ("text", "code", "strict_code", "expected"),
    [
        (rpm_repo(), 1, 1, "has no `gpgkey:`"),
        (rpm_repo(url="http://example.org/repo/"), 1, 1, "has no `gpgkey:`"),
        (rpm_repo(more="    gpgcheck: true\n"), 1, 1, "has no `gpgkey:`"),
        (rpm_repo(more="    gpgcheck: false\n"), 0, 1, "is not signature-checked"),
        (rpm_repo(pkg="kernel", more="    gpgcheck: false\n"), 1, 1, "supplies the kernel"),
        (rpm_repo(pkg="edk2-ovmf", more="    gpgcheck: false\n"), 1, 1, "supplies the ovmf"),
        (
            rpm_repo(more="    gpgcheck: false\n    gpgkey: /etc/pki/rpm-gpg/KEY\n"),
            1,
            1,
            "gpgcheck: false with a gpgkey",
        ),
        (
            rpm_repo(url="http://example.org/r/", more="    gpgkey: /etc/pki/rpm-gpg/KEY\n"),
            0,
            1,
            "plain HTTP; prefer https",
        ),
        (rpm_repo(more="    gpgcheck: 'no'\n"), 1, 1, "gpgcheck"),
    ],
)
def test_rpm_repositories_must_be_signed(
    cli: CliFn, workspace: Path, text: str, code: int, strict_code: int, expected: str
) -> None:
    with_release(workspace, "fedora-44", text)
    run = cli("validate", "fedora-44")
    assert run.code == code, run.stderr
    assert expected in run.stderr and LOCATED.search(run.stderr)
    assert cli("validate", "--strict", "fedora-44").code == strict_code


def test_a_signed_repository_renders_gpgcheck(cli: CliFn, workspace: Path) -> None:
    with_release(workspace, "fedora-44", rpm_repo(more="    gpgkey: /etc/pki/rpm-gpg/KEY\n"))
    out = workspace / "out"
    assert cli("render", "fedora-44", "-o", str(out)).code == 0
    repo = next((out / "host-fedora-44").rglob("*.repo")).read_text()
    assert "gpgcheck=1\ngpgkey=file:///etc/pki/rpm-gpg/KEY\n" in repo
    with_release(workspace, "fedora-44", "")
    (workspace / "images/fedora-44.yaml").write_text(
        (workspace / "images/fedora-44.yaml")
        .read_text()
        .replace("    gpgkey: /etc/pki/rpm-gpg/KEY\n", "    gpgcheck: false\n")
    )
    assert cli("render", "fedora-44", "-o", str(out)).code == 0
    repo = next((out / "host-fedora-44").rglob("*.repo")).read_text()
    assert "gpgcheck=0\n" in repo and "gpgkey" not in repo


# --- in the built UKI -----------------------------------------------------------------

WAYS_IN: list[tuple[str, list[tuple[str, int, bytes]], str]] = [
    ("sshd", [("usr/sbin/sshd", EXE, b"\x7fELF")], "/usr/sbin/sshd: the OpenSSH server"),
    ("sbin sshd", [("sbin", LINK, b"usr/sbin"), ("usr/sbin/sshd", EXE, b"")], "OpenSSH"),
    ("sshd-session", [("usr/lib/openssh/sshd-session", EXE, b"")], "OpenSSH"),
    ("dropbear", [("usr/sbin/dropbear", EXE, b"")], "Dropbear"),
    ("telnetd", [("usr/sbin/in.telnetd", EXE, b"")], "telnet"),
    ("qemu-ga", [("usr/bin/qemu-ga", EXE, b"")], "guest agent"),
    (
        "ssh enabled",
        [("etc/systemd/system/multi-user.target.wants/ssh.service", LINK, b"/x")],
        "enables ssh.service",
    ),
    (
        "sshd socket enabled",
        [("etc/systemd/system/sockets.target.wants/sshd.socket", LINK, b"/x")],
        "enables sshd.socket",
    ),
    (
        "vsock sshd enabled",
        [("usr/lib/systemd/system/sockets.target.wants/sshd-vsock.socket", LINK, b"/x")],
        "enables sshd-vsock.socket",
    ),
    (
        "debug shell enabled",
        [("etc/systemd/system/sysinit.target.wants/debug-shell.service", LINK, b"/x")],
        "enables debug-shell.service",
    ),
    (
        "mkosi autologin",
        [
            (
                "usr/lib/systemd/system/serial-getty@ttyS0.service.d/autologin.conf",
                FILE,
                b"[Service]\nExecStart=\nExecStart=-agetty -o '-f -p -- \\\\u' --autologin root --keep-baud 115200,57600 - $TERM\n",
            )
        ],
        "the console getty",
    ),
    (
        "login -f",
        [
            (
                "etc/systemd/system/getty@tty1.service.d/f.conf",
                FILE,
                b"[Service]\nExecStart=\nExecStart=-agetty --login-options='-f root' tty1\n",
            )
        ],
        "skips authentication",
    ),
    (
        "getty -a",
        [
            (
                "etc/systemd/system/getty@tty1.service.d/override.conf",
                FILE,
                b"[Service]\nExecStart=\nExecStart=-/sbin/agetty -a root tty1\n",
            )
        ],
        "(-a)",
    ),
    (
        "console shell",
        [
            (
                "etc/systemd/system/console-getty.service.d/x.conf",
                FILE,
                b"[Service]\nExecStart=-/bin/sh\n",
            )
        ],
        "instead of a login prompt",
    ),
    (
        "replaced serial getty",
        [
            (
                "etc/systemd/system/serial-getty@.service",
                FILE,
                b"[Service]\nExecStart=-/sbin/agetty --skip-login --login-program /bin/bash %I\n",
            )
        ],
        "--skip-login",
    ),
    (
        "rescue default",
        [("etc/systemd/system/default.target", LINK, b"/usr/lib/systemd/system/rescue.target")],
        "default target is rescue.target",
    ),
    (
        "user with password",
        [("etc/passwd", FILE, b"root:*:0:0::/root:/bin/sh\nops:$6$s$h:1000:1000::/h:/bin/sh\n")],
        "ops has a password",
    ),
    (
        "user without password",
        [
            ("etc/passwd", FILE, b"root:x:0:0::/root:/bin/sh\nops:x:1000:1000::/h:/bin/sh\n"),
            ("etc/shadow", FILE, b"root:!:1::::::\nops::1::::::\n"),
        ],
        "ops has an empty password",
    ),
]


HARMLESS = [
    ("usr/lib/systemd/system/debug-shell.service", FILE, b"[Unit]\n"),
    ("usr/bin/ssh", EXE, b""),
    (
        "usr/lib/systemd/system/serial-getty@.service",
        FILE,
        b"ExecStart=-/sbin/agetty -o '-p -- \\\\u' --keep-baud 115200 - $TERM\n",
    ),
    (
        "etc/systemd/system/getty@tty1.service.d/noclear.conf",
        FILE,
        b"[Service]\nTTYVTDisallocate=no\n",
    ),
    (
        "etc/systemd/system/serial-getty@ttyS0.service.d/baud.conf",
        FILE,
        b"[Service]\nExecStart=\nExecStart=-/sbin/agetty -o '-p -- \\\\u' --keep-baud 115200 %I\n",
    ),
    ("etc/systemd/system/default.target", LINK, b"/usr/lib/systemd/system/multi-user.target"),
    ("etc/shadow", FILE, b"root:!*:1::::::\nsystemd-network:!:1::::::\n"),
    ("usr/lib/systemd/system/multi-user.target.wants/getty.target", LINK, b"../getty.target"),
]


def test_a_clean_image_passes(catalog: Catalog) -> None:
    spec = resolve(catalog.entries["debian-13"], "guest")
    uki = make_uki(guest_files() + HARMLESS)
    assert examine.check(spec, uki, {"systemd-boot-efi": "257"}).errors == ()


@pytest.mark.parametrize("token", UNSAFE_TOKENS)
def test_unsafe_cmdline_in_the_uki_fails(catalog: Catalog, token: str) -> None:
    spec = resolve(catalog.entries["debian-13"], "guest")
    uki = make_uki(guest_files())
    uki = type(uki)(
        uki.path, uki.linux, uki.initrd, f"console=ttyS0 {token} quiet", uki.uname, uki.osrel
    )
    found = examine.check(spec, uki, {"systemd-boot-efi": "257"})
    assert any(f"the UKI's .cmdline has {token!r}" in e for e in found.errors), found.errors


@pytest.mark.parametrize("module", [*payload.HOST_REQUIRED_MODULES])
def test_built_host_without_an_snp_module_fails(catalog: Catalog, module: str) -> None:
    spec = resolve(catalog.entries["debian-13"], "host")
    guest = b"guest uki"
    files = [
        f for f in host_files(guest) if f"/{payload.HOST_REQUIRED_MODULES[module]}.ko" not in f[0]
    ]
    found = examine.check(spec, make_uki(files), HOST_PACKAGES, hashlib.sha256(guest).hexdigest())
    assert found.errors == (
        f"host module {module} ({payload.HOST_REQUIRED_MODULES[module]}) is missing",
    )


def test_built_host_without_nics(catalog: Catalog) -> None:
    spec = resolve(catalog.entries["debian-13"], "host")
    guest = b"guest uki"
    sha = hashlib.sha256(guest).hexdigest()
    some = [f for f in host_files(guest) if "/drivers/net/ethernet/intel/" not in f[0]]
    found = examine.check(spec, make_uki(some), HOST_PACKAGES, sha)
    assert found.errors == () and any("e1000e" in w for w in found.warnings)
    none = [f for f in host_files(guest) if "/drivers/net/" not in f[0]]
    found = examine.check(spec, make_uki(none), HOST_PACKAGES, sha)
    assert any("none of the NIC drivers" in e for e in found.errors)


def test_builtin_modules_count(catalog: Catalog) -> None:
    spec = resolve(catalog.entries["debian-13"], "host")
    guest = b"guest uki"
    kver = "6.12.119+deb13-amd64"
    files = [f for f in host_files(guest) if "/kernel/arch/x86/kvm/" not in f[0]]
    files.append(
        (
            f"usr/lib/modules/{kver}/modules.builtin",
            FILE,
            b"kernel/arch/x86/kvm/kvm.ko\nkernel/arch/x86/kvm/kvm-amd.ko\n",
        )
    )
    found = examine.check(spec, make_uki(files), HOST_PACKAGES, hashlib.sha256(guest).hexdigest())
    assert found.errors == ()


# --- class 1: before rendering -----------------------------------------------------

MORE_UNSAFE_TOKENS = [
    "systemd.run=/bin/sh",
    "systemd.run=agetty",
    "rd.systemd.run=/bin/sh",
    "systemd.crash_shell",
    "systemd.crash_shell=1",
    "systemd.crash-shell=yes",
    "rd.systemd.crash_shell",
    "systemd.confirm_spawn=1",
    "systemd.confirm_spawn=/dev/ttyS0",
    "break",
    "break=premount",
    "rdbreak",
    "rdshell",
    "systemd.unit=rescue.service",
    "systemd.unit=emergency.service",
    "systemd.unit=kbrequest.target",
    "systemd.unit=runlevel1.target",
    "rd.systemd.set_credential_binary=passwd.hashed-password.root:JDYk",
    "systemd.wants=emergency.service",
    "rd.systemd.wants=rescue.service",
    "systemd.setenv=SYSTEMD_SULOGIN_FORCE=1",
    "rd.systemd.setenv=SYSTEMD_SULOGIN_FORCE=1",
    "systemd.setenv=LD_PRELOAD=/tmp/x.so",
    "systemd.set_credential=tmpfiles.extra:f",
    "systemd.set_credential=sysusers.extra:u",
    "systemd.set_credential=systemd.extra-unit.x.service:y",
    "systemd.set_credential=systemd.unit-dropin.getty@.service:y",
    "rd.systemd.set_credential=tmpfiles.extra:f",
    "modprobe.blacklist=kvm_amd",
    "modprobe.blacklist=nouveau,kvm",
    "modprobe.blacklist=kvm-amd",
    "module_blacklist=ccp",
    "rd.driver.blacklist=sev-guest",
    "modprobe.blacklist=tsm_report",
    "module_blacklist=msr",
    "kvm_amd.npt=0",
    "kvm-amd.npt=N",
    "rd.shell=OFF",
    "rd.shell=No",
]
MORE_SAFE_TOKENS = [
    "modprobe.blacklist=nouveau",
    "module_blacklist=floppy,pcspkr",
    "systemd.setenv=TERM=vt100",
    "systemd.crash_shell=0",
    "systemd.confirm_spawn=no",
    "systemd.set_credential=firstboot.locale:C",
    "kvm_amd.npt=1",
    "systemd.unit=graphical.target",
    "breakpoint",
    "rd.emergency=reboot",
]


@pytest.mark.parametrize("token", ["initcall_blacklist=svm_init", "initcall_blacklist=sp_mod_init"])
def test_skipped_initcalls_warn_and_fail_strict(cli: CliFn, workspace: Path, token: str) -> None:
    with_release(workspace, "debian-13", f"host:\n  add_kernel_command_line: ['{token}']\n")
    run = cli("validate", "debian-13")
    assert run.code == 0 and ": warning: host.add_kernel_command_line[0]: " in run.stderr
    assert cli("validate", "--strict", "debian-13").code == 1


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('"init=/bin/sh"', ["init=/bin/sh"]),
        ('init="/bin/sh -i" quiet', ["init=/bin/sh -i", "quiet"]),
        ("'single'", ["single"]),
        ("a\tb\n c", ["a", "b", "c"]),
        ('systemd.run="/bin/sh"', ["systemd.run=/bin/sh"]),
        ('""', [""]),
    ],
)
def test_the_command_line_is_split_as_the_kernel_and_systemd_split_it(
    text: str, words: list[str]
) -> None:
    assert security.split_command_line(text) == words


MORE_UNSAFE_PACKAGES = [
    "OpenSSH-Server",
    "OPENSSH-SERVER",
    "Dropbear",
    "openssh",
    "ssh-server",
    "sshd",
    "lsh-server",
    "rlinetd",
    "tigervnc-standalone-server",
    "tigervnc-scraping-server",
    "xrdp",
    "gnome-remote-desktop",
    "wayvnc",
    "gotty",
    "cloud-init",
    "open-vm-tools",
    "virtualbox-guest-utils",
    "WALinuxAgent",
    "krb5-rsh-server",
]
MORE_SAFE_PACKAGES = [
    "libvncserver1",
    "openssh-clients",
    "busybox",
    "cloud-utils",
    "python3-sshtunnel",
    "libstdc++6",
    "g++",
    "python3.12",
    "systemd+",
]
# apt-get install reads these as "install" (a trailing +) or as a regular expression
# when no package has the name: apt 2.6 installs the server each time (apt-get -s).
APT_EXPRESSIONS = [
    ("openssh-server+", "the OpenSSH server"),
    ("dropbear+", "Dropbear"),
    ("openssh.server", "matches openssh-server"),
    ("tinyss.d", "matches tinysshd"),
    ("cockpit.ws", "matches cockpit-ws"),
    ("x11vn.", "matches x11vnc"),
    ("ssh.", "matches openssh-server"),
    ("cloud.init", "matches cloud-init"),
]


@pytest.mark.parametrize(("name", "expected"), APT_EXPRESSIONS)
def test_package_names_apt_reads_as_expressions_are_refused(
    cli: CliFn, workspace: Path, name: str, expected: str
) -> None:
    release = with_release(workspace, "debian-13", f"guest:\n  add_packages: ['{name}']\n")
    lineno = len(release.read_text().splitlines())
    run = cli("validate", "debian-13")
    assert run.code == 1 and "Traceback" not in run.output
    assert re.search(
        rf"^images/debian-13\.yaml:{lineno}:\d+: error: guest\.add_packages\[0\]: "
        rf"package '{re.escape(name)}' is .*{re.escape(expected)}",
        run.stderr,
        re.MULTILINE,
    ), run.stderr


@pytest.mark.parametrize(
    ("file", "old", "new", "located"),
    [
        (
            "images/families/debian.yaml",
            "  jq: jq\n",
            "  jq: openssh-server\n",
            r"images/families/debian\.yaml:\d+:\d+: error: payload\.jq: package 'openssh-server'",
        ),
        (
            "images/debian.yaml",
            "  qemu: qemu-system-x86\n",
            "  qemu: dropbear\n",
            r"images/debian\.yaml:\d+:\d+: error: host\.qemu: package 'dropbear'",
        ),
        (
            "images/debian-13.yaml",
            None,
            "host:\n  qemu: tinysshd\n",
            r"images/debian-13\.yaml:\d+:\d+: error: host\.qemu: package 'tinysshd'",
        ),
    ],
)
def test_a_login_server_as_a_component_or_payload_package_is_located(
    cli: CliFn, workspace: Path, file: str, old: str | None, new: str, located: str
) -> None:
    path = workspace / file
    text = path.read_text()
    assert old is None or old in text
    path.write_text(text.replace(old, new, 1) if old else text + new)
    run = cli("validate", "debian-13")
    assert run.code == 1 and re.search(located, run.stderr), run.stderr


# --- class 1: in the built image ---------------------------------------------------

AGETTY = "[Service]\nExecStart=\nExecStart=-/sbin/agetty {} %I $TERM\n"
SHELL_ON_TTY = b"[Service]\nStandardInput=tty\nTTYPath=/dev/ttyS0\nExecStartPre=/bin/sh\n"


def enabled(
    name: str, file: str | None = None, body: bytes = b"[Service]\nExecStart=/usr/bin/true\n"
) -> list[tuple[str, int, bytes]]:
    """A unit (`file`, a template say) in /usr/lib, linked from multi-user.target.wants as `name`."""
    where = f"usr/lib/systemd/system/{file or name}"
    return [
        (where, FILE, body),
        (f"etc/systemd/system/multi-user.target.wants/{name}", LINK, f"/{where}".encode()),
    ]


# fmt: off
MORE_WAYS_IN: list[tuple[str, list[tuple[str, int, bytes]], str]] = [
    *(
        (
            f"agetty {args}",
            [
                (
                    "etc/systemd/system/serial-getty@.service.d/x.conf",
                    FILE,
                    AGETTY.format(args).encode(),
                )
            ],
            "without a password",
        )
        for args in [
            "-aroot",
            "-Jia root",
            "-8a root",
            "--auto=root",
            "--autolog root",
            "--skip-l",
            "-n -l /bin/sh",
            "-l/bin/bash",
            "--login-prog /bin/sh",
            "-Ln",
        ]
    ),
    *(
        (
            f"login {args}",
            [("etc/systemd/system/getty@.service.d/x.conf", FILE, AGETTY.format(args).encode())],
            "skips authentication",
        )
        for args in [
            "-o '-pf root'",
            "-o-f",
            "--login-o='-p -f root'",
            "--login-options '-fp -- root'",
        ]
    ),
    *(
        (
            f"drop-in {folder}",
            [(f"{folder}/x.conf", FILE, AGETTY.format("--autologin root").encode())],
            "without a password",
        )
        for folder in [
            "etc/systemd/system/autovt@.service.d",
            "etc/systemd/system/autovt@tty1.service.d",
            "etc/systemd/system/serial-.service.d",
            "etc/systemd/system/container-.service.d",
            "etc/systemd/system/service.d",
            "usr/lib/systemd/system/getty@.service.d",
            "usr/local/lib/systemd/system/serial-getty@ttyS0.service.d",
            "etc/systemd/system.control/serial-getty@ttyS0.service.d",
        ]
    ),
    (
        "packaged getty unit changed",
        [
            (
                "usr/lib/systemd/system/serial-getty@.service",
                FILE,
                b"[Service]\nExecStart=-/sbin/agetty -a root %I\n",
            )
        ],
        "(-a)",
    ),
    (
        "alias of sshd enabled",
        [
            ("etc/systemd/system/harmless.service", LINK, b"/usr/lib/systemd/system/sshd.service"),
            (
                "etc/systemd/system/multi-user.target.wants/harmless.service",
                LINK,
                b"../harmless.service",
            ),
        ],
        "sshd.service",
    ),
    (
        "wants link to debug-shell",
        [
            (
                "etc/systemd/system/sysinit.target.wants/early.service",
                LINK,
                b"/usr/lib/systemd/system/debug-shell.service",
            )
        ],
        "debug-shell.service",
    ),
    (
        "rescue target wanted",
        [("etc/systemd/system/multi-user.target.wants/rescue.target", LINK, b"/x")],
        "rescue.target",
    ),
    (
        "emergency service wanted",
        [("usr/lib/systemd/system/sysinit.target.wants/emergency.service", LINK, b"/x")],
        "emergency.service",
    ),
    (
        "packaged default target",
        [("usr/lib/systemd/system/default.target", LINK, b"rescue.target")],
        "default target is rescue.target",
    ),
    ("sshd in /usr/local", [("usr/local/sbin/sshd", EXE, b"")], "/usr/local/sbin/sshd"),
    ("xrdp", [("usr/sbin/xrdp", EXE, b"")], "remote-desktop"),
    ("cloud-init", [("usr/bin/cloud-init", EXE, b"")], "cloud-init"),
    ("vmtoolsd", [("usr/bin/vmtoolsd", EXE, b"")], "VMware"),
    (
        "getty linked to debug-shell",
        [
            (
                "etc/systemd/system/serial-getty@.service",
                LINK,
                b"/usr/lib/systemd/system/debug-shell.service",
            )
        ],
        "the console getty is debug-shell.service",
    ),
    (
        "a shell on a terminal, on a continued line",
        [
            (
                "etc/systemd/system/console-helper.service",
                FILE,
                b"[Service]\nStandardInput=tty\nExecStart=\\\n# a comment between\n  /bin/sh -l\n",
            ),
            (
                "etc/systemd/system/multi-user.target.wants/console-helper.service",
                LINK,
                b"../console-helper.service",
            ),
        ],
        "runs sh on a terminal",
    ),
    (
        "agetty autologin on a continued line",
        [
            (
                "etc/systemd/system/serial-getty@.service.d/x.conf",
                FILE,
                b"[Service]\nExecStart=\nExecStart=-/sbin/agetty \\\n    --autologin root %I $TERM\n",
            )
        ],
        "logs in without a password",
    ),
    (
        "a shell on a terminal, under another name",
        [
            (
                "etc/systemd/system/console-helper.service",
                FILE,
                b"[Service]\nStandardInput=tty-force\nTTYPath=/dev/ttyS0\nExecStart=/bin/bash -l\n",
            ),
            (
                "etc/systemd/system/multi-user.target.wants/console-helper.service",
                LINK,
                b"../console-helper.service",
            ),
        ],
        "runs bash on a terminal",
    ),
    (
        "sshd under another name",
        [
            (
                "usr/lib/systemd/system/remote.service",
                FILE,
                b"[Service]\nExecStart=/usr/sbin/sshd -D\n",
            ),
            (
                "etc/systemd/system/multi-user.target.wants/remote.service",
                LINK,
                b"/usr/lib/systemd/system/remote.service",
            ),
        ],
        "starts the OpenSSH server",
    ),
    (
        "busybox telnetd",
        [("usr/bin/busybox", EXE, b""), ("usr/sbin/telnetd", LINK, b"../bin/busybox")],
        "telnet",
    ),
    *(
        (f"a drop-in in {folder}", [*enabled("systemd-networkd.service"), (f"etc/systemd/system/{folder}/x.conf", FILE, SHELL_ON_TTY)], "which runs sh on a terminal")
        for folder in ("systemd-networkd.service.d", "systemd-.service.d", "service.d")
    ),
    (
        "a drop-in of the template, for an instance",
        [*enabled("worker@one.service", "worker@.service"), ("usr/lib/systemd/system/worker@.service.d/x.conf", FILE, SHELL_ON_TTY)],
        "enables worker@one.service, which runs sh on a terminal",
    ),
    (
        "a socket with Accept=yes and a shell on it",
        [
            *enabled("shell.socket", body=b"[Socket]\nListenStream=2323\nAccept=yes\n"),
            ("etc/systemd/system/shell@.service", FILE, b"[Service]\nStandardInput=socket\nExecStart=-/bin/sh -i\n"),
        ],
        "enables shell.socket, whose shell@.service runs sh on a network socket",
    ),
    (
        "a socket naming its service",
        [
            *enabled("x.socket", body=b"[Socket]\nListenStream=23\nService=innocent.service\n"),
            ("usr/lib/systemd/system/innocent.service", FILE, b"[Service]\nStandardInput=socket:x\nExecStart=/usr/bin/bash\n"),
        ],
        "whose innocent.service runs bash on a network socket",
    ),
    (
        "a socket's Accept=yes in a drop-in",
        [
            *enabled("y.socket", body=b"[Socket]\nListenStream=23\n"),
            ("etc/systemd/system/y.socket.d/a.conf", FILE, b"[Socket]\nAccept=true\n"),
            ("etc/systemd/system/y@.service", FILE, b"[Service]\nStandardInput=socket\nExecStart=/bin/login\n"),
        ],
        "whose y@.service runs login on a network socket",
    ),
    *(
        (command, enabled("bind.service", body=f"[Service]\nExecStart={command}\n".encode()), expected)
        for command, expected in [
            ("/usr/bin/socat TCP-LISTEN:4444,fork EXEC:/bin/bash,pty,stderr", "EXEC: or SYSTEM:"),
            ("socat tcp-l:1,fork system:'bash -li'", "EXEC: or SYSTEM:"),
            ('/usr/bin/ncat -lk 4444 --sh-exec "bash -i"', "runs ncat with a program"),
            ("/bin/nc.traditional -lp 23 -e /bin/sh", "runs nc.traditional with a program"),
            ("/bin/nc -lvpe /bin/sh 23", "runs nc with a program"),
            ("/bin/busybox nc -ll -p 23 -e /bin/sh", "runs nc with a program"),
            ("/bin/sh -c 'exec socat TCP-LISTEN:1,fork EXEC:sh'", "EXEC: or SYSTEM:"),
            ("/bin/bash -c \"/usr/sbin/sshd -D\"", "starts the OpenSSH server"),
            ("/bin/sh -c \"sh -c 'ncat -l 1 -e /bin/sh'\"", "runs ncat with a program"),
        ]
    ),
]

# fmt: on


LOOKALIKES = [
    ("etc/systemd/system/service.d/limits.conf", FILE, b"[Service]\nLimitNOFILE=4096\n"),
    (
        "usr/lib/systemd/system/serial-getty@.service",
        FILE,
        b"[Service]\nExecStart=-/sbin/agetty -o '-p -- \\\\u' --keep-baud 115200,57600 - $TERM\n",
    ),
    (
        "usr/lib/systemd/system/getty@.service",
        FILE,
        b"[Service]\nExecStart=-/sbin/agetty -o '-- \\\\u' --noreset --noclear - ${TERM}\n",
    ),
    (
        "etc/systemd/system/getty@tty1.service.d/x.conf",
        FILE,
        b"[Service]\nExecStart=\nExecStart=-/sbin/agetty -8 -L -J --nohints -t 60 -I ab %I\n",
    ),
    (
        "etc/systemd/system/getty.target.wants/getty@tty1.service",
        LINK,
        b"/usr/lib/systemd/system/getty@.service",
    ),
    ("usr/lib/systemd/system/rescue.target", FILE, b"[Unit]\n"),
    (
        "usr/lib/modprobe.d/fbdev-blacklist.conf",
        FILE,
        b"blacklist nouveau\nblacklist fbcon # kvm\n",
    ),
    ("etc/modprobe.d/kvm.conf", FILE, b"options kvm_amd sev_snp=1 nested=0\n"),
    # netcat that runs nothing, a shell with no terminal, a socket that serves no shell
    *enabled("probe.service", body=b"[Service]\nExecStart=/bin/nc -zvw3 10.0.2.2 80\n"),
    *enabled("note.service", body=b"[Service]\nExecStart=/bin/sh -c 'echo ready > /dev/kmsg'\n"),
    *enabled("echo.socket", body=b"[Socket]\nListenStream=7\nAccept=yes\n"),
    (
        "usr/lib/systemd/system/echo@.service",
        FILE,
        b"[Service]\nStandardInput=socket\nExecStart=/usr/bin/cat\n",
    ),
    (
        "etc/systemd/system/note.service.d/tty.conf",
        FILE,
        b"[Service]\nStandardOutput=tty\nTTYPath=/dev/ttyS0\n",
    ),
    # Debian's own PAM stack: pam_permit is there, after pam_deny (tests/test_pam.py)
    ("etc/pam.d/common-auth", FILE, DEBIAN_COMMON_AUTH),
    ("etc/pam.d/login", FILE, DEBIAN_LOGIN),
    ("etc/pam.d/other", FILE, DEBIAN_OTHER),
]


def test_a_clean_image_with_lookalikes_passes(catalog: Catalog) -> None:
    spec = resolve(catalog.entries["debian-13"], "guest")
    uki = make_uki(guest_files() + LOOKALIKES)
    assert examine.check(spec, uki, {"systemd-boot-efi": "257"}).errors == ()


def with_cmdline(uki: Uki, cmdline: str) -> Uki:
    return Uki(uki.path, uki.linux, uki.initrd, cmdline, uki.uname, uki.osrel)


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ('console=ttyS0 "init=/bin/sh" systemd.firstboot=off', "'init=/bin/sh'"),
        ("console=ttyS0 'single' systemd.firstboot=off", "'single'"),
        ('systemd.run="/bin/sh -i" systemd.firstboot=off', "'systemd.run=/bin/sh -i'"),
        ("console=ttyS0", "systemd.firstboot=off"),
        ("systemd.firstboot=off systemd.firstboot=1", "systemd.firstboot=off"),
    ],
)
def test_the_uki_cmdline_is_read_as_the_kernel_reads_it(
    catalog: Catalog, cmdline: str, expected: str
) -> None:
    spec = resolve(catalog.entries["debian-13"], "guest")
    firstboot = ("usr/lib/systemd/system/systemd-firstboot.service", FILE, b"[Unit]\n")
    uki = with_cmdline(make_uki([*guest_files(), firstboot]), cmdline)
    found = examine.check(spec, uki, {"systemd-boot-efi": "257"})
    assert any(expected in e for e in found.errors), found.errors
    clean = with_cmdline(uki, "console=ttyS0 systemd.firstboot=off")
    assert examine.check(spec, clean, {"systemd-boot-efi": "257"}).errors == ()


# --- class 3: required host modules ------------------------------------------------

BLOCKING = [
    "blacklist kvm_amd",
    "blacklist kvm-amd",
    "  blacklist   ccp  ",
    "install kvm /bin/false",
    "install msr /bin/true",
    "options kvm_amd sev_snp=0",
    "options kvm-amd nested=1 sev=N",
    "options kvm_amd npt=off",
]


@pytest.mark.parametrize("line", BLOCKING)
@pytest.mark.parametrize("folder", ["etc/modprobe.d", "usr/lib/modprobe.d", "lib/modprobe.d"])
def test_a_built_host_that_blocks_an_snp_module_fails(
    catalog: Catalog, line: str, folder: str
) -> None:
    spec = resolve(catalog.entries["debian-13"], "host")
    guest = b"guest uki"
    sha = hashlib.sha256(guest).hexdigest()
    files = [*host_files(guest), (f"{folder}/x.conf", FILE, f"# x\n{line}\n".encode())]
    found = examine.check(spec, make_uki(files), HOST_PACKAGES, sha)
    assert any(e.startswith(f"/{folder}/x.conf:2: `{line.strip()}`") for e in found.errors), (
        found.errors
    )
    assert examine.check(spec, make_uki(host_files(guest)), HOST_PACKAGES, sha).errors == ()


MODULE_RULES = [
    ("kvm_amd", "kvm-amd"),
    ("mlx5-core", "mlx5_core"),
    ("virtio-net", "virtio_net"),
    ("bnxt-en", "bnxt_en"),
    ("kernel/", "kvm"),
    ("kernel/arch/", "kvm-amd"),
    ("kernel/arch/x86/kvm/", "kvm"),
    ("kernel/drivers/crypto/", "ccp"),
    ("kernel/arch/x86/kernel/", "msr"),
]


@pytest.mark.parametrize(("exclude", "lost"), MODULE_RULES)
def test_module_rules_that_drop_an_snp_module_under_some_mkosi_are_refused(
    cli: CliFn, workspace: Path, exclude: str, lost: str
) -> None:
    release = with_release(
        workspace, "debian-13", f"host:\n  kernel_modules:\n    exclude: ['{exclude}']\n"
    )
    run = cli("validate", "debian-13")
    assert run.code == 1 and "Traceback" not in run.output
    assert re.search(
        rf"^images/debian-13\.yaml:\d+:\d+: error: host\.kernel_modules: the host would lose "
        rf"the {re.escape(lost)} module",
        run.stderr,
        re.MULTILINE,
    ), run.stderr
    out = workspace / "out"
    assert cli("render", "debian-13", "-o", str(out)).code == 1 and not out.exists()
    assert release.exists()


# Every exclude above and some that drop nothing SEV-SNP needs.
ALL_RULES = [e for e, _ in MODULE_RULES] + ["x86/", "crypto/", "drivers/gpu/", "nouveau", "kvm"]
KVER = "6.12.0-1-amd64"
_MKOSI_FILTER = """
import json, sys
from pathlib import Path
from mkosi import kmod
root, kver, include, exclude = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
kept = kmod.filter_kernel_modules(Path(root), kver, include=include, exclude=exclude)
print(json.dumps([str(k) for k in kept]))
"""


@pytest.mark.mkosi
@pytest.mark.parametrize("version", ["25.3", "27.1"])
def test_the_policy_never_keeps_what_the_real_mkosi_drops(tmp_path: Path, version: str) -> None:
    found = mkosi.find(Workspace(REPO).cache_dir, version)
    if found is None:
        pytest.fail(f"mkosi {version} is not installed: run tools/install-mkosi {version}")
    dist = found.path.resolve().parent.parent / "usr" / "lib" / "python3" / "dist-packages"
    modules = payload.REQUIRED_MODULES["host"]
    tree = tmp_path / "usr" / "lib" / "modules" / KVER / "kernel"
    for path in modules.values():
        (tree / f"{path}.ko.xz").parent.mkdir(parents=True, exist_ok=True)
        (tree / f"{path}.ko.xz").write_bytes(b"")
    renderer = Renderer([], version)
    disagreements = []
    for entry in ALL_RULES:
        rules = KernelModules(keep_all=True, exclude=(entry,), include=())
        settings = dict(renderer.kernel_module_settings(rules))
        if version == "25.3":
            include = settings.get("KernelModulesInclude", [])
            exclude = settings.get("KernelModulesExclude", [])
        else:  # mkosi 26+ passes KernelModules= globs as includes, '-' ones excluding
            include, exclude = settings.get("KernelModules", []), []
        run = subprocess.run(
            [
                "python3",
                "-c",
                _MKOSI_FILTER,
                str(tmp_path),
                KVER,
                json.dumps(include),
                json.dumps(exclude),
            ],
            env={**os.environ, "PYTHONPATH": str(dist)},
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        kept = " ".join(json.loads(run.stdout.splitlines()[-1]))
        for name, path in modules.items():
            mkosi_keeps = path.rsplit("/", 1)[-1] in kept.replace("_", "-") or path.rsplit("/", 1)[
                -1
            ].replace("_", "-") in kept.replace("_", "-")
            if not mkosi_keeps and payload.module_kept(rules, path):
                disagreements.append((entry, name))
    assert disagreements == []


# --- class 4: unsigned repositories ------------------------------------------------


@pytest.mark.parametrize("package", ["python3-cryptography", "systemd", "jq", "openssl"])
def test_an_unsigned_repository_may_not_supply_the_payload(
    cli: CliFn, workspace: Path, package: str
) -> None:
    with_release(
        workspace,
        "fedora-44",
        f"host:\n  add_packages: [vim]\nextra_repositories:\n  - name: extra\n    roles: [host]\n"
        f"    baseurl: https://example.org/repo/\n    gpgcheck: false\n    packages: [{package}]\n",
    )
    run = cli("validate", "fedora-44")
    assert run.code == 1
    assert re.search(
        r"^images/fedora-44\.yaml:\d+:\d+: error: extra_repositories\[0\]\.gpgcheck: 'extra' is "
        r"not signature-checked but supplies the",
        run.stderr,
        re.MULTILINE,
    ), run.stderr


# --- class 2: a UKI that says what its name and manifest do not --------------------


def real_uki(cmdline: str, files: list[tuple[str, int, bytes]]) -> bytes:
    initrd = zstandard.ZstdCompressor().compress(newc(files))
    return pe([(".linux", b"kernel"), (".cmdline", cmdline.encode()), (".initrd", initrd)])


GETTY_AUTOLOGIN = (
    "etc/systemd/system/serial-getty@.service.d/autologin.conf",
    FILE,
    b"[Service]\nExecStart=\nExecStart=-agetty --autologin root %I\n",
)
LYING = [
    (
        "cmdline",
        "guest",
        "console=ttyS0 systemd.debug_shell",
        [],
        ".cmdline has 'systemd.debug_shell'",
    ),
    ("quoted", "guest", 'console=ttyS0 "init=/bin/sh"', [], ".cmdline has 'init=/bin/sh'"),
    ("autologin", "guest", "console=ttyS0", [GETTY_AUTOLOGIN], "logs in without a password"),
    ("sshd", "host", "console=ttyS0", [("usr/sbin/sshd", EXE, b"")], "OpenSSH"),
    ("embedded", "host", "console=ttyS0", [], "its guest /usr/"),
    ("efi-program", "host", "", [], "an EFI program but not a unified kernel image"),
    ("embedded-efi-program", "host", "console=ttyS0", [], "guest.efi: it is an EFI program"),
]


@pytest.mark.parametrize(
    ("case", "role", "cmdline", "files", "expected"), LYING, ids=[c[0] for c in LYING]
)
def test_an_image_whose_uki_opens_a_way_in_is_not_merged(
    tmp_path: Path,
    case: str,
    role: str,
    cmdline: str,
    files: list[tuple[str, int, bytes]],
    expected: str,
) -> None:
    content = real_uki(cmdline, files)
    if case == "embedded":
        content = real_uki(cmdline, [(GUEST_EMBED_PATH, FILE, real_uki("systemd.debug_shell", []))])
    if case == "efi-program":  # a UEFI shell, say: a PE with code and no .linux
        content = pe([(".text", b"\xc3" * 64), (".data", b"shell")])
    if case == "embedded-efi-program":
        guest = pe([(".text", b"\xc3" * 64)])
        content = real_uki(cmdline, [(GUEST_EMBED_PATH, FILE, guest)])
    # names and manifests of a release build: debug nowhere but in the UKI
    folder = make_folder(tmp_path / "out", content={f"{role}-debian-13": content})
    target = folder / f"{role}-debian-13.efi"
    dest = tmp_path / "merged"
    with pytest.raises(SevimgError) as caught:
        merge_artifact_folders([folder], dest)
    text = "\n".join(map(str, caught.value.problems))
    assert f"{role}-debian-13.efi: error: a debug image (its UKI opens a way in" in text
    assert expected in text, text
    assert not dest.exists() or not any(dest.iterdir())
    merge_artifact_folders([folder], dest, allow_debug=True)
    assert (dest / target.name).read_bytes() == content


# --- class 1: a workspace's own templates ------------------------------------------

TEMPLATE_OVERRIDES = [
    ("mkosi.conf.j2", "Autologin={{ bool(spec.autologin) }}", "Autologin=yes", "Autologin=yes"),
    ("mkosi.conf.j2", "Autologin={{ bool(spec.autologin) }}", "autologin=true", "autologin=true"),
    (
        "mkosi.conf.j2",
        "Autologin={{ bool(spec.autologin) }}",
        "RootPassword=hunter2",
        "RootPassword=",
    ),
    ("mkosi.conf.j2", "Autologin={{ bool(spec.autologin) }}", "Ssh=yes", "Ssh=yes"),
    (
        "mkosi.conf.j2",
        'KernelCommandLine={{ spec.kernel_command_line | join(" ") }}',
        'KernelCommandLine={{ spec.kernel_command_line | join(" ") }} "init=/bin/sh"',
        "'init=/bin/sh'",
    ),
    (
        "mkosi.conf.j2",
        'KernelCommandLine={{ spec.kernel_command_line | join(" ") }}',
        'KernelCommandLine={{ spec.kernel_command_line | join(" ") }}\nKernelCommandLineExtra=rd.break',
        "'rd.break'",
    ),
    ("mkosi.conf.j2", "Packages=\n", "Packages=\n        dropbear\n", "dropbear"),
    ("payload/sevimg.preset.j2", "", "enable ssh.socket\n", "a preset enables ssh.socket"),
    ("payload/sevimg.preset.j2", "", "enable debug-shell.service\n", "debug-shell.service"),
    (
        "payload/host/sevimg-host-check.service.j2",
        "[Service]\n",
        "[Service]\nStandardInput=tty\nExecStart=\nExecStart=/bin/sh\n",
        "runs sh on a terminal",
    ),
    (
        "payload/guest/sevimg-guest-check.service.j2",
        "[Service]\n",
        "[Service]\nExecStartPre=/usr/sbin/sshd\n",
        "starts the OpenSSH server",
    ),
]


@pytest.mark.parametrize(("template", "old", "new", "expected"), TEMPLATE_OVERRIDES)
def test_a_workspace_template_that_opens_a_way_in_renders_nothing(
    cli: CliFn, workspace: Path, template: str, old: str, new: str, expected: str
) -> None:
    packaged = (REPO / "templates" / template).read_text()
    assert old in packaged, old
    override = workspace / "templates" / template
    override.parent.mkdir(parents=True, exist_ok=True)
    override.write_text(packaged.replace(old, new, 1) if old else packaged + new)
    out = workspace / "out"
    run = cli("render", "debian-13", "-o", str(out))
    assert run.code == 1 and "Traceback" not in run.output
    assert re.search(
        rf"^{re.escape(str(override))}: error: .*{re.escape(expected)}", run.stderr, re.M
    ), run.stderr
    assert not out.exists()
    assert cli("render", "debian-13", "--debug-image", "-o", str(workspace / "debug")).code == 0
    build = cli("build", "debian-13", "--mkosi-version", "25.3")
    assert build.code == 1 and "the rendered tree opens a way in" in build.stderr, build.output
    assert not (workspace / "out").exists() and not (workspace / "build").exists()


def test_serve_refuses_a_host_whose_embedded_guest_opens_a_way_in(tmp_path: Path) -> None:
    from sevimg.serve.files import load_jobs

    guest = real_uki("console=ttyS0 rd.break", [])
    host = real_uki("console=ttyS0", [(GUEST_EMBED_PATH, FILE, guest)])
    folder = make_folder(tmp_path / "out", content={"host-debian-13": host})
    with pytest.raises(SevimgError) as caught:
        load_jobs(folder)
    text = "\n".join(map(str, caught.value.problems))
    assert "host-debian-13.efi: error: a debug image (its UKI opens a way in" in text, text
    assert "'rd.break'" in text
    served = load_jobs(folder, allow_debug=True)
    assert served is not None


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('"debug": false', '"debug": true, "debug": false', "duplicate key 'debug'"),
        ('"debug": false', '"debug": false, "debug": false', "duplicate key 'debug'"),
        ('"size": ', '"size": NaN, "x": ', "NaN is not a JSON value"),
        (
            '"debug": false',
            '"debug": false, "deep": ' + "[" * 100000 + "]" * 100000,
            "nested too deeply",
        ),
    ],
)
def test_a_manifest_that_hides_a_key_is_refused(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    folder = make_folder(tmp_path / "out")
    manifest = folder / "host-debian-13.manifest.json"
    text = manifest.read_text()
    assert old in text
    manifest.write_text(text.replace(old, new, 1))
    (folder / "SHA256SUMS").write_text(
        "".join(
            f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
            for p in sorted(folder.glob("*.*"))
            if p.name != "SHA256SUMS"
        )
    )
    dest = tmp_path / "merged"
    with pytest.raises(SevimgError) as caught:
        merge_artifact_folders([folder], dest)
    assert f"{manifest}: error: {expected}" in "\n".join(map(str, caught.value.problems))
    assert not dest.exists() or not any(dest.iterdir())


# --- both tables together -----------------------------------------------------------


@pytest.mark.parametrize("token", UNSAFE_TOKENS + MORE_UNSAFE_TOKENS)
def test_unsafe_tokens_are_refused(token: str) -> None:
    found = security.kernel_token(token)
    assert found is not None and found.error, token


# Through the CLI, where a user meets them: one token of each class, in each section.
TOKEN_CLASSES = ["systemd.debug_shell", "rd.break", "init=/bin/sh", "systemd.run=/bin/sh"]


@pytest.mark.parametrize("token", TOKEN_CLASSES)
@pytest.mark.parametrize("section", ["common", "guest", "host"])
def test_unsafe_tokens_are_refused_with_their_location(
    cli: CliFn, workspace: Path, token: str, section: str
) -> None:
    release = with_release(
        workspace, "debian-13", f"{section}:\n  add_kernel_command_line: ['{token}']\n"
    )
    lineno = len(release.read_text().splitlines())
    run = cli("validate", "debian-13")
    assert run.code == 1 and "Traceback" not in run.output
    assert re.search(
        rf"^images/debian-13\.yaml:{lineno}:\d+: error: {section}\.add_kernel_command_line\[0\]: "
        rf"kernel command-line token '{re.escape(token)}'",
        run.stderr,
        re.MULTILINE,
    ), run.stderr
    out = workspace / "rendered"
    render = cli("render", "debian-13", "-o", str(out))
    assert render.code == 1 and not out.exists()


@pytest.mark.parametrize("token", SAFE_TOKENS + MORE_SAFE_TOKENS)
def test_safe_tokens_pass(token: str) -> None:
    assert security.kernel_token(token) is None


@pytest.mark.parametrize("name", UNSAFE_PACKAGES + MORE_UNSAFE_PACKAGES)
def test_login_servers_are_refused(name: str) -> None:
    found = security.package(name)
    assert found is not None and found.error, name


# Through the CLI: one package of each class (a login server in any case, a
# remote desktop, a guest agent), in each section.
PACKAGE_CLASSES = ["openssh-server", "OpenSSH-Server", "xrdp", "cloud-init"]


@pytest.mark.parametrize("name", PACKAGE_CLASSES)
@pytest.mark.parametrize("section", ["common", "guest", "host"])
def test_login_servers_are_refused_with_their_location(
    cli: CliFn, workspace: Path, name: str, section: str
) -> None:
    release = with_release(workspace, "fedora-44", f"{section}:\n  add_packages: [{name}]\n")
    lineno = len(release.read_text().splitlines())
    run = cli("validate", "fedora-44")
    assert run.code == 1 and "Traceback" not in run.output
    assert re.search(
        rf"^images/fedora-44\.yaml:{lineno}:\d+: error: {section}\.add_packages\[0\]: "
        rf"package '{re.escape(name)}'",
        run.stderr,
        re.MULTILINE,
    ), run.stderr


@pytest.mark.parametrize("name", SAFE_PACKAGES + MORE_SAFE_PACKAGES)
def test_ordinary_packages_pass(name: str) -> None:
    assert security.package(name) is None


@pytest.mark.parametrize(
    ("case", "extra", "expected"),
    WAYS_IN + MORE_WAYS_IN,
    ids=[w[0] for w in WAYS_IN + MORE_WAYS_IN],
)
def test_built_guest_with_a_way_in_fails(
    catalog: Catalog, case: str, extra: list[tuple[str, int, bytes]], expected: str
) -> None:
    assert_guest_way_in_fails(catalog, extra, expected)
