"""What the host's run leaves behind: its log, the result files, the console summary, the report to dispatch.

The result files (result.json, result.md, harness.log) are written
atomically so no reader sees half of one. The Dispatch hook reports to a
dispatch server (sevimg_cert.dispatch) when the image has the reporter and
finds a server; whatever dispatch does, the files and the console frame are
there.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sevimg_cert import markdown, result
from sevimg_cert.result import CertResult


def now_utc() -> str:
    """The time as the result format writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Log:
    """The harness log: each line timestamped, kept for harness.log and printed as it happens."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.lines: list[str] = []
        self.echo = echo

    def __call__(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self.lines.append(f"{now_utc()} {line}")
            if self.echo:
                self.echo(line)

    def text(self) -> str:
        """The whole log."""
        return "\n".join(self.lines) + ("\n" if self.lines else "")


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, so no reader sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise


def write_results(state_dir: Path, outcome: CertResult, log: Log) -> CertResult:
    """result.json, result.md and harness.log in `state_dir`; the result with its log attached."""
    complete = replace(outcome, log=log.text())
    write_atomic(state_dir / "harness.log", complete.log.encode())
    write_atomic(state_dir / "result.json", result.to_json(complete))
    write_atomic(state_dir / "result.md", markdown.to_markdown(complete).encode())
    return complete


def summary(outcome: CertResult) -> list[str]:
    """The human summary printed on the console after the frame: the console ends with it."""
    lines = [
        "=" * 72,
        f"sevimg certification: {outcome.result.value.upper()}"
        + (
            f" - level {outcome.certified_level} achieved"
            if outcome.certified_level
            else " - no level achieved"
        ),
        f"title:     {result.title(outcome.identity)}",
        f"labels:    {', '.join(result.labels(outcome.identity))}",
        f"milestone: {result.milestone(outcome) or '(none: a record, not a certificate)'}",
    ]
    for test in outcome.tests:
        lines.append(f"  {test.result.value:5} {test.name}")
    for test, step in outcome.failed_steps()[:5]:
        lines.append(f"  failed: {test.name}/{step.name}: {step.detail}")
    if outcome.error:
        lines.append(f"  harness error: {outcome.error}")
    lines.append("=" * 72)
    return lines


class Dispatch:
    """The hook for the dispatch reporter (sevimg_cert.dispatch, contracts.md §3), guarded.

    `booted` before the checks, `report` after the result is written. A
    missing module or a failing server is logged, never fatal: the result
    files and the console frame are there whatever dispatch does.
    """

    def __init__(self, root: Path, log: Log, enabled: bool, mdns_timeout: float = 2.0) -> None:
        self.root = root
        self.log = log
        self.module: Any = None
        self.servers: Any = []
        if not enabled:
            return
        try:
            self.module = importlib.import_module("sevimg_cert.dispatch")
            self.servers = self.module.find_servers(root, mdns_timeout=mdns_timeout)
        except ImportError:
            log("dispatch: the reporter is not in this image; not reporting")
            self.module = None
        except Exception as exc:
            log(f"dispatch: cannot find a server: {exc}")
            self.module = None

    def kds_mirrors(self) -> tuple[str, ...]:
        """The KDS caches of the dispatch servers found (`sevimg serve` keeps one at /kds)."""
        if self.module is None:
            return ()
        found = (self.module.kds_cache_url(str(getattr(s, "url", ""))) for s in self.servers)
        return tuple(dict.fromkeys(url for url in found if url))

    def booted(self, deadline: Any = None) -> None:
        """Tell dispatch the image booted, by `deadline` (a peerhttp.Deadline)."""
        if self.module is not None and self.servers:
            try:
                self.module.booted(self.servers, deadline=deadline)
            except Exception as exc:
                self.log(f"dispatch: booted failed: {exc}")

    def report(self, outcome: CertResult, deadline: Any = None) -> bool:
        """Send the result by `deadline` (a peerhttp.Deadline); whether a server took it."""
        if self.module is not None and self.servers:
            try:
                payload = markdown.dispatch_payload(outcome)
                took = self.module.report(self.servers, payload, deadline=deadline)
            except Exception as exc:
                self.log(f"dispatch: report failed: {exc}")
                return False
            return took is not None
        return False

    def after(self, reported: bool) -> None:
        """Reboot, power off or stay up, as `sevimg.after=` says (stay when nothing took the report)."""
        if self.module is not None:
            try:
                self.module.after_report(root=self.root, reported=reported)
            except Exception as exc:
                self.log(f"dispatch: after the report: {exc}")
