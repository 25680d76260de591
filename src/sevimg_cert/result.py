"""A certification run's result: the model, its JSON, and what dispatch files it under.

The JSON follows the certification suite's own result format (AMD's
sev-certify, certification version 3.0): `schema_version` "1.0", levels
with their tests and steps, and the environment. Ours adds the evidence
(report, nonce, expected measurement, VCEK) so anyone can verify the
certificate again later with `sevimg verify`, and the harness log.
`schema/cert-result.schema.json` describes the JSON. The issue's title,
labels and milestone are decided here; its Markdown body is
sevimg_cert.markdown's, the console framing sevimg_cert.framing's.

Standard library only: this runs inside the host image.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SCHEMA_VERSION = "1.0"
CERTIFICATION_VERSION = "3.0"
# The certification levels and the features each certifies, as AMD's suite defines
# them (sev-certify docs/certifications.md). The one home of these names: the
# harness certifies LEVEL, and `sevimg matrix` prints this table under the matrix.
LEVELS: tuple[tuple[str, str], ...] = (
    ("3.0.0-0", "SEV-SNP attestation"),
    ("3.0.0-1", "memfd numa, key derivation, vlek loading, snphost config, snphost commit"),
    ("3.1.1-0", "Memory Hotplug, Vector Mitigation, Cloud Hypervisor"),
)
LEVEL = LEVELS[0][0]  # the level this harness runs (3.0.0-1 runs `snphost commit`: never)
DESCRIPTION = "SEV-SNP guest launch and attestation (sevimg)"

# The matrix workflow's label rules (sev-certify's matrix generator).
OS_LABEL = re.compile(r"^os-[a-zA-Z]+(?:-[a-zA-Z0-9.]+)?$")
PROC_LABEL = re.compile(r"^proc-\d+$")


class Outcome(StrEnum):
    """The outcome of a step, a test, a level or a run."""

    PASS = "pass"  # noqa: S105  (an outcome, not a password)
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"


def combine(outcomes: list[Outcome]) -> Outcome:
    """Outcomes combined: error beats fail beats pass; all skipped is skip."""
    if Outcome.ERROR in outcomes:
        return Outcome.ERROR
    if Outcome.FAIL in outcomes:
        return Outcome.FAIL
    if Outcome.PASS in outcomes:
        return Outcome.PASS
    return Outcome.SKIP


def combine_steps(steps: Sequence[Step]) -> Outcome:
    """A test's outcome from its steps: a step that could not run is never a pass.

    Error beats fail; the test passes only when every required step passed
    (optional ones, e.g. the OVMF floor when its version cannot be read, or
    revocation without a CRL, may be skipped); all skipped is skip; a
    required step skipped beside passing ones fails the test.
    """
    outcome = combine([s.result for s in steps])
    if outcome is not Outcome.PASS:
        return outcome
    if any(s.result is Outcome.SKIP and not s.optional for s in steps):
        return Outcome.FAIL
    return Outcome.PASS


@dataclass(frozen=True)
class Step:
    """One named step with its evidence: what was looked at and what it said."""

    name: str
    result: Outcome
    detail: str
    duration_ms: int | None = None
    output: str = ""  # a program's output, kept for failures
    # A passed step can carry a warning (a version below the guide's floor):
    # recorded in the result, never failing it.
    warning: str = ""
    optional: bool = False  # may be skipped without failing its test

    def as_dict(self) -> dict[str, Any]:
        """The step in the result JSON."""
        out: dict[str, Any] = {
            "name": self.name,
            "result": self.result.value,
            "detail": self.detail,
        }
        if self.duration_ms is not None:
            out["duration_ms"] = self.duration_ms
        if self.output and self.result is not Outcome.PASS:
            out["output"] = self.output
        if self.warning:
            out["warning"] = self.warning
        if self.optional:
            out["optional"] = True
        return out


def skipped(names: Sequence[str], why: str) -> tuple[Step, ...]:
    """The steps `names`, each skipped for the same reason."""
    return tuple(Step(n, Outcome.SKIP, why) for n in names)


@dataclass(frozen=True)
class Test:
    """A test of the level: its steps decide its result."""

    __test__ = False  # not a pytest test class, despite the name

    name: str
    description: str
    scope: str  # host or guest: where the thing tested lives
    started_at: str
    completed_at: str
    steps: tuple[Step, ...]
    level: str = LEVEL

    @property
    def result(self) -> Outcome:
        """The steps' combined outcome (see combine_steps)."""
        return combine_steps(self.steps)

    def as_dict(self) -> dict[str, Any]:
        """The test in the result JSON."""
        return {
            "name": self.name,
            "description": self.description,
            "scope": self.scope,
            "level": self.level,
            "result": self.result.value,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "steps": [s.as_dict() for s in self.steps],
        }


