"""The YAML loader: positions for every value, and strictness where YAML is lax."""

from __future__ import annotations

from pathlib import Path

import pytest

from sevimg.catalog.load import MAX_DEPTH, LoadError, load_file, load_text


def load(text: str):  # type: ignore[no-untyped-def]
    return load_text(text, path=Path("x.yaml"), display="images/x.yaml")


def problem_of(text: str) -> str:
    with pytest.raises(LoadError) as info:
        load(text)
    return str(info.value.problem)


def test_positions_of_values_and_keys() -> None:
    doc = load("a: 1\nb:\n  - x\n  - y: [1, 2]\n")
    assert doc.data == {"a": 1, "b": ["x", {"y": [1, 2]}]}
    assert doc.locate(("a",)) == (1, 4)
    assert doc.locate(("b", 1, "y", 1)) == (4, 12)
    assert doc.locate(("b",), key=True) == (2, 1)
    # an unknown path falls back to its nearest known ancestor
    assert doc.locate(("b", 1, "nope", 3)) == (4, 5)


def test_scalars_keep_their_source_text() -> None:
    doc = load("release: 25.10\n")
    assert doc.data["release"] == 25.1
    assert doc.source_text(("release",)) == "25.10"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\na: 2\n", "images/x.yaml:2:1: error: a: duplicate key 'a'"),
        ("a: &x 1\nb: *x\n", "anchors and aliases are not supported"),
        ("base: &b {k: 1}\nother:\n  <<: *b\n", "not supported"),
        ("1: x\n", "keys must be plain strings; '1' is read as another type"),
        ("yes: x\n", "'yes' is read as another type"),
        ("? [a]\n: x\n", "keys must be plain strings"),
        (
            "a: 1\n---\nb: 2\n",
            "images/x.yaml:3:1: error: a catalog file holds exactly one YAML document",
        ),
        ("a: [1, 2\n", "images/x.yaml:2:1: error: invalid YAML"),
        (
            "a: b: c\n",
            "images/x.yaml:1:5: error: invalid YAML: mapping values are not allowed here",
        ),
        ("a: !!python/object:os.system x\n", "YAML tag !!python/object:os.system is not supported"),
        ("a: !!binary aGVsbG8=\n", "YAML tag !!binary is not supported"),
        ("a: !custom x\n", "YAML tag !custom is not supported"),
        ("\tkey: 1\n", "invalid YAML"),
        ("a: \x00\n", "invalid YAML"),
    ],
)
def test_bad_yaml_is_a_located_problem(text: str, expected: str) -> None:
    assert expected in problem_of(text)


def test_deep_nesting_is_refused_not_a_crash() -> None:
    assert "nested deeper" in problem_of("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert f"nested deeper than {MAX_DEPTH}" in problem_of(
        "a: " + "[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2)
    )


def test_empty_file_loads_as_nothing() -> None:
    assert load("").data is None
    assert load("# only a comment\n").data is None


def test_dates_stay_strings() -> None:
    assert load("d: 2025-01-01\n").data == {"d": "2025-01-01"}


