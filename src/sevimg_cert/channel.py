"""The host side of the attestation channel: ask the guest for a report over a nonce.

QEMU exposes the guest's virtio-serial port `org.sevimg.attest` as a unix
socket on the host (`sevimg.render.launch.channel_args`). The protocol is
ASCII lines ending in a newline; the host sends

    SEVIMG-ATTEST-REQUEST v1 nonce=<128 lower-case hex digits>

and the guest's responder answers each request with

    SEVIMG-ATTEST-REPLY v1
    nonce=… image=… os_id=… os_version=… kernel=… sev=…
    sev_guest_device=… configfs=… tsm_provider=… module.<name>=…
    report=<base64> | error=<reason>
    SEVIMG-ATTEST-END

(one `key=value` per line). The guest may not have opened its port yet
when the host first asks, so the request is repeated every few seconds
until a reply begins. A reply is parsed strictly; a reply echoing another
nonce is not an error here (the verifier judges the nonce), but one that
echoes ours is preferred, so a stale reply to an earlier client is skipped.

Standard library only: this runs inside the host image.
"""

from __future__ import annotations

import base64
import binascii
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

NONCE_BYTES = 64
REQUEST = "SEVIMG-ATTEST-REQUEST v1 nonce={}\n"
REPLY_BEGIN = "SEVIMG-ATTEST-REPLY v1"
REPLY_END = "SEVIMG-ATTEST-END"
RESEND_SECONDS = 3.0
MAX_LINE = 64 * 1024  # a report is 1184 bytes (1580 in base64); anything near this is garbage
_RECEIVED_SHOWN = 300  # characters of what was received that an error message quotes

SEV_LEVELS = frozenset({"snp", "sev-es", "sev", "none"})
MODULE_STATES = frozenset({"loaded", "builtin", "missing"})
_REQUIRED = (
    "nonce",
    "image",
    "os_id",
    "os_version",
    "kernel",
    "sev",
    "sev_guest_device",
    "configfs",
    "tsm_provider",
)
_KEY = re.compile(r"(?:[a-z_]+|module\.[A-Za-z0-9_-]+)")
_HEX_NONCE = re.compile(r"[0-9a-f]{128}")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


class ChannelError(RuntimeError):
    """The guest's answer could not be had or read; the message says what was received."""


@dataclass(frozen=True)
class GuestAnswer:
    """One reply of the guest's responder, as it said it.

    `nonce` is the nonce the guest echoed (empty when it refused a request
    it could not read); comparing it with the one sent is the verifier's job.
    `report` is the raw attestation report (configfs-tsm's outblob) when the
    guest produced one; otherwise `error` says why not.
    """

    nonce: bytes
    image: str
    os_id: str
    os_version: str
    kernel: str
    sev: str
    sev_guest_device: bool
    configfs: bool
    tsm_provider: str | None
    modules: dict[str, str] = field(hash=False)
    report: bytes | None
    error: str | None
    text: str = field(repr=False)  # the reply as received, for the evidence


PORT_NAME = "org.sevimg.attest"


def request_line(nonce: bytes) -> bytes:
    """The request for `nonce` (exactly 64 bytes), as sent on the wire."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"a nonce is {NONCE_BYTES} bytes, not {len(nonce)}")
    return REQUEST.format(nonce.hex()).encode("ascii")


def parse_reply(lines: list[str]) -> GuestAnswer:
    """A reply from its lines (the BEGIN and END lines excluded); ChannelError when malformed."""
    fields: dict[str, str] = {}
    modules: dict[str, str] = {}
    for number, line in enumerate(lines, start=2):
        key, sep, value = line.partition("=")
        if not sep or not _KEY.fullmatch(key):
            raise ChannelError(f"reply line {number} is not key=value: {line[:80]!r}")
        if key.startswith("module."):
            name = key.removeprefix("module.")
            if value not in MODULE_STATES:
                raise ChannelError(
                    f"reply line {number}: module {name} is {value[:40]!r}, "
                    f"not one of {', '.join(sorted(MODULE_STATES))}"
                )
            if name in modules:
                raise ChannelError(f"reply line {number}: module {name} is given twice")
            modules[name] = value
            continue
        if key not in (*_REQUIRED, "report", "error"):
            raise ChannelError(f"reply line {number}: unknown field {key!r}")
        if key in fields:
            raise ChannelError(f"reply line {number}: {key} is given twice")
        fields[key] = value
    missing = [k for k in _REQUIRED if k not in fields]
    if missing:
        raise ChannelError(f"the reply has no {', '.join(missing)}")
    if ("report" in fields) == ("error" in fields):
        raise ChannelError("the reply must carry either report= or error=, and not both")

    nonce_hex = fields["nonce"]
    if nonce_hex and not _HEX_NONCE.fullmatch(nonce_hex):
        raise ChannelError(
            f"the reply's nonce is not 128 lower-case hex digits: {nonce_hex[:140]!r}"
        )
    if fields["sev"] not in SEV_LEVELS:
        raise ChannelError(
            f"the reply's sev is {fields['sev'][:40]!r}, not one of {', '.join(sorted(SEV_LEVELS))}"
        )
    flags: dict[str, bool] = {}
    for key in ("sev_guest_device", "configfs"):
        if fields[key] not in ("yes", "no"):
            raise ChannelError(f"the reply's {key} is {fields[key][:40]!r}, not yes or no")
        flags[key] = fields[key] == "yes"
    report: bytes | None = None
    if "report" in fields:
        try:
            report = base64.b64decode(fields["report"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ChannelError(f"the reply's report is not base64: {exc}") from None
        if not report:
            raise ChannelError("the reply's report is empty")
    provider = fields["tsm_provider"]
    return GuestAnswer(
        nonce=bytes.fromhex(nonce_hex),
        image=fields["image"],
        os_id=fields["os_id"],
        os_version=fields["os_version"],
        kernel=fields["kernel"],
        sev=fields["sev"],
        sev_guest_device=flags["sev_guest_device"],
        configfs=flags["configfs"],
        tsm_provider=None if provider == "none" else provider,
        modules=modules,
        report=report,
        error=fields.get("error"),
        text="\n".join([REPLY_BEGIN, *lines, REPLY_END]) + "\n",
    )


def _connect(socket_path: Path, deadline: float) -> socket.socket:
    """A connection to QEMU's socket, waiting for QEMU to create it."""
    last = "no attempt"
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(socket_path))
        except OSError as exc:
            sock.close()
            last = exc.strerror or str(exc)
            if time.monotonic() >= deadline:
                raise ChannelError(f"cannot connect to {socket_path}: {last}") from None
            time.sleep(0.2)
            continue
        return sock


