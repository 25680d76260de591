"""The login servers, remote shells and guest agents a published image must not carry: one table.

Each one is known in three forms, and an image is checked in all three:
the programs it installs (found in the built image, or run by a unit's
ExecStart=), the units that start it (enabled in the image, or named on the
kernel command line), and the packages that carry it (in the catalog, before
anything is built). The three lists used to be written out separately and
drifted apart; they are derived from :data:`WAYS_IN` now, so a server added
here is refused in every form at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class WayIn:
    """One server or agent that lets someone into an image, in the forms it takes."""

    what: str  # shown in the error: "{what} is installed", "starts {what}"
    programs: tuple[str, ...]  # executable names, in the image's bin folders or in ExecStart=
    units: tuple[str, ...]  # unit-name stems: `x` is x.service, x.socket, x@1.service, x-y.service
    packages: tuple[str, ...]  # package names as fnmatch patterns, lower-case, of every family


_GUEST_CONTROL = "lets the hypervisor run commands in the guest"

WAYS_IN: tuple[WayIn, ...] = (
    # --- remote shells -------------------------------------------------------------
    WayIn(
        "the OpenSSH server",
        programs=("sshd", "sshd-session"),
        units=("ssh", "sshd"),
        # openSUSE's and Arch's `openssh` carries sshd; `ssh` and the task pull it in
        packages=(
            "openssh-server",
            "openssh-server-*",
            "openssh-sftp-server",
            "openssh",
            "ssh",
            "ssh-server",
            "sshd",
            "task-ssh-server",
        ),
    ),
    WayIn(
        "the Dropbear SSH server",
        programs=("dropbear",),
        units=("dropbear",),
        packages=("dropbear", "dropbear-*"),
    ),
    WayIn(
        "the TinySSH server",
        programs=("tinysshd",),
        units=("tinysshd", "tinyssh"),
        packages=("tinyssh", "tinysshd"),
    ),
    WayIn(
        "the lsh SSH server",
        programs=("lshd",),
        units=("lshd", "lsh-server"),
        packages=("lsh-server", "lshd"),
    ),
    WayIn(
        "a telnet server",
        programs=("in.telnetd", "telnetd", "utelnetd"),
        units=("telnet", "telnetd"),
        packages=("*telnetd*", "telnet-server"),
    ),
    WayIn(
        "an rsh/rlogin server",
        programs=("in.rlogind", "in.rshd", "in.rexecd", "rlogind", "rshd"),
        units=("rlogin", "rsh", "rexec"),
        packages=("*rsh-server", "rsh-redone-server"),
    ),
    WayIn(
        "a super-server that starts telnet, rsh and the like",
        programs=("xinetd", "inetd", "rlinetd"),
        units=("xinetd", "inetd", "openbsd-inetd", "inetutils-inetd", "rlinetd"),
        packages=("xinetd", "rlinetd", "*-inetd"),
    ),
    WayIn(
        "a shell for mobile clients (mosh)",
        programs=("mosh-server",),
        units=("mosh", "mosh-server"),
        packages=("mosh", "mosh-server"),
    ),
    # --- remote desktops -----------------------------------------------------------
    WayIn(
        "a VNC server",
        programs=("x11vnc", "x0vncserver", "Xvnc", "Xtigervnc", "vncserver", "wayvnc"),
        units=("x11vnc", "vncserver", "x0vncserver", "xvnc", "wayvnc"),
        packages=("x11vnc", "*vncserver*", "tigervnc-server*", "tigervnc-*-server", "wayvnc"),
    ),
    WayIn(
        "a remote-desktop server",
        programs=(
            "xrdp",
            "xrdp-sesman",
            "gnome-remote-desktop-daemon",
            "freerdp-shadow-cli",
            "xpra",
            "x2goserver",
            "guacd",
        ),
        units=("xrdp", "gnome-remote-desktop", "freerdp-shadow", "xpra", "x2goserver", "guacd"),
        packages=(
            "xrdp",
            "gnome-remote-desktop",
            "freerdp*-shadow*",
            "freerdp-server",
            "xpra",
            "x2goserver*",
            "guacd",
            "guacamole-server",
        ),
    ),
    # --- web consoles and terminals -------------------------------------------------
    WayIn(
        "a web console with a login",
        programs=("cockpit-ws", "webmin", "usermin"),
        units=("cockpit", "webmin", "usermin"),
        packages=("cockpit", "cockpit-ws", "webmin", "usermin"),
    ),
    WayIn(
        "a shell in a web page",
        programs=("shellinaboxd", "ttyd", "gotty", "wetty"),
        units=("shellinabox", "shellinaboxd", "ttyd", "gotty", "wetty"),
        packages=("shellinabox", "ttyd", "gotty", "wetty"),
    ),
    # --- agents the hypervisor (or its data source) commands -------------------------
    WayIn(
        f"the QEMU guest agent ({_GUEST_CONTROL})",
        programs=("qemu-ga",),
        units=("qemu-guest-agent", "qemu-ga"),
        packages=("qemu-guest-agent", "qemu-ga"),
    ),
    WayIn(
        # the data source the hypervisor supplies adds users and keys and runs commands
        f"cloud-init ({_GUEST_CONTROL}, add users and keys)",
        programs=("cloud-init",),
        units=("cloud-init", "cloud-config", "cloud-final"),
        packages=("cloud-init",),
    ),
    WayIn(
        f"VMware tools ({_GUEST_CONTROL})",
        programs=("vmtoolsd",),
        units=("vmtoolsd", "open-vm-tools"),
        packages=("open-vm-tools*",),
    ),
    WayIn(
        f"VirtualBox guest services ({_GUEST_CONTROL})",
        programs=("VBoxService",),
        units=("vboxadd-service", "vboxservice", "virtualbox-guest-utils"),
        packages=("virtualbox-guest-utils*",),
    ),
    WayIn(
        f"the Azure agent ({_GUEST_CONTROL})",
        programs=("waagent",),
        units=("waagent", "walinuxagent"),
        packages=("walinuxagent",),
    ),
    WayIn(
        "a remote debugger's server (it controls processes)",
        programs=("gdbserver",),
        units=("gdbserver",),
        packages=("gdbserver", "gdb-gdbserver"),
    ),
)

# systemd's own units that give a root shell: no program or package of their own.
SHELL_UNITS = ("debug-shell", "rescue", "emergency")


def programs() -> dict[str, str]:
    """Every program of the table → what it is."""
    return {p: way.what for way in WAYS_IN for p in way.programs}


def unit_pattern() -> re.Pattern[str]:
    """A unit name that starts one of the table's servers (or a systemd root shell).

    A stem matches its service and socket, its template instances and the
    units named after it (`ssh` → ssh.service, ssh@1.socket, ssh-keygen.service).
    """
    stems = sorted({u for way in WAYS_IN for u in way.units} | set(SHELL_UNITS))
    alternatives = "|".join(re.escape(s) for s in stems)
    return re.compile(rf"(?:{alternatives})(?:@[^/]*)?(?:[-.@].*)?\.(?:service|socket)")


def package_patterns() -> tuple[tuple[str, str], ...]:
    """Every package pattern of the table, with what it carries."""
    return tuple((p, way.what) for way in WAYS_IN for p in way.packages)
