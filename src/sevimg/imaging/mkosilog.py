"""Run mkosi for a build: its output to a log, its steps to the progress line, redacted.

mkosi runs in its own process group; a signal stops the whole group
(SIGTERM, then SIGKILL after MKOSI_GRACE seconds) before sevimg exits.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from sevimg import interrupt, proc
from sevimg.atomic import create_new
from sevimg.problems import SevimgError
from sevimg.redact import redact_text

LOG_TAIL = 25
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
) -> None:
    """Run mkosi in its own process group, its output to `log` and its steps to the progress line.

    Every line that reaches the log or the screen has the credentials of
    any URL in it (a proxy's, a mirror's) replaced by `***`. A signal
    stops mkosi's whole group (SIGTERM, then SIGKILL after MKOSI_GRACE
    seconds) before sevimg exits; the log says so.
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
                for raw in child.lines():
                    line = redact_text(raw)
                    sink.write(line)
                    stripped = line.strip()
                    if stripped.startswith("‣"):
                        stage(f"{what}: {stripped.lstrip('‣ ').strip()}")
                code = child.wait()
        except interrupt.Interrupted as exc:
            sink.write(f"\nsevimg: interrupted by {exc.name}; mkosi was stopped\n")
            raise
    if code != 0:
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
        raise SevimgError(
            f"mkosi failed building {what} (exit {code}); last lines of {log}:\n"
            + "\n".join(f"  {t}" for t in tail),
            hint=f"full log: {log}",
        )
