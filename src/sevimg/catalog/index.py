"""The catalog: every images/*.yaml file, loaded and checked against its schema.

`images/families/<family>.yaml` holds what a packaging family shares,
`images/<distro>.yaml` a distribution's defaults and
`images/<distro>-<release>.yaml` one release. Loading never stops at the
first bad file: every problem in the catalog is collected, so `sevimg
validate` can report them all at once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sevimg.catalog.load import Document, LoadError, load_file
from sevimg.catalog.records import (
    DistroRecord,
    FamilyRecord,
    Records,
    ReleaseRecord,
    distro_record,
    family_record,
    release_record,
)
from sevimg.catalog.schema import DISTRO, FAMILY, RELEASE, Schemas, control_character, schemas_for
from sevimg.catalog.spec import FamilyFacts, decode_family
from sevimg.problems import Problem, SevimgError, error, has_errors
from sevimg.workspace import Workspace

DISTRO_NAME = re.compile(r"[a-z][a-z0-9]{1,31}")
RELEASE_NAME = re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,4})?|[a-z][a-z0-9]{1,31}")
IMAGE_NAME_HELP = "<distro>-<release>, e.g. fedora-45, ubuntu-26.04, debian-forky"


@dataclass(frozen=True)
class Entry:
    """One release of the catalog: its own file, its distribution's and its family's."""

    image: str
    distro: str
    release: Document
    distro_doc: Document
    family_doc: Document
    family: FamilyFacts
    # Decoded once after the schema check; None when one of the files has errors
    # (the release is then in Catalog.broken and is never resolved).
    records: Records | None = None


@dataclass(frozen=True)
class Catalog:
    """Everything read from images/, and every problem found while reading it."""

    workspace: Workspace
    distros: Mapping[str, Document]
    entries: Mapping[str, Entry]
    families: Mapping[str, tuple[Document, FamilyFacts]] = field(default_factory=dict)
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


FAMILIES_DIR = "families"


def _load_families(
    ws: Workspace, schemas: Schemas, problems: list[Problem]
) -> dict[str, tuple[Document, FamilyFacts]]:
    """images/families/*.yaml that load and pass their schema; problems go to `problems`."""
    folder = ws.images_dir / FAMILIES_DIR
    if not folder.is_dir():
        return {}
    families: dict[str, tuple[Document, FamilyFacts]] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml")):
        display = ws.display(path)
        if control_character(display):
            display = display.encode("unicode_escape").decode("ascii")
        if path.suffix == ".yml" or not DISTRO_NAME.fullmatch(path.stem):
            problems.append(
                error(display, "family files are named <family>.yaml (lower-case letters, digits)")
            )
            continue
        try:
            doc = load_file(path, display=display)
        except LoadError as exc:
            problems.append(exc.problem)
            continue
        found = schemas.validate(doc, FAMILY)
        problems += found
        if has_errors(found):
            continue
        if doc.data.get("family") != path.stem:
            problems.append(
                doc.problem(
                    ("family",),
                    f"says {doc.data.get('family')!r} but the file is {path.name}; they must agree",
                )
            )
            continue
        families[path.stem] = (doc, decode_family(doc.data))
    return families


def _packaged_root() -> Path | None:
    """Where sevimg's own images/families/ lives: the wheel's _data, else the checkout."""
    for root in (
        Path(str(resources.files("sevimg") / "_data")),
        Path(__file__).resolve().parents[3],
    ):
        if (root / "images" / FAMILIES_DIR).is_dir() and (root / "schema").is_dir():
            return root
    return None


def machine_families(ws: Workspace | None) -> list[FamilyFacts]:
    """The valid families, for commands that look at this machine (run, doctor).

    The workspace's own family files when there are any, else the ones
    shipped with sevimg; invalid files are skipped (`sevimg validate` names them).
    """
    if ws is None or not (ws.images_dir / FAMILIES_DIR).is_dir():
        root = _packaged_root()
        if root is None:
            return []
        ws = Workspace(root)
    found = _load_families(ws, schemas_for(ws.search_path("schema")), [])
    return [facts for _doc, facts in found.values()]


def load_catalog(ws: Workspace) -> Catalog:
    """Load and schema-check every file under images/; problems are collected, not raised."""
    schemas = schemas_for(ws.search_path("schema"))
    problems: list[Problem] = []
    families = _load_families(ws, schemas, problems)
    distros: dict[str, Document] = {}
    releases: dict[str, Document] = {}
    family_records: dict[str, FamilyRecord] = {
        name: family_record(doc) for name, (doc, _facts) in families.items()
    }
    distro_records: dict[str, DistroRecord] = {}
    release_records: dict[str, ReleaseRecord] = {}
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
            elif not has_errors(found) and doc.data.get("family") not in families:
                named = str(doc.data.get("family"))
                close = difflib.get_close_matches(named, sorted(families), n=1)
                problems.append(
                    doc.problem(
                        ("family",),
                        f"no images/{FAMILIES_DIR}/{named}.yaml "
                        f"(known families: {', '.join(sorted(families)) or 'none'})"
                        + (f"; did you mean {close[0]!r}?" if close else ""),
                    )
                )
                bad_distros.add(name)
            elif not has_errors(found):
                distro_records[name] = distro_record(doc)
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
                else:
                    release_records[name] = release_record(doc)

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
        data = distros[distro].data
        family = families.get(str(data.get("family"))) if isinstance(data, dict) else None
        if family is None:
            broken.add(image)  # the distribution file's problem says why
            continue
        entries[image] = Entry(
            image=image,
            distro=distro,
            release=doc,
            distro_doc=distros[distro],
            family_doc=family[0],
            family=family[1],
            records=_records(
                family_records.get(str(data.get("family"))),
                distro_records.get(distro),
                release_records.get(image),
            ),
        )

    return Catalog(
        workspace=ws,
        distros=distros,
        entries=entries,
        families=families,
        problems=tuple(sorted(set(problems))),
        broken=frozenset(broken),
    )


def _records(
    family: FamilyRecord | None, distro: DistroRecord | None, release: ReleaseRecord | None
) -> Records | None:
    if family is None or distro is None or release is None:
        return None
    return Records(family, distro, release)


def families_by_distribution(catalog: Catalog) -> dict[str, FamilyFacts]:
    """mkosi distribution → its family's facts, from the distribution files that load."""
    found: dict[str, FamilyFacts] = {}
    for doc in catalog.distros.values():
        data = doc.data
        if not isinstance(data, dict) or not isinstance(data.get("mkosi"), dict):
            continue
        family = catalog.families.get(str(data.get("family")))
        distribution = data["mkosi"].get("distribution")
        if family is not None and isinstance(distribution, str):
            found.setdefault(distribution, family[1])
    return found