def test_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: 1\nb: \xff\xfe\n")
    with pytest.raises(LoadError, match=r"bad.yaml:2:1: error: file is not valid UTF-8"):
        load_file(bad, display="bad.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * 300_000)
    with pytest.raises(LoadError, match="catalog files are limited"):
        load_file(big, display="big.yaml")
    with pytest.raises(LoadError, match="cannot read"):
        load_file(tmp_path / "missing.yaml", display="missing.yaml")


def test_digest_is_of_the_text() -> None:
    assert load("a: 1\n").sha256 == load("a: 1\n").sha256
    assert load("a: 1\n").sha256 != load("a: 2\n").sha256


# --- explicit tags: refused on every kind of node -----------------------------------------

TAGS = [
    ("!!str", "!!str"),
    ("!!map", "!!map"),
    ("!!seq", "!!seq"),
    ("!!int", "!!int"),
    ("!!float", "!!float"),
    ("!!bool", "!!bool"),
    ("!!null", "!!null"),
    ("!!binary", "!!binary"),
    ("!!timestamp", "!!timestamp"),
    ("!!set", "!!set"),
    ("!!omap", "!!omap"),
    ("!!python/object:os.system", "!!python/object:os.system"),
    ("!include", "!include"),
    ("!custom", "!custom"),
    ("!", "!"),
    ("!<tag:yaml.org,2002:str>", "!!str"),
    ("!<!local>", "!local"),
    ("!<tag:example.com,2000:x>", "tag:example.com,2000:x"),
]
# (text with {tag}, line, column, node kind, field) — the tag's own position
NODES = [
    ("a: {tag} x\n", 1, 4, "value", "a"),
    ("a: {tag} 'quoted'\n", 1, 4, "value", "a"),
    ("a: {tag} [x]\n", 1, 4, "list", "a"),
    ("a: {tag}\n  - x\n", 1, 4, "list", "a"),
    ("a: {tag} {{b: x}}\n", 1, 4, "mapping", "a"),
    ("a: {tag}\n  b: x\n", 1, 4, "mapping", "a"),
    ("a:\n  - ok\n  - {tag} x\n", 3, 5, "value", "a[1]"),
    ("a:\n  - {tag} [x]\n", 2, 5, "list", "a[0]"),
    ("a:\n  b: 1\n  {tag} c: x\n", 3, 3, "key", "a.c"),
    ("{tag} a: x\n", 1, 1, "key", "a"),
    ("--- {tag}\na: x\n", 1, 5, "mapping", ""),
    ("--- {tag}\n- x\n", 1, 5, "list", ""),
    ("{tag} text\n", 1, 1, "value", ""),
]


# Every tag on one node of each kind, and every node with one tag of each
# spelling (shorthand, local, verbatim): how a tag is shown does not depend on
# where it stands, nor its location on which tag it is.
_ONE_OF_EACH_KIND = [
    n
    for n in NODES
    if n[0] in ("a: {tag} x\n", "a: {tag} [x]\n", "a: {tag}\n  b: x\n", "{tag} a: x\n")
]
_ONE_OF_EACH_SPELLING = [
    t for t in TAGS if t[0] in ("!!int", "!custom", "!<tag:example.com,2000:x>")
]
TAGGED = [
    pytest.param(tag, shown, *node, id=f"{tag}-{node[0]}")
    for node in _ONE_OF_EACH_KIND
    for tag, shown in TAGS
] + [
    pytest.param(tag, shown, *node, id=f"{tag}-{node[0]}")
    for node in NODES
    if node not in _ONE_OF_EACH_KIND
    for tag, shown in _ONE_OF_EACH_SPELLING
]


@pytest.mark.parametrize(("tag", "shown", "template", "line", "column", "kind", "field"), TAGGED)
def test_every_explicit_tag_is_refused_where_it_is(
    tag: str, shown: str, template: str, line: int, column: int, kind: str, field: str
) -> None:
    where = f"images/x.yaml:{line}:{column}: error: " + (f"{field}: " if field else "")
    assert problem_of(template.format(tag=tag)) == (
        f"{where}YAML tag {shown} is not supported (on a {kind}); remove it: "
        "the catalog is plain data"
    )


def test_tags_from_a_tag_directive_are_refused() -> None:
    text = "%TAG !e! tag:example.com,2000:\n---\na: !e!thing {b: 1}\n"
    assert problem_of(text).startswith(
        "images/x.yaml:3:4: error: a: YAML tag tag:example.com,2000:thing is not supported"
    )


@pytest.mark.parametrize(
    "text", ["a: x\n", "a: 'x'\n", 'a: "x"\n', "a: [x, 1]\n", "a: {b: c}\n", "a: |\n  x\n"]
)
def test_untagged_nodes_load(text: str) -> None:
    assert isinstance(load(text).data, dict)


def test_control_characters_in_yaml_text_are_located() -> None:
    assert problem_of("a: 1\nb: x\x01y\n") == (
        "images/x.yaml:2:5: error: invalid YAML: character U+0001 is not allowed in YAML text"
    )
