"""The mkosi versions sevimg supports: the one home of that fact.

Rendering targets the oldest by default, `sevimg build` and `doctor` refuse
anything older, CI's workflow installs the oldest, and the tests judge every
tree with each. The noxfile imports this module; the shell tools keep a
commented copy that tests/test_facts.py compares with it.
"""

from __future__ import annotations

# Every tree (golden trees included) is judged by each of these.
MKOSI_VERSIONS: tuple[str, ...] = ("25.3", "27.1")
OLDEST_MKOSI = MKOSI_VERSIONS[0]
# Older mkosi is refused: the templates need what 25.3 brought.
MIN_MKOSI: tuple[int, ...] = tuple(int(part) for part in OLDEST_MKOSI.split("."))
