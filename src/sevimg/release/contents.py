"""What an image in an artifact folder opens, read from the UKI itself.

A manifest and a file name can say "not debug" of an image that is one. Before
an image is published, merged or served, its .cmdline and the files of its
initrd (and of the guest a host embeds) are checked against
:mod:`sevimg.catalog.security`, as the post-build check did: an image with a
way in is treated as a debug image, whatever its name and manifest say.
"""

from __future__ import annotations

from pathlib import Path

from sevimg.build.examine import resolve_member
from sevimg.build.uki import Uki, read_uki
from sevimg.catalog import security, security_files
from sevimg.catalog.spec import GUEST_EMBED_PATH
from sevimg.problems import SevimgError


def ways_in(path: Path) -> list[str]:
    """The ways into the image at `path` (empty when there are none).

    A file that is not a readable UKI has none here: it could not boot, and
    the folder's own checks (names, checksums, manifests) still apply.
    """
    try:
        uki = read_uki(path)
    except SevimgError:
        return []
    found = _uki_ways_in(uki, "")
    embedded = resolve_member(uki.members(), GUEST_EMBED_PATH)
    if embedded is not None and not embedded.is_symlink:
        try:
            guest = read_uki(path, embedded.data)
        except SevimgError:
            return found
        found += _uki_ways_in(guest, f"its guest {GUEST_EMBED_PATH}: ")
    return found


def _uki_ways_in(uki: Uki, prefix: str) -> list[str]:
    members = uki.members()
    found = [
        f"{prefix}.cmdline has {f.what!r}, which {f.why}"
        for f in security.kernel_command_line(security.split_command_line(uki.cmdline))
        if f.error
    ]
    found += [
        f"{prefix}{f}"
        for f in security_files.image_files(members, lambda p: resolve_member(members, p))
        if f.error
    ]
    return found
