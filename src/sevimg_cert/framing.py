"""What the harness puts on the serial console: one line per step, and the result JSON framed.

The console carries the JSON to `sevimg run --role host` and `sevimg build
--boot`, and kernel messages may interleave with it, so it goes framed:

    SEVIMG-CERT-RESULT-BEGIN result=<pass|fail|error> bytes=<n> sha256=<hex>
    <base64 of the JSON, lines of at most 76 characters>
    SEVIMG-CERT-RESULT-END

`unframe` reads the last intact frame back out of a noisy console.
Standard library only: this runs inside the host image.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re

from sevimg_cert.result import Step

STEP_MARK = "SEVIMG-CERT-STEP"
BEGIN_MARK = "SEVIMG-CERT-RESULT-BEGIN"
END_MARK = "SEVIMG-CERT-RESULT-END"
LINE_WIDTH = 76
MAX_RESULT = 16 << 20  # a result is some KiB; refuse to decode anything absurd


def step_line(test: str, step: Step) -> str:
    """The console line of one step (contract: `SEVIMG-CERT-STEP <name> <result> <detail>`)."""
    detail = " ".join(step.detail.split()) or "-"
    return f"{STEP_MARK} {test}/{step.name} {step.result.value} {detail}"


class FrameError(ValueError):
    """The console text holds no complete, intact result."""


def frame(result_json: bytes) -> str:
    """The framed form of the JSON for the serial console (ends with a newline)."""
    try:
        outcome = json.loads(result_json).get("result", "error")
    except (ValueError, AttributeError):
        outcome = "error"
    if outcome not in ("pass", "fail", "error"):
        outcome = "error"
    encoded = base64.b64encode(result_json).decode()
    body = [encoded[i : i + LINE_WIDTH] for i in range(0, len(encoded), LINE_WIDTH)]
    digest = hashlib.sha256(result_json).hexdigest()
    head = f"{BEGIN_MARK} result={outcome} bytes={len(result_json)} sha256={digest}"
    return "\n".join([head, *body, END_MARK]) + "\n"


_BEGIN = re.compile(
    re.escape(BEGIN_MARK) + r" result=(pass|fail|error) bytes=(\d{1,9}) sha256=([0-9a-f]{64})"
)
_B64_LINE = re.compile(r"^[A-Za-z0-9+/=]{1,76}$")
# A kernel timestamp the console puts before forwarded lines: "[  155.508432] ".
_STAMP = re.compile(r"^\[\s*\d+\.\d+\]\s*")


def _tag(line: str, at: int) -> str:
    """What precedes the BEGIN mark on its line, without the kernel timestamp.

    systemd's journal+console output reaches the console as
    `[  155.5] host-check[270]: <text>`: every line of the frame carries the
    same `host-check[270]: ` tag, and lines without it are someone else's.
    """
    return _STAMP.sub("", line[:at])


def unframe(console_text: str) -> bytes:
    """The JSON bytes of the last intact frame in `console_text`.

    Lines inside a frame that do not carry the BEGIN line's tag followed by
    base64 (kernel messages, systemd status) are ignored, as are carriage
    returns and kernel timestamps; the length and SHA-256 in the BEGIN line
    decide whether what was collected is intact. FrameError when no frame is
    intact, saying what was wrong with the last one.
    """
    lines = console_text.replace("\r", "").split("\n")
    problem = f"no {BEGIN_MARK} line"
    found: bytes | None = None
    i = 0
    while i < len(lines):
        match = _BEGIN.search(lines[i])
        i += 1
        if match is None:
            continue
        tag = _tag(lines[i - 1], match.start())
        size, digest = int(match.group(2)), match.group(3)
        chunks: list[str] = []
        while i < len(lines) and END_MARK not in lines[i] and _BEGIN.search(lines[i]) is None:
            line = _STAMP.sub("", lines[i])
            if line.startswith(tag):
                candidate = line[len(tag) :].strip()
                if _B64_LINE.match(candidate):
                    chunks.append(candidate)
            i += 1
        if i >= len(lines) or END_MARK not in lines[i]:
            problem = f"the last frame has no {END_MARK} line (cut off?)"
            continue
        if size > MAX_RESULT:
            problem = f"the frame announces {size} bytes, more than {MAX_RESULT}"
            continue
        try:
            data = base64.b64decode("".join(chunks), validate=True)
        except (binascii.Error, ValueError):
            problem = "the frame's base64 does not decode (lines lost or garbled)"
            continue
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            problem = (
                f"the frame decodes to {len(data)} bytes with another SHA-256 than announced "
                f"({size} bytes): lines lost or garbled"
            )
            continue
        found = data
    if found is None:
        raise FrameError(problem)
    return found
