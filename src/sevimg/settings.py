"""Workspace settings beyond the catalog.

`sevimg.yaml` (committed): project-wide settings, today the payload tools
pinned by version and SHA-256. `sevimg.local.yaml` (git-ignored): what
differs per build machine: mirrors, the tools tree, proxy, caches, extra
sandbox trees, an offline tools folder. Both are optional, both are checked
against their schema with the same located errors as the catalog.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal, cast

from sevimg.artifacts.checksums import SHA256_HEX
from sevimg.catalog.index import Catalog, families_by_distribution, load_catalog
from sevimg.catalog.load import Document, LoadError, load_file
from sevimg.catalog.schema import LOCAL, PROJECT, control_character, schemas_for
from sevimg.problems import Problem, SevimgError, error, has_errors
from sevimg.workspace import Workspace

PROJECT_FILE = "sevimg.yaml"
LOCAL_FILE = "sevimg.local.yaml"
DEFAULT_INSTALL_DIR = "/usr/local/bin"
# Where pinned tools may go: on PATH (the payload finds them with `command -v`),
# or a folder of their own. Never over the system's files or sevimg's payload.
TOOL_DIRS = (DEFAULT_INSTALL_DIR, "/usr/local/lib/sevimg-tools")
# Pure-Python libraries (format: wheel) go to the harness's own import path,
# each as its top-level package folder (`member`).
PYTHON_DIR = "/usr/lib/sevimg/python"
# The schema checks these too; a workspace may override the schema, and these
# become paths on disk (the cache, the staged tree), so they are checked here again.
_TOOL_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
_FILE_NAME = re.compile(r"[A-Za-z0-9._~+-]{1,255}")  # a download, in the cache and tools_dir
_PATH_PART = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,254}")


@dataclass(frozen=True)
class ToolPin:
    """One payload tool: exactly which file, and where it goes."""

    name: str
    version: str
    url: str
    sha256: str
    roles: tuple[str, ...]
    format: Literal["binary", "deb", "wheel"] = "binary"
    member: str | None = None
    install: str = ""

    @property
    def package(self) -> str:
        """A wheel's package folder: `member` (/sevsnpmeasure) without its slash."""
        return (self.member or self.name).strip("/")

    @property
    def is_library(self) -> bool:
        """A pure-Python wheel: unpacked as a package folder, not installed as a program."""
        return self.format == "wheel"

    @property
    def file_name(self) -> str:
        """The downloaded file's name (the last part of its URL)."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def has_file_name(self) -> bool:
        """The URL ends in a plain file name (it names the download in the cache and tools_dir)."""
        name = self.file_name
        return bool(_FILE_NAME.fullmatch(name)) and name not in (".", "..")

    @property
    def target(self) -> str:
        """Where the program (a wheel: its package folder) is installed in the image."""
        if self.is_library:
            return f"{self.install or PYTHON_DIR}/{self.package}"
        return self.install or f"{DEFAULT_INSTALL_DIR}/{self.name}"


@dataclass(frozen=True)
class AptMirror:
    """A Debian or Ubuntu mirror replacing mkosi's default sources."""

    url: str
    security_url: str | None = None
    # Where it is set: sevimg.local.yaml, or the distribution file whose
    # `repository.url` is the default (what sources say they were written from).
    origin: str = LOCAL_FILE


@dataclass(frozen=True)
class LocalConfig:
    """This machine's build settings (all optional)."""

    source: str | None = None  # the file they came from, for messages
    apt_mirrors: Mapping[str, AptMirror] = field(default_factory=dict)
    rpm_mirrors: Mapping[str, str] = field(default_factory=dict)
    tools_tree: tuple[str, str] | None = None  # (distribution, release)
    proxy: str | None = None
    cache_dir: Path | None = None
    sandbox_trees: tuple[Path, ...] = ()
    tools_dir: Path | None = None


def _load(ws: Workspace, name: str, kind: str) -> Document | None:
    path = ws.root / name
    if not path.exists():
        return None
    try:
        doc = load_file(path, display=ws.display(path))
    except LoadError as exc:
        raise SevimgError(f"{name} cannot be loaded", [exc.problem]) from None
    problems = schemas_for(ws.search_path("schema")).validate(doc, kind)
    if has_errors(problems):
        raise SevimgError(f"{name} is not valid", problems)
    return doc


