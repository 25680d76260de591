"""`--update`: write observed versions into a release file, leaving every other byte alone.

A careful line edit, located by the positions the catalog loader keeps: the
value of `versions.<kind>` is replaced in place (its comment stays), a missing
key is added under `versions:`, a missing `versions:` block after `status:`.
The result is parsed again before it is written (atomically).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from sevimg.atomic import write_file_atomic
from sevimg.catalog.load import Document, LoadError, load_text
from sevimg.problems import SevimgError

_VERSION = re.compile(r"[0-9A-Za-z.+~:-]{1,64}")
ORDER = ("kernel", "qemu", "ovmf")


def _value_end(line: str, start: int) -> int:
    """Where the scalar starting at `start` ends (a quoted one at its closing quote)."""
    if line[start : start + 1] in ("'", '"'):
        close = line.find(line[start], start + 1)
        return len(line) if close == -1 else close + 1
    comment = line.find(" #", start)
    end = len(line) if comment == -1 else comment
    return len(line[:end].rstrip())


def updated_text(doc: Document, text: str, versions: Mapping[str, str]) -> str:
    """`text` (the file `doc` was loaded from) with `versions` written in; pure."""
    for kind, value in versions.items():
        if kind not in ORDER or not _VERSION.fullmatch(value):
            raise SevimgError(f"{doc.display}: will not write {kind} version {value!r}")
    lines = text.splitlines(keepends=True)
    current = doc.data.get("versions") or {}
    added: list[str] = []
    for kind in ORDER:
        if kind not in versions or str(current.get(kind)) == versions[kind]:
            continue
        if kind in current:
            line_no, column = doc.positions[("versions", kind)]
            line = lines[line_no - 1]
            start = column - 1
            end = _value_end(line, start)
            lines[line_no - 1] = f'{line[:start]}"{versions[kind]}"{line[end:]}'
        else:
            added.append(kind)
    if added:
        if "versions" in doc.data and current:
            # After the last key of the block, with the block's indentation.
            last = max(doc.key_positions[("versions", k)] for k in current)
            indent = " " * (last[1] - 1)
            at = last[0]
            # A multi-line value is not a version; the next line is the block's end.
            new = [f'{indent}{kind}: "{versions[kind]}"\n' for kind in added]
        else:
            key = doc.key_positions.get(("status",)) or doc.key_positions.get(("release",))
            at = key[0] if key else len(lines)
            head = ["versions:\n"] if "versions" not in doc.data else []
            new = head + [f'  {kind}: "{versions[kind]}"\n' for kind in added]
            if "versions" in doc.data:  # `versions: {}` or empty: replace that line
                at = doc.key_positions[("versions",)][0]
                lines[at - 1] = "versions:\n"
        if at and not lines[at - 1].endswith("\n"):
            lines[at - 1] += "\n"
        lines[at:at] = new
    return "".join(lines)


def update_file(doc: Document, versions: Mapping[str, str]) -> bool:
    """Write `versions` into the release file of `doc`; False when nothing changed."""
    try:
        text = doc.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SevimgError(
            f"cannot read {doc.display}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if hashlib.sha256(text.encode()).hexdigest() != doc.sha256:
        raise SevimgError(f"{doc.display} changed while sevimg read it; nothing written, run again")
    new = updated_text(doc, text, versions)
    if new == text:
        return False
    try:
        again = load_text(new, path=doc.path, display=doc.display)
    except LoadError as exc:
        raise SevimgError(
            f"the updated {doc.display} would not parse; nothing written", [exc.problem]
        ) from None
    wanted = dict(versions.items())
    if {k: str(again.data["versions"].get(k)) for k in wanted} != wanted:
        raise SevimgError(f"the updated {doc.display} does not say what was meant; nothing written")
    write_file_atomic(doc.path, new.encode())
    return True
