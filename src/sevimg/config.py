"""Workspace settings beyond the catalog.

`sevimg.yaml` (committed): project-wide settings, today the payload tools
pinned by version and SHA-256. `sevimg.local.yaml` (git-ignored): what
differs per build machine: mirrors, the tools tree, proxy, caches, extra
sandbox trees, an offline tools folder. Both are optional, both are checked
against their schema with the same located errors as the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from sevimg.loader import Document, LoadError, load_file
from sevimg.problems import SevimgError, has_errors
from sevimg.schema import LOCAL, PROJECT, schemas_for
from sevimg.workspace import Workspace

PROJECT_FILE = "sevimg.yaml"
LOCAL_FILE = "sevimg.local.yaml"
DEFAULT_INSTALL_DIR = "/usr/local/bin"


@dataclass(frozen=True)
class ToolPin:
    """One payload tool: exactly which file, and where it goes."""

    name: str
    version: str
    url: str
    sha256: str
    roles: tuple[str, ...]
    format: Literal["binary", "deb"] = "binary"
    member: str | None = None
    install: str = ""

    @property
    def file_name(self) -> str:
        """The downloaded file's name (the last part of its URL)."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def target(self) -> str:
        """Where the program is installed in the image."""
        return self.install or f"{DEFAULT_INSTALL_DIR}/{self.name}"


@dataclass(frozen=True)
class AptMirror:
    """A Debian or Ubuntu mirror replacing mkosi's default sources."""

    url: str
    security_url: str | None = None


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


def load_tool_pins(ws: Workspace) -> tuple[ToolPin, ...]:
    """The tools pinned in sevimg.yaml (none when there is no such file)."""
    doc = _load(ws, PROJECT_FILE, PROJECT)
    if doc is None:
        return ()
    pins = []
    for name, raw in sorted((doc.data.get("tools") or {}).items()):
        pin = ToolPin(
            name=name,
            version=raw["version"],
            url=raw["url"],
            sha256=raw["sha256"],
            roles=tuple(raw["roles"]),
            format=raw.get("format", "binary"),
            member=raw.get("member"),
            install=raw.get("install", ""),
        )
        if pin.format == "deb" and not pin.member:
            raise SevimgError(
                f"{PROJECT_FILE} is not valid",
                [
                    doc.problem(
                        ("tools", name),
                        "format: deb needs `member:` (the program's path in the package)",
                    )
                ],
            )
        pins.append(pin)
    return tuple(pins)


def load_local(ws: Workspace) -> LocalConfig:
    """sevimg.local.yaml, or the defaults when there is none."""
    doc = _load(ws, LOCAL_FILE, LOCAL)
    if doc is None:
        return LocalConfig()
    data: Mapping[str, Any] = doc.data
    base = doc.path.parent

    def local_path(value: str) -> Path:
        return (base / Path(value).expanduser()).resolve()

    mirrors = cast(Mapping[str, Mapping[str, str]], data.get("mirrors") or {})
    tools_tree = data.get("tools_tree")
    return LocalConfig(
        source=doc.display,
        apt_mirrors={
            d: AptMirror(m["url"], m.get("security_url"))
            for d, m in mirrors.items()
            if d in ("debian", "ubuntu")
        },
        rpm_mirrors={d: m["url"] for d, m in mirrors.items() if d not in ("debian", "ubuntu")},
        tools_tree=(tools_tree["distribution"], tools_tree["release"]) if tools_tree else None,
        proxy=data.get("proxy"),
        cache_dir=local_path(data["cache_dir"]) if data.get("cache_dir") else None,
        sandbox_trees=tuple(local_path(p) for p in data.get("sandbox_trees") or ()),
        tools_dir=local_path(data["tools_dir"]) if data.get("tools_dir") else None,
    )
