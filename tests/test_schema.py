"""Schema validation: every bad value is named by file, line, column and field, in plain words."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sevimg.catalog.index import load_catalog
from sevimg.catalog.load import Document, JsonPath, format_path, load_text
from sevimg.catalog.schema import (
    DISTRO,
    FAMILY,
    LOCAL,
    PROJECT,
    RELEASE,
    ecma_pattern,
    schemas_for,
)
from sevimg.problems import Problem
from sevimg.workspace import Workspace
from tests.conftest import RELEASES, REPO

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
        "images/debian.yaml:7:9: error: family: no images/families/debain.yaml "
        "(known families: debian, el, fedora, suse, ubuntu); did you mean 'debian'?"
    ]
    assert {"debian-13", "debian-forky", "debian-sid"} <= catalog.broken


def test_every_catalog_file_is_valid(catalog) -> None:  # type: ignore[no-untyped-def]
    assert [p for p in catalog.problems if p.is_error] == []
    assert len(catalog.entries) == RELEASES


# --- control characters: no string of any schema can carry one --------------------------------

SCHEMAS = schemas_for((REPO / "schema",))
KINDS = (DISTRO, RELEASE, FAMILY, PROJECT, LOCAL)
CONTROL_VARIANTS: list[Callable[[str], str]] = [
    lambda v: v + "\n",
    lambda v: "\n" + v,
    lambda v: v[:1] + "\n" + v[1:],
    lambda v: v + "\r\n",
    lambda v: v + "\r",
    lambda v: "\t" + v,
    lambda v: v[:1] + "\t" + v[1:],
    lambda v: v + "\x00",
    lambda v: "\x01" + v,
    lambda v: v + "\x0b",
    lambda v: v + "\x0c",
    lambda v: v + "\x1b[31m",
    lambda v: v + "\x1f",
    lambda v: v + "\x7f",
    lambda v: v + "\x85",
    lambda v: v + "\u2028",
    lambda v: v[:1] + "\u2029" + v[1:],
]


def resolve(node: dict[str, Any], base: str) -> tuple[dict[str, Any], str]:
    """Follow $ref (within the schema files) to the schema it names, and the file it is in."""
    while "$ref" in node:
        target, _, pointer = node["$ref"].partition("#")
        base = target or base
        node = SCHEMAS.documents[base]
        for part in pointer.strip("/").split("/"):
            node = node[part]
    return node, base


def sample(node: dict[str, Any], base: str) -> Any:
    """A value valid under `node` that fills every optional property too."""
    node, base = resolve(node, base)
    if "const" in node:
        return node["const"]
    if "enum" in node:
        return node["enum"][0]
    if "examples" in node:
        return node["examples"][0]
    kind = node.get("type")
    if kind == "boolean":
        return True
    if kind == "array":
        return [sample(node["items"], base)]
    if kind == "object":
        value = {k: sample(v, base) for k, v in node.get("properties", {}).items()}
        if isinstance(node.get("additionalProperties"), dict):
            key = sample(node["propertyNames"], base)
            value[key] = sample(node["additionalProperties"], base)
        return value
    raise AssertionError(f"no sample for {node} in {base}: give it `examples`")


def string_leaves(
    node: dict[str, Any], base: str, path: JsonPath = ()
) -> Iterator[tuple[JsonPath, bool, dict[str, Any]]]:
    """(path, is-a-key, schema) of every string the schema describes."""
    node, base = resolve(node, base)
    if node.get("type") == "string" or all(isinstance(e, str) for e in node.get("enum", [0])):
        yield path, False, node
    for key, sub in node.get("properties", {}).items():
        yield from string_leaves(sub, base, (*path, key))
    if "items" in node:
        yield from string_leaves(node["items"], base, (*path, 0))
    if isinstance(node.get("additionalProperties"), dict):
        key = sample(node["propertyNames"], base)
        yield (*path, key), True, resolve(node["propertyNames"], base)[0]
        yield from string_leaves(node["additionalProperties"], base, (*path, key))


def full_document(kind: str) -> dict[str, Any]:
    data = sample(SCHEMAS.documents[kind], kind)
    assert isinstance(data, dict)
    return data


def validate_data(data: Any, kind: str) -> tuple[Document, list[Problem]]:
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=False, width=1000)
    doc = load_text(text, path=Path("x.yaml"), display="x.yaml")
    return doc, SCHEMAS.validate(doc, kind)


def put(data: Any, path: JsonPath, value: str, *, key: bool) -> Any:
    data = copy.deepcopy(data)
    node = data
    for part in path[:-1]:
        node = node[part]
    if key:
        node[value] = node.pop(path[-1])
    else:
        node[path[-1]] = value
    return data


LEAVES = [
    (kind, path, key, node)
    for kind in KINDS
    for path, key, node in string_leaves(SCHEMAS.documents[kind], kind)
]


@pytest.mark.parametrize("kind", KINDS)
def test_the_full_sample_documents_are_valid(kind: str) -> None:
    _, problems = validate_data(full_document(kind), kind)
    assert problems == []


def test_every_string_property_is_covered() -> None:
    paths = {(kind, format_path(path)) for kind, path, _, _ in LEAVES}
    assert len(paths) > 60
    for expected in [
        (RELEASE, "codename"),
        (RELEASE, "extra_repositories[0].url"),
        (RELEASE, "host.kernel_modules.exclude[0]"),
        (DISTRO, "mkosi.archive_mirror"),
        (DISTRO, "family"),
        (PROJECT, "tools.snphost"),
        (PROJECT, "tools.snphost.install"),
        (LOCAL, "sandbox_trees[0]"),
        (LOCAL, "mirrors.debian.security_url"),
    ]:
        assert expected in paths


@pytest.mark.parametrize(
    ("kind", "path", "key", "node"),
    LEAVES,
    ids=[f"{k.split('.')[0]}:{format_path(p)}{'(key)' if key else ''}" for k, p, key, _ in LEAVES],
)
def test_no_string_carries_a_control_character(
    kind: str, path: JsonPath, key: bool, node: dict[str, Any]
) -> None:
    """Leading, trailing and embedded control characters, in every string of every schema."""
    if node.get("x-free-text"):
        pytest.skip("free text")
    data = full_document(kind)
    clean = str(sample(node, kind)) if not key else str(path[-1])
    for variant in CONTROL_VARIANTS:
        value = variant(clean)
        doc, problems = validate_data(put(data, path, value, key=key), kind)
        where = (*path[:-1], value) if key else path
        assert doc.data is not None
        line, column = doc.locate(where, key=key)
        assert [str(p) for p in problems] == [
            str(p)
            for p in problems
            if p.field == format_path(where) and (p.line, p.column) == (line, column)
        ], problems
        assert len(problems) == 1 and "control character" in problems[0].message, (value, problems)


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("^[a-z]+$", "trixie", True),
        ("^[a-z]+$", "trixie\n", False),
        ("^[a-z]+$", "\ntrixie", False),
        ("^[$]+$", "$$", True),
        ("^[$]+$", "$$\n", False),
        (r"^a\$$", "a$", True),
        (r"^a\$$", "a$\n", False),
        (r"^(?:a|b$)", "b\n", False),
        (r"^(?:a|b$)", "ab\n", True),  # unanchored alternative: still a search
        (r"^x(?!\.$)", "x.\n", True),
        (r"^x(?!\.$)", "x.", False),
    ],
)
def test_patterns_end_where_the_text_ends(pattern: str, text: str, matches: bool) -> None:
    assert bool(ecma_pattern(pattern).search(text)) is matches


def test_a_workspace_schema_without_the_rule_still_refuses_control_characters(
    workspace: Path,
) -> None:
    own = workspace / "schema"
    own.mkdir()
    common = json.loads((REPO / "schema" / "common.schema.json").read_text())
    for node in common["$defs"].values():
        node.pop("not", None)
    (own / "common.schema.json").write_text(json.dumps(common))
    message = one_error(workspace, GOOD_RELEASE.replace("trixie", '"trixie\\n"'))
    assert message == (
        "images/debian-13.yaml:3:11: error: codename: 'trixie\\n' is not a codename: "
        "lower-case words of letters and digits joined by single hyphens (e.g. trixie, "
        "kali-rolling); it contains a control character "
        "(U+000A, line feed)"
    )


@pytest.mark.parametrize(
    "stem",
    [
        "debian-13\n",
        "\ndebian-13",
        "debian\n",
        "debian-1\t3",
        "debian-13\r",
        "fedora-44\x1b",
        "x\u2028",
    ],
)
def test_catalog_file_names_with_control_characters_are_refused(workspace: Path, stem: str) -> None:
    (workspace / "images" / f"{stem}.yaml").write_text(GOOD_RELEASE)
    catalog = load_catalog(Workspace(workspace))
    problems = [str(p) for p in catalog.problems if p.is_error]
    assert len(problems) == 1, problems
    assert "error: file name must be <distro>.yaml or <distro>-<release>" in problems[0]
    assert problems[0].isprintable()
    assert len(catalog.entries) == RELEASES
