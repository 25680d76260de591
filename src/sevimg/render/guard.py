"""The rendered tree, read as mkosi will read it, against :mod:`sevimg.catalog.security`.

The catalog is checked before rendering; a workspace's own templates are
not. Whatever they put in mkosi.conf (Autologin=, RootPassword=, SSH=, the
kernel command line, packages), in a systemd preset, or among the payload's
files is checked here, before mkosi runs. A template can still run any
script; the post-build check of the UKI is the net for that.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from sevimg.catalog import security, security_files

_TRUE = frozenset({"1", "yes", "y", "true", "on", "always", "auto", "runtime"})


@dataclass(frozen=True)
class _Entry:
    """A rendered file as security_files sees a file of an image."""

    data: bytes
    mode: int
    is_symlink: bool = False


def _settings(conf: str) -> Iterator[tuple[str, str]]:
    """(key, value) of an mkosi.conf, indented continuation lines joined to their key."""
    key, parts = "", []
    for line in conf.splitlines():
        if line[:1].isspace() and key:
            parts.append(line.strip())
            continue
        if key:
            yield key, " ".join(parts)
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";", "[")) or "=" not in stripped:
            key, parts = "", []
            continue
        key, _, value = stripped.partition("=")
        key, parts = key.strip(), [value.strip()]
    if key:
        yield key, " ".join(parts)


def mkosi_conf(conf: str) -> list[str]:
    """Ways in that an mkosi.conf's own settings open."""
    found: list[str] = []
    for key, value in _settings(conf):
        lower = key.lower()
        if lower == "autologin" and value.lower() in _TRUE:
            found.append(f"{key}={value} logs the console in as root")
        elif lower == "rootpassword" and value:
            found.append(f"{key}= gives root a password")
        elif lower == "ssh" and value.lower() in _TRUE:
            found.append(f"{key}={value} sets up an SSH server")
        elif lower.startswith("kernelcommandline"):
            found += [
                f"{key}= has {f.what!r}, which {f.why}"
                for f in security.kernel_command_line(security.split_command_line(value))
                if f.error
            ]
        elif lower in ("packages", "volatilepackages"):
            found += [f"{key}= installs {f}" for f in security.packages(value.split())]
    return found


def presets(text: str, units: Mapping[str, bytes]) -> list[tuple[str, str]]:
    """(unit, why) for the units a systemd preset file enables that open a way in, by
    name or by what they run (`units`: the rendered unit files by name)."""
    found = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "enable":
            continue
        unit = words[1]
        if security.unit_opens_login(unit) or unit in security.RESCUE_UNITS:
            found.append((unit, f"a preset enables {unit}, a way in"))
        elif unit in units and (runs := security_files.unit_opens_console(units[unit])):
            found.append((unit, f"{unit} {runs}, and a preset enables it"))
    return found


def check_files(files: Mapping[str, tuple[bytes, int]], extra: str) -> list[tuple[str, str]]:
    """(rendered path, why) for everything unsafe in a rendered tree.

    `files` maps each path of the tree to (content, mode); `extra` is the
    folder mkosi copies into the image.
    """
    found: list[tuple[str, str]] = []
    members = {
        path.removeprefix(f"{extra}/"): _Entry(data, mode)
        for path, (data, mode) in files.items()
        if path.startswith(f"{extra}/")
    }
    unit_paths = {posixpath.basename(p): p for p in files if "/systemd/system/" in p}
    units = {name: files[path][0] for name, path in unit_paths.items()}
    for path, (data, _) in sorted(files.items()):
        if path == "mkosi.conf":
            found += [(path, why) for why in mkosi_conf(data.decode(errors="replace"))]
        elif path.startswith(f"{extra}/") and posixpath.dirname(path).endswith("system-preset"):
            for unit, why in presets(data.decode(errors="replace"), units):
                found.append(
                    (unit_paths.get(unit, path) if "preset enables it" in why else path, why)
                )
    for finding in security_files.image_files(members, members.get):
        if finding.error:
            where = f"{extra}/{finding.what.lstrip('/')}" if finding.what else extra
            found.append((where, finding.why))
    return found
