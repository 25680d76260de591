"""Ways into a built image, read from its files: the second half of :mod:`sevimg.catalog.security`.

Login daemons, enabled login or rescue units (by name, link target or
alias, or by what they run with their drop-ins, and what an enabled socket
starts), getty units and drop-ins that log in without a password (agetty's
options read as getopt reads them), a rescue default target, accounts
with a password, and a PAM login stack that needs none (:mod:`sevimg.catalog.pam`).
Pure functions over a file listing.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable, Mapping
from typing import Protocol

from sevimg.catalog import pam, ways_in
from sevimg.catalog.security import RESCUE, RESCUE_UNITS, Finding, unit_opens_login


class FileLike(Protocol):
    """What the checks need of a file in the image (uki.Member satisfies it)."""

    @property
    def data(self) -> bytes: ...

    @property
    def mode(self) -> int: ...

    @property
    def is_symlink(self) -> bool: ...


# Programs whose presence means a login server or a back door could be started.
_DAEMONS: Mapping[str, str] = ways_in.programs()
_DAEMON_DIRS = (
    "usr/local/sbin",
    "usr/local/bin",
    "usr/sbin",
    "usr/bin",
    "sbin",
    "bin",
    "usr/lib/openssh",
    "usr/libexec/openssh",
    "usr/libexec",
)
_UNIT_DIRS = (
    "etc/systemd/system/",
    "etc/systemd/system.control/",
    "usr/local/lib/systemd/system/",
    "usr/lib/systemd/system/",
    "lib/systemd/system/",
)
_GETTY = re.compile(r"(?:(?:serial-|container-|console-)?getty|autovt)(?:@[^/]*)?\.service")
# One of each getty unit: the drop-in folders that apply to them (service.d/, serial-.service.d/…).
_GETTY_UNITS = (
    "getty@tty1.service",
    "serial-getty@ttyS0.service",
    "container-getty@0.service",
    "console-getty.service",
    "autovt@tty1.service",
)
# agetty's long options (getopt takes any unambiguous prefix) that skip the password.
_AGETTY_LONG = ("--autologin", "--skip-login", "--login-program")
_AGETTY_FLAGS = "anl"  # -a user, -n (skip login), -l program
_AGETTY_WITH_ARGUMENT = "aflHIot"  # the rest of a short-option cluster is the argument


def image_files(
    members: Mapping[str, FileLike],
    resolve: Callable[[str], FileLike | None],
) -> list[Finding]:
    """Ways into the built image: login daemons, enabled login units, getty autologin,
    a rescue default target, accounts with a password, and a login stack that needs none.

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

    # "foo.service.d" → the .conf files of that name in every unit folder
    dropins: dict[str, list[bytes]] = {}
    for path in sorted(members):
        folder, _, name = path.rpartition("/")
        is_dropin = path.startswith(_UNIT_DIRS) and folder.endswith(".d") and name.endswith(".conf")
        if is_dropin and (dropin := resolve(path)) is not None:
            dropins.setdefault(folder.rsplit("/", 1)[-1], []).append(dropin.data)

    for path, member in sorted(members.items()):
        folder, _, name = path.rpartition("/")
        if not path.startswith(_UNIT_DIRS):
            continue
        parent = folder.rsplit("/", 1)[-1]
        if parent.endswith((".wants", ".requires", ".upholds")):
            # the link's name, where it points, and what that name is an alias of
            names = {name, *_unit_targets(members, path), *_unit_aliases(members, name)}
            if bad := sorted(n for n in names if unit_opens_login(n) or n in RESCUE_UNITS):
                found.append(Finding(f"/{path}", f"enables {', '.join(bad)}, a way in"))
            # and what the unit runs with its drop-ins, whatever it is called
            texts = _unit_and_dropins(resolve, dropins, name, resolve(path))
            for text in texts:
                if runs := unit_opens_console(text):
                    found.append(Finding(f"/{path}", f"enables {name}, which {runs}"))
                    break
            if name.endswith(".socket"):  # and what the socket starts for whoever connects
                settings = [kv for text in texts for kv in unit_settings(text)]
                service = _socket_service(settings, name)
                for text in _unit_and_dropins(resolve, dropins, service):
                    if runs := unit_opens_console(text):
                        found.append(Finding(f"/{path}", f"enables {name}, whose {service} {runs}"))
                        break
        elif _is_getty_unit_or_dropin(parent, name):
            hops = _unit_targets(members, path)  # a getty replaced by a link to another unit
            if bad := sorted(n for n in hops if unit_opens_login(n) or n in RESCUE_UNITS):
                found.append(Finding(f"/{path}", f"the console getty is {', '.join(bad)}"))
            unit = resolve(path) if hops else member
            if unit is not None and (override := _getty_override(unit.data)):
                found.append(Finding(f"/{path}", override))
        elif name == "default.target":
            targets = {*_unit_targets(members, path)} or {
                posixpath.basename(member.data.decode(errors="replace").strip())
            }
            for target in sorted(targets & RESCUE_UNITS):
                found.append(Finding(f"/{path}", f"the default target is {target}: {RESCUE}"))

    found += _passwords(resolve)
    found += pam.console_login(resolve)
    return found


