"""What an image keeps out: the files it drops and the packages apt never installs.

mkosi's RemoveFiles= is sevimg's own list (payload) and the family's layout
paths. `exclude_packages:` of every layer is pinned to -1 in the build's apt
preferences by the renderer, so a dependency with alternatives takes another
one (Ubuntu's coreutils, for one). Pins are apt's: other package managers get
a located error, as does a package the image asks for, which could never be
both installed and kept out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sevimg.catalog import payload
from sevimg.catalog.records import Section
from sevimg.catalog.spec import Role
from sevimg.problems import Problem


def remove_files(role: Role, family_removes: Iterable[str]) -> tuple[str, ...]:
    """sevimg's own list first, then the generic and the family's layout paths, sorted."""
    rest = {*payload.REMOVE_FILES[role], *family_removes}
    return (*payload.EVERY_IMAGE_REMOVES, *sorted(rest - set(payload.EVERY_IMAGE_REMOVES)))


def excluded_packages(
    layers: Iterable[Section], packages: Sequence[str], *, role: str, apt: bool, distro: str
) -> tuple[tuple[str, ...], list[Problem]]:
    """The sorted union of the layers' exclude_packages, and the problems with them."""
    excluded: set[str] = set()
    problems: list[Problem] = []
    for layer in layers:
        for i, name in enumerate(layer.exclude_packages):
            where = layer.where.at("exclude_packages", i)
            if not apt:
                problems.append(
                    layer.where.doc.problem(
                        where,
                        f"{distro} does not use apt: exclude_packages pins packages out with "
                        "apt preferences, which its package manager does not read",
                    )
                )
            elif name in packages:
                problems.append(
                    layer.where.doc.problem(
                        where,
                        f"{name!r} is one of the {role} image's packages, so it cannot also be "
                        "excluded",
                    )
                )
            else:
                excluded.add(name)
    return tuple(sorted(excluded)), problems
