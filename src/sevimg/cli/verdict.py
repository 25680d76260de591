"""`sevimg verify`'s outputs: the exit code per kind of failure, the JSON object, the table.

With --json, stdout carries exactly one JSON object on every path: a
verdict, or (when verification cannot start: a missing file, a result with
no report, a bad option) an object saying why, with `failure: "usage"`, or
(a bug in sevimg) one with `failure: "internal"` and exit status 70.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import click
from rich.table import Table

from sevimg.cli.base import (
    EXIT_INTERNAL,
    err,
    internal_message,
    out,
    print_problems,
    report_internal,
    styled,
)
from sevimg.problems import SevimgError
from sevimg_cert.checks import Failure, Verdict
from sevimg_cert.verify import Result

EXIT_VERIFIED = 0
EXIT_EVIDENCE = 1
EXIT_USAGE = 2
EXIT_CHAIN = 3
EXIT_REVOKED = 4
EXIT_FETCH = 5
EXIT_INCOMPLETE = 6
EXIT_CODES = {
    Failure.EVIDENCE: EXIT_EVIDENCE,
    Failure.CHAIN: EXIT_CHAIN,
    Failure.REVOKED: EXIT_REVOKED,
    Failure.FETCH: EXIT_FETCH,
    Failure.INCOMPLETE: EXIT_INCOMPLETE,
}
# For --help and the README; the gravest failure decides when there are several.
EXIT_HELP = (
    "Exit status: 0 verified; 1 the evidence does not match (request data, measurement, "
    "debug, guest policy, minimum TCB, report version, VMPL, or not a report); 2 bad usage "
    "(a missing or unreadable file, a bad option, a result with no report, an invalid "
    "policy file); 3 the chain or the report's signature does not hold (or a CRL not "
    "signed by the ARK, or not current); 4 revoked; 5 could not fetch a certificate, or "
    "a CRL --require-crl requires; 6 a required check could not run and none failed (no --nonce, "
    "say); 70 an internal error (a bug in sevimg). When several apply: 4, then 3, 1, 5, 6."
)
_STYLE = {Verdict.PASS: "green", Verdict.FAIL: "bold red", Verdict.SKIP: "yellow"}


@dataclass(frozen=True)
class Source:
    """Where an expected value came from, and whether that proves anything."""

    value: bytes | None
    origin: str  # "--nonce", "--expect-from FILE", "evidence", "" (not given)

    @property
    def from_evidence(self) -> bool:
        """True when the value was taken from the evidence being verified."""
        return self.origin == "evidence"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form."""
        return {
            "value": None if self.value is None else self.value.hex(),
            "source": self.origin or None,
            "from_evidence": self.from_evidence,
        }


EVIDENCE_WARNING = (
    "the {what} was taken from the evidence itself, not given: "
    "this proves only that a genuine chip signed some guest's report, not that it is yours"
)


def exit_code(result: Result) -> int:
    """The documented exit status for `result`."""
    kind = result.failure
    return EXIT_VERIFIED if kind is None else EXIT_CODES[kind]


def document(
    report_file: str, result: Result, expected: dict[str, Source], policy: dict[str, Any]
) -> dict[str, Any]:
    """The JSON object of a verification that ran."""
    notes = [
        EVIDENCE_WARNING.format(what=name) for name, src in expected.items() if src.from_evidence
    ]
    return {
        "report_file": report_file,
        **result.as_dict(),
        "exit_code": exit_code(result),
        "expected": {name: src.as_dict() for name, src in expected.items()},
        "policy": policy,
        "notes": notes,
        "error": None,
    }


def usage_document(
    report_file: str | None,
    message: str,
    problems: Sequence[Any] = (),
    *,
    failure: str = "usage",
    code: int = EXIT_USAGE,
) -> dict[str, Any]:
    """The JSON object when verification could not start (or, `failure` internal, crashed)."""
    return {
        "report_file": report_file,
        "verified": False,
        "failure": failure,
        "exit_code": code,
        "checks": [],
        "not_checked": [],
        "report": None,
        "certificates": None,
        "expected": None,
        "policy": None,
        "notes": [],
        "error": message,
        "problems": [p.as_dict() for p in problems],
    }


