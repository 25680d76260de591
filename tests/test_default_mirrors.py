"""With no sevimg.local.yaml every apt build (tools tree included) gets sources sevimg wrote.

The distribution file's `repository.url` is the default mirror; sevimg.local.yaml's
`mirrors:` replaces it. No debug suite appears anywhere, and an error from a
repository names the mirror used and the setting that changes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sevimg import settings
from sevimg.catalog.index import families_by_distribution, load_catalog
from sevimg.imaging import mkosilog, sandbox
from sevimg.problems import SevimgError
from sevimg.workspace import Workspace
from tests.conftest import CliFn
from tests.fakearchive import Served, serve


def local_with_defaults(workspace: Path) -> settings.LocalConfig:
    catalog = load_catalog(Workspace(workspace))
    return settings.with_default_mirrors(settings.load_local(Workspace(workspace)), catalog)


def test_every_apt_distribution_has_a_default_mirror(workspace: Path) -> None:
    local = local_with_defaults(workspace)
    assert local.source is None  # no sevimg.local.yaml
    assert local.apt_mirrors["debian"].url == "http://deb.debian.org/debian"
    assert local.apt_mirrors["debian"].origin == "images/debian.yaml repository.url"
    assert local.apt_mirrors["ubuntu"].url == "http://archive.ubuntu.com/ubuntu"
    assert "fedora" not in local.apt_mirrors  # rpm: mkosi's own repositories


def test_the_tools_tree_gets_written_sources_without_debug_suites(
    workspace: Path, tmp_path: Path
) -> None:
    local = local_with_defaults(workspace)
    families = families_by_distribution(load_catalog(Workspace(workspace)))
    args = sandbox.mirror_args(local, families["debian"], tmp_path, "debian", "trixie", ())
    assert args == [f"--sandbox-tree={tmp_path}"]
    text = (tmp_path / sandbox.SOURCES).read_text()
    assert "Suites: trixie trixie-updates\n" in text
    assert "URIs: http://deb.debian.org/debian-security\nSuites: trixie-security\n" in text
    assert "debug" not in text.replace("without debug suites", "")
    assert "images/debian.yaml repository.url" in text and "sevimg.local.yaml" in text
    assert not (tmp_path / sandbox.APT_AUTH).exists()


def test_a_local_mirror_replaces_the_default(workspace: Path, tmp_path: Path) -> None:
    (workspace / "sevimg.local.yaml").write_text(
        "schema_version: 1\nmirrors:\n  ubuntu:\n    url: http://mirror.example/ubuntu\n"
    )
    local = local_with_defaults(workspace)
    assert local.apt_mirrors["ubuntu"].url == "http://mirror.example/ubuntu"
    assert local.apt_mirrors["ubuntu"].origin == "sevimg.local.yaml"
    assert local.apt_mirrors["debian"].origin == "images/debian.yaml repository.url"
    label = sandbox.mirror_label(local, "ubuntu")
    assert label == "http://mirror.example/ubuntu from sevimg.local.yaml"


def test_a_failing_repository_names_the_setting(tmp_path: Path) -> None:
    script = tmp_path / "fake-apt"
    script.write_text(
        "#!/bin/sh\necho 'Err:1 http://deb.debian.org/debian-debug trixie-debug InRelease'\n"
        "echo '  400  Bad Request [IP: 127.0.0.1 80]'\nexit 100\n"
    )
    script.chmod(0o755)
    try:
        mkosilog.run(
            script,
            [],
            log=tmp_path / "x.log",
            cwd=tmp_path,
            what="the tools tree",
            proxy=None,
            stage=lambda _line: None,
            mirrors="http://deb.debian.org/debian from images/debian.yaml repository.url",
        )
    except SevimgError as exc:
        assert "exit 100" in exc.message
        assert "`mirrors:` in sevimg.local.yaml" in exc.hint
        assert "from images/debian.yaml repository.url" in exc.hint
        assert "trixie-debug InRelease" in exc.hint
    else:
        raise AssertionError("a failing mkosi must raise")


def test_an_unrelated_failure_has_no_mirror_hint() -> None:
    assert mkosilog.mirror_failure("E: Unable to locate package foo\n") is None
    assert mkosilog.mirror_failure("Setting up foo (1.0) ...\n") is None


def test_doctor_says_which_mirrors_builds_use(cli: CliFn) -> None:
    run = cli("doctor", "--no-network", "--json")
    checks = {c["check"]: c for c in json.loads(run.stdout)["checks"]}
    detail = checks["sources"]["detail"]
    assert "debian http://deb.debian.org/debian (images/debian.yaml repository.url)" in detail
    assert "no debug suites" in detail
    assert "sevimg.local.yaml" in checks["sources"]["fix"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "served"
    root.mkdir()
    yield from serve(root)


# doctor probes every release of the catalog; only Ubuntu's mirrors are pointed at loopback.
@pytest.mark.network
def test_doctor_probes_each_release_and_the_archive_mirror_of_an_eol_one(
    cli: CliFn, workspace: Path, served: Served
) -> None:
    """ubuntu-25.04 is archived: its indexes come from the archive mirror, which is probed."""
    distro = workspace / "images/ubuntu.yaml"
    distro.write_text(
        distro.read_text()
        .replace("http://old-releases.ubuntu.com/ubuntu", f"{served.url}/old")
        .replace("http://archive.ubuntu.com/ubuntu", f"{served.url}/ubuntu")
    )
    run = cli("doctor", "--json", "--timeout", "2")
    checks = {c["check"]: c for c in json.loads(run.stdout)["checks"]}
    paths = {path for path, _, _ in served.requests}
    assert "/old/dists/plucky/InRelease" in paths  # 25.04's archive mirror
    assert "/old/dists/plucky-security/InRelease" in paths
    assert "/ubuntu/dists/resolute-updates/InRelease" in paths  # 26.04's own mirror
    assert "/ubuntu/dists/plucky/InRelease" not in paths
    row = checks["mirror ubuntu-25.04 (plucky)"]
    assert row["status"] == "OK" and "127.0.0.1" in row["detail"]


def test_the_tools_tree_carries_every_apt_familys_keyring(workspace: Path) -> None:
    """apt reads Signed-By= inside the tools tree: its family installs each keyring package."""
    from sevimg.imaging import keyrings
    from tests.conftest import REPO

    catalog = load_catalog(Workspace(workspace))
    tools_family = families_by_distribution(catalog)["debian"]  # the default tools tree
    pinned = keyrings.load_keyring_pins(Workspace(REPO))
    for need in keyrings.needed(catalog):
        pin = keyrings.source_of(need.path, pinned)
        assert pin is not None, need
        assert pin.package in tools_family.apt_tools_tree_packages, need
