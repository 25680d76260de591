"""One table of ways in (sevimg.catalog.ways_in), refused in all three forms it takes.

A login server, remote shell, remote desktop, web terminal or guest agent is
known by its programs (found in a built image), its units (enabled, or named
on the kernel command line) and its packages (in the catalog). Every entry is
tried in every form, and the servers that used to be in one list only are
named here so a table edit cannot quietly drop them again.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sevimg.catalog import security, security_files, ways_in
from sevimg.catalog.ways_in import WAYS_IN

EXE, LINK = 0o100755, 0o120777


@dataclass(frozen=True)
class Member:
    data: bytes
    mode: int
    is_symlink: bool = False


def image_findings(files: dict[str, Member]) -> list[str]:
    found = security_files.image_files(files, files.get)
    return [str(f) for f in found]


def concrete(pattern: str) -> str:
    """A package name the fnmatch pattern stands for (`tigervnc-*-server` → tigervnc-x-server)."""
    return pattern.replace("*", "x")


PROGRAMS = [(p, w.what) for w in WAYS_IN for p in w.programs]
UNITS = [(u, w.what) for w in WAYS_IN for u in w.units]
PACKAGES = [(p, w.what) for w in WAYS_IN for p in w.packages]


def test_every_way_in_is_known_in_all_three_forms() -> None:
    for way in WAYS_IN:
        assert way.programs and way.units and way.packages, way.what
    # no form names a thing twice (a copy is how the old lists drifted)
    for form in (PROGRAMS, UNITS, PACKAGES):
        names = [name for name, _ in form]
        assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize(("program", "what"), PROGRAMS)
def test_every_program_in_the_image_fails(program: str, what: str) -> None:
    assert image_findings({f"usr/sbin/{program}": Member(b"\x7fELF", EXE)}) == [
        f"/usr/sbin/{program}: {what} is installed"
    ]
    # started by a unit that is enabled: the unit's command is read too
    unit = f"[Service]\nExecStart=/opt/x/{program} --port 1\n".encode()
    files = {
        "etc/systemd/system/helper.service": Member(unit, 0o100644),
        "etc/systemd/system/multi-user.target.wants/helper.service": Member(
            b"/etc/systemd/system/helper.service", LINK, is_symlink=True
        ),
    }
    assert any(f"starts {what}" in f for f in image_findings(files)), image_findings(files)


@pytest.mark.parametrize(("stem", "what"), UNITS)
def test_every_unit_is_a_way_in_as_service_socket_and_instance(stem: str, what: str) -> None:
    for unit in (f"{stem}.service", f"{stem}.socket", f"{stem}@1.service", f"{stem}-x.socket"):
        assert security.unit_opens_login(unit), unit
        finding = security.kernel_token(f"systemd.wants={unit}")
        assert finding is not None and "a way in" in finding.why, unit
    # not the stem inside a longer word (unless that word is another server's: xinetd)
    for longer in (f"x{stem}.service", f"{stem}x.service"):
        if not any(longer.startswith(other) for other, _ in UNITS if other != stem):
            assert not security.unit_opens_login(longer), longer
    assert not security.unit_opens_login(f"{stem}.timer")


@pytest.mark.parametrize(("pattern", "what"), PACKAGES)
def test_every_package_is_refused(pattern: str, what: str) -> None:
    name = concrete(pattern)
    finding = security.package(name)
    assert finding is not None, name
    # the first pattern that matches names it; a pattern of another entry may come first
    assert finding.why.endswith("(a remote-login server or a way in)")
    assert security.package(name.upper()) is not None


# Servers each of the three old lists lacked, by the name a real distribution gives them.
DRIFTED = [
    # (what, program, unit, package)
    ("VNC (wayvnc)", "wayvnc", "wayvnc.service", "wayvnc"),
    ("VNC (TigerVNC)", "vncserver", "vncserver@:1.service", "tigervnc-standalone-server"),
    ("VNC (x0vncserver)", "x0vncserver", "x0vncserver.service", "tigervnc-scraping-server"),
    (
        "GNOME remote desktop",
        "gnome-remote-desktop-daemon",
        "gnome-remote-desktop.service",
        "gnome-remote-desktop",
    ),
    ("xrdp's session manager", "xrdp-sesman", "xrdp-sesman.service", "xrdp"),
    (
        "FreeRDP's shadow server",
        "freerdp-shadow-cli",
        "freerdp-shadow.service",
        "freerdp2-shadow-x11",
    ),
    ("xpra", "xpra", "xpra.socket", "xpra"),
    ("X2Go", "x2goserver", "x2goserver.service", "x2goserver"),
    ("Guacamole", "guacd", "guacd.service", "guacd"),
    ("Shell In A Box", "shellinaboxd", "shellinabox.service", "shellinabox"),
    ("ttyd", "ttyd", "ttyd.service", "ttyd"),
    ("GoTTY", "gotty", "gotty.service", "gotty"),
    ("WeTTY", "wetty", "wetty.service", "wetty"),
    ("Webmin", "webmin", "webmin.service", "webmin"),
    (
        "Cockpit's per-connection socket",
        "cockpit-ws",
        "cockpit-wsinstance-http.socket",
        "cockpit-ws",
    ),
    ("lsh", "lshd", "lsh-server.service", "lsh-server"),
    ("OpenBSD inetd", "inetd", "openbsd-inetd.service", "openbsd-inetd"),
    ("rexec", "in.rexecd", "rexec.socket", "rsh-server"),
    ("mosh", "mosh-server", "mosh.service", "mosh"),
    ("VirtualBox", "VBoxService", "vboxadd-service.service", "virtualbox-guest-utils"),
    ("Azure agent", "waagent", "walinuxagent.service", "WALinuxAgent"),
    ("cloud-init's later stages", "cloud-init", "cloud-final.service", "cloud-init"),
    ("gdbserver", "gdbserver", "gdbserver.service", "gdb-gdbserver"),
]


@pytest.mark.parametrize(
    ("what", "program", "unit", "package"), DRIFTED, ids=[d[0] for d in DRIFTED]
)
def test_servers_once_in_one_list_are_caught_in_all_three_forms(
    what: str, program: str, unit: str, package: str
) -> None:
    assert image_findings({f"usr/bin/{program}": Member(b"", EXE)}), what
    assert security.unit_opens_login(unit), what
    enabled = {f"etc/systemd/system/multi-user.target.wants/{unit}": Member(b"/x", LINK, True)}
    assert any(f"enables {unit}" in f for f in image_findings(enabled)), image_findings(enabled)
    assert security.package(package) is not None, what


LOOKALIKES_PROGRAMS = [
    "ssh",
    "vncviewer",
    "xfreerdp",
    "telnet",
    "gdb",
    "mosh-client",
    "cockpit-bridge",
]
LOOKALIKES_UNITS = [
    "sshguard.service",
    "getty@tty1.service",
    "systemd-networkd.service",
    "inetd.timer",
    "cloud-init.target",
    "ttys.service",
    "vncviewer.service",
]
LOOKALIKES_PACKAGES = [
    "openssh-client",
    "libvncserver1",
    "telnet",
    "remmina",
    "gdb",
    "freerdp2-x11",
    "tigervnc-viewer",
    "cockpit-bridge",
]


def test_clients_and_lookalikes_pass() -> None:
    files = {f"usr/bin/{p}": Member(b"", EXE) for p in LOOKALIKES_PROGRAMS}
    assert image_findings(files) == []
    assert [u for u in LOOKALIKES_UNITS if security.unit_opens_login(u)] == []
    assert [p for p in LOOKALIKES_PACKAGES if security.package(p)] == []


def test_the_unit_pattern_is_built_from_the_table() -> None:
    # a stem with a regular-expression character is taken literally
    assert ways_in.unit_pattern().fullmatch("sshd.service")
    assert not ways_in.unit_pattern().fullmatch("sshdXservice")
    assert set(ways_in.programs()) == {p for p, _ in PROGRAMS}
