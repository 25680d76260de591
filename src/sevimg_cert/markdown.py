"""A result in Markdown: result.md, the dispatch issue's body and payload, and the evidence read back.

The body follows the certification suite's own result format (AMD's
sev-certify): it starts `# Achieved Certification Level 3.0.0-0` or `# Failed
to Achieve a Certification Level`, and carries the evidence in a
```sevimg-evidence block that `evidence_from_text` (and so `sevimg verify`)
reads back from result.md, result.json or the issue's text.
Standard library only: this runs inside the host image.
"""

from __future__ import annotations

import bisect
import json
import re
from typing import Any

from sevimg_cert.result import LEVEL, CertResult, Outcome, labels, milestone, title

EVIDENCE_FENCE = "sevimg-evidence"

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
    # Below the guide's floor, SEV-SNP works: said, never a failure.
    warned = [(t, s) for t in result.tests for s in t.steps if s.warning]
    for test, step in warned:
        w(f"**Warning:** {test.name} / {step.name}: {step.detail}: {step.warning}  ")
    if warned:
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
    optional = result.not_checked()
    if optional:
        w("### Not Checked (optional)")
        w("")
        for t, s in optional:
            w(f"- {_cell(t.name)} / {_cell(s.name)}: {_cell(s.detail)}")
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


def _json(text: str) -> Any:
    """json.loads, with too deep a nesting a ValueError too (the parser recurses)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def evidence_block(text: str) -> tuple[int, str] | None:
    """The first complete evidence block: (its first line's number, its text), or None.

    One pass over the lines, so it is linear in the text however many
    fences never close: an opening ```sevimg-evidence line (3 or more
    backticks) is closed by the first later line of exactly as many.
    """
    lines = text.split("\n")
    openers: list[tuple[int, int]] = []  # (line index, backticks)
    closers: dict[int, list[int]] = {}  # backticks -> the line indices of closing lines
    for index, line in enumerate(lines):
        bare = line.rstrip()
        if not bare.startswith("```"):
            continue
        ticks = len(bare) - len(bare.lstrip("`"))
        rest = bare[ticks:]
        if rest == EVIDENCE_FENCE:
            openers.append((index, ticks))
        elif not rest:
            closers.setdefault(ticks, []).append(index)
    for index, ticks in openers:
        found = closers.get(ticks, [])
        at = bisect.bisect_right(found, index)
        if at < len(found):
            return index + 2, "\n".join(lines[index + 1 : found[at]])
    return None


def evidence_from_text(text: str) -> dict[str, Any]:
    """The evidence of a result.json or result.md (or a dispatch issue's body), as a dict.

    ValueError (naming the line for a block) when the text holds neither a
    JSON result with `evidence` nor a readable evidence block.
    """
    try:
        doc = _json(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("evidence"), dict):
        return dict(doc["evidence"])
    found = evidence_block(text)
    if found is None:
        raise ValueError(f"neither a result JSON with evidence nor a ```{EVIDENCE_FENCE} block")
    line, body = found
    try:
        block = _json(body)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"line {line + exc.lineno - 1}: the {EVIDENCE_FENCE} block is not JSON: {exc.msg}"
        ) from None
    except ValueError as exc:
        raise ValueError(f"line {line}: the {EVIDENCE_FENCE} block is not JSON: {exc}") from None
    if not isinstance(block, dict):
        raise ValueError(f"line {line}: the {EVIDENCE_FENCE} block is not a JSON object")
    return block
