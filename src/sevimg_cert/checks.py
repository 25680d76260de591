"""A verifier check: its name, verdict, reason, whether it is required, and what kind of failure it is.

Shared by sevimg_cert.verify, .policy and .crl so each can state its checks
without importing the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    """A check passed, failed, or could not run (which is not a pass)."""

    PASS = "pass"  # noqa: S105  (a verdict, not a password)
    FAIL = "fail"
    SKIP = "skip"


class Failure(StrEnum):
    """What kind of failure a failed check is; `sevimg verify` exits with a code per kind."""

    EVIDENCE = "evidence"  # the report is not the expected guest (nonce, measurement, policy)
    CHAIN = "chain"  # a certificate, CRL or the report's signature does not hold
    REVOKED = "revoked"  # a certificate of the chain is on AMD's revocation list
    FETCH = "fetch"  # a certificate or CRL could not be had
    INCOMPLETE = "incomplete"  # a required check could not run (nothing failed)


@dataclass(frozen=True)
class Check:
    """One named check and why it came out as it did.

    `required` checks must pass for a verdict of verified; an optional one
    (revocation without a CRL at hand, unless the policy requires it) may be
    skipped, and is then listed apart with why it did not run. A failed
    check fails the verdict whether it is required or not.
    """

    name: str
    verdict: Verdict
    reason: str
    failure: Failure = Failure.EVIDENCE  # what a FAIL means; unused otherwise
    required: bool = True

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form."""
        out: dict[str, Any] = {
            "name": self.name,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "required": self.required,
        }
        if self.verdict is Verdict.FAIL:
            out["failure"] = self.failure.value
        return out


# The order in which a result's failure kind is decided: the gravest first.
FAILURE_ORDER = (Failure.REVOKED, Failure.CHAIN, Failure.EVIDENCE, Failure.FETCH)


def passed(checks: tuple[Check, ...] | list[Check]) -> bool:
    """True when there are checks, every required one passed and none failed."""
    return bool(checks) and all(
        c.verdict is Verdict.PASS or (c.verdict is Verdict.SKIP and not c.required) for c in checks
    )


def failure(checks: tuple[Check, ...] | list[Check]) -> Failure | None:
    """The gravest kind of failure among `checks`; INCOMPLETE when only required skips stand in the way."""
    kinds = {c.failure for c in checks if c.verdict is Verdict.FAIL}
    for kind in FAILURE_ORDER:
        if kind in kinds:
            return kind
    return None if passed(checks) else Failure.INCOMPLETE
