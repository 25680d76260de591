"""The catalog: every images/*.yaml file, loaded and checked against its schema.

`images/<distro>.yaml` holds a distribution's defaults and
`images/<distro>-<release>.yaml` one release. Loading never stops at the
first bad file: every problem in the catalog is collected, so `sevimg
validate` can report them all at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sevimg.catalog.load import Document, LoadError, load_file
from sevimg.catalog.schema import DISTRO, RELEASE, control_character, schemas_for
from sevimg.problems import Problem, SevimgError, error, has_errors
from sevimg.workspace import Workspace

DISTRO_NAME = re.compile(r"[a-z][a-z0-9]{1,31}")
RELEASE_NAME = re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,4})?|[a-z][a-z0-9]{1,31}")
IMAGE_NAME_HELP = "<distro>-<release>, e.g. fedora-45, ubuntu-26.04, debian-forky"


@dataclass(frozen=True)
class Entry:
    """One release of the catalog: its own file and its distribution's file."""

    image: str
    distro: str
    release: Document
    distro_doc: Document


@dataclass(frozen=True)
class Catalog:
    """Everything read from images/, and every problem found while reading it."""

    workspace: Workspace
    distros: Mapping[str, Document]
    entries: Mapping[str, Entry]
    problems: tuple[Problem, ...] = field(default=())
    broken: frozenset[str] = frozenset()  # image names whose files have errors

    def names(self) -> list[str]:
        """Image names, sorted."""
        return sorted(self.entries)

    def get(self, image: str) -> Entry:
        """The entry for `image`, or a SevimgError naming the known images."""
        if image in self.entries:
            return self.entries[image]
        if image in self.broken:
            # The file (or its distribution's) exists but could not even be
            # loaded: their problems say why.
            distro = image.partition("-")[0]
            own = [
                p for p in self.problems if p.file.endswith((f"/{image}.yaml", f"/{distro}.yaml"))
            ]
            raise SevimgError(f"{image} cannot be loaded", own)
        close = [n for n in self.names() if n.split("-")[0] == image.split("-", maxsplit=1)[0]]
        known = ", ".join(close or self.names()) or "none"
        raise SevimgError(
            f"no image {image!r} in {self.workspace.display(self.workspace.images_dir)}/ (known: {known})"
        )

    def select(self, images: Iterable[str]) -> list[Entry]:
        """Entries for the given names, in catalog order; all of them when none are given."""
        wanted = list(dict.fromkeys(images))
        if not wanted:
            return [self.entries[n] for n in self.names()]
        return [self.get(n) for n in sorted(wanted)]


def split_image_name(name: str) -> tuple[str, str] | None:
    """'ubuntu-26.04' → ('ubuntu', '26.04'); None when it is not <distro>-<release>."""
    distro, sep, release = name.partition("-")
    if not sep or not DISTRO_NAME.fullmatch(distro) or not RELEASE_NAME.fullmatch(release):
        return None
    return distro, release


def load_catalog(ws: Workspace) -> Catalog:
    """Load and schema-check every file under images/; problems are collected, not raised."""
    schemas = schemas_for(ws.search_path("schema"))
    problems: list[Problem] = []
    distros: dict[str, Document] = {}
    releases: dict[str, Document] = {}
    bad_distros: set[str] = set()
    broken: set[str] = set()

    files = sorted(p for p in ws.images_dir.iterdir() if p.suffix in (".yaml", ".yml"))
    for path in files:
        display = ws.display(path)
        if control_character(display):
            # Shown escaped, so the message stays on one line.
            display = display.encode("unicode_escape").decode("ascii")
        stem = path.stem
        if path.suffix == ".yml":
            problems.append(error(display, "catalog files end in .yaml; rename it"))
            continue
        if DISTRO_NAME.fullmatch(stem):
            kind, name = DISTRO, stem
        elif split_image_name(stem):
            kind, name = RELEASE, stem
        else:
            problems.append(
                error(
                    display,
                    f"file name must be <distro>.yaml or {IMAGE_NAME_HELP.replace('e.g.', 'as in')}.yaml",
                )
            )
            continue
        try:
            doc = load_file(path, display=display)
        except LoadError as exc:
            problems.append(exc.problem)
            (bad_distros if kind == DISTRO else broken).add(name)
            continue
        found = schemas.validate(doc, kind)
        problems += found
        if has_errors(found):
            (bad_distros if kind == DISTRO else broken).add(name)
        if kind == DISTRO:
            distros[name] = doc
            if not has_errors(found) and doc.data.get("distro") != name:
                problems.append(
                    doc.problem(
                        ("distro",),
                        f"says {doc.data.get('distro')!r} but the file is {path.name}; they must agree",
                    )
                )
                bad_distros.add(name)
        else:
            releases[name] = doc
            if not has_errors(found) and isinstance(doc.data, dict):
                expected = stem.partition("-")[2]
                if doc.data.get("release") != expected:
                    problems.append(
                        doc.problem(
                            ("release",),
                            f"says {doc.data.get('release')!r} but the file is {path.name}; "
                            f'they must agree (release: "{expected}")',
                        )
                    )
                    broken.add(name)

    entries: dict[str, Entry] = {}
    for image, doc in sorted(releases.items()):
        distro = image.partition("-")[0]
        if distro not in distros and distro in bad_distros:
            broken.add(image)  # its distribution's file does not load: that file's problems say why
            continue
        if distro not in distros:
            problems.append(
                error(
                    doc.display,
                    f"no images/{distro}.yaml for this release; every release needs its "
                    f"distribution's defaults file (copy one of {', '.join(sorted(distros)) or 'the shipped ones'})",
                    line=1,
                    column=1,
                )
            )
            broken.add(image)
            continue
        if distro in bad_distros:
            broken.add(image)
        entries[image] = Entry(image=image, distro=distro, release=doc, distro_doc=distros[distro])

    return Catalog(
        workspace=ws,
        distros=distros,
        entries=entries,
        problems=tuple(sorted(set(problems))),
        broken=frozenset(broken),
    )
