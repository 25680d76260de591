"""What a published image must never carry: ways in, and SEV switched off.

A certification image is booted unattended in someone else's lab, so it must
not open a shell on a console, accept a remote login, let the hypervisor run
commands in the guest, or boot with SEV or the IOMMU turned off.
The same rules are enforced twice, from this one place: on the resolved spec
before anything is rendered (:mod:`sevimg.catalog.policy`), and on the files of the
built UKI (:mod:`sevimg.build.examine`). Only a debug image (``--debug-image``,
named ``…-debug`` and never published) is exempt.

Pure functions over strings and file listings.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

# Values that switch a boolean kernel or systemd setting off.
_OFF = frozenset({"0", "no", "n", "false", "off", "disable", "disabled"})


@dataclass(frozen=True)
class Finding:
    """One unsafe thing: what it is, and why it must not be in a published image."""

    what: str
    why: str
    error: bool = True  # False: a weakening worth a warning (an error with --strict)

    def __str__(self) -> str:
        return f"{self.what}: {self.why}" if self.what else self.why


# --- kernel command line -----------------------------------------------------------

_SHELL = "opens a root shell on a console without a password"
_RESCUE = "boots into rescue or emergency mode (a root shell on the console)"
_SEV_OFF = "switches SEV off: the image could not run or certify SEV-SNP"
_IOMMU_OFF = "switches the IOMMU off, which SEV-SNP requires on the host"
_CREDENTIAL = "sets a login credential (a password or SSH key) from the command line"
_SSH = "binds an SSH server to a socket (systemd's sshd generator)"
_WEAKER = "weakens the kernel's hardening; keep it to debug images"

# Keys below are normalised: kernel and systemd treat '-' and '_' alike in names.
# key → (reason, whether an explicit "off" value makes it harmless)
_KEYS: Mapping[str, tuple[str, bool]] = {
    "systemd.debug_shell": (_SHELL, True),
    "rd.systemd.debug_shell": (_SHELL, True),
    "rd.shell": ("drops to a root shell in the initrd when boot fails", True),
    "rd.break": ("stops the initrd in a root shell", False),
    "init": ("replaces systemd as PID 1 (init=/bin/sh is a root shell)", False),
    "rdinit": ("replaces the initrd's PID 1 (rdinit=/bin/sh is a root shell)", False),
    "systemd.ssh_auto": (_SSH, True),
    "systemd.ssh_listen": (_SSH, False),
}
# Bare words systemd reads as a runlevel that means rescue or emergency.
_RESCUE_WORDS = frozenset({"single", "s", "S", "1", "-s", "emergency", "rescue", "-b"})
_RESCUE_UNITS = frozenset({"rescue", "rescue.target", "emergency", "emergency.target"})
# key → values that are unsafe (compared lower-case). selinux=0 and the like are
# not here: the images carry no LSM policy (Fedora needs selinux=0 to boot one).
_VALUES: Mapping[str, tuple[frozenset[str], str]] = {
    "mem_encrypt": (frozenset({"off"}), _SEV_OFF),
    "kvm_amd.sev": (_OFF, _SEV_OFF),
    "kvm_amd.sev_es": (_OFF, _SEV_OFF),
    "kvm_amd.sev_snp": (_OFF, _SEV_OFF),
    "amd_iommu": (frozenset({"off"}), _IOMMU_OFF),
    "iommu": (frozenset({"off"}), _IOMMU_OFF),
    "mitigations": (frozenset({"off"}), _WEAKER),
    "spectre_v2": (frozenset({"off"}), _WEAKER),
    "spec_store_bypass_disable": (frozenset({"off"}), _WEAKER),
}
_WARNING_KEYS = frozenset({"mitigations", "spectre_v2", "spec_store_bypass_disable"})
_WEAK_WORDS = frozenset({"nokaslr", "nopti", "nospectre_v1", "nospectre_v2", "nosmap", "nosmep"})
_CREDENTIAL_KEYS = frozenset(
    {"systemd.set_credential", "systemd.set_credential_binary", "rd.systemd.set_credential"}
)
# Credentials systemd turns into a way in: passwords, SSH keys and listeners.
_CREDENTIAL_NAMES = ("passwd.", "ssh.", "login.")


def _normalise(key: str) -> str:
    return key.replace("-", "_")


def kernel_token(token: str) -> Finding | None:
    """Why one kernel command-line token must not be in a published image, or None."""
    key, sep, value = token.partition("=")
    norm = _normalise(key)
    if not sep and token in _RESCUE_WORDS:
        return Finding(token, _RESCUE)
    if not sep and token in _WEAK_WORDS:
        return Finding(token, _WEAKER, error=False)
    if norm in ("systemd.unit", "rd.systemd.unit", "systemd.wants", "rd.systemd.wants"):
        unit = value.strip()
        if unit in _RESCUE_UNITS:
            return Finding(token, _RESCUE)
        if _unit_opens_login(unit):
            return Finding(token, f"starts {unit}, a way in")
        return None
    if norm in _CREDENTIAL_KEYS:
        name = value.split(":", 1)[0]
        if name.startswith(_CREDENTIAL_NAMES):
            return Finding(token, _CREDENTIAL)
        return None
    if norm in _VALUES and sep:
        bad, why = _VALUES[norm]
        if value.lower() in bad:
            return Finding(token, why, error=norm not in _WARNING_KEYS)
    if norm in _KEYS:
        why, off_is_safe = _KEYS[norm]
        if off_is_safe and sep and value.lower() in _OFF:
            return None
        return Finding(token, why)
    return None


def kernel_command_line(tokens: Iterable[str]) -> list[Finding]:
    """Every unsafe token of a command line, in order."""
    return [f for t in tokens if (f := kernel_token(t)) is not None]


# --- packages ----------------------------------------------------------------------

_REMOTE_LOGIN = "a remote-login server"
# fnmatch patterns over package names (the same names across families where they differ).
_PACKAGES: tuple[tuple[str, str], ...] = (
    ("openssh-server", "the OpenSSH server"),
    ("openssh-server-*", "the OpenSSH server"),
    ("openssh-sftp-server", "the OpenSSH SFTP server"),
    ("ssh", "pulls in the OpenSSH server"),
    ("task-ssh-server", "pulls in the OpenSSH server"),
    ("dropbear", "the Dropbear SSH server"),
    ("dropbear-*", "the Dropbear SSH server"),
    ("tinyssh", "the TinySSH server"),
    ("tinysshd", "the TinySSH server"),
    ("*telnetd*", "a telnet server"),
    ("telnet-server", "a telnet server"),
    ("rsh-server", "an rsh/rlogin server"),
    ("rsh-redone-server", "an rsh/rlogin server"),
    ("xinetd", "a super-server that starts telnet, rsh and the like"),
    ("*-inetd", "a super-server that starts telnet, rsh and the like"),
    ("x11vnc", "a VNC server"),
    ("*vncserver*", "a VNC server"),
    ("tigervnc-server*", "a VNC server"),
    ("cockpit", "a web console with a login"),
    ("cockpit-ws", "a web console with a login"),
    ("shellinabox", "a shell in a web page"),
    ("ttyd", "a shell in a web page"),
    ("webmin", "a web console with a login"),
    ("mosh", "needs an SSH server"),
    ("qemu-guest-agent", "lets the hypervisor run commands in the guest"),
    ("qemu-ga", "lets the hypervisor run commands in the guest"),
    ("gdbserver", "lets a remote debugger control processes"),
)


def package(name: str) -> Finding | None:
    """Why a package must not be installed in a published image, or None."""
    for pattern, why in _PACKAGES:
        if fnmatch.fnmatchcase(name, pattern):
            return Finding(name, f"{why} ({_REMOTE_LOGIN} or a way in)")
    return None


def packages(names: Iterable[str]) -> list[Finding]:
    """Every package of `names` a published image must not install."""
    return [f for n in names if (f := package(n)) is not None]


# --- the built image ---------------------------------------------------------------


class FileLike(Protocol):
    """What the checks need of a file in the image (uki.Member satisfies it)."""

    @property
    def data(self) -> bytes: ...

    @property
    def mode(self) -> int: ...


# Programs whose presence means a login server or a back door could be started.
_DAEMONS: Mapping[str, str] = {
    "sshd": "the OpenSSH server",
    "sshd-session": "the OpenSSH server",
    "dropbear": "the Dropbear SSH server",
    "tinysshd": "the TinySSH server",
    "in.telnetd": "a telnet server",
    "telnetd": "a telnet server",
    "in.rlogind": "an rlogin server",
    "in.rshd": "an rsh server",
    "xinetd": "a super-server",
    "qemu-ga": "the QEMU guest agent (the hypervisor can run commands)",
    "x11vnc": "a VNC server",
    "cockpit-ws": "a web console",
    "shellinaboxd": "a shell in a web page",
    "ttyd": "a shell in a web page",
}
_DAEMON_DIRS = (
    "usr/sbin",
    "usr/bin",
    "sbin",
    "bin",
    "usr/lib/openssh",
    "usr/libexec/openssh",
    "usr/libexec",
)
_UNIT_DIRS = ("etc/systemd/system/", "usr/lib/systemd/system/", "lib/systemd/system/")
_UNIT_LOGIN = re.compile(
    r"(?:ssh|sshd|dropbear|tinysshd|telnet|telnetd|rlogin|rsh|xinetd|x11vnc|vncserver"
    r"|cockpit|qemu-guest-agent|debug-shell)(?:@[^/]*)?(?:[-.@].*)?\.(?:service|socket)"
)
_GETTY = re.compile(r"(?:serial-|container-|console-)?getty(?:@[^/]*)?\.service")
_AGETTY_OPTIONS = ("--autologin", "--skip-login", "--login-program")
_AGETTY_SHORT = ("-a", "-n", "-l")
_LOGIN_OPTIONS = ("-o", "--login-options")  # harmless unless they pass login -f


def _unit_opens_login(unit: str) -> bool:
    return bool(_UNIT_LOGIN.fullmatch(unit))


def image_files(
    members: Mapping[str, FileLike],
    resolve: Callable[[str], FileLike | None],
) -> list[Finding]:
    """Ways into the built image: login daemons, enabled login units, getty autologin,
    a rescue default target, and accounts with a password.

    `members` is every file of the image by path (no leading slash); `resolve`
    finds a path following the image's own symlinks (/sbin → usr/sbin).
    """
    found: list[Finding] = []
    seen: set[str] = set()
    for folder in _DAEMON_DIRS:
        for name, why in _DAEMONS.items():
            member = resolve(f"{folder}/{name}")
            if member is not None and member.mode & 0o111 and name not in seen:
                seen.add(name)
                found.append(Finding(f"/{folder}/{name}", f"{why} is installed"))

    for path, member in sorted(members.items()):
        folder, _, name = path.rpartition("/")
        if not path.startswith(_UNIT_DIRS):
            continue
        parent = folder.rsplit("/", 1)[-1]
        if parent.endswith((".wants", ".requires", ".upholds")) and _unit_opens_login(name):
            found.append(Finding(f"/{path}", f"enables {name}, a way in"))
        elif _is_getty_unit_or_dropin(path, parent, name):
            if override := _getty_override(member.data):
                found.append(Finding(f"/{path}", override))
        elif name == "default.target" and path.startswith("etc/"):
            target = posixpath.basename(member.data.decode(errors="replace").strip())
            if target in _RESCUE_UNITS:
                found.append(Finding(f"/{path}", f"the default target is {target}: {_RESCUE}"))

    found += _passwords(resolve)
    return found


def _is_getty_unit_or_dropin(path: str, parent: str, name: str) -> bool:
    """A drop-in of a getty unit (anywhere), or a getty unit replaced in /etc."""
    if parent.endswith(".service.d"):
        return bool(_GETTY.fullmatch(parent.removesuffix(".d")))
    return bool(_GETTY.fullmatch(name)) and path.startswith("etc/")


def _getty_override(data: bytes) -> str | None:
    """Why a getty unit or drop-in lets someone in without a password, or None."""
    for line in data.decode(errors="replace").splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.strip() != "ExecStart" or not value.strip():
            continue
        try:
            words = shlex.split(value.strip().lstrip("-@:+!"))
        except ValueError:
            return f"unreadable ExecStart= in a getty unit: {value.strip()}"
        program = posixpath.basename(words[0]) if words else ""
        if program != "agetty":
            return f"the console runs {words[0]!r} instead of a login prompt"
        for i, word in enumerate(words[1:], 1):
            if word.startswith(_AGETTY_OPTIONS) or word in _AGETTY_SHORT:
                return f"the console getty logs in without a password ({word})"
            option, _, inline = word.partition("=")
            if option in _LOGIN_OPTIONS:
                passed = inline or (words[i + 1] if i + 1 < len(words) else "")
                if "-f" in passed.split():
                    return f"the console getty skips authentication (login {passed})"
    return None


# Password fields that allow no login with a password.
_IN_SHADOW = "x"
_LOCKED_PREFIXES = ("*", "!")


def _passwords(resolve: Callable[[str], FileLike | None]) -> list[Finding]:
    """Accounts that can log in with a password, or without one."""

    def fields(path: str) -> dict[str, str]:
        member = resolve(path)
        table: dict[str, str] = {}
        for line in member.data.decode(errors="replace").splitlines() if member else ():
            parts = line.split(":")
            if len(parts) > 1 and parts[0]:
                table.setdefault(parts[0], parts[1])
        return table

    shadow = fields("etc/shadow")
    found: list[Finding] = []
    for user, field in fields("etc/passwd").items():
        # "x": the real field is in /etc/shadow; no entry there means locked
        password = shadow.get(user, "*") if field == _IN_SHADOW else field
        if password.startswith(_LOCKED_PREFIXES):
            continue
        what = "an empty password (login without one)" if password == "" else "a password"
        found.append(Finding("", f"{user} has {what}: published images must not"))
    return found
