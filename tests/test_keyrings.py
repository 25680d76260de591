"""`sevimg keyrings`: every apt family's keyring, a missing one from its pinned package.

Packages are real .deb files (dpkg-deb) served on 127.0.0.1; the `network`
test takes the keyrings sevimg.yaml really pins from Debian's and Ubuntu's
archives and checks that they verify those archives' signatures.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sevimg.archive import deb
from sevimg.archive.fetch import Fetcher, Network
from sevimg.catalog.index import load_catalog
from sevimg.imaging import keyrings
from sevimg.workspace import Workspace
from tests.conftest import REPO, CliFn
from tests.fakearchive import Served, serve

UBUNTU = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"
DEBIAN = "/usr/share/keyrings/debian-archive-keyring.gpg"


def make_deb(folder: Path, name: str, files: dict[str, bytes], links: dict[str, str]) -> bytes:
    """A real Debian package holding `files` and symbolic links `links` (path → target)."""
    root = folder / name
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n"
    )
    for path, content in files.items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_bytes(content)
    for path, target in links.items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).symlink_to(target)
    out = folder / f"{name}_1_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
    )
    return out.read_bytes()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "archive"
    root.mkdir()
    yield from serve(root)


@pytest.fixture
def packages(served: Served, tmp_path: Path) -> dict[str, bytes]:
    """ubuntu-keyring (the file itself) and debian-archive-keyring (.gpg → .pgp, as 2025.1)."""
    work = tmp_path / "debs"
    found = {
        "ubuntu-keyring": make_deb(work, "ubuntu-keyring", {UBUNTU: b"ubuntu keys"}, {}),
        "debian-archive-keyring": make_deb(
            work,
            "debian-archive-keyring",
            {DEBIAN.replace(".gpg", ".pgp"): b"debian keys"},
            {DEBIAN: "debian-archive-keyring.pgp"},
        ),
    }
    for name, data in found.items():
        (served.root / f"{name}_1_all.deb").write_bytes(data)
    return found


def pin_file(
    workspace: Path, served: Served, packages: dict[str, bytes], *, wrong: str = "", drop: str = ""
) -> None:
    members = {
        "ubuntu-keyring": (UBUNTU, UBUNTU),
        "debian-archive-keyring": (DEBIAN, DEBIAN.replace(".gpg", ".pgp")),
    }
    text = "schema_version: 1\nkeyrings:\n"
    for name, data in packages.items():
        if name == drop:
            continue
        digest = hashlib.sha256(b"not it" if name == wrong else data).hexdigest()
        path, member = members[name]
        text += (
            f"  {name}:\n    version: '1'\n    url: {served.url}/{name}_1_all.deb\n"
            f"    sha256: {digest}\n    keyrings:\n      {path}: {member}\n"
        )
    (workspace / "sevimg.yaml").write_text(text)


def test_every_apt_family_needs_its_keyring(workspace: Path) -> None:
    wanted = keyrings.needed(load_catalog(Workspace(workspace)))
    assert {n.path: n.needed_by for n in wanted} == {
        DEBIAN: ("images/families/debian.yaml",),
        UBUNTU: ("images/families/ubuntu.yaml",),
    }


def test_install_takes_the_pinned_files(
    cli: CliFn, workspace: Path, served: Served, packages: dict[str, bytes], tmp_path: Path
) -> None:
    pin_file(workspace, served, packages)
    root = tmp_path / "root"
    before = cli("keyrings", "--root", str(root))
    assert before.code == 1 and "missing" in before.output
    run = cli("keyrings", "--install", "--root", str(root))
    assert run.code == 0, run.output
    assert (root / UBUNTU.lstrip("/")).read_bytes() == b"ubuntu keys"
    # The symbolic link is followed to the file the pin names.
    assert (root / DEBIAN.lstrip("/")).read_bytes() == b"debian keys"
    assert "checked" in run.output and "present" in run.output
    again = cli("keyrings", "--install", "--root", str(root))
    assert again.code == 0 and "installed" not in again.output


def test_a_package_whose_hash_differs_is_not_used(
    cli: CliFn, workspace: Path, served: Served, packages: dict[str, bytes], tmp_path: Path
) -> None:
    pin_file(workspace, served, packages, wrong="ubuntu-keyring")
    root = tmp_path / "root"
    run = cli("keyrings", "--install", "--root", str(root))
    assert run.code == 1
    assert "does not match the pinned SHA-256 of ubuntu-keyring" in run.output
    assert not (root / UBUNTU.lstrip("/")).exists()


def test_a_keyring_nobody_pins_names_who_needs_it(
    cli: CliFn, workspace: Path, served: Served, packages: dict[str, bytes], tmp_path: Path
) -> None:
    pin_file(workspace, served, packages, drop="ubuntu-keyring")
    run = cli("keyrings", "--install", "--root", str(tmp_path / "root"))
    assert run.code == 1
    assert "images/families/ubuntu.yaml" in run.output
    assert "pins no package that carries it" in run.output


def test_a_bad_pin_is_a_located_error(cli: CliFn, workspace: Path) -> None:
    (workspace / "sevimg.yaml").write_text(
        "schema_version: 1\nkeyrings:\n  ubuntu-keyring:\n    version: '1'\n"
        "    url: http://x/a.deb\n    sha256: nothex\n    keyrings: {/a: /b}\n"
    )
    run = cli("keyrings")
    assert run.code == 1
    assert "sevimg.yaml:6" in run.output and "sha256" in run.output


@pytest.mark.network
def test_the_pinned_keyrings_verify_the_real_archives(tmp_path: Path) -> None:
    ws = Workspace(REPO)
    pinned = keyrings.load_keyring_pins(ws)
    wanted = keyrings.needed(load_catalog(ws))
    root = tmp_path / "root"
    done = keyrings.install(wanted, pinned, tmp_path / "cache", root=root)
    assert {need.path for need, _ in done} == {DEBIAN, UBUNTU}
    fetcher = Fetcher(tmp_path / "archive", Network(timeout=60))
    try:
        for url, keyring in (
            ("http://archive.ubuntu.com/ubuntu/dists/devel/InRelease", UBUNTU),
            ("http://deb.debian.org/debian/dists/trixie/InRelease", DEBIAN),
        ):
            text = deb.verify_inrelease(fetcher.get(url), str(root / keyring.lstrip("/")), url)
            assert deb.parse_release(text, url).files
    finally:
        fetcher.close()
    assert shutil.which("gpgv")


def test_doctor_checks_the_keyrings(
    cli: CliFn, workspace: Path, served: Served, packages: dict[str, bytes], tmp_path: Path
) -> None:
    pin_file(workspace, served, packages)
    root = tmp_path / "root"
    root.mkdir()

    def keyring_check() -> dict[str, str]:
        run = cli("doctor", "--no-network", "--json", "--sysroot", str(root))
        return next(c for c in json.loads(run.stdout)["checks"] if c["check"] == "keyrings")

    missing = keyring_check()
    assert missing["status"] == "WARN"
    assert f"{UBUNTU} (images/families/ubuntu.yaml; pinned: ubuntu-keyring 1)" in missing["detail"]
    assert "sevimg keyrings --install" in missing["fix"]
    assert cli("keyrings", "--install", "--root", str(root)).code == 0
    assert keyring_check()["status"] == "OK"
