"""`sevimg new` knows what the archive knows: the development series, released versions,
and the overrides of the newest release it carries over.

The archive is a real-format one on 127.0.0.1 (signed with a test key); the
`network` test asks Ubuntu's real `devel` suite.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sevimg.archive.development import Series, judge
from sevimg.catalog.index import load_catalog
from sevimg.catalog.load import load_file
from sevimg.imaging import keyrings
from sevimg.workspace import Workspace
from tests.conftest import REPO, CliFn
from tests.fakearchive import Served, Signer, write_suite
from tests.test_archive import archive_root, server, signer

__all__ = ["archive_root", "server", "signer"]  # fixtures, used by name

DEVEL = Series("devel", "tenacious", "27.04", "http://a/dists/devel/InRelease")
TESTING = Series("testing", "forky", "", "http://d/dists/testing/InRelease")
STABLE = Series("stable", "trixie", "13.8", "http://d/dists/stable/InRelease")


@pytest.mark.parametrize(
    ("release", "development", "released", "codename", "warning"),
    [
        ("27.04", DEVEL, None, "tenacious", ""),
        ("26.10", DEVEL, None, None, "26.10 is already released"),
        ("24.04", DEVEL, None, None, "already released"),
        ("27.10", DEVEL, None, None, "27.10 is not the development series yet"),
        ("14", TESTING, STABLE, "forky", ""),
        ("13", TESTING, STABLE, None, "13 is already released"),
        ("15", TESTING, STABLE, None, "not the development series yet"),
        ("forky", TESTING, STABLE, "forky", ""),
        ("duke", TESTING, STABLE, None, ""),
        ("14", TESTING, None, None, ""),  # no Version anywhere: nothing to say
    ],
)
def test_judge(
    release: str,
    development: Series,
    released: Series | None,
    codename: str | None,
    warning: str,
) -> None:
    verdict = judge(release, development, released)
    assert verdict.codename == codename
    assert (warning in verdict.warning) if warning else verdict.warning == ""
    if codename and release[0].isdigit():
        assert development.url in verdict.note


def test_new_carries_the_newest_release_by_default(cli: CliFn, workspace: Path) -> None:
    run = cli("new", "ubuntu-27.04", "--codename", "tenacious", "--no-render")
    assert run.code == 0, run.output
    data = load_file(workspace / "images/ubuntu-27.04.yaml", display="x").data
    assert data["host"]["ovmf"] == "ovmf-amdsev"  # 26.04's own override, not the metapackage
    assert "carried over from images/ubuntu-26.04.yaml: versions, host" in run.stdout
    assert "--bare for none" in run.stdout
    next_steps = run.stdout.split("Next:", 1)[1]
    assert "check what was carried over from images/ubuntu-26.04.yaml" in next_steps
    # Offline, the versions are 26.04's: the first step says so instead of "declare".
    assert "the `versions:` in images/ubuntu-27.04.yaml are ubuntu-26.04's" in next_steps
    assert "sevimg archive ubuntu-27.04 --update" in next_steps
    assert "declare `versions:`" not in next_steps


def test_bare_carries_nothing(cli: CliFn, workspace: Path) -> None:
    run = cli("new", "ubuntu-27.04", "--codename", "tenacious", "--bare", "--no-render")
    assert run.code == 0, run.output
    text = (workspace / "images/ubuntu-27.04.yaml").read_text()
    assert "host" not in text and "carried over" not in run.stdout
    assert "declare `versions:`" in run.stdout.split("Next:", 1)[1]


def test_from_chooses_another_release(cli: CliFn, workspace: Path) -> None:
    run = cli("new", "ubuntu-27.04", "--codename", "tenacious", "--from", "ubuntu-24.04")
    assert run.code == 0, run.output
    assert "carried over from images/ubuntu-24.04.yaml" in run.stdout
    assert cli("new", "ubuntu-27.10", "--bare", "--from", "ubuntu-24.04").code == 1


def test_the_newest_release_is_by_number_not_by_name(workspace: Path) -> None:
    from sevimg.catalog.scaffold import newest_release

    catalog = load_catalog(Workspace(workspace))
    assert newest_release(catalog, "ubuntu") == "ubuntu-26.04"
    assert newest_release(catalog, "debian") == "debian-13"  # not forky, not sid
    assert newest_release(catalog, "fedora") == "fedora-44"  # not rawhide
    assert newest_release(catalog, "fedora", "fedora-44") == "fedora-43"


def test_offline_ubuntu_prerelease_says_why_it_needs_a_codename(cli: CliFn) -> None:
    run = cli("new", "ubuntu-27.04", "--prerelease")
    assert run.code == 1
    assert "pass --codename" in run.stderr
    assert "offline: the archive was not asked for the development series" in run.stderr


def ubuntu_archive(workspace: Path, served: Served, signer: Signer) -> None:
    """images/ubuntu.yaml reads `served` (its devel suite names tenacious 27.04)."""
    family = workspace / "images/families/ubuntu.yaml"
    family.write_text(
        family.read_text().replace(
            "/usr/share/keyrings/ubuntu-archive-keyring.gpg", str(signer.keyring)
        )
    )
    distro = workspace / "images/ubuntu.yaml"
    distro.write_text(
        distro.read_text().replace("http://archive.ubuntu.com/ubuntu", f"{served.url}/ubuntu")
    )
    write_suite(
        served.root / "ubuntu",
        "devel",
        signer,
        {"base-files": "14"},
        codename="tenacious",
        fields="Version: 27.04\n",
        hashes=("SHA512",),
    )


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch, workspace: Path) -> None:
    monkeypatch.setenv("SEVIMG_CACHE", str(workspace / ".cache"))
    monkeypatch.delenv("SEVIMG_OFFLINE")


@pytest.mark.usefixtures("online")
def test_prerelease_codename_comes_from_the_archive(
    cli: CliFn, workspace: Path, server: Served, signer: Signer
) -> None:
    ubuntu_archive(workspace, server, signer)
    run = cli("new", "ubuntu-27.04", "--prerelease", "--no-render")
    assert run.code == 0, run.output
    data = load_file(workspace / "images/ubuntu-27.04.yaml", display="x").data
    assert (data["codename"], data["status"]) == ("tenacious", "prerelease")
    assert "codename tenacious: the development series is tenacious (27.04)" in run.stdout
    assert data["host"]["ovmf"] == "ovmf-amdsev"


@pytest.mark.usefixtures("online")
def test_prerelease_of_a_released_version_warns(
    cli: CliFn, workspace: Path, server: Served, signer: Signer
) -> None:
    ubuntu_archive(workspace, server, signer)
    run = cli("new", "ubuntu-26.10", "--prerelease", "--codename", "questing", "--no-render")
    assert "warning: 26.10 is already released (the development series is tenacious" in run.stderr
    assert "drop --prerelease" in run.stderr
    refused = cli("new", "ubuntu-25.11", "--prerelease", "--no-render")
    assert refused.code == 1 and "pass --codename" in refused.stderr


@pytest.mark.usefixtures("online")
def test_an_unreadable_archive_is_a_clear_error(
    cli: CliFn, workspace: Path, server: Served, signer: Signer
) -> None:
    ubuntu_archive(workspace, server, signer)
    shutil.rmtree(server.root / "ubuntu")
    run = cli("new", "ubuntu-27.04", "--prerelease", "--no-render")
    assert run.code == 1
    assert "the archive could not be asked for the development series" in run.stderr
    assert "dists/devel/InRelease" in run.stderr and "Traceback" not in run.output
    assert not (workspace / "images/ubuntu-27.04.yaml").exists()


@pytest.mark.network
@pytest.mark.usefixtures("online")
def test_ubuntu_development_series_from_the_real_archive(
    cli: CliFn, workspace: Path, tmp_path: Path
) -> None:
    ws = Workspace(REPO)
    needed = [n for n in keyrings.needed(load_catalog(ws)) if "ubuntu" in n.path]
    keyrings.install(needed, keyrings.load_keyring_pins(ws), tmp_path / "c", root=tmp_path / "r")
    family = workspace / "images/families/ubuntu.yaml"
    family.write_text(
        family.read_text().replace(needed[0].path, str(tmp_path / "r") + needed[0].path)
    )
    from sevimg.archive.development import read_series
    from sevimg.archive.fetch import Fetcher, Network

    fetcher = Fetcher(tmp_path / "f", Network(timeout=60))
    try:
        devel = read_series(
            "http://archive.ubuntu.com/ubuntu",
            "devel",
            str(tmp_path / "r") + needed[0].path,
            fetcher,
        )
    finally:
        fetcher.close()
    run = cli("new", f"ubuntu-{devel.version}", "--prerelease", "--no-render")
    assert run.code == 0, run.output
    data = load_file(workspace / f"images/ubuntu-{devel.version}.yaml", display="x").data
    assert data["codename"] == devel.codename
    assert "carried over from images/ubuntu-26.04.yaml" in run.stdout
