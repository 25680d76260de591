"""Version parsing and the SEV-SNP floors.

Distributions write versions in many ways (1:10.0.13+ds-0+deb13u1,
2025.02-8, 20241117, 6.12.117-1); a floor check only needs the leading
numbers. edk2's date versions (20241117) compare as year.month.day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from sevimg_cert import floors

# A prefix: what follows the numbers (+ds-1, ~rc1) does not matter to a floor.
_LEADING = re.compile(r"(?:[0-9]+:)?([0-9]+(?:\.[0-9]+)*)")
_MAX_DIGITS = 9  # per part: 20241117 fits; a longer run of digits is not a version
_EDK2_DATE = re.compile(r"(20[0-9]{2})([0-9]{2})([0-9]{2})")


def parse(version: str) -> tuple[int, ...]:
    """The numeric core of a version string: '1:10.0.13+ds-1' → (10, 0, 13)."""
    match = _LEADING.match(version.strip())
    if not match:
        raise ValueError(f"not a version: {version!r}")
    core = match.group(1)
    if any(len(part) > _MAX_DIGITS for part in core.split(".")):
        raise ValueError(f"not a version: {version!r}")
    if date := _EDK2_DATE.fullmatch(core):
        return tuple(int(x) for x in date.groups())
    return tuple(int(x) for x in core.split("."))


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as version `a` is older than, equal to, or newer than `b`."""
    pa, pb = parse(a), parse(b)
    width = max(len(pa), len(pb))
    pa += (0,) * (width - len(pa))
    pb += (0,) * (width - len(pb))
    return (pa > pb) - (pa < pb)


class Verdict(StrEnum):
    """Outcome of a floor check."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Floor:
    """A minimum version: below `minimum` fails (no SEV-SNP), below `recommended` warns."""

    component: str
    minimum: str
    recommended: str
    why: str  # where SEV-SNP support landed: said when a version fails
    guide_why: str = ""  # the guide's floor: said when a version warns

    def check(self, version: str | None) -> Verdict:
        """Judge a version against this floor; one that cannot be read fails (fail closed)."""
        if version is None:
            return Verdict.UNKNOWN
        try:
            below = compare(version, self.minimum) < 0
        except ValueError:
            return Verdict.FAIL
        if below:
            return Verdict.FAIL
        if compare(version, self.recommended) < 0:
            return Verdict.WARN
        return Verdict.OK


# The floors for an SEV-SNP host live in sevimg_cert.floors, which the in-image
# harness reads too: one home, one rule.
HOST_FLOORS: tuple[Floor, ...] = tuple(
    Floor(f.component, floors.show(f.snp), floors.show(f.guide), f.snp_why, f.guide_why)
    for f in floors.HOST_FLOORS
)
