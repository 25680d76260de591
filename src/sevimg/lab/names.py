"""Operating system names for the matrix's rows, from the catalog (images/<distro>.yaml).

A report's label carries os-release's ID with everything but letters
dropped (`os-opensuseleap-16.0`); each distribution file gives its `name`
for its own `distro` ID and, in `os_release_ids`, for the IDs its systems
carry when those differ (almalinux, opensuse-leap).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sevimg.workspace import Workspace


def label_id(os_release_id: str) -> str:
    """An os-release ID as a label carries it: letters only, lower case."""
    return re.sub(r"[^a-zA-Z]", "", os_release_id).casefold()


def names_from_distros(distros: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Label ID → name, from distribution documents (their `distro`, `name`, `os_release_ids`)."""
    names: dict[str, str] = {}
    for data in sorted(distros, key=lambda d: str(d.get("distro", ""))):
        distro, name = data.get("distro"), data.get("name")
        if isinstance(distro, str) and isinstance(name, str):
            names.setdefault(label_id(distro), name)
        extra = data.get("os_release_ids") or {}
        if isinstance(extra, Mapping):
            for os_id, shown in sorted(extra.items()):
                if isinstance(os_id, str) and isinstance(shown, str):
                    names[label_id(os_id)] = shown
    return names


def catalog_names(ws: Workspace | None = None) -> dict[str, str]:
    """The names of `ws`'s catalog (else the workspace around the current folder); {} outside one.

    Only the distribution files are needed; a release file with errors does
    not keep the matrix from naming its rows.
    """
    from sevimg.catalog.index import load_catalog  # noqa: PLC0415 - the catalog is heavy
    from sevimg.problems import SevimgError  # noqa: PLC0415
    from sevimg.workspace import find_workspace  # noqa: PLC0415

    if ws is None:
        try:
            ws = find_workspace()
        except SevimgError:
            return {}
    catalog = load_catalog(ws)
    return names_from_distros(
        doc.data for doc in catalog.distros.values() if isinstance(doc.data, Mapping)
    )
