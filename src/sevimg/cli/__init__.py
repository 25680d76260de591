"""The `sevimg` command line: one module per group of commands, all on one click group."""

from sevimg.cli import catalog  # noqa: F401  (registers list, show, validate, render, new)
from sevimg.cli.base import main

__all__ = ["main"]
