"""Run mkosi for a build: its output to a log, its stages to the progress display, redacted.

mkosi runs in its own process group; a signal stops the whole group
(SIGTERM, then SIGKILL after MKOSI_GRACE seconds) before sevimg exits.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from sevimg import interrupt, proc
from sevimg.atomic import create_new
from sevimg.problems import SevimgError
from sevimg.progress import MkosiStages
from sevimg.redact import redact_text

LOG_TAIL = 25
# What apt, dnf and zypper print when a repository does not answer as it should.
_MIRROR_FAILURE = re.compile(
    r"(Failed to fetch|Err:\d+ |does not have a Release file|is not signed|"
    r"Temporary failure resolving|Could not resolve|Cannot download repomd|"
    r"Failed to download metadata|Curl error|HTTP Error [45]\d\d|\b(?:40[0-9]|5\d\d)\s+[A-Z][a-z])"
)
MIRROR_SETTING = "`mirrors:` in sevimg.local.yaml (see sevimg.local.yaml.example)"
MKOSI_GRACE = 10.0  # seconds mkosi gets to clean up after SIGTERM (unmount, remove its workspace)


def run(
    mkosi: Path | str,
    args: Sequence[str],
    *,
    log: Path,
    cwd: Path,
    what: str,
    proxy: str | None,
    stage: Callable[[str], None],
    mirrors: str = "",
) -> None:
    """Run mkosi in its own process group, its output to `log` and its steps to the progress line.

    Every line that reaches the log or the screen has the credentials of
    any URL in it (a proxy's, a mirror's) replaced by `***`. A signal
    stops mkosi's whole group (SIGTERM, then SIGKILL after MKOSI_GRACE
    seconds) before sevimg exits; the log says so. When the output shows a
    repository failing, the error names the mirrors used (`mirrors`) and
    the setting that changes them.
    """
    env = dict(os.environ)
    env.setdefault("TERM", "dumb")
    if proxy:
        # mkosi takes its proxy from these when --proxy-url is not given;
        # unlike a command line, the environment is not shown to other users.
        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            env[name] = proxy
    with os.fdopen(create_new(log), "w", encoding="utf-8") as sink:
        sink.write(redact_text(f"$ {mkosi} {' '.join(args)}\n"))
        sink.flush()
        try:
            child = proc.start([mkosi, *args], cwd=cwd, env=env, grace=MKOSI_GRACE)
        except OSError as exc:
            raise SevimgError(f"cannot run {mkosi}: {exc.strerror or exc}") from None
        try:
            with child:
                stages = MkosiStages()
                for raw in child.lines():
                    line = redact_text(raw)
                    sink.write(line)
                    if (now := stages.feed(line)) is not None:
                        stage(now)
                code = child.wait()
        except interrupt.Interrupted as exc:
            sink.write(f"\nsevimg: interrupted by {exc.name}; mkosi was stopped\n")
            raise
    if code != 0:
        text = log.read_text(errors="replace")
        tail = text.splitlines()[-LOG_TAIL:]
        hint = f"full log: {log}"
        if failed := mirror_failure(text):
            used = f" (this build used {mirrors})" if mirrors else ""
            hint = (
                f"a repository failed: {failed.strip()[:200]!r}{used}; "
                f"to build from another mirror set {MIRROR_SETTING}; {hint}"
            )
        raise SevimgError(
            f"mkosi failed building {what} (exit {code}); last lines of {log}:\n"
            + "\n".join(f"  {t}" for t in tail),
            hint=hint,
        )


def mirror_failure(text: str) -> str | None:
    """The first line of mkosi's output that shows a repository failing, or None."""
    for line in text.splitlines():
        if _MIRROR_FAILURE.search(line):
            return line
    return None