def cannot_start(exc: SevimgError, report_file: str | None, as_json: bool) -> NoReturn:
    """Say why verification could not start (JSON on stdout with --json) and exit 2."""
    if as_json:
        out.print_json(json.dumps(usage_document(report_file, exc.message, exc.problems)))
    else:
        print_problems(exc.problems)
        err.print(f"sevimg: error: {exc.message}", style="bold red", markup=False)
        if exc.hint:
            err.print(f"hint: {exc.hint}", markup=False)
    sys.exit(EXIT_USAGE)


@contextmanager
def json_on_crash(report_file: str, as_json: bool) -> Iterator[None]:
    """With --json, a bug in sevimg still prints one JSON object (failure "internal"), exit 70.

    Without --json the exception goes on to the command's handler, which says
    the same on stderr. Exits (SystemExit) and interrupts pass through.
    """
    try:
        yield
    except (click.exceptions.Exit, click.ClickException):
        raise
    except Exception as exc:
        if not as_json:
            raise
        doc = usage_document(
            report_file, internal_message(exc), failure="internal", code=EXIT_INTERNAL
        )
        out.print_json(json.dumps(doc))
        report_internal(exc)
        sys.exit(EXIT_INTERNAL)


def show(
    report_file: str,
    result: Result,
    expected: dict[str, Source],
    as_json: bool,
    policy: dict[str, Any],
) -> NoReturn:
    """Print the verdict (a table, or the JSON object) and exit with its code."""
    code = exit_code(result)
    if as_json:
        text = json.dumps(document(report_file, result, expected, policy))  # whole, then printed
        out.print_json(text)
        sys.exit(code)
    table = Table(title=styled(f"sevimg verify {report_file}"))
    for column in ("check", "verdict", "reason"):
        table.add_column(column, overflow="fold")
    for check in result.checks:
        verdict = check.verdict.value + ("" if check.required else " (optional)")
        table.add_row(
            styled(check.name), styled(verdict, _STYLE[check.verdict]), styled(check.reason)
        )
    out.print(table)
    for check in result.not_checked:
        out.print(f"not checked (optional): {check.name}: {check.reason}", markup=False)
    for name, src in expected.items():
        if src.from_evidence:
            out.print(f"note: {EVIDENCE_WARNING.format(what=name)}", style="yellow", markup=False)
    if code == EXIT_VERIFIED:
        key = result.report.signing_key if result.report else "?"
        out.print(
            f"verified: every required check passed (signed by the {key})", style="bold green"
        )
        sys.exit(code)
    failed = [c for c in result.checks if c.verdict is Verdict.FAIL]
    missing = [c for c in result.checks if c.verdict is Verdict.SKIP and c.required]
    summary = "; ".join(f"{c.name}: {c.reason}" for c in failed) or "no check failed"
    kind = result.failure.value if result.failure else "?"
    err.print(
        f"sevimg: error: {report_file}: not verified ({kind}, exit {code}): {summary}",
        style="bold red",
        markup=False,
    )
    if missing:
        names = ", ".join(c.name for c in missing)
        err.print(f"not checked (required, so not a pass): {names}", markup=False)
    sys.exit(code)


class JsonAwareCommand(click.Command):
    """A command whose usage errors still print one JSON object on stdout when --json is given."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse as click does; with --json among the arguments, a usage error is a JSON object."""
        wants_json = "--json" in args  # before click's parser consumes the list
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if not wants_json:
                if isinstance(exc, click.BadParameter):  # sevimg's own exit 1: one code here
                    raise click.UsageError(exc.format_message(), ctx=ctx) from None
                raise
            out.print_json(json.dumps(usage_document(None, exc.format_message())))
            ctx.exit(EXIT_USAGE)
