"""The real mkosi's view of rendered trees, for the tests that add a distribution by YAML."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from sevimg.atomic import write_trees
from sevimg.catalog.spec import ImageSpec
from sevimg.imaging import judge, mkosi
from sevimg.render.trees import Renderer
from sevimg.workspace import Workspace
from tests.conftest import REPO


def summaries(
    ws: Workspace, specs: Sequence[ImageSpec], versions: Sequence[str], out: Path
) -> Iterator[tuple[str, ImageSpec, dict[str, Any]]]:
    """(mkosi version, spec, mkosi's summary of the spec's tree) for each installed version,
    the trees rendered for that version; the summary must be clean and match the spec."""
    for version in versions:
        tool = mkosi.find(REPO / ".cache", version)
        if tool is None:
            pytest.fail(f"mkosi {version} is not installed: run tools/install-mkosi {version}")
        trees = out / version
        write_trees(
            [Renderer(ws.search_path("templates"), version).render(s) for s in specs], trees
        )
        for spec in specs:
            tree = trees / spec.image_id
            proc = tool.run(["-C", str(tree), "--json", "summary"], cwd=tree)
            assert proc.returncode == 0 and proc.stderr == "", proc.stderr
            image: dict[str, Any] = json.loads(proc.stdout)["Images"][-1]
            assert judge.compare_summary(image, tree, spec) == []
            yield version, spec, image
