"""The archive keyrings the catalog's apt families need, and where a missing one comes from.

Every apt family (images/families/*.yaml, `apt.keyring`) and every distribution
file with its own `repository.keyring` names a keyring file that mkosi's apt
and `sevimg archive` (gpgv) check the archive's signatures with. A build
machine's own distribution may not carry another's keyring (Debian 12 has no
`ubuntu-keyring` candidate), so sevimg.yaml pins each one as a package of the
distribution's own archive, by URL and SHA-256 (`keyrings:`), and
`sevimg keyrings --install` (run by tools/setup) takes the keyring file out
of that package after checking the hash. Nothing unchecked is ever installed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sevimg.atomic import write_file_atomic
from sevimg.catalog.index import Catalog
from sevimg.imaging import pins, unpack
from sevimg.problems import SevimgError
from sevimg.settings import PROJECT_FILE, ToolPin, load_project
from sevimg.workspace import Workspace


@dataclass(frozen=True)
class KeyringPin:
    """One keyring package pinned in sevimg.yaml: which file of which package."""

    package: str
    version: str
    url: str
    sha256: str
    # keyring file the catalog names → the regular file in the package holding it
    keyrings: tuple[tuple[str, str], ...]

    @property
    def paths(self) -> tuple[str, ...]:
        """The keyring files it provides."""
        return tuple(path for path, _ in self.keyrings)

    def as_pin(self, keyring: str) -> ToolPin:
        """Keyring file `keyring` as a tool pin (the download and unpacking are the tools')."""
        member = dict(self.keyrings).get(keyring, keyring)
        return ToolPin(
            self.package, self.version, self.url, self.sha256, (), format="deb", member=member
        )


@dataclass(frozen=True)
class Needed:
    """A keyring file the catalog needs, and who needs it."""

    path: str
    needed_by: tuple[str, ...]  # catalog files (images/families/ubuntu.yaml, ...)


def load_keyring_pins(ws: Workspace) -> tuple[KeyringPin, ...]:
    """The keyring packages pinned in sevimg.yaml's `keyrings:` (none without the file)."""
    doc = load_project(ws)
    if doc is None:
        return ()
    raw: Mapping[str, Any] = doc.data.get("keyrings") or {}
    found = []
    for name, entry in sorted(raw.items()):
        pin = KeyringPin(
            name,
            entry["version"],
            entry["url"],
            entry["sha256"],
            tuple(sorted(entry["keyrings"].items())),
        )
        if not pin.as_pin(pin.paths[0]).has_file_name:
            raise SevimgError(
                f"{PROJECT_FILE}: keyrings.{name}.url does not end in a file name",
                hint="pin the URL of the package itself",
            )
        found.append(pin)
    return tuple(found)


def needed(catalog: Catalog) -> tuple[Needed, ...]:
    """Every keyring file the catalog's apt families and distributions name, sorted."""
    users: dict[str, list[str]] = {}
    for doc, facts in catalog.families.values():
        if facts.is_apt and facts.apt_keyring:
            users.setdefault(facts.apt_keyring, []).append(doc.display)
    for doc in catalog.distros.values():
        repository = doc.data.get("repository") if isinstance(doc.data, dict) else None
        if isinstance(repository, dict) and isinstance(repository.get("keyring"), str):
            users.setdefault(repository["keyring"], []).append(doc.display)
    return tuple(Needed(path, tuple(sorted(set(by)))) for path, by in sorted(users.items()))


def source_of(path: str, keyring_pins: Sequence[KeyringPin]) -> KeyringPin | None:
    """The pinned package that carries keyring file `path`, or None."""
    return next((p for p in keyring_pins if path in p.paths), None)


def missing(wanted: Sequence[Needed], root: Path = Path("/")) -> list[Needed]:
    """The needed keyrings that are not files below `root`."""
    return [n for n in wanted if not (root / n.path.lstrip("/")).is_file()]


def install(
    wanted: Sequence[Needed],
    keyring_pins: Sequence[KeyringPin],
    cache_dir: Path,
    *,
    root: Path = Path("/"),
    proxy: str | None = None,
) -> list[tuple[Needed, KeyringPin]]:
    """Install every missing keyring of `wanted` from its pinned package; what was installed.

    The package is downloaded (or read from the cache), checked against its
    pinned SHA-256 and unpacked by :mod:`sevimg.imaging.unpack`; a keyring no
    pin carries is a SevimgError naming the catalog files that need it, and
    nothing of a package whose hash differs is written.
    """
    done = []
    for need in missing(wanted, root):
        pin = source_of(need.path, keyring_pins)
        if pin is None:
            raise SevimgError(
                f"the keyring {need.path} ({', '.join(need.needed_by)}) is not on this machine "
                f"and {PROJECT_FILE} pins no package that carries it",
                hint="install the distribution's keyring package, or pin it under `keyrings:` "
                f"in {PROJECT_FILE} (URL and SHA-256 from the distribution's Packages index)",
            )
        data = pins.fetch(pin.as_pin(need.path), cache_dir, proxy=proxy)
        content = unpack.program(pin.as_pin(need.path), data)
        target = root / need.path.lstrip("/")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_file_atomic(target, content, mode=0o644)
        except OSError as exc:
            raise SevimgError(
                f"cannot write {target}: {exc.strerror or exc}", hint="run it as root"
            ) from None
        done.append((need, pin))
    return done
