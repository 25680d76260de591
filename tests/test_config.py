"""sevimg.yaml and sevimg.local.yaml: optional, schema-checked, errors located."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sevimg.catalog.index import load_catalog
from sevimg.catalog.spec import FamilyFacts
from sevimg.imaging.sandbox import apt_sources
from sevimg.problems import SevimgError
from sevimg.settings import load_local, load_tool_pins
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
    measure, snphost = load_tool_pins(ws)
    assert (snphost.name, snphost.version, snphost.format, snphost.target) == (
        "snphost",
        "0.7.0",
        "deb",
        "/usr/local/bin/snphost",
    )
    assert (measure.name, measure.format, measure.target, measure.roles) == (
        "sev-snp-measure",
        "wheel",
        "/usr/lib/sevimg/python/sevsnpmeasure",
        ("host",),
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


def _family(name: str) -> FamilyFacts:
    return load_catalog(Workspace(REPO)).families[name][1]


def test_apt_sources_without_debug_suites() -> None:
    text = apt_sources(_family("debian"), "trixie", "http://m/debian", None, ())
    assert (
        "Suites: trixie trixie-updates\n" in text
        and "URIs: http://m/debian-security\nSuites: trixie-security\n" in text
    )
    assert "debug" not in text.replace("without debug suites", "")
    sid = apt_sources(_family("debian"), "sid", "http://m/debian", None, ())
    assert (
        "Suites: sid\n" in sid
        and "security" not in sid.replace("-security", "")
        and "sid-updates" not in sid
    )
    ubuntu = apt_sources(_family("ubuntu"), "noble", "http://m/ubuntu", None, ("universe",))
    assert (
        "Components: main universe\n" in ubuntu
        and "URIs: http://m/ubuntu\nSuites: noble-security" in ubuntu
    )
    assert "Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg" in ubuntu


# --- explicit YAML tags, in every kind of file sevimg reads --------------------------------

# (file, the line to change, the same line with @@ where the tag goes, node kind)
TAGGED_LINES = [
    ("images/debian-13.yaml", "codename: trixie\n", "codename: @@ trixie\n", "value"),
    (
        "images/debian-13.yaml",
        "    packages: [ovmf-amdsev]\n",
        "    packages: @@ [ovmf-amdsev]\n",
        "list",
    ),
    ("images/debian-13.yaml", "versions:\n", "versions: @@\n", "mapping"),
    ("images/debian-13.yaml", "status: supported\n", "@@ status: supported\n", "key"),
    ("images/debian.yaml", "distro: debian\n", "distro: @@ debian\n", "value"),
    (
        "images/families/debian.yaml",
        "  suites_without_pockets: [sid, unstable]\n",
        "  suites_without_pockets: @@ [sid, unstable]\n",
        "list",
    ),
    ("images/families/debian.yaml", "family: debian\n", "family: @@ debian\n", "value"),
    ("images/families/debian.yaml", "payload:\n", "payload: @@\n", "mapping"),
    ("images/debian.yaml", "repository:\n", "repository: @@\n", "mapping"),
    ("images/debian.yaml", "family: debian\n", "@@ family: debian\n", "key"),
    ("sevimg.yaml", '    version: "0.7.0"\n', '    version: @@ "0.7.0"\n', "value"),
    ("sevimg.yaml", "    roles: [host]\n", "    roles: @@ [host]\n", "list"),
    ("sevimg.yaml", "  snphost:\n", "  snphost: @@\n", "mapping"),
    ("sevimg.yaml", "    format: deb\n", "    @@ format: deb\n", "key"),
    (
        "sevimg.local.yaml",
        "    url: http://deb.debian.org/debian\n",
        "    url: @@ http://deb.debian.org/debian\n",
        "value",
    ),
    (
        "sevimg.local.yaml",
        "schema_version: 1\n",
        "schema_version: 1\nsandbox_trees: @@ [ca]\n",
        "list",
    ),
    ("sevimg.local.yaml", "tools_tree:\n", "tools_tree: @@\n", "mapping"),
    ("sevimg.local.yaml", "  distribution: debian\n", "  @@ distribution: debian\n", "key"),
]
FILE_TAGS = ["!!str", "!!map", "!!seq", "!!binary", "!include", "!custom", "!", "!<!x>"]


def small_workspace(root: Path) -> Workspace:
    """Debian's three catalog files (family, distribution, release), sevimg.yaml and a sevimg.local.yaml, all valid."""
    (root / "images" / "families").mkdir(parents=True)
    for name in ("debian.yaml", "debian-13.yaml", "families/debian.yaml"):
        (root / "images" / name).write_text((REPO / "images" / name).read_text())
    (root / "sevimg.yaml").write_text((REPO / "sevimg.yaml").read_text())
    (root / "sevimg.local.yaml").write_text((REPO / "sevimg.local.yaml.example").read_text())
    return Workspace(root)


