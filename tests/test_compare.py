"""Where two UKIs differ: sections, PE headers, initrd files and their attributes."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import zstandard

from sevimg.imaging.compare import SHOWN, compare, compare_files
from sevimg.problems import SevimgError
from tests.fakes import DIR, FILE, LINK, pe

# (path, mode, data, uid, gid, mtime)
Entry = tuple[str, int, bytes, int, int, int]
EPOCH = 1735689600


def newc(entries: list[Entry]) -> bytes:
    """A newc cpio archive with owners and modification times."""
    out = bytearray()
    for ino, (name, mode, data, uid, gid, mtime) in enumerate(
        [*entries, ("TRAILER!!!", 0, b"", 0, 0, 0)], 1
    ):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, uid, gid, 1, mtime, len(data), 0, 0, 0, 0, len(encoded), 0]
        out += b"070701" + b"".join(f"{f:08X}".encode() for f in fields) + encoded
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def files(**changes: Entry) -> list[Entry]:
    base: dict[str, Entry] = {
        "usr": ("usr", DIR, b"", 0, 0, EPOCH),
        "usr/bin/sh": ("usr/bin/sh", LINK, b"dash", 0, 0, EPOCH),
        "etc/os-release": ("etc/os-release", FILE, b"ID=debian\n", 0, 0, EPOCH),
        "usr/lib/sevimg/packages.json": ("usr/lib/sevimg/packages.json", FILE, b"{}", 0, 0, EPOCH),
    }
    base.update(changes)
    return [e for e in base.values() if e[0]]


def uki(entries: list[Entry], *, cmdline: bytes = b"console=ttyS0", early: bytes = b"") -> bytes:
    # mkosi's layout: an uncompressed early archive (microcode), then the zstd one.
    initrd = early + zstandard.ZstdCompressor().compress(newc(entries))
    return pe(
        [
            (".osrel", b"ID=debian\n"),
            (".cmdline", cmdline),
            (".initrd", initrd),
            (".linux", b"K" * 700),
        ]
    )


def test_identical_bytes_are_identical() -> None:
    diff = compare(uki(files()), uki(files()))
    assert diff.identical
    assert diff.report() == ["identical"]


def test_a_changed_cmdline_names_that_section_alone() -> None:
    diff = compare(uki(files()), uki(files(), cmdline=b"console=ttyS0 quiet"))
    assert not diff.identical
    assert diff.sections_differ == (".cmdline",)
    assert diff.files_differ == ()
    assert diff.report()[0] == "sections that differ: .cmdline"


@pytest.mark.parametrize(
    ("change", "attribute", "detail"),
    [
        (
            ("etc/os-release", FILE, b"ID=debian\n", 0, 0, EPOCH + 60),
            "mtime",
            f"mtime {EPOCH} -> {EPOCH + 60}",
        ),
        (("etc/os-release", 0o100600, b"ID=debian\n", 0, 0, EPOCH), "mode", "mode 0644 -> 0600"),
        (
            ("etc/os-release", FILE, b"ID=debian\n", 1000, 100, EPOCH),
            "owner",
            "owner 0:0 -> 1000:100",
        ),
        (("etc/os-release", FILE, b"ID=ubuntu\n", 0, 0, EPOCH), "content", "content 10 bytes"),
        (("etc/os-release", LINK, b"ID=debian\n", 0, 0, EPOCH), "type", "type 10 -> 12"),
    ],
)
def test_an_initrd_file_attribute_is_named(change: Entry, attribute: str, detail: str) -> None:
    diff = compare(uki(files()), uki(files(**{change[0]: change})))
    assert diff.sections_differ == (".initrd",)
    assert [f.path for f in diff.files_differ] == ["etc/os-release"]
    assert diff.files_differ[0].attributes == (attribute,)
    assert detail in diff.files_differ[0].detail
    assert diff.attribute_counts() == {attribute: 1}
    report = "\n".join(diff.report())
    assert f"initrd files that differ: 1 ({attribute}: 1)" in report
    assert "etc/os-release" in report


def test_files_only_on_one_side() -> None:
    extra: Entry = ("var/cache/ldconfig/aux-cache", FILE, b"x", 0, 0, EPOCH)
    diff = compare(
        uki(files()), uki(files(**{extra[0]: extra, "usr/bin/sh": ("", 0, b"", 0, 0, 0)}))
    )
    assert diff.files_only_rebuilt == ("var/cache/ldconfig/aux-cache",)
    assert diff.files_only_expected == ("usr/bin/sh",)
    report = diff.report()
    assert "initrd files missing from the rebuild: 1 (usr/bin/sh)" in report
    assert "initrd files only in the rebuild: 1 (var/cache/ldconfig/aux-cache)" in report


def test_a_build_time_in_every_header_is_counted_not_listed() -> None:
    later = [(p, m, d, u, g, t + 3600) for p, m, d, u, g, t in files()]
    many = [(f"usr/lib/m{i}.ko", FILE, b"m", 0, 0, EPOCH) for i in range(20)]
    many_later = [(p, m, d, u, g, t + 1) for p, m, d, u, g, t in many]
    diff = compare(uki([*files(), *many]), uki([*later, *many_later]))
    assert diff.attribute_counts() == {"mtime": 24}
    report = diff.report()
    at = report.index("initrd files that differ: 24 (mtime: 24)")
    assert report[at + 1 : -1] == [f"  {f.path}: {f.detail}" for f in diff.files_differ[:SHOWN]]
    assert report[-1] == f"  ... and {24 - SHOWN} more"


def test_a_later_archive_wins_as_in_the_kernel() -> None:
    early = newc([("kernel/x86/microcode/AuthenticAMD.bin", FILE, b"ucode", 0, 0, EPOCH)])
    diff = compare(uki(files(), early=early), uki(files(), early=early[:-4] + early[-4:]))
    assert diff.identical
    newer = newc([("kernel/x86/microcode/AuthenticAMD.bin", FILE, b"ucode2", 0, 0, EPOCH)])
    diff = compare(uki(files(), early=early), uki(files(), early=newer))
    assert [f.path for f in diff.files_differ] == ["kernel/x86/microcode/AuthenticAMD.bin"]
    assert diff.files_differ[0].attributes == ("content",)


def test_a_header_time_stamp_outside_the_sections() -> None:
    image = uki(files())
    pe_offset = struct.unpack_from("<I", image, 0x3C)[0]
    stamped = bytearray(image)
    struct.pack_into("<I", stamped, pe_offset + 8, 1765000000)  # COFF TimeDateStamp
    diff = compare(image, bytes(stamped))
    assert not diff.identical
    assert diff.sections_differ == ()
    assert diff.outside_sections
    assert diff.report() == ["the PE headers differ (bytes outside every section)"]


def test_sections_missing_or_added() -> None:
    a = pe([(".linux", b"K"), (".osrel", b"ID=x")])
    b = pe([(".linux", b"K"), (".sbat", b"sbat,1")])
    diff = compare(a, b)
    assert diff.sections_only_expected == (".osrel",)
    assert diff.sections_only_rebuilt == (".sbat",)


def test_not_a_pe_file_is_a_clean_error(tmp_path: Path) -> None:
    good, bad = tmp_path / "a.efi", tmp_path / "b.efi"
    good.write_bytes(uki(files()))
    bad.write_bytes(b"not a PE file at all")
    with pytest.raises(SevimgError, match=r"b\.efi is not a PE/EFI binary"):
        compare_files(good, bad)
