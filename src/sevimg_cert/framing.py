"""What the harness puts on the serial console: one line per step, and the result JSON framed.

The console carries the JSON to `sevimg run --role host`, and kernel
messages land on it at any moment, even inside a line, so the JSON goes
framed, numbered, checksummed line by line, and twice:

    SEVIMG-CERT-RESULT-BEGIN result=<pass|fail|error> bytes=<n> sha256=<hex> lines=<k>
    SEVIMG-CERT-DATA <index, 4 digits> <CRC-32 of the chunk, 8 hex> <base64 chunk>
    …
    SEVIMG-CERT-RESULT-NEXT      (the first copy; the second ends with SEVIMG-CERT-RESULT-END)

`unframe` takes every intact data line of every copy of the same result
(same length and SHA-256), so a line garbled in one copy comes from the
other, and checks the whole against the SHA-256.
Standard library only: this runs inside the host image.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import zlib

from sevimg_cert.result import Step

STEP_MARK = "SEVIMG-CERT-STEP"
BEGIN_MARK = "SEVIMG-CERT-RESULT-BEGIN"
DATA_MARK = "SEVIMG-CERT-DATA"
NEXT_MARK = "SEVIMG-CERT-RESULT-NEXT"  # the end of the first copy
END_MARK = "SEVIMG-CERT-RESULT-END"  # the end of the last copy: readers can stop here
CHUNK = 60  # base64 characters a data line
COPIES = 2
MAX_RESULT = 16 << 20  # a result is some KiB; refuse to decode anything absurd


def step_line(test: str, step: Step) -> str:
    """The console line of one step (contract: `SEVIMG-CERT-STEP <name> <result> <detail>`)."""
    detail = " ".join(step.detail.split()) or "-"
    return f"{STEP_MARK} {test}/{step.name} {step.result.value} {detail}"


class FrameError(ValueError):
    """The console text holds no complete, intact result."""


def frame(result_json: bytes) -> str:
    """The framed form of the JSON for the serial console, in two copies (ends with a newline)."""
    try:
        outcome = json.loads(result_json).get("result", "error")
    except (ValueError, AttributeError):
        outcome = "error"
    if outcome not in ("pass", "fail", "error"):
        outcome = "error"
    encoded = base64.b64encode(result_json).decode()
    chunks = [encoded[i : i + CHUNK] for i in range(0, len(encoded), CHUNK)]
    body = [
        f"{DATA_MARK} {n:04d} {zlib.crc32(chunk.encode()):08x} {chunk}"
        for n, chunk in enumerate(chunks)
    ]
    digest = hashlib.sha256(result_json).hexdigest()
    head = f"{BEGIN_MARK} result={outcome} bytes={len(result_json)} sha256={digest} lines={len(chunks)}"
    copies = [[head, *body, NEXT_MARK] for _ in range(COPIES)]
    copies[-1][-1] = END_MARK
    return "\n".join(line for copy in copies for line in copy) + "\n"


_BEGIN = re.compile(
    re.escape(BEGIN_MARK)
    + r" result=(pass|fail|error) bytes=(\d{1,9}) sha256=([0-9a-f]{64}) lines=(\d{1,7})$"
)
# Anchored at the end: whatever landed before the mark (a timestamp, a tag) does not matter,
# whatever landed inside or after it breaks the line's CRC or its shape.
_DATA = re.compile(
    re.escape(DATA_MARK) + r" (\d{4,7}) ([0-9a-f]{8}) ([A-Za-z0-9+/=]{1," + str(CHUNK) + "})$"
)


def unframe(console_text: str) -> bytes:
    """The JSON bytes of the last result framed in `console_text` that can be made whole.

    Copies of one result (same length and SHA-256) are merged line by line;
    lines that are not intact data lines (kernel messages, systemd status,
    a data line with a kernel message inside it) are ignored. FrameError
    when no result can be made whole, saying what was wrong with the last one.
    """
    text = console_text.replace("\r", "")
    found: dict[tuple[int, str, int], dict[int, str]] = {}
    order: list[tuple[int, str, int]] = []
    ended: set[tuple[int, str, int]] = set()
    current: tuple[int, str, int] | None = None
    for raw in text.split("\n"):
        line = raw.rstrip()
        if (begin := _BEGIN.search(line)) is not None:
            current = (int(begin.group(2)), begin.group(3), int(begin.group(4)))
            if current not in found:
                found[current] = {}
            if current in order:
                order.remove(current)
            order.append(current)
            continue
        if current is None:
            continue
        if line.endswith((NEXT_MARK, END_MARK)):
            ended.add(current)
            current = None
            continue
        if (data := _DATA.search(line)) is not None:
            index, crc, chunk = int(data.group(1)), data.group(2), data.group(3)
            if f"{zlib.crc32(chunk.encode()):08x}" == crc:
                found[current].setdefault(index, chunk)
    if not order:
        raise FrameError(f"no {BEGIN_MARK} line")
    problem = ""
    for key in reversed(order):  # the last result first
        size, digest, count = key
        chunks = found[key]
        if size > MAX_RESULT:
            problem = f"the frame announces {size} bytes, more than {MAX_RESULT}"
            continue
        missing = [n for n in range(count) if n not in chunks]
        if missing:
            problem = (
                f"lines lost or garbled in every copy: {len(missing)} of {count} "
                f"(first: {missing[0]})"
                + ("" if key in ended else f"; no {END_MARK} line (cut off?)")
            )
            continue
        try:
            data_bytes = base64.b64decode("".join(chunks[n] for n in range(count)), validate=True)
        except (binascii.Error, ValueError):
            problem = "the frame's base64 does not decode (lines lost or garbled)"
            continue
        if len(data_bytes) != size or hashlib.sha256(data_bytes).hexdigest() != digest:
            problem = (
                f"the frame decodes to {len(data_bytes)} bytes with another SHA-256 than "
                f"announced ({size} bytes): lines lost or garbled"
            )
            continue
        return data_bytes
    raise FrameError(problem)