def _shown(received: bytes) -> str:
    if not received:
        return "nothing was received"
    tail = received[-_RECEIVED_SHOWN:].decode("ascii", errors="backslashreplace")
    more = "…" if len(received) > _RECEIVED_SHOWN else ""
    return f"received {len(received)} bytes, ending {more}{tail!r}"


def request(
    socket_path: Path, nonce: bytes, timeout: float, resend: float = RESEND_SECONDS
) -> GuestAnswer:
    """Ask the guest behind `socket_path` for an attestation report over `nonce`.

    Sends the request every `resend` seconds until a reply begins and returns
    the first complete reply that echoes `nonce`; at `timeout` seconds, the
    last complete reply echoing another nonce if there was one. Lines that
    are not part of a reply (the tail of a reply to an earlier client) are
    skipped; a malformed line inside a reply is a ChannelError, as are a
    timeout with no reply and a connection QEMU closes.
    """
    line = request_line(nonce)
    deadline = time.monotonic() + timeout
    sock = _connect(socket_path, deadline)
    received = bytearray()
    other: GuestAnswer | None = None
    with sock:
        buffer = b""
        reply: list[str] | None = None
        next_send = 0.0
        while True:
            now = time.monotonic()
            if reply is None and now >= next_send:
                try:
                    sock.sendall(line)
                except OSError as exc:
                    raise ChannelError(
                        f"cannot send the request to {socket_path}: {exc.strerror or exc}"
                    ) from None
                next_send = now + resend
            if now >= deadline:
                if other is not None:
                    return other
                state = "in the middle of a reply" if reply is not None else "no reply"
                raise ChannelError(
                    f"{state} from the guest within {timeout:g} s on {socket_path}; "
                    + _shown(bytes(received))
                )
            wait = min(deadline, next_send) - now if reply is None else deadline - now
            sock.settimeout(max(0.01, wait))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise ChannelError(
                    f"reading from {socket_path} failed: {exc.strerror or exc}"
                ) from None
            if not chunk:
                if other is not None:
                    return other
                state = "in the middle of a reply" if reply is not None else "before replying"
                raise ChannelError(
                    f"the channel {socket_path} was closed {state}; " + _shown(bytes(received))
                )
            received += chunk
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            if len(buffer) > MAX_LINE:
                raise ChannelError(f"a line longer than {MAX_LINE} bytes on {socket_path}")
            for raw in complete:
                text = raw.decode("ascii", errors="replace")
                if reply is None:
                    if text == REPLY_BEGIN:
                        reply = []
                    continue  # noise outside a reply: the tail of an earlier one
                if text == REPLY_BEGIN:
                    raise ChannelError(f"a reply began inside another on {socket_path}")
                if text == REPLY_END:
                    answer = parse_reply(reply)
                    if answer.nonce == nonce:
                        return answer
                    other, reply = answer, None
                    continue
                if not raw.isascii() or not _PRINTABLE.fullmatch(text):
                    raise ChannelError(
                        f"reply line {len(reply) + 2} is not printable ASCII: {raw[:80]!r}"
                    )
                reply.append(text)
