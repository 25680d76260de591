"""A certification run's result: the model, its JSON and Markdown, the dispatch report and the console framing.

The JSON and Markdown follow the certification suite's own result format
(AMD's sev-certify, certification version 3.0): `schema_version` "1.0",
levels with their tests and steps, the environment, and a Markdown body that
starts `# Achieved Certification Level 3.0.0-0` or `# Failed to Achieve a
Certification Level`. Ours adds the evidence (report, nonce, expected
measurement, VCEK) so anyone can verify the certificate again later with
`sevimg verify`, and the harness log. `schema/cert-result.schema.json`
describes the JSON.

The console framing (`frame`/`unframe`) carries the JSON over a serial
console, where kernel messages may interleave with it:

    SEVIMG-CERT-RESULT-BEGIN result=<pass|fail|error> bytes=<n> sha256=<hex>
    <base64 of the JSON, lines of at most 76 characters>
    SEVIMG-CERT-RESULT-END

Standard library only: this runs inside the host image.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SCHEMA_VERSION = "1.0"
CERTIFICATION_VERSION = "3.0"
LEVEL = "3.0.0-0"
DESCRIPTION = "SEV-SNP guest launch and attestation (sevimg)"
EVIDENCE_FENCE = "sevimg-evidence"

STEP_MARK = "SEVIMG-CERT-STEP"
BEGIN_MARK = "SEVIMG-CERT-RESULT-BEGIN"
END_MARK = "SEVIMG-CERT-RESULT-END"
LINE_WIDTH = 76
MAX_RESULT = 16 << 20  # a result is some KiB; refuse to decode anything absurd

# The matrix workflow's label rules (sev-certify's matrix generator).
OS_LABEL = re.compile(r"^os-[a-zA-Z]+(?:-[a-zA-Z0-9.]+)?$")
PROC_LABEL = re.compile(r"^proc-\d+$")
SERIES_NAMES = {
    "7001": "Naples",
    "7002": "Rome",
    "7003": "Milan",
    "9004": "Genoa",
    "8004": "Siena",
    "9005": "Turin",
}


class Outcome(StrEnum):
    """The outcome of a step, a test, a level or a run."""

    PASS = "pass"  # noqa: S105  (an outcome, not a password)
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"


def combine(outcomes: list[Outcome]) -> Outcome:
    """A test's outcome from its steps: error beats fail beats pass; all skipped is skip.

    A skipped step (e.g. information that could not be read) does not fail a
    test that has passing steps; a failed one does.
    """
    if Outcome.ERROR in outcomes:
        return Outcome.ERROR
    if Outcome.FAIL in outcomes:
        return Outcome.FAIL
    if Outcome.PASS in outcomes:
        return Outcome.PASS
    return Outcome.SKIP


@dataclass(frozen=True)
class Step:
    """One named step with its evidence: what was looked at and what it said."""

    name: str
    result: Outcome
    detail: str
    duration_ms: int | None = None
    output: str = ""  # a program's output, kept for failures

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
        return out


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
        """The steps' combined outcome."""
        return combine([s.result for s in self.steps])

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

    def as_dict(self) -> dict[str, str | None]:
        """JSON form: the report in base64, nonce and measurement in hex."""
        return {
            "report": base64.b64encode(self.report).decode() if self.report else None,
            "nonce": self.nonce.hex() if self.nonce else None,
            "expected_measurement": (
                self.expected_measurement.hex() if self.expected_measurement else None
            ),
            "vcek": self.vcek_pem,
            "product": self.product,
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
        """Every failed or errored step, in order."""
        return [
            (t, s) for t in self.tests for s in t.steps if s.result in (Outcome.FAIL, Outcome.ERROR)
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


ICONS = {
    Outcome.PASS: ":white_check_mark:",
    Outcome.FAIL: ":x:",
    Outcome.ERROR: ":boom:",
    Outcome.SKIP: ":fast_forward:",
}


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _fence(text: str, info: str = "") -> list[str]:
    """A fenced block longer than any backtick run inside `text`."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return [f"{ticks}{info}", text.rstrip("\n"), ticks]


def to_markdown(result: CertResult) -> str:
    """The Markdown body of the dispatch issue."""
    lines: list[str] = []
    w = lines.append
    level = result.certified_level
    w(
        f"# Achieved Certification Level {level}"
        if level
        else "# Failed to Achieve a Certification Level"
    )
    w("")
    w(f"**Certified level:** {level or 'none'}  ")
    w(f"**Maximum level:** {LEVEL}  ")
    w(f"**Result:** {result.result.value}  ")
    w(f"**Started:** {result.started_at}  ")
    w(f"**Completed:** {result.completed_at}")
    w("")
    failed = result.failed_steps()
    if failed:
        test, step = failed[0]
        w(f"**First failure:** {test.name} / {step.name}: {step.detail}")
        w("")
    if result.error:
        w(f"**Harness error:** {result.error}")
        w("")
    env = result.environment
    w("## Environment")
    w("")
    host_os = env.host_os_pretty_name or " ".join(
        x for x in (env.host_os_name, env.host_os_release) if x
    )
    rows = [
        ("Image", env.image),
        ("Host OS", host_os or None),
        ("Host kernel", env.kernel_version),
        ("Processor", env.processor),
        ("Guest", env.guest_image),
        (
            "Guest OS",
            " ".join(x for x in (env.guest_os_id, env.guest_os_release) if x) or None,
        ),
        ("Guest kernel", env.guest_kernel_version),
        (
            "QEMU",
            " ".join(x for x in (env.qemu_version, env.qemu_binary and f"({env.qemu_binary})") if x)
            or None,
        ),
        (
            "OVMF",
            " ".join(x for x in (env.ovmf_version, env.ovmf_path and f"({env.ovmf_path})") if x)
            or None,
        ),
    ]
    for name, value in rows:
        w(f"- **{name}:** {value or 'unknown'}")
    w("")
    w(f"### Level {LEVEL}")
    w("")
    w("| Test | Description | Result |")
    w("|------|-------------|--------|")
    for t in result.tests:
        w(f"| {_cell(t.name)} | {_cell(t.description)} | {ICONS[t.result]} {t.result.value} |")
    w("")
    broken = [t for t in result.tests if t.result is not Outcome.PASS]
    if broken:
        w("### Failure Details")
        w("")
        for t in broken:
            w("<details>")
            w(f"<summary>{t.name} ({t.result.value})</summary>")
            w("")
            w("| Step | Result | Detail |")
            w("|------|--------|--------|")
            for s in t.steps:
                w(f"| {_cell(s.name)} | {s.result.value} | {_cell(s.detail)} |")
            w("")
            for s in t.steps:
                if s.output and s.result in (Outcome.FAIL, Outcome.ERROR):
                    w(f"**{s.name}** output:")
                    w("")
                    lines.extend(_fence(s.output))
                    w("")
            w("</details>")
            w("")
    w("## Evidence")
    w("")
    w(
        "Check it again with `sevimg verify` (it reads this block from the issue's text or result.md)."
    )
    w("")
    lines.extend(_fence(json.dumps(result.evidence.as_dict(), indent=2), EVIDENCE_FENCE))
    w("")
    if result.log:
        w("## Harness log")
        w("")
        w("<details>")
        w("<summary>harness.log</summary>")
        w("")
        lines.extend(_fence(result.log))
        w("")
        w("</details>")
        w("")
    return "\n".join(lines)


def dispatch_payload(result: CertResult) -> dict[str, Any]:
    """The JSON dispatch's PUT takes: title, body, labels and (only when achieved) milestone."""
    payload: dict[str, Any] = {
        "title": title(result.identity),
        "body": to_markdown(result),
        "labels": labels(result.identity),
    }
    if (m := milestone(result)) is not None:
        payload["milestone"] = m
    return payload


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


def evidence_from_text(text: str) -> dict[str, Any]:
    """The evidence of a result.json or result.md (or a dispatch issue's body), as a dict.

    ValueError when the text holds neither a JSON result with `evidence` nor
    an evidence block.
    """
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("evidence"), dict):
        return dict(doc["evidence"])
    match = re.search(
        r"^(`{3,})" + re.escape(EVIDENCE_FENCE) + r"\s*\n(.*?)^\1\s*$", text, re.M | re.S
    )
    if match is None:
        raise ValueError(f"neither a result JSON with evidence nor a ```{EVIDENCE_FENCE} block")
    try:
        block = json.loads(match.group(2))
    except ValueError as exc:
        raise ValueError(f"the {EVIDENCE_FENCE} block is not JSON: {exc}") from None
    if not isinstance(block, dict):
        raise ValueError(f"the {EVIDENCE_FENCE} block is not a JSON object")
    return block


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
