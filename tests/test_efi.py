"""sevimg_cert.efi: LoaderDeviceURL and Boot#### URI nodes, and garbage that must not crash it."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from sevimg_cert import efi
from tests.dispatchkit import (
    DISK,
    END,
    END_INSTANCE,
    FILE,
    IPV4,
    MAC,
    PCI,
    FakeRoot,
    efivar,
    http_option,
    load_option,
    node,
    uri,
)

URL = "http://192.0.2.7:8080/dispatch"


def test_an_http_boot_option_gives_its_url() -> None:
    option = efi.parse_load_option(http_option(URL))
    assert option.description == "UEFI HTTPv4 (MAC:525400123456)"
    assert option.attributes == 1
    assert len(option.paths) == 1
    assert [(n.type, n.subtype) for n in option.paths[0]] == [(1, 1), (3, 11), (3, 12), (3, 24)]
    assert efi.uri_of(option.paths[0]) == URL


def test_optional_data_after_the_paths_is_kept_apart() -> None:
    option = efi.parse_load_option(load_option("x", PCI + MAC + uri(URL) + END, extra=b"\1\2\3"))
    assert option.optional_data == b"\1\2\3"
    assert efi.uri_of(option.paths[0]) == URL


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (MAC + uri(URL), URL),
        (MAC + uri(""), None),  # DHCP-configured HTTP boot: empty URI node
        (uri(URL), None),  # no MAC node before it
        (MAC + uri(URL) + FILE, None),  # the URI must be the last node
        (uri(URL) + MAC, None),
        (DISK + FILE, None),  # a disk option
        (MAC + IPV4 + node(3, 24, b"http://\xff\xfe/"), None),  # not ASCII
    ],
)
def test_beacon_rule_mac_then_uri_last(path: bytes, expected: str | None) -> None:
    option = efi.parse_load_option(load_option("o", PCI + path + END))
    assert efi.uri_of(option.paths[0]) == expected


def test_several_paths_and_instances_are_each_read() -> None:
    paths = PCI + MAC + uri("http://a/x") + END_INSTANCE + MAC + uri("http://b/y") + END
    paths += DISK + FILE + END
    option = efi.parse_load_option(load_option("multi", paths))
    assert [efi.uri_of(p) for p in option.paths] == ["http://a/x", "http://b/y", None]


GOOD = http_option(URL)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\1\0\0", "shorter than its header"),
        (struct.pack("<IH", 1, 4) + "no end".encode("utf-16-le"), "no NUL terminator"),
        (struct.pack("<IH", 1, 4) + b"\x00\xd8\0\0" + END, "not valid UTF-16"),
        (struct.pack("<IH", 1, 200) + b"a\0\0\0" + END, "longer than"),
        (load_option("x", struct.pack("<BBH", 3, 24, 2) + END), "bad length 2"),
        (load_option("x", struct.pack("<BBH", 3, 24, 0)), "bad length 0"),
        (load_option("x", struct.pack("<BBH", 3, 24, 90) + END), "bad length 90"),
        (load_option("x", MAC + b"\3"), "truncated header"),
        (load_option("x", MAC + uri(URL)), "does not end with an End Entire"),
    ],
)
def test_malformed_load_options_are_named_errors(data: bytes, message: str) -> None:
    with pytest.raises(efi.EfiError, match=message):
        efi.parse_load_option(data)


def test_no_truncation_or_random_bytes_escape_as_anything_but_efierror() -> None:
    rng = random.Random(11)
    samples = [GOOD[:cut] for cut in range(len(GOOD))]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(80))) for _ in range(2000)]
    for _ in range(2000):  # flip bytes of a good option: lengths and types go wrong
        broken = bytearray(GOOD)
        for _ in range(rng.randrange(1, 4)):
            broken[rng.randrange(len(broken))] = rng.randrange(256)
        samples.append(bytes(broken))
    parsed = 0
    for sample in samples:
        try:
            option = efi.parse_load_option(sample)
        except efi.EfiError:
            continue
        parsed += 1
        for path in option.paths:
            efi.uri_of(path)
    assert 0 < parsed < len(samples)


def test_loader_device_url(tmp_path: Path) -> None:
    root = FakeRoot(tmp_path)
    assert efi.loader_device_url(root.efivars) is None
    root.loader_url(URL + "?x.efi")
    assert efi.loader_device_url(root.efivars) == URL + "?x.efi"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\7\0", "LoaderDeviceURL: 2 bytes: shorter than the 4 bytes"),
        (efivar(b"h\0t\0t"), "odd length"),
        (efivar(b"\x00\xdc\0\0"), "not valid UTF-16"),
    ],
)
def test_a_malformed_loader_device_url_is_an_error(
    tmp_path: Path, raw: bytes, message: str
) -> None:
    root = FakeRoot(tmp_path)
    root.var("LoaderDeviceURL", raw, efi.LOADER_GUID)
    with pytest.raises(efi.EfiError, match=message):
        efi.loader_device_url(root.efivars)


def test_a_loader_device_url_without_nul_is_read_whole(tmp_path: Path) -> None:
    root = FakeRoot(tmp_path)
    root.var("LoaderDeviceURL", efivar(URL.encode("utf-16-le")), efi.LOADER_GUID)
    assert efi.loader_device_url(root.efivars) == URL


def test_boot_urls_current_first_then_order_then_the_rest_and_problems_named(
    tmp_path: Path,
) -> None:
    root = FakeRoot(tmp_path)
    root.boot(0x1, http_option("http://one/dispatch"))
    root.boot(0x2, http_option("http://two/dispatch"))
    root.boot(0xA, http_option("http://ten/dispatch"))
    root.boot(0x3, http_option(""))  # empty URI node
    root.boot(0x4, load_option("disk", PCI + DISK + FILE + END))  # not a network option
    root.boot(0x5, GOOD[:20])  # malformed
    root.var("Boot0006", b"\1")  # shorter than the attributes
    root.var("BootNext", efivar(b"\1\0"))  # not a Boot#### option
    root.var("Bootxyz1", efivar(GOOD))
    root.boot_order(0x2, 0x7, 0x1, current=0xA)  # 7 does not exist
    found, problems = efi.boot_urls(root.efivars)
    assert found == [
        ("Boot000A", "http://ten/dispatch"),
        ("Boot0002", "http://two/dispatch"),
        ("Boot0001", "http://one/dispatch"),
    ]
    assert [p.split(":")[0] for p in problems] == ["Boot0005", "Boot0006"]


def test_garbage_boot_order_is_ignored(tmp_path: Path) -> None:
    root = FakeRoot(tmp_path)
    root.boot(0x1, http_option("http://one/dispatch"))
    root.var("BootOrder", efivar(b"\1\0\2"))  # odd length: the whole entries only
    root.var("BootCurrent", b"\1")
    assert efi.boot_urls(root.efivars) == ([("Boot0001", "http://one/dispatch")], [])


def test_no_efivars_folder_is_no_urls(tmp_path: Path) -> None:
    assert efi.boot_urls(tmp_path / "nothing") == ([], [])
