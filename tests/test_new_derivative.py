"""A Debian or Ubuntu derivative is added by YAML alone: copy the closest files, edit them.

Done as a new user would, for Kali (not in the catalog): images/debian.yaml
and a Debian release file copied and edited into images/kali.yaml and
images/kali-rolling.yaml. Its suite, `kali-rolling`, is two words joined by a
hyphen, as real archives name suites; the catalog's patterns take it, and
still refuse anything that could inject into a generated file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sevimg.catalog.index import load_catalog
from sevimg.catalog.pipeline import check_catalog, specs_or_raise
from sevimg.catalog.scaffold import CODENAME
from sevimg.workspace import Workspace
from tests import mkosikit
from tests.conftest import REPO, CliFn

VERSIONS = ("25.3", "27.1")
RELEASE = """\
# Kali's rolling release: copied from images/debian-13.yaml and edited.
schema_version: 1
release: rolling
codename: kali-rolling
name: Kali GNU/Linux Rolling
status: supported
versions:
  kernel: "6.12.25"
  qemu: "10.0.2"
  ovmf: "2025.02"
"""


def edit(text: str, *pairs: tuple[str, str]) -> str:
    """`text` with each (old, new) replaced once; the old text must be there."""
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def add_kali(images: Path, release: str = RELEASE) -> None:
    """What a user writes: Debian's distribution file, copied and edited; a release file."""
    debian = (images / "debian.yaml").read_text()
    (images / "kali.yaml").write_text(
        edit(
            debian,
            ("# Debian: defaults", "# Kali (from images/debian.yaml): defaults"),
            ("distro: debian", "distro: kali"),
            ("name: Debian", "name: Kali Linux"),
            ("  distribution: debian", "  distribution: kali"),
            ("  prerelease_codename: testing\n", ""),
            ("  archive_mirror: http://archive.debian.org/debian\n", ""),
            ("  url: http://deb.debian.org/debian", "  url: http://http.kali.org/kali"),
        )
    )
    (images / "kali-rolling.yaml").write_text(release)


def test_a_derivative_with_a_hyphenated_suite_validates_and_renders(
    cli: CliFn, workspace: Path
) -> None:
    images = workspace / "images"
    assert not (images / "kali.yaml").exists()
    add_kali(images)
    run = cli("validate", "--strict", "kali-rolling")
    assert run.code == 0, run.output
    run = cli("render", "kali-rolling")
    assert run.code == 0, run.output
    for role in ("host", "guest"):
        conf = (workspace / "build" / f"{role}-kali-rolling" / "mkosi.conf").read_text()
        assert "\nDistribution=kali\nRelease=kali-rolling\n" in conf
        assert f"# Kali GNU/Linux Rolling, {role} image (supported)." in conf


@pytest.mark.parametrize(
    "codename",
    [
        "kali rolling",  # a space: a second word on Release=
        "kali-rolling\\n[Content]",  # a new mkosi section
        "kali=rolling",
        "kali--rolling",
        "-kali",
        "kali-",
        "Kali-Rolling",
        "kali_rolling",
        "k",
        "a" * 33,
        "kali%rolling",  # an mkosi specifier
    ],
)
def test_a_codename_that_could_inject_is_refused(
    cli: CliFn, workspace: Path, codename: str
) -> None:
    add_kali(
        workspace / "images", RELEASE.replace("codename: kali-rolling", f'codename: "{codename}"')
    )
    run = cli("validate", "kali-rolling")
    assert run.code == 1
    assert "images/kali-rolling.yaml:4:11: error: codename:" in run.output, run.output
    assert "Traceback" not in run.output


@pytest.mark.parametrize(
    "name", ["Kali\\nRelease=x", "Kali [x]", "Kali=x", "Kali $HOME", "Kali # x"]
)
def test_a_name_that_could_inject_is_refused(cli: CliFn, workspace: Path, name: str) -> None:
    add_kali(workspace / "images", RELEASE.replace("Kali GNU/Linux Rolling", f'"{name}"'))
    run = cli("validate", "kali-rolling")
    assert run.code == 1 and "images/kali-rolling.yaml:5:7: error: name:" in run.output, run.output


def test_sevimg_new_and_the_schema_agree_on_codenames() -> None:
    schema = json.loads((REPO / "schema/common.schema.json").read_text())["$defs"]["codename"]
    pattern = re.compile(schema["pattern"])
    samples = ["trixie", "kali-rolling", "kali-last-snapshot", "a1", "excalibur", "k", "a" * 32]
    samples += ["a" * 33, "kali--x", "-x", "x-", "Kali", "x y", "x_y", "x.y", "1x"]
    for sample in samples:
        in_schema = bool(pattern.search(sample)) and 2 <= len(sample) <= schema["maxLength"]
        assert bool(CODENAME.fullmatch(sample)) == in_schema, sample


def test_sevimg_new_takes_a_hyphenated_codename(cli: CliFn, workspace: Path) -> None:
    add_kali(workspace / "images")
    # Kali's point-release suite is kali-last-snapshot
    run = cli("new", "kali-2025.4", "--from", "kali-rolling", "--codename", "kali-last-snapshot")
    assert run.code == 0, run.output
    assert "codename: kali-last-snapshot" in (workspace / "images/kali-2025.4.yaml").read_text()
    assert cli("validate", "kali-2025.4").code == 0
    bad = cli("new", "kali-2026.1", "--from", "kali-rolling", "--codename", "kali rolling")
    assert bad.code != 0 and "--codename: 'kali rolling' is not a codename" in bad.output
    assert not (workspace / "images/kali-2026.1.yaml").exists()


@pytest.mark.mkosi
def test_mkosi_takes_the_derivative(cli: CliFn, workspace: Path, tmp_path: Path) -> None:
    add_kali(workspace / "images")
    ws = Workspace(workspace)
    (checked,), orphans = check_catalog(load_catalog(ws), ["kali-rolling"])
    specs = specs_or_raise([checked], orphans)
    for _version, _spec, image in mkosikit.summaries(ws, specs, VERSIONS, tmp_path):
        assert image["Distribution"] == "kali" and image["Release"] == "kali-rolling"
    for version in VERSIONS:
        run = cli("validate", "--mkosi", "--mkosi-version", version, "kali-rolling")
        assert run.code == 0, run.output
