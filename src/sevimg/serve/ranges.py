"""Byte ranges of `sevimg serve`'s downloads: `Range: bytes=a-b`, `a-`, `-n` (RFC 9110).

One range is honoured; several ranges, other units and nonsense are
ignored (the whole file is sent, as RFC 9110 allows). Numbers of any length
are safe: more than 18 digits stand for "larger than any file" rather than
being converted (int() of thousands of digits is slow, or refused).
"""

from __future__ import annotations

import re

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
_BEYOND = 1 << 64  # larger than any file: what a number of more digits stands for


def _number(digits: str) -> int:
    # int() of thousands of digits is slow or refused (ValueError): such a number is "huge".
    return _BEYOND if len(digits) > 18 else int(digits)


def byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(first, last) byte of a single range; "unsatisfiable"; None to send everything."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match[1] and not match[2]):
        return None  # several ranges, another unit, or nonsense: ignored
    if not match[1]:  # the last n bytes
        n = _number(match[2])
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(size - n, 0), size - 1
    first = _number(match[1])
    last = _number(match[2]) if match[2] else size - 1
    if match[2] and last < first:
        return None  # invalid: ignored
    if first >= size:
        return "unsatisfiable"
    return first, min(last, size - 1)