@dataclass(frozen=True)
class Environment:
    """What the run ran on; None where it could not be found out."""

    qemu_version: str | None = None
    qemu_binary: str | None = None
    kernel_version: str | None = None
    ovmf_version: str | None = None
    ovmf_path: str | None = None
    host_os_id: str | None = None
    host_os_name: str | None = None
    host_os_release: str | None = None
    host_os_pretty_name: str | None = None
    guest_os_id: str | None = None
    guest_os_release: str | None = None
    guest_kernel_version: str | None = None
    guest_image: str | None = None
    image: str | None = None
    processor: str | None = None  # e.g. "9004 (Genoa), family 0x19 model 0x11"

    def as_dict(self) -> dict[str, str | None]:
        """The environment in the result JSON (every key, null when unknown)."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Evidence:
    """What a verifier needs to check the certificate again: report, nonce, expected measurement, VCEK."""

    report: bytes | None = None
    nonce: bytes | None = None
    expected_measurement: bytes | None = None
    vcek_pem: str | None = None
    product: str | None = None
    reported_tcb: dict[str, Any] | None = None  # the platform's, as the report states it
    revocation: str | None = None  # "checked", or why the CRL was not

    def as_dict(self) -> dict[str, Any]:
        """JSON form: the report in base64, nonce and measurement in hex.

        `reported_tcb` and `revocation` appear once a report was verified.
        """
        extra: dict[str, Any] = {}
        if self.reported_tcb is not None:
            extra["reported_tcb"] = self.reported_tcb
        if self.revocation is not None:
            extra["revocation"] = self.revocation
        return {
            "report": base64.b64encode(self.report).decode() if self.report else None,
            "nonce": self.nonce.hex() if self.nonce else None,
            "expected_measurement": (
                self.expected_measurement.hex() if self.expected_measurement else None
            ),
            "vcek": self.vcek_pem,
            "product": self.product,
            **extra,
        }


@dataclass(frozen=True)
class Identity:
    """What the dispatch issue is filed under: the host's OS and processor series."""

    os_id: str | None
    os_version: str | None  # VERSION_ID, else VERSION_CODENAME
    series: str | None  # e.g. "9004"; None when the processor is not one we know


@dataclass(frozen=True)
class CertResult:
    """A whole run."""

    started_at: str
    completed_at: str
    tests: tuple[Test, ...]
    environment: Environment
    identity: Identity
    evidence: Evidence = field(default_factory=Evidence)
    error: str | None = None  # an unexpected failure of the harness itself
    log: str = ""

    @property
    def result(self) -> Outcome:
        """error when the harness broke, pass when every test passed, else fail."""
        if self.error is not None or any(t.result is Outcome.ERROR for t in self.tests):
            return Outcome.ERROR
        if self.tests and all(t.result is Outcome.PASS for t in self.tests):
            return Outcome.PASS
        return Outcome.FAIL

    @property
    def certified_level(self) -> str | None:
        """The level achieved: 3.0.0-0 only for a pass."""
        return LEVEL if self.result is Outcome.PASS else None

    def failed_steps(self) -> list[tuple[Test, Step]]:
        """Every failed or errored step, in order; for a test failed only by required
        steps that did not run, those steps (a check that could not run is not a pass)."""
        found = []
        for t in self.tests:
            bad = [s for s in t.steps if s.result in (Outcome.FAIL, Outcome.ERROR)]
            if not bad and t.result is Outcome.FAIL:
                bad = [s for s in t.steps if s.result is Outcome.SKIP and not s.optional]
            found += [(t, s) for s in bad]
        return found

    def not_checked(self) -> list[tuple[Test, Step]]:
        """The optional steps that did not run, each with why."""
        return [
            (t, s) for t in self.tests for s in t.steps if s.optional and s.result is Outcome.SKIP
        ]


def level_result(result: CertResult) -> Outcome:
    """The level's outcome (there is one level, 3.0.0-0)."""
    outcome = combine([t.result for t in result.tests])
    return Outcome.FAIL if outcome is Outcome.SKIP else outcome


