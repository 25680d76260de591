"""`exclude_packages:`: packages apt never installs, as catalog data.

The resolver gathers them from every layer and refuses contradictions; the
renderer writes an APT pin of -1 into the build's sandbox; and the real
apt-get, given that file, takes a dependency's other alternative.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sevimg.catalog.index import Catalog
from sevimg.render.trees import EXCLUDE_PREF, SANDBOX
from tests.conftest import CliFn
from tests.test_render import render
from tests.test_resolve import edit, spec_of

PREF = f"{SANDBOX}/{EXCLUDE_PREF}"


def test_layers_add_up_and_reach_their_roles(catalog: Catalog, workspace: Path) -> None:
    assert spec_of(catalog, "debian-13", "guest").excluded_packages == ()
    edit(workspace, "debian", replace=("\nhost:\n", "\nhost:\n  exclude_packages: [zfs-dkms]\n"))
    changed = edit(
        workspace,
        "debian-13",
        "common:\n  exclude_packages: [rust-coreutils]\n"
        "guest:\n  exclude_packages: [plymouth, rust-coreutils]\n",
    )
    assert spec_of(changed, "debian-13", "guest").excluded_packages == (
        "plymouth",
        "rust-coreutils",
    )
    assert spec_of(changed, "debian-13", "host").excluded_packages == (
        "rust-coreutils",
        "zfs-dkms",
    )


def test_the_pin_is_rendered_only_where_asked(catalog: Catalog) -> None:
    tree = render(catalog, "ubuntu-26.04", "guest")
    pref = tree.file(PREF).content.decode()
    assert "\nPackage: coreutils-from-uutils rust-coreutils\n" in pref
    assert "\nPin: version *\nPin-Priority: -1\n" in pref
    assert "SandboxTrees=sandbox" in tree.file("mkosi.conf").content.decode()
    plain = render(catalog, "debian-13", "guest")
    assert PREF not in {str(f.path) for f in plain.files}
    assert "SandboxTrees=" not in plain.file("mkosi.conf").content.decode()


@pytest.mark.parametrize(
    ("file", "text", "field", "says"),
    [
        # A package the image installs (the family's payload need) cannot be kept out too.
        ("debian-13", "guest:\n  exclude_packages: [udev]\n", "guest.exclude_packages[0]",
         "'udev' is one of the guest image's packages"),
        ("debian-13", "common:\n  exclude_packages: [systemd-boot-efi]\n",
         "common.exclude_packages[0]", "'systemd-boot-efi' is one of the"),
        ("fedora-43", "guest:\n  exclude_packages: [plymouth]\n", "guest.exclude_packages[0]",
         "does not use apt"),
        ("debian-13", "guest:\n  exclude_packages: ['rust coreutils']\n",
         "guest.exclude_packages[0]", ""),
        ("debian-13", "guest:\n  exclude_packages: rust-coreutils\n", "guest.exclude_packages",
         ""),
    ],
)  # fmt: skip
def test_contradictions_are_located_errors(
    cli: CliFn, workspace: Path, file: str, text: str, field: str, says: str
) -> None:
    path = workspace / "images" / f"{file}.yaml"
    path.write_text(path.read_text() + text)
    run = cli("validate", file)
    assert run.code == 1, run.output
    assert f"images/{file}.yaml:" in run.output and field in run.output
    assert says in run.output
    assert "Traceback" not in run.output


# A dependency with alternatives, as Ubuntu 26.04's coreutils has it.
ARCHIVE = """\
Package: coreutils
Version: 9.5
Architecture: amd64
Essential: yes
Pre-Depends: coreutils-from-uutils | coreutils-from-gnu

Package: coreutils-from-uutils
Version: 1
Architecture: all
Provides: coreutils-from
Conflicts: coreutils-from
Pre-Depends: rust-coreutils, gnu-coreutils

Package: coreutils-from-gnu
Version: 1
Architecture: all
Provides: coreutils-from
Conflicts: coreutils-from
Pre-Depends: gnu-coreutils

Package: rust-coreutils
Version: 1
Architecture: amd64

Package: gnu-coreutils
Version: 1
Architecture: amd64
"""


def _apt_installs(root: Path, pref: bytes | None) -> list[str]:
    """What the real apt-get would install for `coreutils` from ARCHIVE, with `pref` in force."""
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.fail("apt-get is not installed; this test needs the real apt", pytrace=False)
    repo, etc, state = root / "repo", root / "etc", root / "state"
    for folder in (repo, etc / "preferences.d", etc / "apt.conf.d", state, root / "cache"):
        folder.mkdir(parents=True)
    stanzas = [
        f"{s}\nFilename: ./{s.split()[1]}.deb\nSize: 1\nSHA256: {'0' * 64}"
        for s in ARCHIVE.strip().split("\n\n")
    ]
    (repo / "Packages").write_text("\n\n".join(stanzas) + "\n")
    (etc / "sources.list").write_text(f"deb [trusted=yes] file:{repo} ./\n")
    (root / "status").write_text("")
    if pref is not None:
        (etc / "preferences.d" / Path(EXCLUDE_PREF).name).write_bytes(pref)
    options = [
        f"-oDir::Etc={etc}",
        f"-oDir::Etc::sourcelist={etc / 'sources.list'}",
        f"-oDir::Etc::sourceparts={etc / 'sources.list.d'}",
        f"-oDir::Etc::parts={etc / 'apt.conf.d'}",
        f"-oDir::State={state}",
        f"-oDir::State::status={root / 'status'}",
        f"-oDir::Cache={root / 'cache'}",
        "-oAPT::Architecture=amd64",
        "-oDebug::NoLocking=1",
        "-oAPT::Sandbox::User=root",
    ]
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    subprocess.run([apt, *options, "-q", "update"], check=True, capture_output=True, env=env)
    proc = subprocess.run(
        [apt, *options, "-s", "install", "coreutils"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return sorted(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("Inst "))


def test_real_apt_takes_the_other_alternative(catalog: Catalog, tmp_path: Path) -> None:
    pref = render(catalog, "ubuntu-26.04", "host").file(PREF).content
    without = _apt_installs(tmp_path / "without", None)
    assert {"coreutils-from-uutils", "rust-coreutils"} <= set(without)
    assert _apt_installs(tmp_path / "with", pref) == [
        "coreutils",
        "coreutils-from-gnu",
        "gnu-coreutils",
    ]
