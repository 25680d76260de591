"""Schema validation: every bad value is named by file, line, column and field, in plain words."""

from __future__ import annotations

from pathlib import Path

import pytest

from sevimg.catalog import load_catalog
from sevimg.problems import Problem
from sevimg.workspace import Workspace

GOOD_RELEASE = """\
schema_version: 1
release: "13"
codename: trixie
status: supported
"""


def release_problems(workspace: Path, body: str, name: str = "debian-13") -> list[Problem]:
    (workspace / "images" / f"{name}.yaml").write_text(body)
    catalog = load_catalog(Workspace(workspace))
    return [p for p in catalog.problems if p.file == f"images/{name}.yaml"]


def one_error(workspace: Path, body: str, name: str = "debian-13") -> str:
    problems = [p for p in release_problems(workspace, body, name) if p.is_error]
    assert len(problems) == 1, problems
    return str(problems[0])


def test_good_release_has_no_problems(workspace: Path) -> None:
    assert release_problems(workspace, GOOD_RELEASE) == []


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        # unknown keys, with a suggestion
        (
            "stauts: eol\n",
            "images/debian-13.yaml:5:1: error: stauts: unknown key 'stauts'; did you mean 'status'?",
        ),
        (
            "host:\n  qemu_bin: /x\n",
            "6:3: error: host.qemu_bin: unknown key 'qemu_bin'; did you mean 'qemu_binary'?",
        ),
        # package names cannot carry settings, sections, lists or shell
        (
            "host:\n  add_packages: ['foo bar']\n",
            "6:18: error: host.add_packages[0]: 'foo bar' is not a package name",
        ),
        (
            'host:\n  add_packages: ["foo\\n[Build]"]\n',
            "host.add_packages[0]: 'foo\\n[Build]' is not a package name",
        ),
        ("host:\n  add_packages: ['a,b']\n", "'a,b' is not a package name"),
        ("host:\n  add_packages: ['x=1']\n", "'x=1' is not a package name"),
        ("host:\n  add_packages: ['-x']\n", "'-x' is not a package name"),
        ("host:\n  add_packages: ['%x']\n", "'%x' is not a package name"),
        ("host:\n  add_packages: [foo, foo]\n", "host.add_packages: lists an item twice: 'foo'"),
        # kernel command-line tokens: no quotes, spaces or newlines
        (
            "guest:\n  add_kernel_command_line: ['\"selinux=0\"']\n",
            "is not one kernel command-line token",
        ),
        (
            "guest:\n  add_kernel_command_line: ['a b']\n",
            "'a b' is not one kernel command-line token",
        ),
        (
            'guest:\n  add_kernel_command_line: ["x\\nKernelCommandLine=y"]\n',
            "is not one kernel command-line token",
        ),
        (
            "guest:\n  add_kernel_command_line: ['$(reboot)']\n",
            "is not one kernel command-line token",
        ),
        # paths: absolute, plain names, no shell metacharacters or ..
        (
            "host:\n  qemu_binary: 'usr/bin/qemu'\n",
            "host.qemu_binary: 'usr/bin/qemu' is not an absolute path",
        ),
        ("host:\n  qemu_binary: '/usr/bin/qemu;reboot'\n", "is not an absolute path"),
        ("host:\n  qemu_binary: '/usr/bin/$(id)'\n", "is not an absolute path"),
        ("host:\n  sev_firmware: '/usr/../etc/shadow'\n", "is not an absolute path"),
        ("host:\n  sev_firmware: '/usr/share/a b.fd'\n", "is not an absolute path"),
        # codenames and releases
        ("name: Debian\nrelease: '13'\n", "duplicate key 'release'"),
        # types, with the YAML number trap spelled out
        (
            "versions:\n  kernel: 6.12\n",
            "versions.kernel: expected a string, got the number 6.12; YAML read '6.12' as the number 6.12: quote it, as \"6.12\"",
        ),
        ("roles: host\n", "roles: expected a list, got a string"),
        ("roles: []\n", "roles: must have at least 1 item"),
        ("roles: [host, server]\n", "roles[1]: 'server' is not one of: 'host', 'guest'"),
        ("archived: maybe\n", "archived: expected true or false, got a string"),
        (
            "versions:\n  ovmf: 'latest'\n",
            "versions.ovmf: 'latest' is not a version of dotted numbers",
        ),
        (
            "extra_repositories:\n  - name: forky\n",
            "extra_repositories[0]: missing required key 'packages'",
        ),
        (
            "extra_repositories:\n  - name: forky\n    packages: []\n",
            "extra_repositories[0].packages: must have at least 1 item",
        ),
        (
            "extra_repositories:\n  - name: x\n    url: 'http://h/a b'\n    packages: [a]\n",
            "is not an http:// or https:// URL",
        ),
        (
            "extra_repositories:\n  - name: x\n    url: 'file:///etc'\n    packages: [a]\n",
            "is not an http:// or https:// URL",
        ),
        (
            "guest:\n  kernel_modules:\n    exclude: ['.*']\n",
            "guest.kernel_modules.exclude[0]: '.*' is not a kernel module name",
        ),
    ],
)
def test_bad_values_are_located_and_explained(workspace: Path, extra: str, expected: str) -> None:
    assert expected in one_error(workspace, GOOD_RELEASE + extra)


