"""The package reads as the flow: every stage stands on a floor above all that it imports.

FLOORS orders every part of the package (the shared modules at its top, each
stage package): a module may import its own part and the parts on lower
floors, never a part on its floor or above, and no modules import each other
in a circle. catalog/ (load, schema, resolve, policy) and render/ (templates
to trees) also run no programs and open no connections, so they work on any
machine and in any test; checked over the whole import graph, not only the
direct imports. And no module grows past MAX_LINES: a module that long holds
more than one thing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "sevimg"
# The floors, lowest first. A part is a module at the top of the package or a
# stage package; a part imports only itself and parts on LOWER floors (two
# parts on one floor are independent of each other).
FLOORS: tuple[tuple[str, ...], ...] = (
    # the ground: nothing of sevimg
    (
        "sevimg",
        "sevimg.redact",
        "sevimg.display",
        "sevimg.retry",
        "sevimg.interrupt",
        "sevimg.mkosi_versions",
    ),
    # errors, atomic writes, child processes, progress on long work
    ("sevimg.problems", "sevimg.atomic", "sevimg.proc", "sevimg.progress"),
    ("sevimg.workspace", "sevimg.lock"),
    # the stages, in the order data flows through them
    ("sevimg.catalog",),
    ("sevimg.render", "sevimg.artifacts"),
    ("sevimg.settings",),
    ("sevimg.archive", "sevimg.imaging"),
    ("sevimg.release", "sevimg.machine"),
    # the lab's view: the matrix from results and certificate issues
    ("sevimg.lab",),
    ("sevimg.serve",),
    ("sevimg.cli",),
    ("sevimg.entry",),
    ("sevimg.__main__",),
)
FLOOR_OF = {part: n for n, parts in enumerate(FLOORS) for part in parts}
PURE = ("sevimg.catalog", "sevimg.render")
# What the pure stages must not reach: every part above them, and child processes.
DOWNSTREAM = (
    *(part for part, n in FLOOR_OF.items() if n > FLOOR_OF["sevimg.render"]),
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


def part_of(name: str) -> str:
    """The part of FLOORS a module belongs to: `sevimg.catalog.load` → `sevimg.catalog`."""
    parts = name.split(".")
    return ".".join(parts[:2])


def sevimg_imports(name: str) -> set[str]:
    """The sevimg modules `name` imports directly (in any function, or for type checking)."""
    return {m for m in imports_of(name) if m in MODULES and m != name}


def floor_breaches() -> dict[str, list[str]]:
    """Every module that imports a part on its own floor or above → those imports."""
    bad: dict[str, list[str]] = {}
    for name in MODULES:
        mine = part_of(name)
        for imported in sorted(sevimg_imports(name)):
            theirs = part_of(imported)
            if theirs != mine and FLOOR_OF.get(theirs, -1) >= FLOOR_OF.get(mine, -1):
                bad.setdefault(name, []).append(imported)
    return bad


def circles() -> list[list[str]]:
    """Every set of modules that import each other in a loop (strongly connected, > 1 module)."""
    graph = {name: sorted(sevimg_imports(name)) for name in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                found.append(sorted(group))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return found


def test_the_stages_exist() -> None:
    for stage in ("catalog", "render", "imaging", "release", "machine", "serve", "archive", "cli"):
        assert f"sevimg.{stage}" in MODULES, stage
    assert len(PURE_MODULES) >= 10


def test_every_part_of_the_package_has_a_floor() -> None:
    # A new module at the top of the package, or a new stage, is placed on purpose.
    unplaced = sorted({part_of(name) for name in MODULES} - set(FLOOR_OF))
    assert not unplaced, f"add these to FLOORS: {unplaced}"
    assert not set(FLOOR_OF) - {part_of(name) for name in MODULES}, (
        "FLOORS names a part that is gone"
    )


def test_no_import_runs_from_a_floor_to_one_above_it() -> None:
    assert not floor_breaches(), (
        f"module → the parts on its floor or above it imports: {floor_breaches()}"
    )


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert not circles(), f"break these circles: {circles()}"


def test_the_floor_checks_see_a_breach_and_a_circle(tmp_path: Path) -> None:
    # An import from a stage to a later one, and a loop of two modules, must be noticed.
    probes = {
        "sevimg.catalog._probe": "from sevimg.imaging import mkosi\n",
        "sevimg.artifacts._probe": "from sevimg.render import launch\n",
        "sevimg._probe_a": "from sevimg import _probe_b\n",
        "sevimg._probe_b": "from sevimg import _probe_a\n",
    }
    for n, (name, text) in enumerate(probes.items()):
        MODULES[name] = tmp_path / f"probe{n}.py"
        MODULES[name].write_text(text)
    FLOOR_OF["sevimg._probe_a"] = FLOOR_OF["sevimg._probe_b"] = 0
    try:
        breaches = floor_breaches()
        assert breaches["sevimg.catalog._probe"] == ["sevimg.imaging", "sevimg.imaging.mkosi"]
        assert breaches["sevimg.artifacts._probe"] == ["sevimg.render", "sevimg.render.launch"]
        assert ["sevimg._probe_a", "sevimg._probe_b"] in circles()
    finally:
        for name in probes:
            del MODULES[name]
        del FLOOR_OF["sevimg._probe_a"], FLOOR_OF["sevimg._probe_b"]


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
