"""sevimg.yaml and sevimg.local.yaml: optional, schema-checked, errors located."""

from __future__ import annotations

from pathlib import Path

import pytest

from sevimg.build import apt_sources
from sevimg.config import load_local, load_tool_pins
from sevimg.problems import SevimgError
from sevimg.workspace import Workspace
from tests.conftest import REPO, CliFn


def test_absent_files_mean_defaults(workspace: Path) -> None:
    ws = Workspace(workspace)
    assert load_tool_pins(ws) == ()
    local = load_local(ws)
    assert local.source is None and local.apt_mirrors == {} and local.tools_tree is None


def test_the_shipped_files_are_valid(workspace: Path) -> None:
    for name in ("sevimg.yaml", "sevimg.local.yaml.example"):
        (workspace / name.removesuffix(".example")).write_text((REPO / name).read_text())
    ws = Workspace(workspace)
    (snphost,) = load_tool_pins(ws)
    assert (snphost.name, snphost.version, snphost.format, snphost.target) == (
        "snphost",
        "0.7.0",
        "deb",
        "/usr/local/bin/snphost",
    )
    local = load_local(ws)
    assert local.apt_mirrors["debian"].url == "http://deb.debian.org/debian"
    assert local.tools_tree == ("debian", "trixie")


def test_relative_paths_are_relative_to_the_file(workspace: Path) -> None:
    (workspace / "sevimg.local.yaml").write_text(
        "schema_version: 1\ncache_dir: cache\nsandbox_trees: [ca, /abs/tree]\ntools_dir: ../tools\n"
    )
    local = load_local(Workspace(workspace))
    assert local.cache_dir == workspace / "cache"
    assert local.sandbox_trees == (workspace / "ca", Path("/abs/tree"))
    assert local.tools_dir == workspace.parent / "tools"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "sevimg.local.yaml",
            "schema_version: 1\nmirrors:\n  debian:\n    url: 'ftp://x'\n",
            "sevimg.local.yaml:4:10: error: mirrors.debian.url: 'ftp://x' is not an http:// or https:// URL",
        ),
        (
            "sevimg.local.yaml",
            "schema_version: 1\nmirors: {}\n",
            "unknown key 'mirors'; did you mean 'mirrors'?",
        ),
        (
            "sevimg.local.yaml",
            "schema_version: 1\ntools_tree: {distribution: arch, release: x1}\n",
            "tools_tree.distribution: 'arch' is not one of",
        ),
        (
            "sevimg.local.yaml",
            "schema_version: 1\nproxy: 'http://p:3128; rm -rf /'\n",
            "proxy: 'http://p:3128; rm -rf /' is not an http",
        ),
        (
            "sevimg.yaml",
            "schema_version: 1\ntools:\n  snphost: {version: latest, url: 'http://x/y', sha256: abc, roles: [host]}\n",
            "tools.snphost.version: 'latest' is not a version",
        ),
        (
            "sevimg.yaml",
            "schema_version: 1\ntools:\n  snphost: {version: '1', url: 'http://x/y', sha256: abc, roles: [host]}\n",
            "tools.snphost.sha256: 'abc' is not the file's SHA-256",
        ),
        (
            "sevimg.yaml",
            "schema_version: 1\ntools:\n  x: {version: '1', url: 'http://x/y?latest', sha256: '"
            + "a" * 64
            + "', roles: [host]}\n",
            "is not an http(s) URL of the pinned file",
        ),
        (
            "sevimg.yaml",
            "schema_version: 1\ntools:\n  x: {version: '1', url: 'http://x/y.deb', sha256: '"
            + "a" * 64
            + "', roles: [host], format: deb}\n",
            "format: deb needs `member:`",
        ),
        ("sevimg.yaml", "schema_version: [\n", "sevimg.yaml:2:1: error: invalid YAML"),
    ],
)
def test_bad_settings_are_located(
    cli: CliFn, workspace: Path, name: str, text: str, expected: str
) -> None:
    (workspace / name).write_text(text)
    loader = load_local if name == "sevimg.local.yaml" else load_tool_pins
    with pytest.raises(SevimgError) as info:
        loader(Workspace(workspace))
    shown = "\n".join(str(p) for p in info.value.problems)
    assert expected in shown, shown
    run = cli("build", "debian-13", "--mkosi-version", "25.3")
    assert run.code == 1 and expected in run.stderr and "Traceback" not in run.output


def test_apt_sources_without_debug_suites() -> None:
    text = apt_sources("debian", "trixie", "http://m/debian", None, ())
    assert (
        "Suites: trixie trixie-updates\n" in text
        and "URIs: http://m/debian-security\nSuites: trixie-security\n" in text
    )
    assert "debug" not in text.replace("without debug suites", "")
    sid = apt_sources("debian", "sid", "http://m/debian", None, ())
    assert (
        "Suites: sid\n" in sid
        and "security" not in sid.replace("-security", "")
        and "sid-updates" not in sid
    )
    ubuntu = apt_sources("ubuntu", "noble", "http://m/ubuntu", None, ("universe",))
    assert (
        "Components: main universe\n" in ubuntu
        and "URIs: http://m/ubuntu\nSuites: noble-security" in ubuntu
    )
    assert "Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg" in ubuntu
