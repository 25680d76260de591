"""A one-shot mDNS browse for `_dispatch._tcp`, with the standard library only.

dispatch advertises itself through Avahi as `_dispatch._tcp` with a TXT
record `path=/dispatch`. beacon browses through Avahi's D-Bus API; our
host image ships avahi-daemon but no D-Bus client library, so when
`avahi-browse` (avahi-utils) is missing we ask the network ourselves: a
"legacy unicast" query (RFC 6762 §6.7) sent from an ephemeral port to
224.0.0.251:5353, which every responder, Avahi included, answers by
unicast to that port. It needs no port 5353 of our own, so it works next
to a running avahi-daemon. PTR answers name the instances; SRV, TXT and A
come in the same answer's additional records or, when missing, from one
follow-up query. IPv4 only, like the labs dispatch serves.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass, field

SERVICE = "_dispatch._tcp.local"
GROUP = ("224.0.0.251", 5353)
A, PTR, TXT, SRV = 1, 12, 16, 33
MAX_POINTERS = 32


class DnsError(ValueError):
    """A DNS message that cannot be parsed."""


@dataclass(frozen=True)
class Record:
    """One resource record; `value` is a name (PTR), an address (A), a (port, target) or TXT."""

    name: str
    type: int
    value: object


@dataclass
class Seen:
    """What the answers said so far (mutable while one browse collects them)."""

    instances: list[str] = field(default_factory=list)
    srv: dict[str, tuple[int, str]] = field(default_factory=dict)
    txt: dict[str, dict[str, str]] = field(default_factory=dict)
    a: dict[str, str] = field(default_factory=dict)


def encode_name(name: str) -> bytes:
    """A DNS name in wire format (no compression)."""
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode()
        if not 0 < len(raw) < 64:
            raise DnsError(f"bad label in {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def query(questions: list[tuple[str, int]], ident: int) -> bytes:
    """A standard query for `questions` (name, type), class IN."""
    header = struct.pack("!HHHHHH", ident, 0, len(questions), 0, 0, 0)
    return header + b"".join(encode_name(n) + struct.pack("!HH", t, 1) for n, t in questions)


def read_name(message: bytes, offset: int) -> tuple[str, int]:
    """The (possibly compressed) name at `offset`, and the offset after it."""
    labels: list[str] = []
    end = -1
    for _ in range(MAX_POINTERS):
        if offset >= len(message):
            raise DnsError("name runs past the message")
        length = message[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(message):
                raise DnsError("truncated name pointer")
            if end < 0:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | message[offset + 1]
            continue
        if length & 0xC0:
            raise DnsError("unknown label type")
        if length == 0:
            return ".".join(labels), (end if end >= 0 else offset + 1)
        label = message[offset + 1 : offset + 1 + length]
        if len(label) != length:
            raise DnsError("label runs past the message")
        labels.append(label.decode("utf-8", "replace"))
        offset += 1 + length
    raise DnsError("too many name pointers (a loop?)")


def parse(message: bytes) -> list[Record]:
    """The PTR, SRV, TXT and A records of every section of a DNS message."""
    if len(message) < 12:
        raise DnsError("shorter than a DNS header")
    _, _, qd, an, ns, ar = struct.unpack_from("!HHHHHH", message)
    offset = 12
    for _ in range(qd):
        _, offset = read_name(message, offset)
        offset += 4
    records: list[Record] = []
    for _ in range(an + ns + ar):
        name, offset = read_name(message, offset)
        if offset + 10 > len(message):
            raise DnsError("truncated record header")
        kind, _, _, length = struct.unpack_from("!HHIH", message, offset)
        offset += 10
        data = message[offset : offset + length]
        if len(data) != length:
            raise DnsError("record data runs past the message")
        value: object = None
        if kind == PTR:
            value = read_name(message, offset)[0]
        elif kind == SRV and length >= 7:
            value = (struct.unpack_from("!H", data, 4)[0], read_name(message, offset + 6)[0])
        elif kind == A and length == 4:
            value = socket.inet_ntoa(data)
        elif kind == TXT:
            value = _txt(data)
        if value is not None:
            records.append(Record(name.lower(), kind, value))
        offset += length
    return records


def _txt(data: bytes) -> dict[str, str]:
    pairs: dict[str, str] = {}
    offset = 0
    while offset < len(data):
        item = data[offset + 1 : offset + 1 + data[offset]]
        offset += 1 + data[offset]
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep:
            pairs.setdefault(key.lower(), value)
    return pairs


def _absorb(seen: Seen, records: list[Record]) -> None:
    for record in records:
        if record.type == PTR and record.name == SERVICE and isinstance(record.value, str):
            if record.value.lower() not in seen.instances:
                seen.instances.append(record.value.lower())
        elif record.type == SRV and isinstance(record.value, tuple):
            seen.srv[record.name] = (record.value[0], str(record.value[1]).lower())
        elif record.type == TXT and isinstance(record.value, dict):
            seen.txt[record.name] = record.value
        elif record.type == A and isinstance(record.value, str):
            seen.a.setdefault(record.name, record.value)


def _missing(seen: Seen) -> list[tuple[str, int]]:
    wanted: list[tuple[str, int]] = []
    for instance in seen.instances:
        if instance not in seen.srv:
            wanted.append((instance, SRV))
        elif seen.srv[instance][1] not in seen.a:
            wanted.append((seen.srv[instance][1], A))
        if instance not in seen.txt:
            wanted.append((instance, TXT))
    return wanted


def _exchange(
    sock: socket.socket, group: tuple[str, int], packet: bytes, seen: Seen, wait: float
) -> None:
    sock.sendto(packet, group)
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            message, _ = sock.recvfrom(9000)
        except TimeoutError:
            break
        try:
            _absorb(seen, parse(message))
        except DnsError:
            continue  # someone else's garbage on the segment: ignore it
        if seen.instances and not _missing(seen):
            break


def urls(seen: Seen) -> list[tuple[str, str]]:
    """(instance, URL) for every fully resolved instance, as beacon builds them."""
    found: list[tuple[str, str]] = []
    for instance in seen.instances:
        if instance not in seen.srv:
            continue
        port, target = seen.srv[instance]
        address, path = seen.a.get(target), seen.txt.get(instance, {}).get("path")
        if address is None or not path or not path.startswith("/"):
            continue
        ip = ipaddress.IPv4Address(address)
        if ip.is_loopback or ip.is_link_local:
            continue  # beacon skips these too: not an address the lab can use
        found.append((instance, f"http://{address}:{port}{path}"))
    return found


def browse(timeout: float = 2.0, group: tuple[str, int] = GROUP) -> list[tuple[str, str]]:
    """(instance, URL) of the `_dispatch._tcp` services that answered within `timeout` seconds.

    Raises OSError when no query can be sent (no network, no multicast route).
    """
    seen = Seen()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        sock.bind(("0.0.0.0", 0))  # noqa: S104 (an ephemeral port: legacy unicast)
        ident = struct.unpack("!H", os.urandom(2))[0]
        _exchange(sock, group, query([(SERVICE, PTR)], ident), seen, timeout)
        wanted = _missing(seen)
        if wanted:
            _exchange(sock, group, query(wanted, ident), seen, timeout / 2)
    return urls(seen)
