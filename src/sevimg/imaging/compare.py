"""Where two UKIs differ: which PE sections, and in the initrd which files and attributes.

`sevimg reproduce` rebuilds a published image and calls :func:`compare_files`
on the two UKIs. Identical bytes end it. Otherwise the report names the
sections that differ (`.linux`, `.initrd`, `.cmdline`, ...), anything outside
the sections (the PE headers: a time stamp, a checksum), and for `.initrd` the
files only one side has and, per file, which of mode, owner, modification time
and content differ. It is short by design: a count per attribute and the first
few paths, never a full diff.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pefile

from sevimg.imaging.uki import Member, initrd_members
from sevimg.problems import SevimgError

ATTRIBUTES = ("type", "mode", "owner", "mtime", "content")
SHOWN = 8  # paths listed per kind of difference; the rest are counted


@dataclass(frozen=True)
class PeImage:
    """A PE file's sections by name (raw data) and the bytes outside them."""

    sections: Mapping[str, bytes]
    outside: bytes  # headers and any bytes no section covers
    layout: tuple[tuple[str, int, int], ...]  # (name, offset, size) of each section


@dataclass(frozen=True)
class FileDiff:
    """One initrd file present in both images, and the attributes that differ."""

    path: str
    attributes: tuple[str, ...]
    detail: str  # e.g. "mtime 1735689600 -> 1765000000"


@dataclass(frozen=True)
class UkiDiff:
    """What differs between an expected UKI and a rebuilt one (empty: identical)."""

    identical: bool
    sections_only_expected: tuple[str, ...] = ()
    sections_only_rebuilt: tuple[str, ...] = ()
    sections_differ: tuple[str, ...] = ()
    outside_sections: bool = False
    files_only_expected: tuple[str, ...] = ()
    files_only_rebuilt: tuple[str, ...] = ()
    files_differ: tuple[FileDiff, ...] = field(default_factory=tuple)

    def attribute_counts(self) -> dict[str, int]:
        """How many initrd files differ in each attribute."""
        counts = Counter(a for f in self.files_differ for a in f.attributes)
        return {a: counts[a] for a in ATTRIBUTES if counts[a]}

    def report(self) -> list[str]:
        """A short human report: one line per finding, the first few paths of each."""
        if self.identical:
            return ["identical"]
        lines: list[str] = []
        if self.sections_differ:
            lines.append("sections that differ: " + ", ".join(self.sections_differ))
        if self.sections_only_expected:
            lines.append("sections missing: " + ", ".join(self.sections_only_expected))
        if self.sections_only_rebuilt:
            lines.append("sections only in the rebuild: " + ", ".join(self.sections_only_rebuilt))
        if self.outside_sections:
            lines.append("the PE headers differ (bytes outside every section)")
        if self.files_only_expected:
            lines.append(_listed("initrd files missing from the rebuild", self.files_only_expected))
        if self.files_only_rebuilt:
            lines.append(_listed("initrd files only in the rebuild", self.files_only_rebuilt))
        if self.files_differ:
            counts = ", ".join(f"{a}: {n}" for a, n in self.attribute_counts().items())
            lines.append(f"initrd files that differ: {len(self.files_differ)} ({counts})")
            lines += [f"  {f.path}: {f.detail}" for f in self.files_differ[:SHOWN]]
            if len(self.files_differ) > SHOWN:
                lines.append(f"  ... and {len(self.files_differ) - SHOWN} more")
        return lines or ["the files differ, but no section or header does (trailing bytes)"]


def _listed(title: str, paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:SHOWN])
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return f"{title}: {len(paths)} ({shown}{more})"


