"""Every catalog image, rendered for each supported mkosi, compared byte for byte.

The golden trees in tests/golden/mkosi-<version>/<image id>/ are the reviewed
output. After an intended change to the catalog, templates or renderer,
regenerate them with `nox -s golden` (or `pytest tests/test_golden.py
--update-golden`), read the diff, and commit it with the change.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sevimg.atomic import write_trees
from sevimg.catalog.index import load_catalog
from sevimg.catalog.pipeline import check_catalog, specs_or_raise
from sevimg.mkosi_versions import MKOSI_VERSIONS
from sevimg.render.trees import CERT_PACKAGE, EXTRA, PYTHON_DIR, Renderer
from sevimg.workspace import Workspace
from tests.conftest import REPO

GOLDEN = REPO / "tests" / "golden"
VERSIONS = MKOSI_VERSIONS
# Each host carries the sevimg_cert package byte for byte (test_render checks
# that against src/sevimg_cert); copies of it here would only repeat the source.
CERT_FOLDER = f"{EXTRA}/{PYTHON_DIR}/{CERT_PACKAGE}"


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode & 0o777)
        for p in sorted(root.rglob("*"))
        if p.is_file() and CERT_FOLDER not in p.relative_to(root).as_posix()
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_golden_trees(version: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    ws = Workspace(REPO)
    checked, orphans = check_catalog(load_catalog(ws))
    specs = specs_or_raise(checked, orphans)
    renderer = Renderer(ws.search_path("templates"), version)
    rendered = tmp_path / "rendered"
    write_trees([renderer.render(s) for s in specs], rendered)

    golden = GOLDEN / f"mkosi-{version}"
    if request.config.getoption("--update-golden"):
        shutil.rmtree(golden, ignore_errors=True)
        for folder in rendered.glob(f"*/{CERT_FOLDER}"):
            shutil.rmtree(folder)
        shutil.copytree(rendered, golden)
        return

    want, got = snapshot(golden), snapshot(rendered)
    assert sorted(got) == sorted(want), (
        "file lists differ: run `nox -s golden` if the change is intended"
    )
    for name, (content, mode) in want.items():
        assert got[name][1] == mode, f"{name}: mode {oct(got[name][1])} != golden {oct(mode)}"
        assert got[name][0] == content, (
            f"{name} differs from tests/golden/mkosi-{version}: run `nox -s golden` if intended"
        )


def test_every_release_with_both_roles_has_both_trees() -> None:
    names = {p.name for p in (GOLDEN / "mkosi-25.3").iterdir()}
    for image in load_catalog(Workspace(REPO)).names():
        expected = {"guest"} if image == "ubuntu-24.04" else {"guest", "host"}
        assert {role for role in ("guest", "host") if f"{role}-{image}" in names} == expected
