"""The `sevimg` program: signal handling first, then the command line.

Importing a command takes a moment (click, then what that command uses:
rich, jsonschema, Jinja2, httpx; see sevimg.cli.group); SIGINT, SIGTERM and
SIGHUP are routed to :class:`sevimg.interrupt.Interrupted` before that
starts, so a signal at any
point ends sevimg with one line and the shell's exit code (130, 143, 129),
after its children are stopped and its scratch files removed.
"""

from __future__ import annotations

import os
import sys

from sevimg import interrupt


def main() -> None:
    """Run the sevimg command line (the `sevimg` console script and `python -m sevimg`)."""
    interrupt.install()
    code: int | str | None = 0
    try:
        from sevimg.cli import main as cli  # noqa: PLC0415 - only after the handlers are in place

        cli(prog_name="sevimg")
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:  # raised by hand somewhere: still no traceback
        code = 130
    except Exception:
        if interrupt.received() is None:
            raise  # a broken installation: the traceback is the useful report
        # else: the signal's exception came out as another one; the signal decides below
    finally:
        interrupt.finishing()
        # Whatever path led here, no child outlives sevimg.
        proc = sys.modules.get("sevimg.proc")
        if proc is not None:
            proc.stop_all()
    signum = interrupt.received()
    if signum is not None:
        _quiet_stdout()
        interrupt.say(interrupt.message(signum))
        code = 128 + signum
    sys.exit(code)


def _quiet_stdout() -> None:
    """After SIGHUP the terminal may be gone: drop unflushed output rather than fail at exit."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
