"""Finding and running the real mkosi.

mkosi is found, in this order: `SEVIMG_MKOSI` (a path), `mkosi` on PATH, and
the newest version `tools/install-mkosi` unpacked into the cache
(`.cache/mkosi/<version>/bin/mkosi`).

Whatever answers to that name is asked for its version with a short
timeout, in its own process group (a wrapper script's children die with it),
and its answer must read `mkosi VERSION`: a hung or babbling executable is a
clear error, never a wait or a crash.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sevimg import proc
from sevimg.mkosi_versions import MIN_MKOSI, OLDEST_MKOSI, parse_mkosi_version
from sevimg.problems import SevimgError

VERSION_TIMEOUT = 10.0  # mkosi --version answers in about a second
# `mkosi 25.3`, `mkosi 26~devel`, `mkosi 25.3.1`: the version, then nothing else odd.
_VERSION_LINE = re.compile(
    r"(?:mkosi )?(?P<version>[0-9]{1,4}(?:\.[0-9]{1,4}){0,3})(?:~[0-9A-Za-z.]{1,32})?"
    r"(?: \([ -~]{0,200}\))?"
)


@dataclass(frozen=True)
class Mkosi:
    """One mkosi executable and the version it reports."""

    path: Path
    version: str  # "25.3"
    origin: str  # how it was found: SEVIMG_MKOSI, PATH, cache

    @property
    def version_tuple(self) -> tuple[int, ...]:
        """(25, 3)"""
        return parse_mkosi_version(self.version)

    def run(
        self, args: Sequence[str], *, cwd: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run mkosi with `args` in its own process group, capturing output.

        SevimgError when it cannot be started or runs longer than `timeout` seconds.
        """
        try:
            return proc.run([self.path, *args], cwd=cwd, timeout=timeout)
        except OSError as exc:
            raise SevimgError(f"cannot run {self.path}: {exc.strerror or exc}") from None
        except proc.TimedOut:
            raise SevimgError(
                f"mkosi {' '.join(args)} did not finish within {timeout:g} s; it was stopped"
            ) from None


def _excerpt(text: str) -> str:
    """The first line of `text`, short and printable, for an error message."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return repr(line[:80] + ("..." if len(line) > 80 else ""))


def version_of(path: Path, *, timeout: float = VERSION_TIMEOUT) -> str:
    """The version an mkosi executable reports ('25.3'); a SevimgError naming `path` otherwise."""
    try:
        done = proc.run([path, "--version"], timeout=timeout)
    except proc.TimedOut:
        raise SevimgError(
            f"{path} --version did not answer within {timeout:.0f} s; stopped it",
            hint="point SEVIMG_MKOSI at a working mkosi, or install one with "
            f"tools/install-mkosi {OLDEST_MKOSI}",
        ) from None
    except OSError as exc:
        raise SevimgError(f"cannot run {path}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        raise SevimgError(
            f"{path} --version failed (exit status {done.returncode}): "
            f"{_excerpt(done.stderr or done.stdout)}"
        )
    lines = done.stdout.strip().splitlines()
    match = _VERSION_LINE.fullmatch(lines[0].strip()) if len(lines) == 1 else None
    if match is None:
        raise SevimgError(
            f"{path} does not look like mkosi: `--version` printed {_excerpt(done.stdout)}, "
            "not `mkosi VERSION`"
        )
    return ".".join(map(str, parse_mkosi_version(".".join(match["version"].split(".")[:2]))))


def cached(cache_dir: Path) -> list[tuple[tuple[int, ...], Path]]:
    """Versions unpacked by tools/install-mkosi, oldest first."""
    found = []
    root = cache_dir / "mkosi"
    if root.is_dir():
        for child in root.iterdir():
            exe = child / "bin" / "mkosi"
            if (child / ".complete").is_file() and os.access(exe, os.X_OK):
                try:
                    found.append((parse_mkosi_version(child.name), exe))
                except ValueError:
                    continue
    return sorted(found)


def find(cache_dir: Path, version: str | None = None) -> Mkosi | None:
    """The mkosi to use (a specific `version` when asked), or None when there is none."""
    candidates: list[tuple[Path, str]] = []
    if env := os.environ.get("SEVIMG_MKOSI"):
        candidates.append((Path(env), "SEVIMG_MKOSI"))
    if on_path := shutil.which("mkosi"):
        candidates.append((Path(on_path), "PATH"))
    candidates += [(exe, "cache") for _, exe in reversed(cached(cache_dir))]
    wanted = parse_mkosi_version(version) if version else None
    for path, origin in candidates:
        if origin == "cache" and wanted and parse_mkosi_version(path.parent.parent.name) != wanted:
            continue
        try:
            found = Mkosi(path, version_of(path), origin)
        except SevimgError:
            if origin == "SEVIMG_MKOSI":
                raise
            continue
        if wanted is None or found.version_tuple[: len(wanted)] == wanted:
            return found
    return None


def require(cache_dir: Path, version: str | None = None) -> Mkosi:
    """Like :func:`find`, but a SevimgError with the fix when mkosi is missing or too old."""
    found = find(cache_dir, version)
    if found is None:
        what = f"mkosi {version}" if version else "mkosi"
        raise SevimgError(
            f"{what} not found (looked at SEVIMG_MKOSI, PATH and {cache_dir / 'mkosi'})",
            hint=f"install it with: tools/install-mkosi {version or OLDEST_MKOSI}",
        )
    if found.version_tuple < MIN_MKOSI:
        raise SevimgError(
            f"mkosi {found.version} at {found.path} is older than {'.'.join(map(str, MIN_MKOSI))}",
            hint=f"install a supported one with: tools/install-mkosi {OLDEST_MKOSI}",
        )
    return found