def path_problem(path: str) -> str | None:
    """Why `path` is not a normalised absolute path (no '.', '..', '//', trailing '/'), or None."""
    if found := control_character(path):
        return f"contains a control character ({found})"
    pure = PurePosixPath(path)
    if not pure.is_absolute() or path.startswith("//"):
        return "is not an absolute path"
    if ".." in pure.parts or pure.as_posix() != path:
        return "is not a normalised path (no '.', '..', '//' or trailing '/')"
    if not all(_PATH_PART.fullmatch(part) for part in pure.parts[1:]):
        return "is not a path of plain names (letters, digits, . _ + -)"
    return None


def install_problem(target: str, *, library: bool = False) -> str | None:
    """Why a tool (`library`: a wheel's package folder) cannot be installed at `target`, or None."""
    if reason := path_problem(target):
        return reason
    folders = (PYTHON_DIR,) if library else TOOL_DIRS
    if not any(target.startswith(f"{folder}/") for folder in folders):
        where = " or ".join(f"{folder}/" for folder in folders)
        return f"is outside the folders tools go to: install it below {where}"
    return None


def _package_problem(package: str) -> str | None:
    """Why `package` is not a Python package folder name, or None."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", package):
        return "is not a top-level package folder of the wheel, such as /sevsnpmeasure"
    return None


def _pin_problems(doc: Document, pins: Sequence[ToolPin]) -> list[Problem]:
    """What the schema cannot see: where each tool lands, and whether two collide."""
    problems: list[Problem] = []
    raw: Mapping[str, Any] = doc.data.get("tools") or {}

    def where(pin: ToolPin) -> tuple[tuple[str, ...], str]:
        if pin.install or "install" in raw.get(pin.name, {}):
            return ("tools", pin.name, "install"), ""
        return ("tools", pin.name), " (its default install path)"

    placed: list[ToolPin] = []
    for pin in pins:
        base = ("tools", pin.name)
        if not _TOOL_NAME.fullmatch(pin.name):
            problems.append(doc.problem(base, f"{pin.name!r} is not a tool name", key=True))
            continue
        if not SHA256_HEX.fullmatch(pin.sha256):
            problems.append(doc.problem((*base, "sha256"), "is not 64 lower-case hex digits"))
        if not pin.has_file_name:
            problems.append(
                doc.problem(
                    (*base, "url"),
                    f"{pin.url!r} does not end in a file name (the last part names the "
                    "download in the cache and in tools_dir)",
                )
            )
        if pin.format == "deb" and not pin.member:
            problems.append(
                doc.problem(base, "format: deb needs `member:` (the program's path in the package)")
            )
        if pin.is_library:
            if not pin.member:
                problems.append(
                    doc.problem(
                        base, "format: wheel needs `member:` (the package folder to install)"
                    )
                )
                continue
            if reason := _package_problem(pin.package):
                problems.append(doc.problem((*base, "member"), f"{pin.member!r} {reason}"))
                continue
        if pin.member and (reason := path_problem(pin.member)):
            problems.append(doc.problem((*base, "member"), f"{pin.member!r} {reason}"))
        path, what = where(pin)
        target = pin.install if "install" in raw.get(pin.name, {}) else pin.target
        if pin.is_library:
            target = pin.target
        if reason := install_problem(target, library=pin.is_library):
            problems.append(doc.problem(path, f"{target!r} {reason}"))
            continue
        for other in placed:
            if other.target == pin.target:
                problems.append(
                    doc.problem(
                        path,
                        f"{pin.target}{what} is where {other.name} goes too; "
                        "each tool needs a path of its own",
                    )
                )
            elif pin.target.startswith(other.target + "/") or other.target.startswith(
                pin.target + "/"
            ):
                inner, outer = sorted((pin.target, other.target), key=len, reverse=True)
                problems.append(
                    doc.problem(
                        path,
                        f"{pin.target}{what} and {other.target} ({other.name}) overlap: "
                        f"{inner} would be inside {outer}",
                    )
                )
        placed.append(pin)
    return problems


def load_project(ws: Workspace) -> Document | None:
    """sevimg.yaml, checked against its schema (None when there is no such file)."""
    return _load(ws, PROJECT_FILE, PROJECT)


def load_tool_pins(ws: Workspace) -> tuple[ToolPin, ...]:
    """The tools pinned in sevimg.yaml (none when there is no such file)."""
    doc = _load(ws, PROJECT_FILE, PROJECT)
    if doc is None:
        return ()
    pins = tuple(
        ToolPin(
            name=name,
            version=raw["version"],
            url=raw["url"],
            sha256=raw["sha256"],
            roles=tuple(raw["roles"]),
            format=raw.get("format", "binary"),
            member=raw.get("member"),
            install=raw.get("install", ""),
        )
        for name, raw in sorted((doc.data.get("tools") or {}).items())
    )
    if problems := _pin_problems(doc, pins):
        raise SevimgError(f"{PROJECT_FILE} is not valid", problems)
    return pins


def load_local(ws: Workspace, apt_distributions: Collection[str] | None = None) -> LocalConfig:
    """sevimg.local.yaml, or the defaults when there is none.

    `apt_distributions` are the mkosi distributions whose family takes apt
    sources (sevimg writes them); the catalog's when not given.
    """
    doc = _load(ws, LOCAL_FILE, LOCAL)
    if doc is None:
        return LocalConfig()
    data: Mapping[str, Any] = doc.data
    base = doc.path.parent

    def local_path(value: str) -> Path:
        return (base / Path(value).expanduser()).resolve()

    mirrors = cast(Mapping[str, Mapping[str, str]], data.get("mirrors") or {})
    if apt_distributions is None:
        try:
            found = families_by_distribution(load_catalog(ws))
        except SevimgError:  # an unreadable catalog is reported by the command's own check
            found = {}
        apt_distributions = {d for d, family in found.items() if family.is_apt}
    tools_tree = data.get("tools_tree")
    return LocalConfig(
        source=doc.display,
        apt_mirrors={
            d: AptMirror(m["url"], m.get("security_url"), doc.display)
            for d, m in mirrors.items()
            if d in apt_distributions
        },
        rpm_mirrors={d: m["url"] for d, m in mirrors.items() if d not in apt_distributions},
        tools_tree=(tools_tree["distribution"], tools_tree["release"]) if tools_tree else None,
        proxy=data.get("proxy"),
        cache_dir=local_path(data["cache_dir"]) if data.get("cache_dir") else None,
        sandbox_trees=tuple(local_path(p) for p in data.get("sandbox_trees") or ()),
        tools_dir=local_path(data["tools_dir"]) if data.get("tools_dir") else None,
    )


def default_apt_mirrors(catalog: Catalog) -> dict[str, AptMirror]:
    """mkosi distribution → its distribution file's `repository.url`, for apt families.

    sevimg writes every Debian/Ubuntu build's sources itself (the tools tree's
    too), from these unless sevimg.local.yaml names a mirror: so every
    repository a build uses is stated, and none is a debug suite.
    """
    found: dict[str, AptMirror] = {}
    families = families_by_distribution(catalog)
    for doc in sorted(catalog.distros.values(), key=lambda d: d.display):
        data = doc.data
        if not isinstance(data, dict) or not isinstance(data.get("mkosi"), dict):
            continue
        distribution = data["mkosi"].get("distribution")
        family = families.get(distribution) if isinstance(distribution, str) else None
        repository = data.get("repository")
        if family is None or not family.is_apt or not isinstance(repository, dict):
            continue
        if isinstance(url := repository.get("url"), str) and isinstance(distribution, str):
            found.setdefault(distribution, AptMirror(url, origin=f"{doc.display} repository.url"))
    return found


def with_default_mirrors(local: LocalConfig, catalog: Catalog) -> LocalConfig:
    """`local` with every apt distribution's default mirror where it names none."""
    mirrors = {**default_apt_mirrors(catalog), **local.apt_mirrors}
    return replace(local, apt_mirrors=mirrors)


def settings_problems(ws: Workspace, catalog: Catalog) -> list[Problem]:
    """What is wrong with sevimg.yaml and sevimg.local.yaml (none when they are fine or absent).

    `sevimg validate` reports these beside the catalog's, so a bad pin or
    mirror is found before a build stops on it.
    """
    found: list[Problem] = []
    apt = {d for d, family in families_by_distribution(catalog).items() if family.is_apt}
    for name, load in (
        (PROJECT_FILE, load_tool_pins),
        (LOCAL_FILE, lambda ws: load_local(ws, apt)),
    ):
        try:
            load(ws)
        except SevimgError as exc:
            found.extend(exc.problems or [error(str(ws.root / name), exc.message)])
    return found
