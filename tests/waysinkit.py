"""The post-build check of a guest UKI that carries a way in (tests/test_ways_in.py, test_pam.py)."""

from __future__ import annotations

from sevimg.catalog.index import Catalog
from sevimg.catalog.resolve import resolve
from sevimg.imaging import examine
from tests.test_uki import guest_files, make_uki


def assert_guest_way_in_fails(
    catalog: Catalog, extra: list[tuple[str, int, bytes]], expected: str
) -> None:
    """A debian-13 guest UKI with `extra` files fails the post-build check with `expected`,
    and passes it as a debug image."""
    spec = resolve(catalog.entries["debian-13"], "guest")
    files = {path: (path, mode, data) for path, mode, data in guest_files()}
    files.update({path: (path, mode, data) for path, mode, data in extra})
    uki = make_uki(list(files.values()))
    found = examine.check(spec, uki, {"systemd-boot-efi": "257"})
    assert any(expected in e for e in found.errors), found.errors
    debug = resolve(catalog.entries["debian-13"], "guest", debug=True)
    assert examine.check(debug, uki, {"systemd-boot-efi": "257"}).errors == ()