# Programs that are a shell when a unit gives them a terminal.
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox", "login", "su"})
_WRAPPERS = frozenset({"exec", "env", "nohup", "setsid", "busybox"})
# netcat in its forms: with -e/-c it hands whoever connects a program.
_NETCATS = frozenset({"nc", "ncat", "netcat", "nc.traditional", "nc.openbsd"})


def unit_settings(data: bytes) -> list[tuple[str, str]]:
    """(key, value) of a systemd unit or drop-in, read as systemd reads them.

    A line ending in a backslash goes on in the next one (comment lines in
    between are skipped), so `ExecStart=agetty \\` + `--autologin root` is
    one setting; comments and section headers are not settings.
    """
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in data.decode(errors="replace").splitlines():
        line = raw.strip()
        if line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        key, sep, value = line.partition("=")
        if sep and not line.startswith("["):
            found.append((key.strip(), value.strip()))
    return found


def unit_opens_console(data: bytes) -> str | None:
    """Why an enabled unit is a way in by what it runs: a shell on a terminal or on a
    socket, a program that hands a network peer a shell, a login daemon."""
    settings = unit_settings(data)
    stdin = {v.split(":", 1)[0] for k, v in settings if k == "StandardInput"}
    where = (
        "a terminal"
        if any(v.startswith("tty") for v in stdin)
        else "a network socket"
        if "socket" in stdin
        else ""
    )
    for key, value in settings:
        if (
            key.startswith("Exec")
            and value
            and (why := _runs(value.strip().lstrip("-@:+!|"), where))
        ):
            return why
    return None


def _runs(command: str, where: str, depth: int = 0) -> str | None:
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    # what runs in the end: past `exec`, `env X=1`, `nohup`, `setsid`, `busybox` (nc, telnetd…)
    while len(words) > 1 and (posixpath.basename(words[0]) in _WRAPPERS or "=" in words[0]):
        words = words[1:]
    program = posixpath.basename(words[0]) if words else ""
    if where and program in _SHELLS:
        return f"runs {program} on {where} (a root shell)"
    if program in _DAEMONS:
        return f"starts {_DAEMONS[program]}"
    if program == "socat" and any(w.upper().startswith(("EXEC:", "SYSTEM:")) for w in words[1:]):
        return "runs socat with EXEC: or SYSTEM: (a program for whoever connects)"
    if program in _NETCATS and any(_netcat_runs(w) for w in words[1:]):
        return f"runs {program} with a program for whoever connects"
    if program in _SHELLS and "-c" in words[:-1] and depth < 4:  # sh -c '…': what it runs
        return _runs(words[words.index("-c") + 1], where, depth + 1)
    return None


def _netcat_runs(word: str) -> bool:
    """-e/-c (in a cluster too) or --exec, --sh-exec, --lua-exec: netcat runs a program."""
    if word.startswith("--"):
        return word.partition("=")[0] in ("--exec", "--sh-exec", "--lua-exec")
    return word.startswith("-") and any(flag in "ec" for flag in word[1:].partition("=")[0])


def _dropin_folders(name: str) -> list[str]:
    """The drop-in folders systemd applies to unit `name`, e.g. for serial-getty@ttyS0.service:
    service.d, serial-.service.d, serial-getty@.service.d, serial-getty@ttyS0.service.d."""
    unit, _, kind = name.rpartition(".")
    stem, at, _ = unit.partition("@")
    folders = [f"{kind}.d"]  # service.d/: every service
    parts = stem.split("-")
    folders += ["-".join(parts[:i]) + f"-.{kind}.d" for i in range(1, len(parts))]
    folders += [f"{stem}@.{kind}.d"] if at else []
    folders.append(f"{name}.d")
    return folders


_GETTY_DROPINS = frozenset(f for unit in _GETTY_UNITS for f in _dropin_folders(unit))


