"""`sevimg new`: write the smallest valid release file for a known distribution.

The file carries only what cannot be inherited from images/<distro>.yaml:
the release, a codename where mkosi needs one, and the status, and the own
overrides (roles, versions, package changes, extra repositories) of the
newest numbered release of the distribution, or of --from's, since those are
not in the distro file (the next release usually needs them too: Ubuntu's
ovmf-amdsev). --bare carries none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from sevimg.catalog.index import IMAGE_NAME_HELP, Catalog, split_image_name
from sevimg.catalog.load import LoadError, load_text
from sevimg.catalog.schema import RELEASE, schemas_for
from sevimg.problems import SevimgError, has_errors

# mkosi's Release= for Debian and Ubuntu: the schema's `codename`.
# schema/common.schema.json's codename: lower-case words joined by single hyphens
CODENAME = re.compile(r"(?=.{2,32}$)[a-z][a-z0-9]*(?:-[a-z0-9]+)*")

# Keys of a release file that belong to the release itself, never copied by --from.
_OWN_KEYS = ("schema_version", "release", "codename", "name", "status", "archived")


@dataclass(frozen=True)
class NewRelease:
    """The file `sevimg new` is about to write."""

    image: str
    text: str
    copied: tuple[str, ...]
    source: str | None = None  # the release whose overrides were carried over


def _quote(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid double-quoted YAML scalar


def _scalar(value: str) -> str:
    """`value` plain when YAML reads it back as that string, else quoted (yes, null, 12)."""
    return value if yaml.safe_load(value) == value else _quote(value)


class _Dumper(yaml.SafeDumper):
    """Double-quotes strings YAML would otherwise read as numbers (versions, releases)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if value.replace(".", "").isdigit() else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def new_release(
    catalog: Catalog,
    image: str,
    *,
    from_image: str | None = None,
    codename: str | None = None,
    prerelease: bool = False,
    bare: bool = False,
    codename_note: str = "",
) -> NewRelease:
    """Compose images/<image>.yaml; raises SevimgError when the name or distro is unusable.

    Without `from_image` (and unless `bare`) the overrides of the newest
    numbered release of the distribution are carried over. `codename_note`
    says where a codename came from (the archive's development series).
    """
    if bare and from_image:
        raise SevimgError("--bare carries nothing over and --from carries a release: pick one")
    if codename is not None and not CODENAME.fullmatch(codename):
        raise SevimgError(
            f"--codename: {codename!r} is not a codename: lower-case words of letters and "
            "digits joined by single hyphens, starting with a letter (e.g. trixie, kali-rolling)"
        )
    parts = split_image_name(image)
    if parts is None:
        raise SevimgError(
            f"{image!r} is not a release name",
            hint=f"name it {IMAGE_NAME_HELP}: the distribution, a dash, and the release "
            "number or name (lower-case letters and digits)",
        )
    distro, release = parts
    ws = catalog.workspace
    target = ws.images_dir / f"{image}.yaml"
    if target.exists():
        raise SevimgError(
            f"{ws.display(target)} already exists; edit it, or delete it to start over",
        )
    if distro not in catalog.distros:
        known = ", ".join(sorted(catalog.distros)) or "none"
        raise SevimgError(
            f"unknown distribution {distro!r} (the catalog knows: {known})",
            hint=f"to add one, create images/{distro}.yaml with its defaults (copy the closest of "
            f"images/{{{known}}}.yaml and change the mkosi distribution and package names), "
            f"then run `sevimg new {image}` again",
        )
    distro_doc = catalog.distros[distro]
    distro_problems = [p for p in catalog.problems if p.file == distro_doc.display and p.is_error]
    if distro_problems:
        raise SevimgError(f"{distro_doc.display} has errors; fix them first", distro_problems)
    dd: Mapping[str, Any] = distro_doc.data
    mk: Mapping[str, Any] = dd["mkosi"]

    source: Mapping[str, Any] = {}
    if from_image is None and not bare:
        from_image = newest_release(catalog, distro, image)
    if from_image:
        base = catalog.get(from_image)
        if base.distro != distro:
            raise SevimgError(
                f"--from {from_image} is a {base.distro} release; {image} is {distro}: "
                f"start from one of {', '.join(n for n in catalog.names() if n.startswith(distro + '-')) or 'none'}"
            )
        source = base.release.data

    comments = [codename_note] if codename and codename_note else []
    if codename is None and prerelease:
        codename = mk.get("prerelease_codename")
        if codename:
            comments.append(
                f"pre-release: built from {codename} until {dd['name']} {release} has its own repositories"
            )
    if codename is None and mk.get("release_is_codename") and release[0].isdigit():
        raise SevimgError(
            f"{dd['name']}'s mkosi Release= is a codename: pass --codename NAME"
            + (" (for a pre-release, the development series' codename)" if prerelease else ""),
        )

    lines = [
        f"# {dd['name']} {release}, added with `sevimg new {image}`"
        + (f" from {from_image}." if from_image else "."),
        f"# Everything not set here comes from images/{distro}.yaml.",
        "schema_version: 1",
        f"release: {_quote(release)}",
    ]
    if codename:
        lines.append(f"codename: {_scalar(codename)}" + (f"  # {comments[0]}" if comments else ""))
    lines.append(f"status: {'prerelease' if prerelease else 'supported'}")

    copied = tuple(k for k in source if k not in _OWN_KEYS)
    if copied:
        lines.append(f"# Copied from images/{from_image}.yaml; check each value for {release}:")
        body = yaml.dump(
            {k: source[k] for k in copied},
            Dumper=_Dumper,
            sort_keys=False,
            default_flow_style=False,
            width=100,
        )
        lines.append(body.rstrip("\n"))
    return NewRelease(
        image=image,
        text="\n".join(lines) + "\n",
        copied=copied,
        source=from_image if copied else None,
    )


def newest_release(catalog: Catalog, distro: str, image: str = "") -> str | None:
    """The catalog's newest numbered release of `distro` that loads (not `image`), or None."""
    found = []
    for name in catalog.names():
        parts = split_image_name(name)
        if parts is None or parts[0] != distro or name in (image, *catalog.broken):
            continue
        number = parts[1]
        if all(part.isdigit() for part in number.split(".")):
            found.append((tuple(int(part) for part in number.split(".")), name))
    return max(found)[1] if found else None


def check_new_release(catalog: Catalog, made: NewRelease) -> None:
    """SevimgError unless the composed file parses and passes the release schema."""
    ws = catalog.workspace
    target = ws.images_dir / f"{made.image}.yaml"
    display = ws.display(target)
    try:
        doc = load_text(made.text, path=target, display=display)
    except LoadError as exc:
        raise SevimgError(
            f"the generated {display} does not parse; this is a bug", [exc.problem]
        ) from None
    problems = schemas_for(ws.search_path("schema")).validate(doc, RELEASE)
    if has_errors(problems):
        raise SevimgError(f"{display} would not be valid; nothing written", problems)