def read_pe(data: bytes, display: str) -> PeImage:
    """The sections of a PE image; SevimgError naming `display` when it is not one."""
    try:
        pe = pefile.PE(data=data, fast_load=True)
    except pefile.PEFormatError as exc:
        raise SevimgError(f"{display} is not a PE/EFI binary: {exc}") from None
    sections: dict[str, bytes] = {}
    layout: list[tuple[str, int, int]] = []
    covered = bytearray(data)
    for section in pe.sections:
        name = section.Name.rstrip(b"\x00").decode("ascii", "replace")
        start, size = section.PointerToRawData, section.SizeOfRawData
        sections[name] = section.get_data()
        layout.append((name, start, section.Misc_VirtualSize))
        covered[start : start + size] = b"\x00" * len(covered[start : start + size])
    pe.close()
    return PeImage(sections, bytes(covered), tuple(layout))


def compare_files(expected: Path, rebuilt: Path) -> UkiDiff:
    """Compare two UKI files (see :func:`compare`)."""
    return compare(expected.read_bytes(), rebuilt.read_bytes(), str(expected), str(rebuilt))


def compare(
    expected: bytes, rebuilt: bytes, expected_name: str = "expected", rebuilt_name: str = "rebuilt"
) -> UkiDiff:
    """Where `rebuilt` differs from `expected`: sections, headers, initrd files."""
    if expected == rebuilt:
        return UkiDiff(identical=True)
    a, b = read_pe(expected, expected_name), read_pe(rebuilt, rebuilt_name)
    common = [name for name in a.sections if name in b.sections]
    differ = tuple(name for name in common if a.sections[name] != b.sections[name])
    diff = UkiDiff(
        identical=False,
        sections_only_expected=tuple(n for n in a.sections if n not in b.sections),
        sections_only_rebuilt=tuple(n for n in b.sections if n not in a.sections),
        sections_differ=differ,
        # A section of another size changes the headers that describe it: only
        # the same layout with other header bytes is a finding of its own.
        outside_sections=a.layout == b.layout and a.outside != b.outside,
    )
    if ".initrd" not in differ:
        return diff
    old, new = initrd_files(a.sections[".initrd"]), initrd_files(b.sections[".initrd"])
    return UkiDiff(
        identical=False,
        sections_only_expected=diff.sections_only_expected,
        sections_only_rebuilt=diff.sections_only_rebuilt,
        sections_differ=diff.sections_differ,
        outside_sections=diff.outside_sections,
        files_only_expected=tuple(sorted(set(old) - set(new))),
        files_only_rebuilt=tuple(sorted(set(new) - set(old))),
        files_differ=tuple(
            found
            for path in sorted(set(old) & set(new))
            if (found := compare_members(old[path], new[path])) is not None
        ),
    )


def initrd_files(initrd: bytes) -> dict[str, Member]:
    """Every file of the initrd's cpio archives, later archives winning (as the kernel does)."""
    return {m.path: m for m in initrd_members(initrd)}


def compare_members(a: Member, b: Member) -> FileDiff | None:
    """The attributes in which two versions of one initrd file differ; None when none does."""
    found: list[tuple[str, str]] = []
    if a.mode & 0o170000 != b.mode & 0o170000:
        found.append(("type", f"type {a.mode >> 12:o} -> {b.mode >> 12:o}"))
    elif a.mode & 0o7777 != b.mode & 0o7777:
        found.append(("mode", f"mode {a.mode & 0o7777:04o} -> {b.mode & 0o7777:04o}"))
    if (a.uid, a.gid) != (b.uid, b.gid):
        found.append(("owner", f"owner {a.uid}:{a.gid} -> {b.uid}:{b.gid}"))
    if a.mtime != b.mtime:
        found.append(("mtime", f"mtime {a.mtime} -> {b.mtime}"))
    if a.data != b.data:
        found.append(("content", f"content {_short(a.data)} -> {_short(b.data)}"))
    if not found:
        return None
    return FileDiff(a.path, tuple(k for k, _ in found), "; ".join(d for _, d in found))


def _short(data: bytes) -> str:
    """A file's content for a report line: its size and the start of its SHA-256."""
    return f"{len(data)} bytes sha256:{hashlib.sha256(data).hexdigest()[:12]}"
