"""The `sevimg` command line: one module per group of commands, all on one click group."""

from sevimg.cli import (
    build,  # noqa: F401  (registers build, run)
    catalog,  # noqa: F401  (registers list, show, validate, render, new)
    certify,  # noqa: F401  (registers verify)
    machine,  # noqa: F401  (registers doctor)
    release,  # noqa: F401  (registers publish, merge-artifacts, ci)
)
from sevimg.cli.base import main

__all__ = ["main"]
