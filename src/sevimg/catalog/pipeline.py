"""Run every check the catalog has, per release: schema, resolution, policy.

This is the one place that strings load → validate → resolve → policy
together, so `list`, `show`, `validate`, `render`, `new` and `build` all see
the same verdict for the same files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sevimg.catalog import policy
from sevimg.catalog.index import Catalog, Entry
from sevimg.catalog.resolve import resolve_all, roles_of
from sevimg.catalog.spec import ImageSpec, Role
from sevimg.problems import Problem, SevimgError, has_errors


@dataclass(frozen=True)
class Checked:
    """One release after every check: its specs (if it resolved) and its problems."""

    entry: Entry
    specs: tuple[ImageSpec, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not has_errors(self.problems)

    def spec(self, role: Role) -> ImageSpec:
        """The spec of one role; SevimgError if the release has no such role."""
        for spec in self.specs:
            if spec.role == role:
                return spec
        roles = ", ".join(roles_of(self.entry))
        raise SevimgError(f"{self.entry.image} has no {role} image (roles: {roles})")


def check_entry(catalog: Catalog, entry: Entry, *, debug: bool = False) -> Checked:
    """All problems of one release, including those of its distribution's file."""
    files = {entry.release.display, entry.distro_doc.display}
    problems = [p for p in catalog.problems if p.file in files]
    if entry.image in catalog.broken:
        return Checked(entry, (), tuple(sorted(set(problems))))
    specs, resolve_problems = resolve_all(entry, debug=debug)
    problems += resolve_problems
    if not has_errors(resolve_problems):
        problems += policy.check(specs, entry)
    return Checked(entry, tuple(specs), tuple(sorted(set(problems))))


def check_catalog(
    catalog: Catalog, images: Sequence[str] = (), *, debug: bool = False
) -> tuple[list[Checked], list[Problem]]:
    """Checked releases for `images` (all when empty), and problems in no release's files."""
    entries = catalog.select(images)
    checked = [check_entry(catalog, e, debug=debug) for e in entries]
    covered = {e.release.display for e in catalog.entries.values()} | {
        e.distro_doc.display for e in catalog.entries.values()
    }
    orphans = [p for p in catalog.problems if p.file not in covered] if not images else []
    return checked, orphans


def all_problems(checked: Iterable[Checked], extra: Iterable[Problem] = ()) -> list[Problem]:
    """Every distinct problem, sorted by file and position."""
    found: set[Problem] = set(extra)
    for c in checked:
        found.update(c.problems)
    return sorted(found)


def specs_or_raise(checked: Iterable[Checked], extra: Iterable[Problem] = ()) -> list[ImageSpec]:
    """The specs of every release, or a SevimgError listing every error if any has one."""
    checked = list(checked)
    problems = all_problems(checked, extra)
    if has_errors(problems):
        count = sum(p.is_error for p in problems)
        raise SevimgError(
            f"{count} error{'s' if count != 1 else ''} in the catalog; nothing written", problems
        )
    return [spec for c in checked for spec in c.specs]


def with_embedded_guests(specs: Sequence[ImageSpec], role: Role | None) -> list[ImageSpec]:
    """The specs of `role` (all when None), plus the guest each host embeds."""
    chosen = [s for s in specs if role is None or s.role == role]
    by_id = {s.image_id: s for s in specs}
    for spec in list(chosen):
        if spec.role == "host" and spec.payload.guest_image in by_id:
            chosen.append(by_id[spec.payload.guest_image])
    return chosen
