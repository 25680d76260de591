"""For the reporter's tests: EFI variable bytes built by hand, fake roots, a minimal dispatch.

The EFI encoders follow the UEFI specification (2.10, §3.1.3 EFI_LOAD_OPTION
and §10.3 device path nodes) independently of `sevimg_cert.efi`, so the
parser is checked against bytes it did not produce. `MiniDispatch` is a real
HTTP server on 127.0.0.1 that records every request and answers from a
script: a status, or "bad" for an answer that is not HTTP.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
LOADER = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"


def node(kind: int, subtype: int, data: bytes = b"") -> bytes:
    """A device path node: type, subtype, length (header included), data."""
    return struct.pack("<BBH", kind, subtype, 4 + len(data)) + data


END = node(0x7F, 0xFF)
END_INSTANCE = node(0x7F, 0x01)
PCI = node(1, 1, b"\x00\x03")
MAC = node(3, 11, bytes.fromhex("525400123456") + bytes(26) + b"\x01")
IPV4 = node(3, 12, bytes(23))
DISK = node(4, 1, bytes(38))  # a hard drive partition node (media)
FILE = node(4, 4, "\\EFI\\BOOT\\BOOTX64.EFI\0".encode("utf-16-le"))


def uri(text: str) -> bytes:
    """A URI node (type 3, subtype 24); an empty one is what DHCP-configured boot leaves."""
    return node(3, 24, text.encode())


def load_option(description: str, *paths: bytes, attributes: int = 1, extra: bytes = b"") -> bytes:
    """An EFI_LOAD_OPTION with `paths` (each already ending in an end node)."""
    file_paths = b"".join(paths)
    return (
        struct.pack("<IH", attributes, len(file_paths))
        + (description + "\0").encode("utf-16-le")
        + file_paths
        + extra
    )


def http_option(url: str) -> bytes:
    """What OVMF writes for an HTTP boot entry: PCI / MAC / IPv4 / URI."""
    return load_option("UEFI HTTPv4 (MAC:525400123456)", PCI + MAC + IPV4 + uri(url) + END)


def efivar(data: bytes, attributes: int = 7) -> bytes:
    """An efivarfs file: 4 bytes of attributes, then the data."""
    return struct.pack("<I", attributes) + data


@dataclass
class FakeRoot:
    """A fake / with proc/cmdline and sys/firmware/efi/efivars."""

    path: Path

    @property
    def efivars(self) -> Path:
        return self.path / "sys/firmware/efi/efivars"

    def cmdline(self, text: str) -> None:
        (self.path / "proc").mkdir(parents=True, exist_ok=True)
        (self.path / "proc/cmdline").write_text(text + "\n")

    def var(self, name: str, raw: bytes, guid: str = GLOBAL) -> None:
        self.efivars.mkdir(parents=True, exist_ok=True)
        (self.efivars / f"{name}-{guid}").write_bytes(raw)

    def boot(self, number: int, option: bytes) -> None:
        self.var(f"Boot{number:04X}", efivar(option))

    def loader_url(self, url: str) -> None:
        self.var("LoaderDeviceURL", efivar((url + "\0").encode("utf-16-le")), LOADER)

    def boot_order(self, *numbers: int, current: int | None = None) -> None:
        self.var("BootOrder", efivar(struct.pack(f"<{len(numbers)}H", *numbers)))
        if current is not None:
            self.var("BootCurrent", efivar(struct.pack("<H", current)))


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class MiniDispatch:
    """The script of answers (200 when it runs out) and what was received.

    With `jobs`, it answers as dispatch's job machine does instead, for one
    job per client IP (src/jobs.rs): GET assigns and moves to Downloading,
    POST Downloading → Booting, PUT Booting → Reported (400 on bad JSON),
    417 for a client without a job in the state the method needs.
    """

    script: list[int | str] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    url: str = ""
    jobs: dict[str, str] | None = None

    def answer(self, method: str, client: str, body: bytes) -> int | str:
        if self.jobs is None:
            return self.script.pop(0) if self.script else 200
        state = self.jobs.get(client)
        if method in ("GET", "HEAD"):
            if state in (None, "Assigned", "Downloading"):
                self.jobs[client] = "Downloading" if method == "GET" else "Assigned"
                return 200
            return 404
        if method == "POST" and state == "Downloading":
            self.jobs[client] = "Booting"
            return 200
        if method == "PUT":
            try:
                json.loads(body)
            except ValueError:
                return 400
            if state == "Booting":
                self.jobs[client] = "Reported"
                return 200
        return 417


def _handler(state: MiniDispatch) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.requests.append(Seen(self.command, self.path, headers, body))
            answer = state.answer(self.command, self.client_address[0], body)
            if answer == "bad":
                self.wfile.write(b"this is not HTTP\r\n\r\n")
                self.close_connection = True
                return
            assert isinstance(answer, int)
            self.send_response(answer)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = do_GET = do_HEAD = _any

    return Handler


@contextmanager
def mini_dispatch(*script: int | str, jobs: bool = False) -> Iterator[MiniDispatch]:
    """A running MiniDispatch at http://127.0.0.1:PORT/dispatch."""
    state = MiniDispatch(list(script), jobs={} if jobs else None)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}/dispatch"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def ovmf_variables(image: bytes) -> dict[tuple[str, str], tuple[int, bytes]]:
    """The live variables of an OVMF varstore file (OVMF_VARS*.fd): (name, guid) → (attributes, data).

    Layout (EDK II MdeModulePkg/Include/Guid/VariableFormat.h): a firmware
    volume header (its length at 0x30), a 28-byte variable store header, then
    authenticated variable headers (StartId 0x55AA, State, Attributes, ...,
    NameSize, DataSize, VendorGuid; 60 bytes), each followed by the name and
    the data and aligned to 4 bytes. State 0x3F is a live variable.
    """
    import uuid

    if image[0x28:0x2C] != b"_FVH":
        raise ValueError("not a firmware volume")
    offset = struct.unpack_from("<H", image, 0x30)[0] + 28
    found: dict[tuple[str, str], tuple[int, bytes]] = {}
    while offset + 60 <= len(image):
        start, state, _, attributes = struct.unpack_from("<HBBI", image, offset)
        if start != 0x55AA:
            break
        name_size, data_size = struct.unpack_from("<II", image, offset + 36)
        guid = str(uuid.UUID(bytes_le=image[offset + 44 : offset + 60]))
        name_at = offset + 60
        name = image[name_at : name_at + name_size].decode("utf-16-le").rstrip("\0")
        data = image[name_at + name_size : name_at + name_size + data_size]
        if state == 0x3F:
            found[(name, guid)] = (attributes, data)
        offset = (name_at + name_size + data_size + 3) & ~3
    return found
