"""Adding a distribution is a YAML change: a new family and distribution, no Python.

Done as a new user would: copy the closest files (Fedora's), edit them into
Mageia (which the catalog does not have), and the release validates, renders,
and mkosi 25.3 and 27.1 accept the trees and resolve what the YAML says.
Package names below are Mageia's as far as this test needs them; nothing is
downloaded (mkosi only parses the trees).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sevimg.catalog.index import load_catalog
from sevimg.catalog.pipeline import check_catalog, specs_or_raise
from sevimg.workspace import Workspace
from tests import mkosikit
from tests.conftest import CliFn

pytestmark = pytest.mark.mkosi

VERSIONS = ("25.3", "27.1")


def edit(text: str, *pairs: tuple[str, str]) -> str:
    """`text` with each (old, new) replaced once; the old text must be there."""
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def add_mageia(images: Path) -> None:
    """What a user writes: fedora's family and distribution files, copied and edited."""
    family = (images / "families" / "fedora.yaml").read_text()
    (images / "families" / "mga.yaml").write_text(
        edit(
            family,
            ("family: fedora", "family: mga"),
            ("name: Fedora", "name: Mageia"),
            ("  udev: systemd-udev", "  udev: systemd"),
            ("  qemu: qemu-system-x86-core", "  qemu: qemu"),
            (
                "mirror_probe: https://mirrors.fedoraproject.org/metalink?repo=fedora-43&arch=x86_64",
                "mirror_probe: https://mirrors.mageia.org/api/mageia.10.x86_64.list",
            ),
            ("  kernel: kernel\n", "  kernel: kernel-desktop-latest\n"),
            ("  kernel: kernel\n", "  kernel: kernel-server-latest\n"),
        )
    )
    (images / "mageia.yaml").write_text(
        "# Mageia: images/families/mga.yaml with mkosi's mageia distribution.\n"
        "schema_version: 1\n"
        "distro: mageia\n"
        "name: Mageia\n"
        "family: mga\n"
        "mkosi:\n"
        "  distribution: mageia\n"
        "mirror_probe: https://mirrors.mageia.org/api/mageia.10.x86_64.list\n"
    )
    (images / "mageia-10.yaml").write_text(
        'schema_version: 1\nrelease: "10"\nstatus: supported\n'
        'versions:\n  kernel: "6.12.30"\n  qemu: "9.2.4"\n  ovmf: "2025.02"\n'
    )


def test_a_new_distribution_by_yaml_alone(cli: CliFn, workspace: Path, tmp_path: Path) -> None:
    images = workspace / "images"
    assert not (images / "mageia.yaml").exists() and not (images / "families" / "mga.yaml").exists()
    add_mageia(images)

    run = cli("validate", "--strict", "mageia-10")
    assert run.code == 0, run.output
    run = cli("render", "mageia-10")
    assert run.code == 0, run.output
    assert (workspace / "build" / "host-mageia-10" / "mkosi.conf").is_file()

    ws = Workspace(workspace)
    (checked,), orphans = check_catalog(load_catalog(ws), ["mageia-10"])
    specs = specs_or_raise([checked], orphans)
    host = next(s for s in specs if s.role == "host")
    # The family's payload packages and host defaults reached the spec.
    assert {"systemd", "systemd-journal-remote", "avahi", "jq", "qemu", "edk2-ovmf"} <= set(
        host.packages
    )
    assert host.component("kernel") == "kernel-server-latest"
    assert host.kernel_command_line[0] == "selinux=0"

    for _version, spec, image in mkosikit.summaries(ws, specs, VERSIONS, tmp_path):
        assert image["Distribution"] == "mageia" and image["Release"] == "10"
        assert image["Packages"] == sorted(spec.packages)
    for version in VERSIONS:
        # And sevimg's own judgement with this mkosi.
        run = cli("validate", "--mkosi", "--mkosi-version", version, "mageia-10")
        assert run.code == 0, run.output
