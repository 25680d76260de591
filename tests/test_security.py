"""Nothing unsafe reaches a published image: refused before rendering, and in the built UKI.

Each class of way in (debug shells and rescue modes on the kernel command
line, login servers, getty autologin, accounts with passwords, SEV or the
IOMMU switched off), each required host module and each unsigned rpm
repository is fed many values, through the CLI where a user would meet it
and through the post-build check of a UKI that carries it. Only a debug
image may have them.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from sevimg.catalog import payload, security
from sevimg.catalog.index import Catalog, load_catalog
from sevimg.catalog.resolve import resolve
from sevimg.imaging import examine
from sevimg.workspace import Workspace
from tests.conftest import CliFn
from tests.fakes import EXE, FILE, LINK
from tests.test_uki import HOST_PACKAGES, guest_files, host_files, make_uki

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


@pytest.mark.parametrize("token", UNSAFE_TOKENS)
@pytest.mark.parametrize("section", ["common", "guest"])
def test_unsafe_tokens_are_refused_with_their_location(
    cli: CliFn, workspace: Path, token: str, section: str
) -> None:
    with_release(workspace, "debian-13", f"{section}:\n  add_kernel_command_line: ['{token}']\n")
    run = cli("validate", "debian-13")
    assert run.code == 1
    line = next(ln for ln in run.stderr.splitlines() if token in ln and ": error: " in ln)
    lineno = len((workspace / "images/debian-13.yaml").read_text().splitlines())
    assert (
        line.startswith(f"images/debian-13.yaml:{lineno}:")
        and f"{section}.add_kernel_command_line[0]" in line
    ), line
    assert "Traceback" not in run.output

    out = workspace / "rendered"
    render = cli("render", "debian-13", "-o", str(out))
    assert render.code == 1 and not out.exists()


@pytest.mark.parametrize("token", WEAKENING_TOKENS)
def test_weakening_tokens_warn_and_fail_strict(cli: CliFn, workspace: Path, token: str) -> None:
    with_release(workspace, "debian-13", f"common:\n  add_kernel_command_line: ['{token}']\n")
    run = cli("validate", "debian-13")
    assert run.code == 0 and ": warning: " in run.stderr and token in run.stderr
    assert cli("validate", "--strict", "debian-13").code == 1


@pytest.mark.parametrize("token", SAFE_TOKENS)
def test_safe_tokens_pass(token: str) -> None:
    assert security.kernel_token(token) is None


@pytest.mark.parametrize("name", UNSAFE_PACKAGES)
@pytest.mark.parametrize("section", ["common", "host"])
def test_login_servers_are_refused(cli: CliFn, workspace: Path, name: str, section: str) -> None:
    with_release(workspace, "fedora-44", f"{section}:\n  add_packages: [{name}]\n")
    run = cli("validate", "fedora-44")
    assert run.code == 1
    assert re.search(
        rf"^images/fedora-44\.yaml:1[0-9]:\d+: error: {section}\.add_packages\[0\]: package '{re.escape(name)}'",
        run.stderr,
        re.MULTILINE,
    ), run.stderr


@pytest.mark.parametrize("name", SAFE_PACKAGES)
def test_ordinary_packages_pass(name: str) -> None:
    assert security.package(name) is None


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


@pytest.mark.parametrize(("case", "extra", "expected"), WAYS_IN, ids=[w[0] for w in WAYS_IN])
def test_built_guest_with_a_way_in_fails(
    catalog: Catalog, case: str, extra: list[tuple[str, int, bytes]], expected: str
) -> None:
    assert_guest_way_in_fails(catalog, extra, expected)


def assert_guest_way_in_fails(
    catalog: Catalog, extra: list[tuple[str, int, bytes]], expected: str
) -> None:
    """A debian-13 guest UKI with `extra` files fails the post-build check with `expected`,
    and passes it as a debug image."""
    spec = resolve(catalog.entries["debian-13"], "guest")
    files = {path: (path, mode, data) for path, mode, data in guest_files()}
    files.update({path: (path, mode, data) for path, mode, data in extra})
    uki = make_uki(list(files.values()))
    found = examine.check(spec, uki, {"systemd-boot-efi": "257"})
    assert any(expected in e for e in found.errors), found.errors
    debug = resolve(catalog.entries["debian-13"], "guest", debug=True)
    assert examine.check(debug, uki, {"systemd-boot-efi": "257"}).errors == ()


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
