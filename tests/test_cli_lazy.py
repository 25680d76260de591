"""The command line imports per command: `--help` and `validate` leave the heavy libraries alone.

The group lists its commands from a static table (sevimg.cli.group.COMMANDS)
and imports a command's module only when that command runs. These tests keep
the table honest against the commands the modules really register, and check
the laziness itself in fresh processes (sys.modules after the command). How
fast that makes sevimg is measured by `nox -s bench -- --cli-only`, not here.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sevimg.cli import main
from sevimg.cli.group import COMMANDS, LazyGroup

HEAVY = ("rich", "httpx", "jinja2", "jsonschema", "pefile", "zstandard", "cryptography")
# What each kind of run must leave unimported.
NOTHING_HEAVY = HEAVY
NO_BUILD_OR_NETWORK = ("httpx", "pefile", "zstandard", "cryptography", "jinja2")

# Runs sevimg's group in this process's place and prints the heavy modules it imported.
PROBE = """
import json, sys
from sevimg.cli import main
try:
    main(sys.argv[2:], prog_name="sevimg")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = json.loads(sys.argv[1])
print(json.dumps({"code": code, "loaded": sorted(m for m in heavy if m in sys.modules)}))
"""


def _all_registered() -> dict[str, click.Command]:
    """Every command, after importing every command module of the table."""
    for module in sorted({listed.module for listed in COMMANDS.values()}):
        importlib.import_module(f"sevimg.cli.{module}")
    assert isinstance(main, click.Group)
    return dict(main.commands)


def _eager_group() -> click.Group:
    """A plain click group holding every real command, imported: what the lazy one must equal."""
    return click.Group(
        name="sevimg",
        commands=_all_registered(),
        params=main.params,
        help=main.help,
        context_settings=main.context_settings,
    )


def _probe(args: list[str], cwd: Path) -> tuple[int | str | None, list[str]]:
    """(exit code, heavy modules loaded) of `sevimg ARGS` in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    return last["code"], last["loaded"]


def test_the_group_is_lazy() -> None:
    assert isinstance(main, LazyGroup)


def test_the_table_names_every_registered_command_and_its_module() -> None:
    registered = _all_registered()
    assert set(COMMANDS) == set(registered)
    for name, command in registered.items():
        assert command.callback is not None
        assert command.callback.__module__ == f"sevimg.cli.{COMMANDS[name].module}", name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_listed_help_shortens_like_the_command_s_own(name: str) -> None:
    """Whatever width the terminal gives, the table's text reads as the docstring would."""
    command = _all_registered()[name]
    stand_in = click.Command(name, help=COMMANDS[name].help)
    for limit in [8, 20, 30, 45, 60, 74, 80, 88, 94, 120, 400]:
        assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit), limit
    assert not command.hidden and not command.deprecated and command.short_help is None


# Narrow, usual and wide terminals; -h is the same option as --help, tried once.
@pytest.mark.parametrize(
    ("flag", "columns"), [("--help", "30"), ("--help", "80"), ("--help", "250"), ("-h", "60")]
)
def test_help_in_a_fresh_process_equals_the_help_of_every_command_loaded(
    columns: str, flag: str, tmp_path: Path
) -> None:
    """`sevimg --help` (nothing imported) prints what a plain group holding the real commands would."""
    eager = _eager_group()
    env = {**os.environ, "COLUMNS": columns}
    proc = subprocess.run(
        [sys.executable, "-m", "sevimg", flag],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = columns  # click sizes help from the terminal, i.e. $COLUMNS here
    try:
        with click.Context(eager, info_name="sevimg", **main.context_settings) as ctx:
            expected = eager.get_help(ctx)
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    assert proc.stdout == expected + "\n"
    for name in eager.commands:
        assert f"  {name} " in proc.stdout


@pytest.mark.parametrize(
    ("args", "left_out"),
    [
        (["--help"], NOTHING_HEAVY),
        (["-h"], NOTHING_HEAVY),
        (["--version"], NOTHING_HEAVY),
        ([], NOTHING_HEAVY),  # a bare group prints its help
        (["no-such-command"], NOTHING_HEAVY),
        (["validate"], NO_BUILD_OR_NETWORK),
        (["validate", "--json"], NO_BUILD_OR_NETWORK),
        (["validate", "--strict"], NO_BUILD_OR_NETWORK),
        (["validate", "debian-13", "fedora-42"], NO_BUILD_OR_NETWORK),
        (["validate", "no-such-9"], NO_BUILD_OR_NETWORK),
        (["list"], NO_BUILD_OR_NETWORK),
        (["list", "--json"], NO_BUILD_OR_NETWORK),
        (["show", "debian-13"], NO_BUILD_OR_NETWORK),
        (["show", "debian-13", "--json"], NO_BUILD_OR_NETWORK),
    ],
)
def test_a_command_imports_only_what_it_uses(
    args: list[str], left_out: tuple[str, ...], workspace: Path
) -> None:
    code, loaded = _probe(["--root", str(workspace), *args], workspace)
    assert code is not None
    assert not set(loaded) & set(left_out), f"sevimg {' '.join(args)} imported {loaded}"


@pytest.mark.parametrize(
    ("args", "needs"),
    [
        (["validate"], "jsonschema"),
        (["validate"], "rich"),
        (["render", "debian-13", "-o", "{tmp}/trees"], "jinja2"),
        (["render", "--all", "-o", "{tmp}/all"], "jinja2"),
    ],
)
def test_the_probe_sees_what_a_command_does_import(
    args: list[str], needs: str, workspace: Path, tmp_path: Path
) -> None:
    """The probe itself works: a command that uses a library shows it loaded."""
    code, loaded = _probe(
        ["--root", str(workspace), *(a.format(tmp=tmp_path) for a in args)], workspace
    )
    assert code in (0, 1)
    assert needs in loaded


@pytest.mark.parametrize(
    "typo",
    ["valdate", "lst", "lis", "shwo", "rendr", "biuld", "bulid", "rn", "docter", "publsh",
     "merge-artifact", "merge_artifacts", "verfy", "ci2", "zzz", "VALIDATE", "new-"],
)  # fmt: skip
def test_an_unknown_command_is_answered_as_by_every_command_loaded(
    typo: str, tmp_path: Path
) -> None:
    """click's "Did you mean" offers every command, not only the imported ones."""
    eager = _eager_group()
    expected = CliRunner().invoke(eager, [typo], prog_name="sevimg")
    proc = subprocess.run(
        [sys.executable, "-m", "sevimg", typo],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == expected.exit_code == 2
    assert proc.stderr == expected.stderr
    assert f"No such command {typo!r}" in proc.stderr
