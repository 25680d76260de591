"""The package reads as the flow: catalog/ and render/ are pure, and import nothing downstream.

catalog/ (load, schema, resolve, policy) and render/ (templates to trees)
run no programs and open no connections, so they work on any machine and
in any test. They may import each other and the shared modules at the top
of the package, never build/, release/, machine/, serve/, archive/ or cli/.
Checked over the whole import graph, not only the direct imports. And no
module grows past MAX_LINES: a module that long holds more than one thing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "sevimg"
PURE = ("sevimg.catalog", "sevimg.render")
DOWNSTREAM = (
    "sevimg.imaging",
    "sevimg.release",
    "sevimg.machine",
    "sevimg.serve",
    "sevimg.archive",
    "sevimg.cli",
    "sevimg.proc",
)
MAX_LINES = 450
# Standard-library and third-party modules that run programs or reach the network.
SIDE_EFFECTS = (
    "subprocess",
    "socket",
    "http",
    "urllib.request",
    "httpx",
    "sh",
    "asyncio",
    "multiprocessing",
    "ftplib",
    "smtplib",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """Every module `name` imports (absolute names; `from a import b` gives a and a.b)."""
    tree = ast.parse(MODULES[name].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def closure(start: str) -> dict[str, str]:
    """Every module reachable from `start` → the sevimg module that imports it first."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        current = todo.pop()
        for imported in sorted(imports_of(current)):
            if imported in seen:
                continue
            seen[imported] = current
            if imported in MODULES and imported.startswith("sevimg"):
                todo.append(imported)
    return seen


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


PURE_MODULES = sorted(m for m in MODULES if under(m, PURE))


def test_the_stages_exist() -> None:
    for stage in ("catalog", "render", "imaging", "release", "machine", "serve", "archive", "cli"):
        assert f"sevimg.{stage}" in MODULES, stage
    assert len(PURE_MODULES) >= 10


@pytest.mark.parametrize("name", PURE_MODULES)
def test_pure_stages_import_nothing_downstream(name: str) -> None:
    reached = closure(name)
    bad = {m: by for m, by in reached.items() if under(m, DOWNSTREAM)}
    assert not bad, f"{name} reaches {bad} (module → imported by)"


@pytest.mark.parametrize("name", PURE_MODULES)
def test_pure_stages_run_no_programs_and_open_no_connections(name: str) -> None:
    reached = closure(name)
    bad = {m: by for m, by in reached.items() if under(m, SIDE_EFFECTS)}
    assert not bad, f"{name} reaches {bad} (module → imported by)"


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    # The graph walk must notice an indirect import, or the tests above prove nothing.
    MODULES["sevimg.catalog._probe"] = tmp_path / "probe.py"
    MODULES["sevimg.catalog._probe2"] = tmp_path / "probe2.py"
    (tmp_path / "probe.py").write_text("from sevimg.catalog import _probe2\n")
    (tmp_path / "probe2.py").write_text("import subprocess\nfrom sevimg.imaging import mkosi\n")
    try:
        reached = closure("sevimg.catalog._probe")
        assert reached["subprocess"] == "sevimg.catalog._probe2"
        assert "sevimg.imaging.mkosi" in reached
    finally:
        del MODULES["sevimg.catalog._probe"], MODULES["sevimg.catalog._probe2"]


def _too_long(root: Path) -> dict[str, int]:
    """Every module below `root` longer than MAX_LINES → its line count."""
    counts = {str(p.relative_to(root)): len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    return {name: n for name, n in counts.items() if n > MAX_LINES}


def test_no_module_is_longer_than_the_limit() -> None:
    assert len(list(SRC.rglob("*.py"))) > 50  # both packages are there
    assert not _too_long(SRC), f"split these along a seam: {_too_long(SRC)}"


def test_the_size_check_sees_a_long_module(tmp_path: Path) -> None:
    (tmp_path / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "short.py").write_text("x = 1\n" * MAX_LINES)
    assert _too_long(tmp_path) == {"long.py": MAX_LINES + 1}