def to_dict(result: CertResult) -> dict[str, Any]:
    """The certification JSON document."""
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "certification_version": CERTIFICATION_VERSION,
        "description": DESCRIPTION,
        "result": result.result.value,
        "certified_level": result.certified_level,
        "max_certification_level": LEVEL,
        "started_at": result.started_at,
        "completed_at": result.completed_at,
        "environment": result.environment.as_dict(),
        "levels": [
            {
                "level": LEVEL,
                "result": level_result(result).value,
                "tests": [t.as_dict() for t in result.tests],
            }
        ],
        "title": title(result.identity),
        "labels": labels(result.identity),
        "milestone": milestone(result),
        "evidence": result.evidence.as_dict(),
        "error": result.error,
        "log": result.log,
    }
    return doc


def to_json(result: CertResult) -> bytes:
    """The JSON bytes, deterministic (sorted nowhere: the order is the format's)."""
    return (json.dumps(to_dict(result), indent=2, ensure_ascii=False) + "\n").encode()


def title(identity: Identity) -> str:
    """`<ID> <VERSION_ID> SEV version 3.0`, from the host's os-release."""
    return (
        f"{identity.os_id or 'unknown'} {identity.os_version or 'unknown'} "
        f"SEV version {CERTIFICATION_VERSION}"
    )


def os_label(identity: Identity) -> str | None:
    """`os-<ID>-<VERSION>` in the matrix's form, or None when the OS is unknown.

    The matrix accepts letters only in the ID and [a-zA-Z0-9.] in the version,
    so other characters are dropped (an ID with a dash keeps its letters).
    """
    os_id = re.sub(r"[^a-zA-Z]", "", identity.os_id or "")
    version = re.sub(r"[^a-zA-Z0-9.]", "", identity.os_version or "")
    if not os_id:
        return None
    label = f"os-{os_id}-{version}" if version else f"os-{os_id}"
    return label if OS_LABEL.match(label) else None


def labels(identity: Identity) -> list[str]:
    """`certificate`, `os-…` and `proc-…`.

    An unknown processor gets no `proc-` label rather than a guessed one: the
    matrix would file a wrong guess under another processor, while an issue
    without the label stays a record that a person can label by hand.
    """
    out = ["certificate"]
    if (os := os_label(identity)) is not None:
        out.append(os)
    if identity.series and PROC_LABEL.match(f"proc-{identity.series}"):
        out.append(f"proc-{identity.series}")
    return out


def milestone(result: CertResult) -> str | None:
    """`c3.0.0-0` when the level was achieved, else None (the issue is then a record)."""
    return f"c{result.certified_level}" if result.certified_level else None


def from_dict(doc: dict[str, Any]) -> CertResult:
    """A CertResult back from its JSON (as `sevimg run --role host` reads it off the console).

    The result, level, title, labels and milestone are recomputed from the
    tests and identity; `sevimg run` checks that they agree with the JSON.
    KeyError/TypeError/ValueError when the document is not a result.
    """
    env_fields = Environment.__dataclass_fields__
    environment = Environment(**{k: v for k, v in doc["environment"].items() if k in env_fields})
    tests = tuple(
        Test(
            t["name"],
            t["description"],
            t["scope"],
            t["started_at"],
            t["completed_at"],
            tuple(
                Step(
                    s["name"],
                    Outcome(s["result"]),
                    s["detail"],
                    s.get("duration_ms"),
                    s.get("output", ""),
                    warning=s.get("warning", ""),
                    optional=bool(s.get("optional", False)),
                )
                for s in t["steps"]
            ),
            t["level"],
        )
        for level in doc["levels"]
        for t in level["tests"]
    )
    ev = doc["evidence"]
    evidence = Evidence(
        base64.b64decode(ev["report"]) if ev.get("report") else None,
        bytes.fromhex(ev["nonce"]) if ev.get("nonce") else None,
        bytes.fromhex(ev["expected_measurement"]) if ev.get("expected_measurement") else None,
        ev.get("vcek"),
        ev.get("product"),
        ev.get("reported_tcb"),
        ev.get("revocation"),
    )
    title_words = str(doc["title"]).split()
    series = next(
        (label.removeprefix("proc-") for label in doc["labels"] if PROC_LABEL.match(label)), None
    )
    identity = Identity(
        environment.host_os_id or title_words[0],
        environment.host_os_release or title_words[1],
        series,
    )
    return CertResult(
        doc["started_at"],
        doc["completed_at"],
        tests,
        environment,
        identity,
        evidence,
        doc.get("error"),
        doc.get("log", ""),
    )
