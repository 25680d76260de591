"""An installed sevimg works on a folder holding only images/: templates and schemas
ship inside the wheel, and a workspace's own copies override them file by file."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, CliFn


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    (built,) = out.glob("sevimg-*.whl")
    return built


@pytest.mark.network  # pip fetches the build backend (hatchling) from PyPI
def test_wheel_ships_templates_and_schemas(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in (REPO / "templates").rglob("*.j2"):
        assert f"sevimg/_data/templates/{template.relative_to(REPO / 'templates')}" in names
    for schema in (REPO / "schema").glob("*.json"):
        assert f"sevimg/_data/schema/{schema.name}" in names
    # The lab's pages, script, style and processor names (package data of sevimg.lab).
    lab = REPO / "src" / "sevimg" / "lab"
    shipped = [
        p for p in lab.rglob("*") if p.is_file() and p.suffix in (".j2", ".js", ".css", ".yaml")
    ]
    assert len(shipped) >= 7
    for path in shipped:
        assert f"sevimg/lab/{path.relative_to(lab).as_posix()}" in names


@pytest.mark.network  # pip fetches the build backend (hatchling) from PyPI
def test_wheel_ships_sevimg_cert_with_its_pinned_roots(wheel: Path, tmp_path: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for product in ("milan", "genoa", "turin"):
        assert {
            f"sevimg_cert/roots/{product}/ark.pem",
            f"sevimg_cert/roots/{product}/ask.pem",
            f"sevimg_cert/roots/{product}/asvk.pem",
        } <= names
    assert "sevimg_cert/roots/README.md" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    run = subprocess.run(
        [sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); import sevimg_cert.roots as r; "
         "print(r.__file__.startswith(sys.argv[1]), len(r.pinned()))", str(site)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", "3"]


@pytest.mark.network  # pip fetches the build backend (hatchling) from PyPI
def test_installed_wheel_renders_a_folder_with_only_images(
    wheel: Path, workspace: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    run = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); from sevimg.cli import main; main()",
         str(site), "--root", str(workspace), "render", "debian-13", "--mkosi-version", "25.3"],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert not (workspace / "templates").exists() and not (workspace / "schema").exists()
    conf = (workspace / "build" / "guest-debian-13" / "mkosi.conf").read_text()
    assert "Release=trixie" in conf


def test_workspace_templates_override_file_by_file(cli: CliFn, workspace: Path) -> None:
    own = workspace / "templates" / "payload"
    own.mkdir(parents=True)
    (own / "wired.network.j2").write_text(
        "# {{ generated }}\n# vendor network\n[Match]\nName=eno1\n\n[Network]\nDHCP=yes\n"
    )
    assert cli("render", "debian-13", "--mkosi-version", "25.3").code == 0
    tree = workspace / "build" / "guest-debian-13"
    assert "Name=eno1" in (tree / "extra/etc/systemd/network/80-sevimg-wired.network").read_text()
    assert "Release=trixie" in (tree / "mkosi.conf").read_text()  # the rest still from the package
