"""The command line as users meet it: output, exit codes, and no traceback on bad input."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.conftest import RELEASES, CliFn


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(oct(p.stat().st_mode).encode() + p.read_bytes())
    return h.hexdigest()


def test_list_shows_every_release(cli: CliFn) -> None:
    run = cli("list")
    assert run.code == 0, run.output
    for image in (
        "fedora-41",
        "fedora-rawhide",
        "ubuntu-24.04",
        "debian-13",
        "debian-forky",
        "alma-10",
        "opensuse-16.0",
    ):
        assert image in run.stdout
    assert f"{RELEASES} releases" in run.stdout


def test_list_json(cli: CliFn) -> None:
    rows = {r["image"]: r for r in json.loads(cli("list", "--json").stdout)}
    assert len(rows) == RELEASES
    assert rows["ubuntu-24.04"]["roles"] == ["guest"] and rows["ubuntu-24.04"]["floors"] == {}
    assert rows["fedora-41"]["floors"]["qemu"] == {"version": "9.1.3", "verdict": "warn"}
    assert rows["debian-13"]["mkosi_release"] == "trixie" and rows["debian-13"]["valid"]


def test_show(cli: CliFn) -> None:
    run = cli("show", "debian-13", "--role", "host", "--json")
    assert run.code == 0
    spec = json.loads(run.stdout)["host-debian-13"]
    assert spec["mkosi_release"] == "trixie" and "ovmf-amdsev" in spec["packages"]
    yaml_run = cli("show", "debian-13")
    assert "guest-debian-13:" in yaml_run.stdout and "host-debian-13:" in yaml_run.stdout
    missing = cli("show", "ubuntu-24.04", "--role", "host")
    assert missing.code == 1 and "ubuntu-24.04 has no host image (roles: guest)" in missing.stderr
    unknown = cli("show", "debain-13")
    assert unknown.code == 1 and "no image 'debain-13'" in unknown.stderr


def test_validate_clean_catalog(cli: CliFn) -> None:
    run = cli("validate")
    assert run.code == 0, run.output
    assert f"{RELEASES} releases checked: 0 errors" in run.stdout
    assert cli("validate", "--strict").code == 1  # the catalog has warnings (undeclared versions)
    assert cli("validate", "debian-13", "--strict").code == 0


def test_validate_reports_file_line_column_field(cli: CliFn, workspace: Path) -> None:
    path = workspace / "images" / "fedora-44.yaml"
    path.write_text(path.read_text() + "host:\n  add_packages: ['bad name']\n")
    run = cli("validate")
    assert run.code == 1
    assert (
        "images/fedora-44.yaml:10:18: error: host.add_packages[0]: 'bad name' is not a package name"
        in run.stderr
    )
    assert "Traceback" not in run.output
    data = json.loads(cli("validate", "--json").stdout)
    assert data["valid"] is False
    (error,) = [p for p in data["problems"] if p["severity"] == "error"]
    assert (error["file"], error["line"], error["column"], error["field"]) == (
        "images/fedora-44.yaml",
        10,
        18,
        "host.add_packages[0]",
    )


def test_render_all_writes_both_roles_and_is_byte_identical(cli: CliFn, workspace: Path) -> None:
    run = cli("render", "--all", "--mkosi-version", "25.3")
    assert run.code == 0, run.output
    build = workspace / "build"
    trees = sorted(p.name for p in build.iterdir())
    assert len(trees) == 2 * RELEASES - 1  # ubuntu-24.04 is guest only
    assert "wrote build/host-debian-13  (host-debian-13)" in run.stdout
    first = tree_digest(build)
    assert cli("render", "--all", "--mkosi-version", "25.3").code == 0
    assert tree_digest(build) == first
    assert not [p for p in build.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_render_needs_images_or_all(cli: CliFn) -> None:
    run = cli("render")
    assert run.code == 1 and "name the images to render, or pass --all" in run.stderr
    assert cli("render", "debian-13", "--all").code == 1
    bad_version = cli("render", "debian-13", "--mkosi-version", "24")
    assert bad_version.code == 1 and "supports mkosi 25.3 and newer" in bad_version.stderr


def test_render_writes_nothing_when_any_image_is_bad(cli: CliFn, workspace: Path) -> None:
    (workspace / "images" / "fedora-44.yaml").write_text(
        "schema_version: 1\nrelease: '44'\nstatus: [\n"
    )
    run = cli("render", "--all")
    assert run.code == 1
    assert "images/fedora-44.yaml:4:1: error: invalid YAML" in run.stderr
    assert "nothing written" in run.stderr
    assert not (workspace / "build").exists()


def test_render_replaces_an_old_tree_entirely(cli: CliFn, workspace: Path) -> None:
    stale = workspace / "build" / "guest-debian-13" / "stale-file"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    assert cli("render", "debian-13", "-o", str(workspace / "build")).code == 0
    assert not stale.exists() and (stale.parent / "mkosi.conf").is_file()


def test_render_to_an_unwritable_place_is_a_clean_error(cli: CliFn, workspace: Path) -> None:
    blocker = workspace / "blocker"
    blocker.write_text("a file, not a folder")
    run = cli("render", "debian-13", "-o", str(blocker / "out"))
    assert run.code == 1 and "cannot write under" in run.stderr


def test_works_from_a_subfolder_and_with_root(workspace: Path, sevimg_process: CliFn) -> None:
    sub = workspace / "images"
    run = sevimg_process("list", "--json", cwd=sub)
    assert run.code == 0 and len(json.loads(run.stdout)) == RELEASES
    elsewhere = sevimg_process("validate", cwd=Path("/"), root=workspace)
    assert elsewhere.code == 0, elsewhere.output
    lost = sevimg_process("list", cwd=Path("/"))
    assert (
        lost.code == 1
        and "no sevimg workspace here" in lost.stderr
        and "Traceback" not in lost.stderr
    )
    not_ws = sevimg_process("list", cwd=Path("/"), root=workspace / "images")
    assert not_ws.code == 1 and "is not a sevimg workspace" in not_ws.stderr


def test_render_output_does_not_depend_on_cwd(
    workspace: Path, sevimg_process: CliFn, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert (
        sevimg_process(
            "render", "debian-13", "-o", str(a), "--mkosi-version", "27.1", cwd=workspace
        ).code
        == 0
    )
    assert (
        sevimg_process(
            "render", "debian-13", "-o", str(b), "--mkosi-version", "27.1", cwd=workspace / "images"
        ).code
        == 0
    )
    assert tree_digest(a) == tree_digest(b)


def test_help_texts(cli: CliFn) -> None:
    for command in ("list", "show", "validate", "render", "new"):
        run = cli(command, "--help")
        assert run.code == 0 and "Usage: " in run.stdout
    assert "Onboard a release" in cli("--help").stdout


def test_internal_errors_do_not_dump_tracebacks(workspace: Path, sevimg_process: CliFn) -> None:
    # A schema file that is not JSON is the workspace's fault, reported as such.
    (workspace / "schema").mkdir()
    (workspace / "schema" / "release.schema.json").write_text("{not json")
    run = sevimg_process("validate")
    assert run.code == 1
    assert "schema/release.schema.json: not a readable JSON Schema" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to make a folder unreadable for root-less checks"
)
def test_unreadable_catalog_file(cli: CliFn, workspace: Path) -> None:
    path = workspace / "images" / "debian-13.yaml"
    path.unlink()
    path.mkdir()  # a folder where a file should be: unreadable as YAML even for root
    run = cli("validate")
    assert run.code == 1 and "images/debian-13.yaml: error: cannot read" in run.stderr