def problems_of(ws: Workspace, name: str) -> list[str]:
    """Every error sevimg reports for the file `name`, through the loader that reads it."""
    if name.startswith("images/"):
        return [str(p) for p in load_catalog(ws).problems if p.file == name and p.is_error]
    loader = load_tool_pins if name == "sevimg.yaml" else load_local
    try:
        loader(ws)
    except SevimgError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_the_small_workspace_is_clean(tmp_path: Path) -> None:
    ws = small_workspace(tmp_path)
    assert all(problems_of(ws, name) == [] for name, *_ in TAGGED_LINES)


@pytest.mark.parametrize("tag", FILE_TAGS)
@pytest.mark.parametrize(
    ("name", "line", "tagged", "kind"), TAGGED_LINES, ids=[f"{t[0]}-{t[3]}" for t in TAGGED_LINES]
)
def test_tags_are_refused_in_every_file(
    tmp_path: Path, tag: str, name: str, line: str, tagged: str, kind: str
) -> None:
    ws = small_workspace(tmp_path)
    path = tmp_path / name
    text = path.read_text()
    assert text.count(line) == 1
    marked = text.replace(line, tagged)
    before = marked[: marked.index("@@")]
    where = f"{name}:{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}: error: "
    path.write_text(marked.replace("@@", tag))
    shown = "!x" if tag == "!<!x>" else tag
    (found,) = problems_of(ws, name)
    assert found.startswith(where), found
    assert f"YAML tag {shown} is not supported (on a {kind})" in found, found


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("images/debian-13.yaml", ["validate", "debian-13"]),
        ("images/debian.yaml", ["render", "debian-13"]),
        ("sevimg.local.yaml", ["build", "debian-13", "--mkosi-version", "25.3"]),
        ("sevimg.yaml", ["build", "debian-13", "--mkosi-version", "25.3"]),
    ],
)
def test_a_tag_fails_the_command_cleanly(
    cli: CliFn, workspace: Path, name: str, command: list[str]
) -> None:
    source = {
        "sevimg.yaml": REPO / "sevimg.yaml",
        "sevimg.local.yaml": REPO / "sevimg.local.yaml.example",
    }
    path = workspace / name
    text = source[name].read_text() if name in source else path.read_text()
    path.write_text(text.replace("schema_version: 1\n", "schema_version: 1\nx: !include {a: b}\n"))
    run = cli(*command)
    assert run.code == 1, run.output
    assert (
        f"{name}:" in run.stderr
        and "YAML tag !include is not supported (on a mapping)" in run.stderr
    )
    assert "Traceback" not in run.output and "internal error" not in run.output
    assert not (workspace / "build").exists() and not (workspace / "out").exists()


# --- where pinned tools go: confined, unique, not one inside another ----------------------------

SHA = "a" * 64


def pins_text(tools: dict[str, str | None]) -> str:
    """sevimg.yaml with one tool per entry, `install:` on its own line when given."""
    lines = ["schema_version: 1", "tools:"]
    for name, install in tools.items():
        lines += [
            f"  {name}:",
            '    version: "1.0"',
            f"    url: http://example.org/{name}",
            f"    sha256: {SHA}",
            "    roles: [host]",
        ]
        if install is not None:
            lines.append(f"    install: {json.dumps(install)}")
    return "\n".join(lines) + "\n"


