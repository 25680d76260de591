"""Load one YAML file into plain Python data, remembering where every value came from.

PyYAML's high-level loaders throw positions away; we compose the node graph
ourselves so that each value (and each mapping key) keeps its line and column.
The loader is strict where YAML is lax: duplicate keys, anchors/aliases,
explicit tags (on scalars, lists, mappings and keys alike), non-string keys
and multi-document files are errors, because each of them has hidden a
mistake in a hand-written catalog before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from sevimg.problems import Problem, error

JsonPath = tuple[str | int, ...]

MAX_FILE_BYTES = 256 * 1024  # a release file is a few lines; this bounds hostile input
MAX_DEPTH = 32

# Tags YAML gives an untagged scalar by itself; anything written explicitly is refused.
_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
# Implicit tags that have no place in the catalog: keep the text as written,
# so the schema reports it as the string the author wrote.
_TEXT_TAGS = {"tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value"}
_KINDS = {yaml.ScalarNode: "value", yaml.SequenceNode: "list", yaml.MappingNode: "mapping"}


def _show_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


class _Loader(yaml.SafeLoader):
    """A SafeLoader that remembers which nodes carried an explicit tag.

    The composed node keeps only the resolved tag, so `!!map {}` and `{}` look
    the same there; the parser's events still tell them apart.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.explicit_tags: dict[int, str] = {}

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        tag = getattr(event, "tag", None)  # aliases carry none
        node = super().compose_node(parent, index)
        if tag is not None and node is not None:
            self.explicit_tags[id(node)] = tag
        return node


