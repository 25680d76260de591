"""The `sevimg` command line: one module per group of commands, imported when a command runs.

cli/group.py holds the click group and the table of commands; each command
module registers its commands on that group when it is imported.
"""

from sevimg.cli.group import main

__all__ = ["main"]
