"""Reading the EFI variables that say where a host was HTTP-booted from.

Two sources, both under efivarfs (`/sys/firmware/efi/efivars`, every file
is 4 bytes of attributes and then the variable's data):

- `LoaderDeviceURL` (systemd's loader GUID): the URL systemd-stub 258+ was
  downloaded from, a NUL-terminated UTF-16LE string. It is the only place
  the URL survives when the firmware got it from DHCP.
- `Boot####` (the global GUID): EFI_LOAD_OPTIONs (UEFI 2.10 §3.1.3). As
  beacon does, a device path whose MAC node (type 3, subtype 11) is
  followed by a URI node (type 3, subtype 24) as its last node names a URL.
  An HTTP-boot option whose URL came from DHCP has an empty URI node: skipped.

Variables are firmware data a machine may have mangled: every length is
checked and anything malformed is an `EfiError`, never an IndexError.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
EFIVARS = Path("sys/firmware/efi/efivars")

MESSAGING = 3
MAC_ADDRESS = 11
URI = 24
END = 0x7F
END_INSTANCE = 0x01
END_ENTIRE = 0xFF
# No real variable comes near this; a bigger file is not one.
MAX_VARIABLE = 1 << 16


class EfiError(ValueError):
    """An EFI variable that is not what its name promises."""


@dataclass(frozen=True)
class Node:
    """One device path node: type, subtype and the bytes after its 4-byte header."""

    type: int
    subtype: int
    data: bytes


@dataclass(frozen=True)
class LoadOption:
    """An EFI_LOAD_OPTION: its device paths (end nodes removed) and optional data."""

    attributes: int
    description: str
    paths: tuple[tuple[Node, ...], ...]
    optional_data: bytes


def variable_data(raw: bytes) -> bytes:
    """The data of an efivarfs file: what follows its 4 bytes of attributes."""
    if len(raw) < 4:
        raise EfiError(f"{len(raw)} bytes: shorter than the 4 bytes of attributes")
    return raw[4:]


def utf16z(data: bytes, what: str) -> tuple[str, int]:
    """The NUL-terminated UTF-16LE string at the start of `data`, and the bytes it took."""
    for end in range(0, len(data) - 1, 2):
        if data[end : end + 2] == b"\0\0":
            try:
                return data[:end].decode("utf-16-le"), end + 2
            except UnicodeDecodeError:
                raise EfiError(f"{what} is not valid UTF-16") from None
    raise EfiError(f"{what} has no NUL terminator")


def parse_device_paths(data: bytes) -> tuple[tuple[Node, ...], ...]:
    """Every device path (instance) in a FilePathList, without the end nodes.

    Each node's length covers its 4-byte header and must fit in what is left;
    the list must end with an End Entire node.
    """
    paths: list[tuple[Node, ...]] = []
    current: list[Node] = []
    offset = 0
    terminated = False
    while offset < len(data):
        if len(data) - offset < 4:
            raise EfiError(f"device path node at byte {offset}: truncated header")
        kind, subtype, length = struct.unpack_from("<BBH", data, offset)
        if length < 4 or length > len(data) - offset:
            raise EfiError(f"device path node at byte {offset}: bad length {length}")
        if kind == END and subtype in (END_INSTANCE, END_ENTIRE):
            paths.append(tuple(current))
            current = []
            terminated = subtype == END_ENTIRE
        else:
            current.append(Node(kind, subtype, data[offset + 4 : offset + length]))
            terminated = False
        offset += length
    if not terminated:
        raise EfiError("device path list does not end with an End Entire node")
    return tuple(paths)


def parse_load_option(data: bytes) -> LoadOption:
    """An EFI_LOAD_OPTION (a Boot#### variable's data, attributes already removed)."""
    if len(data) < 6:
        raise EfiError(f"load option of {len(data)} bytes: shorter than its header")
    attributes, path_length = struct.unpack_from("<IH", data, 0)
    description, used = utf16z(data[6:], "load option description")
    start = 6 + used
    if path_length > len(data) - start:
        raise EfiError(
            f"FilePathListLength {path_length} is longer than the {len(data) - start} bytes left"
        )
    paths = parse_device_paths(data[start : start + path_length])
    return LoadOption(attributes, description, paths, data[start + path_length :])


def uri_of(path: tuple[Node, ...]) -> str | None:
    """The URL of a path whose last node is a URI node after a MAC node (beacon's rule).

    None for any other path and for an empty or undecodable URI.
    """
    mac = False
    for index, node in enumerate(path):
        if node.type != MESSAGING:
            continue
        if node.subtype == MAC_ADDRESS:
            mac = True
        elif node.subtype == URI and mac and index == len(path) - 1:
            try:
                text = node.data.rstrip(b"\0").decode("ascii")
            except UnicodeDecodeError:
                return None
            return text.strip() or None
    return None


def _read(path: Path) -> bytes | None:
    """A variable's bytes, or None when it is absent or unreadable (efivarfs may refuse)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_VARIABLE + 1)
    except OSError:
        return None
    if len(raw) > MAX_VARIABLE:
        raise EfiError(f"{path.name}: larger than {MAX_VARIABLE} bytes")
    return raw


def loader_device_url(efivars: Path) -> str | None:
    """The URL in LoaderDeviceURL, None when the variable is absent.

    EfiError when it is there but malformed (odd length, not UTF-16).
    """
    raw = _read(efivars / f"LoaderDeviceURL-{LOADER_GUID}")
    if raw is None:
        return None
    try:
        data = variable_data(raw)
    except EfiError as error:
        raise EfiError(f"LoaderDeviceURL: {error}") from None
    if len(data) % 2:
        raise EfiError(f"LoaderDeviceURL: odd length {len(data)}")
    text, _ = utf16z(data + b"\0\0", "LoaderDeviceURL")
    return text.strip() or None


def _boot_names(efivars: Path) -> list[str]:
    """Boot#### names: BootCurrent first, then BootOrder, then the others in name order."""
    suffix = f"-{GLOBAL_GUID}"
    on_disk: dict[int, str] = {}
    try:
        names = sorted(p.name for p in efivars.iterdir())
    except OSError:
        names = []
    for name in names:
        digits = name[4 : -len(suffix)]
        if name.startswith("Boot") and name.endswith(suffix) and len(digits) == 4:
            try:
                on_disk.setdefault(int(digits, 16), name[: -len(suffix)])
            except ValueError:
                continue
    order: list[int] = []
    for name, many in (("BootCurrent", False), ("BootOrder", True)):
        try:
            raw = _read(efivars / f"{name}{suffix}")
            data = variable_data(raw) if raw is not None else b""
        except EfiError:
            continue
        count = len(data) // 2 if many else min(1, len(data) // 2)
        order.extend(struct.unpack_from(f"<{count}H", data))
    order.extend(on_disk)
    return [on_disk.get(n, f"Boot{n:04X}") for n in dict.fromkeys(order)]


def boot_urls(efivars: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(variable name, URL) of every Boot#### URI node, and a line per unreadable variable."""
    found: list[tuple[str, str]] = []
    problems: list[str] = []
    for name in _boot_names(efivars):
        try:
            raw = _read(efivars / f"{name}-{GLOBAL_GUID}")
            if raw is None:
                continue
            option = parse_load_option(variable_data(raw))
        except EfiError as error:
            problems.append(f"{name}: {error}")
            continue
        for path in option.paths:
            url = uri_of(path)
            if url is not None:
                found.append((name, url))
    return found, problems