def test_release_number_in_yaml_must_be_quoted(workspace: Path) -> None:
    body = GOOD_RELEASE.replace('release: "13"', "release: 13")
    assert one_error(workspace, body) == (
        "images/debian-13.yaml:2:10: error: release: expected a string, got the number 13; "
        "YAML read '13' as the number 13: quote it, as \"13\""
    )


def test_25_10_is_not_25_1(workspace: Path) -> None:
    body = "schema_version: 1\nrelease: 25.10\ncodename: questing\nstatus: eol\n"
    message = one_error(workspace, body, "ubuntu-25.10")
    assert "got the number 25.1" in message and 'quote it, as "25.10"' in message


def test_missing_required_keys(workspace: Path) -> None:
    problems = release_problems(workspace, "schema_version: 1\nrelease: '13'\n")
    assert [str(p) for p in problems] == [
        "images/debian-13.yaml:1:1: error: missing required key 'status' at the top level "
        "(supported: built and published; prerelease: built from development repositories; eol: kept for the record.)"
    ]


def test_wrong_schema_version(workspace: Path) -> None:
    assert "schema_version: 2 is not one of: 1" in one_error(
        workspace, GOOD_RELEASE.replace("schema_version: 1", "schema_version: 2")
    )


def test_empty_and_non_mapping_files(workspace: Path) -> None:
    assert "file is empty" in one_error(workspace, "")
    assert "expected a mapping (key: value), got a list" in one_error(workspace, "- a\n- b\n")
    assert "expected a mapping (key: value), got a string" in one_error(workspace, "just text\n")


def test_release_must_match_file_name(workspace: Path) -> None:
    message = one_error(workspace, GOOD_RELEASE.replace('"13"', '"14"'))
    assert message.startswith(
        "images/debian-13.yaml:2:10: error: release: says '14' but the file is debian-13.yaml"
    )


def test_distro_file_errors_are_reported_once(workspace: Path) -> None:
    path = workspace / "images" / "debian.yaml"
    path.write_text(path.read_text().replace("family: debian", "family: debain"))
    catalog = load_catalog(Workspace(workspace))
    errors = [str(p) for p in catalog.problems if p.is_error]
    assert errors == [
        "images/debian.yaml:6:9: error: family: 'debain' is not one of: 'fedora', 'el', 'debian', 'ubuntu'; did you mean 'debian'?"
    ]
    assert {"debian-13", "debian-forky", "debian-sid"} <= catalog.broken


def test_every_catalog_file_is_valid(catalog) -> None:  # type: ignore[no-untyped-def]
    assert [p for p in catalog.problems if p.is_error] == []
    assert len(catalog.entries) == 15