def _unit_and_dropins(
    resolve: Callable[[str], FileLike | None],
    dropins: Mapping[str, list[bytes]],
    name: str,
    linked: FileLike | None = None,
) -> list[bytes]:
    """Each file that may define unit `name` (`linked`, the unit folders' `name` or its
    template), with every drop-in systemd applies to it appended."""
    extra = b"\n".join(data for f in _dropin_folders(name) for data in dropins.get(f, []))
    unit, _, kind = name.rpartition(".")
    stem, at, _ = unit.partition("@")
    names = [name, f"{stem}@.{kind}"] if at else [name]
    found = [resolve(d + n) for d in _UNIT_DIRS for n in names]
    return [u.data + b"\n" + extra for u in (linked, *found) if u is not None]


def _socket_service(settings: list[tuple[str, str]], name: str) -> str:
    """The service an enabled socket starts: Service=, or name@.service with Accept=yes."""
    stem = name.removesuffix(".socket")
    service = next((v for k, v in reversed(settings) if k == "Service" and v), "")
    accept = next((v for k, v in reversed(settings) if k == "Accept"), "no")
    if service:
        return service
    return f"{stem}@.service" if accept.lower() in ("yes", "true", "on", "1") else f"{stem}.service"


def _unit_targets(members: Mapping[str, FileLike], path: str, depth: int = 0) -> list[str]:
    """The unit names a symlink at `path` leads to, one per hop (none: not a link)."""
    member = members.get(path)
    if member is None or depth > 8 or not member.is_symlink:
        return []
    target = member.data.decode(errors="replace")
    name = posixpath.basename(target)
    joined = (
        target.lstrip("/") if target.startswith("/") else posixpath.dirname(path) + "/" + target
    )
    return [name, *_unit_targets(members, posixpath.normpath(joined), depth + 1)]


def _unit_aliases(members: Mapping[str, FileLike], name: str) -> list[str]:
    """What the unit `name` is a symlink to in the unit folders (an alias), if anything."""
    return [t for d in _UNIT_DIRS for t in _unit_targets(members, d + name)]


def _is_getty_unit_or_dropin(parent: str, name: str) -> bool:
    """A getty unit, or a drop-in that applies to one (its own, a prefix's, all services')."""
    if parent.endswith(".d"):
        return bool(_GETTY.fullmatch(parent.removesuffix(".d"))) or parent in _GETTY_DROPINS
    return bool(_GETTY.fullmatch(name))


def _getty_override(data: bytes) -> str | None:
    """Why a getty unit or drop-in lets someone in without a password, or None."""
    for key, value in unit_settings(data):
        if key != "ExecStart" or not value:
            continue
        try:
            words = shlex.split(value.strip().lstrip("-@:+!|"))
        except ValueError:
            return f"unreadable ExecStart= in a getty unit: {value.strip()}"
        program = posixpath.basename(words[0]) if words else ""
        if program != "agetty":
            return f"the console runs {words[0]!r} instead of a login prompt"
        if why := _agetty_skips_password(words[1:]):
            return why
    return None


def _agetty_skips_password(args: list[str]) -> str | None:
    """Why agetty's arguments let someone in without a password, or None.

    Reads them as getopt does: long options by any unambiguous prefix, short
    options in clusters (-Jia root), the login options (login -f) wherever given.
    """
    for i, word in enumerate(args):
        if word == "--":
            return None
        following = args[i + 1] if i + 1 < len(args) else ""
        if word.startswith("--"):
            option, sep, inline = word.partition("=")
            if len(option) > 2 and any(o.startswith(option) for o in _AGETTY_LONG):
                return f"the console getty logs in without a password ({word})"
            forced = _login_forced(inline if sep else following)
            if len(option) > 2 and "--login-options".startswith(option) and forced:
                return f"the console getty skips authentication ({word} {following})"
        elif word.startswith("-") and len(word) > 1:
            for j, flag in enumerate(word[1:], 2):
                if flag in _AGETTY_FLAGS:
                    return f"the console getty logs in without a password ({word})"
                if flag == "o" and _login_forced(word[j:] or following):
                    return f"the console getty skips authentication (login {word[j:] or following})"
                if flag in _AGETTY_WITH_ARGUMENT:
                    break
    return None


def _login_forced(options: str) -> bool:
    """Whether login's options hold -f (no authentication), alone or in a cluster (-pf)."""
    for word in options.split():
        if word == "--":
            return False
        if word.startswith("-") and not word.startswith("--"):
            for flag in word[1:]:
                if flag == "f":
                    return True
                if flag in "hs":  # options that take the rest as their argument
                    break
    return False


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
