"""Pinned payload tools: fetched once over HTTP, checked by SHA-256, taken out of .debs."""

from __future__ import annotations

import hashlib
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sevimg import pins
from sevimg.config import ToolPin
from sevimg.problems import SevimgError

PROGRAM = b"#!/bin/sh\necho snphost 0.7.0\n"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A real HTTP server on 127.0.0.1 serving tmp_path/www, and the paths it was asked for."""
    www = tmp_path / "www"
    www.mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(www), **kwargs)

        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", www, requests
    server.shutdown()


def build_deb(folder: Path) -> Path:
    """A real Debian package holding /usr/bin/snphost, made by dpkg-deb."""
    root = folder / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: snphost\nVersion: 0.7.0-1\nArchitecture: amd64\nMaintainer: t <t@example.org>\nDescription: test\n"
    )
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "snphost").write_bytes(PROGRAM)
    deb = folder / "snphost_0.7.0-1_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "-Zxz", "--build", "--root-owner-group", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


def pin_for(url: str, data: bytes, **extra: object) -> ToolPin:
    return ToolPin(
        name="snphost",
        version="0.7.0",
        url=url,
        sha256=hashlib.sha256(data).hexdigest(),
        roles=("host",),
        **extra,  # type: ignore[arg-type]
    )


def test_deb_fetched_once_verified_and_unpacked(
    served: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    base, www, requests = served
    deb = build_deb(www)
    pin = pin_for(f"{base}/{deb.name}", deb.read_bytes(), format="deb", member="/usr/bin/snphost")
    cache = tmp_path / "cache"
    staged = pins.stage([pin], "host", cache, tmp_path / "tree", None, None)
    assert staged == {"snphost": pin}
    program = tmp_path / "tree" / "usr/local/bin/snphost"
    assert program.read_bytes() == PROGRAM and program.stat().st_mode & 0o111
    assert requests == [f"/{deb.name}"]
    deb.unlink()  # the second time it comes from the cache
    pins.stage([pin], "host", cache, tmp_path / "tree2", None, None)
    assert requests == [f"/{deb.name}"]
    assert pins.stage([pin], "guest", cache, tmp_path / "tree3", None, None) == {}


def test_hash_mismatch_is_refused(served: tuple[str, Path, list[str]], tmp_path: Path) -> None:
    base, www, _ = served
    (www / "snphost").write_bytes(PROGRAM)
    pin = pin_for(f"{base}/snphost", b"something else")
    with pytest.raises(
        SevimgError, match="does not match the pinned SHA-256 of snphost 0.7.0; not used"
    ) as info:
        pins.fetch(pin, tmp_path / "cache")
    assert hashlib.sha256(PROGRAM).hexdigest() in info.value.hint
    assert not (tmp_path / "cache").exists()


def test_http_errors_and_unreachable(served: tuple[str, Path, list[str]], tmp_path: Path) -> None:
    base, _, _ = served
    with pytest.raises(SevimgError, match="answered HTTP 404"):
        pins.fetch(pin_for(f"{base}/missing", PROGRAM), tmp_path)
    with pytest.raises(SevimgError, match="cannot download snphost 0.7.0") as info:
        pins.fetch(pin_for("http://127.0.0.1:1/snphost", PROGRAM), tmp_path)
    assert "--tools-dir" in info.value.hint


def test_tools_dir_for_offline_builds(tmp_path: Path) -> None:
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / "snphost").write_bytes(PROGRAM)
    pin = pin_for("http://127.0.0.1:1/snphost", PROGRAM)
    assert pins.fetch(pin, tmp_path / "cache", offline) == PROGRAM
    (offline / "snphost").write_bytes(b"tampered")
    with pytest.raises(SevimgError, match="does not match the pinned SHA-256"):
        pins.fetch(pin, tmp_path / "cache", offline)
    (offline / "snphost").unlink()
    with pytest.raises(SevimgError, match="is not in .* \\(expected a file named snphost\\)"):
        pins.fetch(pin, tmp_path / "cache", offline)


def test_bad_packages(tmp_path: Path) -> None:
    deb = build_deb(tmp_path)
    with pytest.raises(SevimgError, match="the package has no /usr/bin/snpguest"):
        pins.program(
            pin_for("http://x/a.deb", b"", format="deb", member="/usr/bin/snpguest"),
            deb.read_bytes(),
        )
    with pytest.raises(SevimgError, match="not a Debian package"):
        pins.program(
            pin_for("http://x/a.deb", b"", format="deb", member="/usr/bin/snphost"), b"plain bytes"
        )