def pin_errors(workspace: Path, tools: dict[str, str | None]) -> list[str]:
    (workspace / "sevimg.yaml").write_text(pins_text(tools))
    try:
        load_tool_pins(Workspace(workspace))
    except SevimgError as exc:
        return [str(p) for p in exc.problems]
    return []


def install_line(tools: dict[str, str | None], name: str) -> int:
    lines = pins_text(tools).splitlines()
    start = lines.index(f"  {name}:")
    return lines.index(f"    install: {json.dumps(tools[name])}", start) + 1


OUTSIDE = [
    "/etc/shadow",
    "/etc/passwd",
    "/usr/bin/snphost",
    "/usr/libexec/sevimg/guest-check",
    "/usr/libexec/sevimg/host-check",
    "/usr/lib/systemd/system/sevimg-host-check.service",
    "/usr/local/lib/guest-image/guest.efi",
    "/usr/local/binx/tool",
    "/usr/local/lib/sevimg-toolsx/tool",
    "/usr/local/bin",
    "/usr/local/lib/sevimg-tools",
    "/usr/local",
    "/bin/sh",
    "/tool",
]
NOT_NORMAL = [
    "/usr/local/bin/../../../etc/shadow",
    "/usr/local/bin/./tool",
    "/usr/local/bin//tool",
    "//usr/local/bin/tool",
    "/usr/local/bin/tool/",
    "/usr/local/bin/..",
    "usr/local/bin/tool",
    "tool",
    "",
    "/usr/local/bin/to ol",
    "/usr/local/bin/tool\n",
    "\n/usr/local/bin/tool",
    "/usr/local/bin/to\tol",
]


@pytest.mark.parametrize("install", OUTSIDE + NOT_NORMAL)
def test_install_paths_are_confined_and_normalised(workspace: Path, install: str) -> None:
    tools: dict[str, str | None] = {"snphost": install}
    errors = pin_errors(workspace, tools)
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        f"sevimg.yaml:{install_line(tools, 'snphost')}:14: error: tools.snphost.install: "
    ), errors


@pytest.mark.parametrize("install", OUTSIDE + NOT_NORMAL)
def test_the_confinement_holds_without_the_schema(workspace: Path, install: str) -> None:
    """A workspace schema that lets any string through still cannot place a tool anywhere."""
    own = workspace / "schema"
    own.mkdir()
    project = json.loads((REPO / "schema" / "project.schema.json").read_text())
    props = project["properties"]["tools"]["additionalProperties"]["properties"]
    props["install"] = {"type": "string"}
    (own / "project.schema.json").write_text(json.dumps(project))
    tools: dict[str, str | None] = {"snphost": install}
    errors = pin_errors(workspace, tools)
    assert len(errors) == 1 and "tools.snphost.install: " in errors[0], errors
    assert f":{install_line(tools, 'snphost')}:14: error: " in errors[0]


@pytest.mark.parametrize(
    ("tools", "bad", "expected"),
    [
        ({"a": None, "b": "/usr/local/bin/a"}, "b", "is where a goes too"),
        ({"a": "/usr/local/bin/x", "b": "/usr/local/bin/x"}, "b", "is where a goes too"),
        (
            {"a": "/usr/local/lib/sevimg-tools/t", "b": "/usr/local/lib/sevimg-tools/t"},
            "b",
            "is where a goes too",
        ),
        ({"a": "/usr/local/bin/a", "b": "/usr/local/bin/a/b"}, "b", "overlap"),
        ({"a": None, "b": "/usr/local/bin/a/b"}, "b", "overlap"),
        (
            {"a": "/usr/local/lib/sevimg-tools/x/y/z", "b": "/usr/local/lib/sevimg-tools/x"},
            "b",
            "overlap",
        ),
        (
            {
                "a": "/usr/local/lib/sevimg-tools/x",
                "b": None,
                "c": "/usr/local/lib/sevimg-tools/x/c",
            },
            "c",
            "overlap",
        ),
    ],
)
def test_two_tools_never_share_or_nest_a_path(
    workspace: Path, tools: dict[str, str | None], bad: str, expected: str
) -> None:
    errors = pin_errors(workspace, tools)
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        f"sevimg.yaml:{install_line(tools, bad)}:14: error: tools.{bad}.install: "
    ), errors
    assert expected in errors[0]


