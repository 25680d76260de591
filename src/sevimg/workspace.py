"""Where things are: the workspace root, its catalog, and the templates and schemas to use.

A workspace is any folder with an `images/` folder in it (a fork of the
repository, or a vendor's folder holding only their release files). Templates
and schemas come from the workspace when it has them, file by file, and
otherwise from the copies shipped inside the installed package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sevimg.problems import SevimgError

IMAGES_DIR = "images"


def _packaged(kind: str) -> tuple[Path, ...]:
    """Folders holding the packaged copies of `templates` or `schema`."""
    found: list[Path] = []
    data = resources.files("sevimg") / "_data" / kind
    if data.is_dir():
        found.append(Path(str(data)))
    # An editable install (or running from a checkout) has no _data; the
    # checkout's own top-level folder is the packaged copy then.
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / kind).is_dir():
        found.append(checkout / kind)
    return tuple(found)


def packaged(kind: str) -> tuple[Path, ...]:
    """The shipped `templates` or `schema` folders, for files no workspace overrides (manifests)."""
    return _packaged(kind)


@dataclass(frozen=True)
class Workspace:
    """The folders one sevimg invocation works with."""

    root: Path

    @property
    def images_dir(self) -> Path:
        """The catalog folder."""
        return self.root / IMAGES_DIR

    @property
    def build_dir(self) -> Path:
        """Default output folder for rendered trees."""
        return self.root / "build"

    @property
    def out_dir(self) -> Path:
        """Default output folder for built artifacts."""
        return self.root / "out"

    @property
    def cache_dir(self) -> Path:
        """Caches (mkosi installs, downloads); honours SEVIMG_CACHE."""
        env = os.environ.get("SEVIMG_CACHE")
        return Path(env) if env else self.root / ".cache"

    def search_path(self, kind: str) -> tuple[Path, ...]:
        """Folders to look in for `templates` or `schema`, workspace copy first."""
        own = self.root / kind
        dirs = [own] if own.is_dir() else []
        dirs += [d for d in _packaged(kind) if d.resolve() != own.resolve()]
        if not dirs:
            raise SevimgError(
                f"no {kind} found: neither {own} nor a packaged copy exists; reinstall sevimg"
            )
        return tuple(dirs)

    def display(self, path: Path) -> str:
        """A path as shown to users: relative to the workspace root when inside it.

        The file itself is not resolved: a symlink is shown under its own name,
        and a dangling or looping one cannot make this fail.
        """
        try:
            return str((path.parent.resolve() / path.name).relative_to(self.root.resolve()))
        except (ValueError, OSError, RuntimeError):
            return str(path)


def find_workspace(start: Path | None = None, root: Path | None = None) -> Workspace:
    """The workspace for `root` if given, else the nearest folder above `start` holding images/."""
    if root is not None:
        root = root.expanduser()
        if not (root / IMAGES_DIR).is_dir():
            raise SevimgError(
                f"{root} is not a sevimg workspace: it has no {IMAGES_DIR}/ folder",
                hint=f"create {root / IMAGES_DIR} or point --root at a checkout of sevimg",
            )
        return Workspace(root.resolve())
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / IMAGES_DIR).is_dir():
            return Workspace(candidate)
    raise SevimgError(
        f"no sevimg workspace here: neither {here} nor a folder above it has an {IMAGES_DIR}/ folder",
        hint="run sevimg inside a checkout of the catalog, or pass --root DIR",
    )
