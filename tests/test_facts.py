"""One home for each fact: the copies that must exist elsewhere (JSON Schemas, shell
tools) are compared with it here, and what is derived from it is checked to agree."""

from __future__ import annotations

import json
import re
from typing import Any, get_args, get_type_hints

import pytest

from sevimg.artifacts.names import parse_image_id
from sevimg.catalog.index import DISTRO_NAME, RELEASE_NAME, split_image_name
from sevimg.catalog.spec import ROLES, PackageManager, Role, Status
from sevimg.cli.params import ROLE_PREFIXES
from sevimg.mkosi_versions import MIN_MKOSI, MKOSI_VERSIONS, OLDEST_MKOSI
from sevimg.settings import ToolPin
from tests.conftest import REPO


def _schema(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((REPO / "schema" / name).read_text())
    return data


def _role_enums(node: Any) -> list[list[str]]:
    """Every enum in a schema that lists roles."""
    found: list[list[str]] = []
    if isinstance(node, dict):
        enum = node.get("enum")
        if isinstance(enum, list) and "host" in enum:
            found.append(enum)
        for value in node.values():
            found += _role_enums(value)
    elif isinstance(node, list):
        for value in node:
            found += _role_enums(value)
    return found


def test_the_shell_tools_install_the_supported_mkosi_versions() -> None:
    setup = (REPO / "tools" / "setup").read_text()
    loop = re.search(r"^for version in ([0-9. ]+); do$", setup, re.M)
    assert loop is not None
    assert tuple(loop[1].split()) == MKOSI_VERSIONS
    install = (REPO / "tools" / "install-mkosi").read_text()
    default = re.search(r"^version=\$\{1:-([0-9.]+)\}$", install, re.M)
    assert default is not None and default[1] == OLDEST_MKOSI


def test_the_supported_mkosi_versions_are_ordered_and_the_floor_is_the_oldest() -> None:
    parsed = [tuple(int(p) for p in v.split(".")) for v in MKOSI_VERSIONS]
    assert parsed == sorted(parsed) and len(set(parsed)) == len(parsed)
    assert parsed[0] == MIN_MKOSI
    assert sorted(p.name.removeprefix("mkosi-") for p in (REPO / "tests" / "golden").iterdir()) == (
        sorted(MKOSI_VERSIONS)
    )


def test_the_schemas_name_images_with_the_catalogs_patterns() -> None:
    common = _schema("common.schema.json")["$defs"]
    assert common["distro"]["pattern"] == f"^{DISTRO_NAME.pattern}$"
    assert common["release"]["pattern"] == f"^(?:{RELEASE_NAME.pattern})$"


@pytest.mark.parametrize(
    "name",
    ["distro.schema.json", "release.schema.json", "project.schema.json", "manifest.schema.json"],
)
def test_the_schemas_list_the_catalogs_roles(name: str) -> None:
    enums = _role_enums(_schema(name))
    for enum in enums:
        assert sorted(enum) == sorted(ROLES), (name, enum)
    assert tuple(f"{role}-" for role in ROLES) == ROLE_PREFIXES


NAMES = [
    "debian-13", "ubuntu-26.04", "debian-forky", "fedora-rawhide", "opensuse-tumbleweed",
    "opensuse-16.0", "el-10", "ab-1", "a1-2.3", "x" * 32 + "-1",
    "debian", "debian-", "-13", "Debian-13", "debian-13.", "debian-1.2.3", "debian-12345",
    "d-13", "debian-trixie-13", "debian_13", "debian-13 ", "debian-13\n", "debian-1a",
    "x" * 33 + "-1", "debian-../x", "debian-13-debug", "1debian-13", "debian-Forky",
]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("debug", ["", "-debug"])
def test_an_image_id_is_a_role_and_a_catalog_image_name(name: str, role: str, debug: str) -> None:
    parsed = parse_image_id(f"{role}-{name}{debug}")
    if split_image_name(name) is not None:
        assert parsed == (role, name, bool(debug))
    else:
        # Only a reading with "-debug" moved between image and suffix can remain
        # ("debian-debug" is release "debug" of Debian: looks_debug catches those).
        assert parsed is None or parsed[1] != name
    if parsed is not None:
        assert split_image_name(parsed[1]) is not None


def test_the_python_literals_list_the_schemas_enums() -> None:
    # The schemas are the home of these enums; the types that decode them must agree.
    release = _schema("release.schema.json")["properties"]
    assert list(get_args(Status)) == release["status"]["enum"]
    assert sorted(get_args(Role)) == sorted(ROLES)
    family = _schema("family.schema.json")["properties"]
    assert list(get_args(PackageManager)) == family["package_manager"]["enum"]
    tool = _schema("project.schema.json")["properties"]["tools"]["additionalProperties"]
    formats = get_args(get_type_hints(ToolPin)["format"])
    assert list(formats) == tool["properties"]["format"]["enum"]
