"""What an image in an artifact folder opens, read from the UKI itself.

A manifest and a file name can say "not debug" of an image that is one. Before
an image is published, merged or served, its .cmdline and the files of its
initrd (and of the guest a host embeds) are checked against
:mod:`sevimg.catalog.security`, as the post-build check did: an image with a
way in is treated as a debug image, whatever its name and manifest say.
"""

from __future__ import annotations

from pathlib import Path

from sevimg.catalog import security, security_files
from sevimg.catalog.spec import GUEST_EMBED_PATH
from sevimg.imaging.examine import resolve_member
from sevimg.imaging.uki import NotUki, Uki, read_uki
from sevimg.problems import SevimgError


def ways_in(path: Path) -> list[str]:
    """The ways into the image at `path` (empty when there are none).

    A file that is not PE/EFI at all has none here: firmware cannot start it,
    and the folder's own checks (names, checksums, manifests) still apply. A
    PE/EFI program that is not a UKI (a UEFI shell, a boot manager) is a way
    in: nothing in it says what it runs.
    """
    try:
        uki = read_uki(path)
    except NotUki:
        return [_NOT_UKI]
    except SevimgError:
        return []
    found = _uki_ways_in(uki, "")
    embedded = resolve_member(uki.members(), GUEST_EMBED_PATH)
    if embedded is not None and not embedded.is_symlink:
        prefix = f"its guest {GUEST_EMBED_PATH}: "
        try:
            guest = read_uki(path, embedded.data)
        except NotUki:
            return [*found, prefix + _NOT_UKI]
        except SevimgError:
            return found
        found += _uki_ways_in(guest, prefix)
    return found


_NOT_UKI = "it is an EFI program but not a unified kernel image (no .linux section)"


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