@dataclass(frozen=True)
class Document:
    """A loaded YAML file: its data and the position of every value in it."""

    path: Path
    display: str
    data: Any
    sha256: str
    positions: Mapping[JsonPath, tuple[int, int]] = field(default_factory=dict)
    key_positions: Mapping[JsonPath, tuple[int, int]] = field(default_factory=dict)
    scalars: Mapping[JsonPath, str] = field(default_factory=dict)

    def locate(self, path: JsonPath, *, key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of the value (or key) at `path`, else of its nearest ancestor."""
        probe = tuple(path)
        if key and probe in self.key_positions:
            return self.key_positions[probe]
        while probe and probe not in self.positions:
            probe = probe[:-1]
        return self.positions.get(probe, (1, 1))

    def source_text(self, path: JsonPath) -> str | None:
        """The scalar exactly as written in the file (before YAML typed it)."""
        return self.scalars.get(tuple(path))

    def problem(self, path: JsonPath, message: str, *, key: bool = False) -> Problem:
        """An error located at `path` in this document."""
        line, column = self.locate(path, key=key)
        return error(self.display, message, line=line, column=column, field=format_path(path))


def format_path(path: JsonPath) -> str:
    """`('host', 'packages', 2)` → `host.packages[2]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class LoadError(Exception):
    """The file could not be read as YAML; carries the problem to report."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


class _Builder:
    def __init__(self, display: str, explicit_tags: Mapping[int, str]) -> None:
        self.display = display
        self.explicit_tags = explicit_tags
        self.positions: dict[JsonPath, tuple[int, int]] = {}
        self.key_positions: dict[JsonPath, tuple[int, int]] = {}
        self.scalars: dict[JsonPath, str] = {}
        self.constructor = SafeConstructor()
        self.seen: set[int] = set()

    def fail(self, node: yaml.Node, message: str, path: JsonPath) -> LoadError:
        mark = node.start_mark
        return LoadError(
            error(
                self.display,
                message,
                line=mark.line + 1,
                column=mark.column + 1,
                field=format_path(path),
            )
        )

    def build(self, node: yaml.Node, path: JsonPath) -> Any:
        if len(path) > MAX_DEPTH:
            raise self.fail(node, f"nested deeper than {MAX_DEPTH} levels", path)
        if id(node) in self.seen:
            raise self.fail(
                node, "YAML anchors and aliases are not supported; write the value out", path
            )
        self.seen.add(id(node))
        self.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        self.refuse_tag(node, path)

        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        self.scalars[path] = node.value
        if node.tag in _TEXT_TAGS:
            return str(node.value)
        if node.tag not in _PLAIN_TAGS:
            raise self.fail(node, f"YAML tag {_show_tag(node.tag)} is not supported", path)
        return self.constructor.construct_object(node, deep=True)

    def refuse_tag(self, node: yaml.Node, path: JsonPath, *, key: bool = False) -> None:
        """Any tag written in the file is an error: the catalog is plain data."""
        tag = self.explicit_tags.get(id(node))
        if tag is None:
            return
        what = "key" if key else _KINDS.get(type(node), "value")
        raise self.fail(
            node,
            f"YAML tag {_show_tag(tag)} is not supported (on a {what}); remove it: "
            "the catalog is plain data",
            path,
        )

    def _mapping(self, node: yaml.MappingNode, path: JsonPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self.fail(key_node, "YAML merge keys (<<) are not supported", path)
            named = (*path, key_node.value) if isinstance(key_node, yaml.ScalarNode) else path
            self.refuse_tag(key_node, named, key=True)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a collection"
                raise self.fail(
                    key_node,
                    f"keys must be plain strings; {shown!r} is read as another type (quote it)",
                    path,
                )
            key = str(key_node.value)
            if key in result:
                raise self.fail(key_node, f"duplicate key {key!r}", (*path, key))
            self.key_positions[(*path, key)] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
            result[key] = self.build(value_node, (*path, key))
        return result


def load_text(text: str, *, path: Path, display: str) -> Document:
    """Parse YAML text into a :class:`Document`; raises :class:`LoadError` on bad input."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        nodes: list[yaml.Node] = []
        while loader.check_node():
            if (node := loader.get_node()) is not None:
                nodes.append(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        column = mark.column + 1 if mark else 0
        reason = exc.problem or exc.context or "invalid YAML"
        raise LoadError(
            error(display, f"invalid YAML: {reason}", line=line, column=column)
        ) from None
    except yaml.reader.ReaderError as exc:
        # A control character (or other unprintable one) where YAML allows none.
        before = text[: exc.position]
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        raise LoadError(
            error(
                display,
                f"invalid YAML: character U+{exc.character:04X} is not allowed in YAML text",
                line=line,
                column=column,
            )
        ) from None
    except yaml.YAMLError as exc:
        raise LoadError(error(display, f"invalid YAML: {exc}")) from None
    except RecursionError:
        raise LoadError(
            error(display, f"invalid YAML: nested deeper than {MAX_DEPTH} levels")
        ) from None
    finally:
        if loader is not None:
            loader.dispose()

    if len(nodes) > 1:
        second = nodes[1]
        raise LoadError(
            error(
                display,
                "a catalog file holds exactly one YAML document (remove the second '---')",
                line=second.start_mark.line + 1,
                column=1,
            )
        )
    if not nodes or nodes[0] is None:
        return Document(
            path=path, display=display, data=None, sha256=digest, positions={(): (1, 1)}
        )

    assert loader is not None
    builder = _Builder(display, loader.explicit_tags)
    try:
        data = builder.build(nodes[0], ())
    except RecursionError:
        raise LoadError(
            error(display, f"invalid YAML: nested deeper than {MAX_DEPTH} levels")
        ) from None
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise LoadError(
            error(
                display,
                f"invalid YAML: {exc.problem}",
                line=mark.line + 1 if mark else 0,
                column=mark.column + 1 if mark else 0,
            )
        ) from None
    return Document(
        path=path,
        display=display,
        data=data,
        sha256=digest,
        positions=builder.positions,
        key_positions=builder.key_positions,
        scalars=builder.scalars,
    )


def load_file(path: Path, *, display: str) -> Document:
    """Read and parse one YAML file; raises :class:`LoadError` with a located problem."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise LoadError(
                error(
                    display, f"file is {size} bytes; catalog files are limited to {MAX_FILE_BYTES}"
                )
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise LoadError(error(display, f"cannot read: {exc.strerror or exc}")) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise LoadError(error(display, "file is not valid UTF-8", line=line, column=1)) from None
    return load_text(text, path=path, display=display)