@pytest.mark.parametrize(
    "tools",
    [
        {"a": None, "b": None},
        {"a": "/usr/local/bin/ab", "b": "/usr/local/bin/a-b"},
        {"a": "/usr/local/lib/sevimg-tools/a/bin/a", "b": "/usr/local/lib/sevimg-tools/ab"},
        {"a": "/usr/local/lib/sevimg-tools/a", "b": "/usr/local/lib/sevimg-tools/a.d/b"},
    ],
)
def test_separate_paths_are_fine(workspace: Path, tools: dict[str, str | None]) -> None:
    assert pin_errors(workspace, tools) == []


@pytest.mark.parametrize("tail", ["/..", "/.", "/dir/..", "/", "/a/"])
def test_a_pin_url_must_end_in_a_file_name(workspace: Path, tail: str) -> None:
    text = pins_text({"snphost": None}).replace(
        "url: http://example.org/snphost", f"url: http://example.org/pool{tail}"
    )
    (workspace / "sevimg.yaml").write_text(text)
    with pytest.raises(SevimgError) as info:
        load_tool_pins(Workspace(workspace))
    (problem,) = info.value.problems
    assert str(problem).startswith("sevimg.yaml:5:10: error: tools.snphost.url: ")
    # and without the schema's pattern, sevimg itself still refuses it
    own = workspace / "schema"
    own.mkdir(exist_ok=True)
    project = json.loads((REPO / "schema" / "project.schema.json").read_text())
    project["properties"]["tools"]["additionalProperties"]["properties"]["url"] = {"type": "string"}
    (own / "project.schema.json").write_text(json.dumps(project))
    with pytest.raises(SevimgError) as info:
        load_tool_pins(Workspace(workspace))
    (problem,) = info.value.problems
    assert str(problem).startswith("sevimg.yaml:5:10: error: tools.snphost.url: ")
    assert "does not end in a file name" in problem.message


@pytest.mark.parametrize("install", ["/etc/shadow", "/usr/bin/snphost", "/usr/local/bin/../x"])
def test_validate_reports_a_bad_pin_before_any_build(
    cli: CliFn, workspace: Path, install: str
) -> None:
    """`validate` checks sevimg.yaml too, located, whether or not IMAGES are named."""
    tools: dict[str, str | None] = {"snphost": install}
    (workspace / "sevimg.yaml").write_text(pins_text(tools))
    where = f"sevimg.yaml:{install_line(tools, 'snphost')}:14: error: tools.snphost.install: "
    for args in ((), ("debian-13",)):
        run = cli("validate", *args)
        assert run.code == 1, run.output
        assert where in run.stderr
        assert "Traceback" not in run.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mirrors: {}\n", ":1:1: error: missing required key 'schema_version'"),
        ("schema_version: 1\nmirrors:\n  debian: x\n", ":3:11: error: mirrors.debian: "),
        ("schema_version: 1\nproxy: !!str http://p\n", ":2:8: error: "),
    ],
)
def test_validate_reports_a_bad_local_file(
    cli: CliFn, workspace: Path, text: str, expected: str
) -> None:
    (workspace / "sevimg.local.yaml").write_text(text)
    run = cli("validate", "debian-13")
    assert run.code == 1, run.output
    assert f"sevimg.local.yaml{expected}" in run.stderr
    assert "Traceback" not in run.output


def test_validate_passes_good_settings(cli: CliFn, workspace: Path) -> None:
    (workspace / "sevimg.local.yaml").write_text(
        "schema_version: 1\nmirrors:\n  debian:\n    url: http://127.0.0.1:1/debian\n"
    )
    run = cli("validate", "debian-13")
    assert run.code == 0, run.output


def test_a_bad_install_path_fails_the_build_cleanly(cli: CliFn, workspace: Path) -> None:
    (workspace / "sevimg.yaml").write_text(pins_text({"snphost": "/etc/shadow"}))
    run = cli("build", "debian-13", "--mkosi-version", "25.3")
    assert run.code == 1, run.output
    assert "sevimg.yaml:8:14: error: tools.snphost.install: '/etc/shadow' is outside" in run.stderr
    assert "Traceback" not in run.output and not (workspace / "out").exists()
