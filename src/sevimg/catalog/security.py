"""What a published image must never carry: ways in, and SEV switched off.

A certification image is booted unattended in someone else's lab, so it must
not open a shell on a console, accept a remote login, let the hypervisor run
commands in the guest, or boot with SEV or the IOMMU turned off.
The same rules are enforced twice: on the resolved spec before anything is
rendered (:mod:`sevimg.catalog.policy`), and on the built UKI
(:mod:`sevimg.imaging.examine`: its .cmdline here, its files in
:mod:`sevimg.catalog.security_files`). Only a debug image (``--debug-image``,
named ``…-debug`` and never published) is exempt.

Pure functions over strings and file listings.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sevimg.catalog import payload, ways_in

# Values that switch a boolean kernel or systemd setting off.
OFF_VALUES = frozenset({"0", "no", "n", "false", "off", "disable", "disabled"})
_OFF = OFF_VALUES


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
RESCUE = "boots into rescue or emergency mode (a root shell on the console)"
_SEV_OFF = "switches SEV off: the image could not run or certify SEV-SNP"
_IOMMU_OFF = "switches the IOMMU off, which SEV-SNP requires on the host"
_CREDENTIAL = (
    "sets a credential that creates a login, a file or a unit "
    "(a password, an SSH key, tmpfiles or sysusers lines) from the command line"
)
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
    # systemd-run-generator: any command, as root, at boot
    "systemd.run": ("runs a command as root at boot", False),
    "rd.systemd.run": ("runs a command as root in the initrd", False),
    "systemd.crash_shell": ("opens a root shell on the console when PID 1 crashes", True),
    "rd.systemd.crash_shell": ("opens a root shell on the console when PID 1 crashes", True),
    "systemd.confirm_spawn": ("lets the console decide which services start", True),
    "rd.systemd.confirm_spawn": ("lets the console decide which services start", True),
    # initramfs-tools and old dracut spellings of rd.break / rd.shell
    "break": ("stops the initramfs in a root shell", False),
    "rdbreak": ("stops the initrd in a root shell", False),
    "rdshell": ("drops to a root shell in the initrd when boot fails", False),
}
# Keeps the kernel's own init functions (svm_init: kvm_amd built in) from running.
_INITCALLS = "initcall_blacklist"
# Bare words systemd reads as a runlevel that means rescue or emergency.
_RESCUE_WORDS = frozenset({"single", "s", "S", "1", "-s", "emergency", "rescue", "-b"})
RESCUE_UNITS = frozenset(
    {
        "rescue",
        "rescue.target",
        "rescue.service",
        "emergency",
        "emergency.target",
        "emergency.service",
        "kbrequest.target",
        "runlevel1.target",
    }
)
# key → values that are unsafe (compared lower-case). selinux=0 and the like are
# not here: the images carry no LSM policy (Fedora needs selinux=0 to boot one).
_VALUES: Mapping[str, tuple[frozenset[str], str]] = {
    "mem_encrypt": (frozenset({"off"}), _SEV_OFF),
    "kvm_amd.sev": (_OFF, _SEV_OFF),
    "kvm_amd.sev_es": (_OFF, _SEV_OFF),
    "kvm_amd.sev_snp": (_OFF, _SEV_OFF),
    "kvm_amd.npt": (_OFF, _SEV_OFF),  # SEV needs nested paging
    "amd_iommu": (frozenset({"off"}), _IOMMU_OFF),
    "iommu": (frozenset({"off"}), _IOMMU_OFF),
    "mitigations": (frozenset({"off"}), _WEAKER),
    "spectre_v2": (frozenset({"off"}), _WEAKER),
    "spec_store_bypass_disable": (frozenset({"off"}), _WEAKER),
}
_WARNING_KEYS = frozenset({"mitigations", "spectre_v2", "spec_store_bypass_disable"})
_WEAK_WORDS = frozenset({"nokaslr", "nopti", "nospectre_v1", "nospectre_v2", "nosmap", "nosmep"})
_CREDENTIAL_KEYS = frozenset(
    {
        "systemd.set_credential",
        "systemd.set_credential_binary",
        "rd.systemd.set_credential",
        "rd.systemd.set_credential_binary",
    }
)
# Credentials systemd turns into a way in: passwords, SSH keys and listeners.
# tmpfiles/sysusers/unit credentials write files, accounts and units into the image.
_CREDENTIAL_NAMES = (
    "passwd.",
    "ssh.",
    "login.",
    "tmpfiles.",
    "sysusers.",
    "systemd.extra-unit.",
    "systemd.unit-dropin.",
)
# Environment that PID 1 hands every service: a password-less sulogin, a preloaded library.
_SETENV_KEYS = frozenset({"systemd.setenv", "rd.systemd.setenv"})
_UNSAFE_ENV = frozenset({"SYSTEMD_SULOGIN_FORCE", "LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH"})
# Kernel, modprobe and dracut ways to keep a module from loading.
_BLACKLIST_KEYS = frozenset(
    {"modprobe.blacklist", "module_blacklist", "rd.driver.blacklist", "rdblacklist"}
)
# Every module either role cannot do SEV-SNP (or report) without, in the kernel's spelling.
SEV_MODULES = frozenset(
    payload.module_name(m)
    for m in (
        *payload.HOST_REQUIRED_MODULES,
        *payload.GUEST_REQUIRED_MODULES,
        *payload.GUEST_TSM_REPORT_MODULES,
    )
)
_MODULE_OFF = "keeps a module SEV-SNP needs from loading"


def _normalise(key: str) -> str:
    return key.replace("-", "_")


def kernel_token(token: str) -> Finding | None:
    """Why one kernel command-line token must not be in a published image, or None."""
    key, sep, value = token.partition("=")
    norm = _normalise(key)
    if not sep and token in _RESCUE_WORDS:
        return Finding(token, RESCUE)
    if not sep and token in _WEAK_WORDS:
        return Finding(token, _WEAKER, error=False)
    if norm in ("systemd.unit", "rd.systemd.unit", "systemd.wants", "rd.systemd.wants"):
        unit = value.strip()
        if unit in RESCUE_UNITS:
            return Finding(token, RESCUE)
        if unit_opens_login(unit):
            return Finding(token, f"starts {unit}, a way in")
        return None
    if norm in _SETENV_KEYS:
        if value.split("=", 1)[0] in _UNSAFE_ENV:
            return Finding(token, "sets an environment variable that opens a way in")
        return None
    if norm in _BLACKLIST_KEYS:
        blocked = sorted({payload.module_name(m) for m in value.split(",")} & SEV_MODULES)
        if blocked:
            return Finding(token, f"{_MODULE_OFF} ({', '.join(blocked)})")
        return None
    if norm == _INITCALLS:
        return Finding(token, "skips kernel initialisation (SEV's too, if built in)", error=False)
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
        # exactly as written: dracut reads only lower-case 0/no/off (rd.shell=OFF is on)
        if off_is_safe and sep and value in _OFF:
            return None
        return Finding(token, why)
    return None


def split_command_line(text: str) -> list[str]:
    """The words of a kernel command line as the kernel and systemd read them.

    Quotes group words and are dropped ("init=/bin/sh" is init=/bin/sh to
    both); single quotes are systemd's, but treating them alike only finds more.
    """
    words: list[str] = []
    word: list[str] = []
    quote = ""
    started = False
    for char in text:
        if quote:
            if char == quote:
                quote = ""
            else:
                word.append(char)
        elif char in "\"'":
            quote, started = char, True
        elif char.isspace():
            if started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(char)
            started = True
    if started:
        words.append("".join(word))
    return words


def firstboot_prompts(tokens: Iterable[str]) -> bool:
    """Whether systemd-firstboot would prompt on the console (for a root password, too).

    The last systemd.firstboot= wins, as in systemd; without one it prompts.
    """
    value = "on"
    for token in tokens:
        key, sep, rest = token.partition("=")
        if _normalise(key) == "systemd.firstboot":
            value = rest.lower() if sep else "on"
    return value not in _OFF


def kernel_command_line(tokens: Iterable[str]) -> list[Finding]:
    """Every unsafe token of a command line, in order."""
    return [f for t in tokens if (f := kernel_token(t)) is not None]


_UNIT_LOGIN = ways_in.unit_pattern()


def unit_opens_login(unit: str) -> bool:
    """Whether `unit` starts a login server, remote shell or agent (:mod:`sevimg.catalog.ways_in`)."""
    return bool(_UNIT_LOGIN.fullmatch(unit))


# --- packages ----------------------------------------------------------------------

_REMOTE_LOGIN = "a remote-login server"
# fnmatch patterns over package names (the same names across families where they differ).
_PACKAGES = ways_in.package_patterns()
# Not here: busybox. Its telnetd and sh applets need links or a unit to start
# them, and the post-build check finds both.


# What apt reads as a regular expression when no package has the name (apt-get
# install openssh.server installs openssh-server); '+' at the end means "install".
_REGEX_CHARS = frozenset(".?+*[")
# The names the patterns above stand for, for names that are expressions.
_CONCRETE = tuple(
    {p.replace("*", "") for p, _ in _PACKAGES}
    | {"openssh-server", "dropbear-bin", "inetutils-telnetd"}
)


def package(name: str) -> Finding | None:
    """Why a package must not be installed in a published image, or None.

    Read as the package managers read it: any case (dnf and zypper match
    OpenSSH-Server), a trailing `+` (apt: install), and a name with `.` or
    `+` inside as the regular expression apt takes it for.
    """
    lower = name.lower().rstrip("+")
    if lower.startswith("lib"):  # libraries (libvncserver1) serve nothing by themselves
        return None
    for pattern, why in _PACKAGES:
        if fnmatch.fnmatchcase(lower, pattern):
            return Finding(name, f"{why} ({_REMOTE_LOGIN} or a way in)")
    if _REGEX_CHARS & set(lower):
        try:
            expression = re.compile(lower)
        except re.error:
            return None
        for concrete in sorted(_CONCRETE):
            if expression.search(concrete) and (found := package(concrete)):
                return Finding(name, f"matches {concrete} as apt reads it: {found.why}")
    return None


def packages(names: Iterable[str]) -> list[Finding]:
    """Every package of `names` a published image must not install."""
    return [f for n in names if (f := package(n)) is not None]
