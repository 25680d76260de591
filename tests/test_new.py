"""`sevimg new`: a minimal, valid, renderable release file, or a clear refusal and no file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sevimg.catalog.load import load_file
from tests.conftest import CliFn


@pytest.mark.parametrize(
    ("args", "family_release"),
    [
        (["fedora-45"], "45"),
        (["fedora-45", "--prerelease"], "rawhide"),
        (["debian-14", "--codename", "duke"], "duke"),
        (["debian-14", "--prerelease"], "testing"),
        (["ubuntu-26.10", "--prerelease", "--codename", "stonking"], "stonking"),
        (["centos-11"], "11"),
        (["rocky-10.1"], "10.1"),
        (["alma-11", "--prerelease", "--codename", "kitten"], "kitten"),
    ],
)
def test_new_release_of_each_family_renders(
    cli: CliFn, workspace: Path, args: list[str], family_release: str
) -> None:
    image = args[0]
    run = cli("new", *args, "--bare", "--mkosi-version", "25.3")
    assert run.code == 0, run.output
    path = workspace / "images" / f"{image}.yaml"
    text = path.read_text()
    assert len(text.splitlines()) <= 7, text  # a few lines: everything else is inherited
    assert "packages" not in text and "kernel" not in text
    assert f"wrote images/{image}.yaml" in run.stdout and "Next:" in run.stdout
    for role in ("guest", "host"):
        conf = (workspace / "build" / f"{role}-{image}" / "mkosi.conf").read_text()
        assert f"Release={family_release}\n" in conf
        assert f"ImageId={role}-{image}\n" in conf
    assert cli("validate", image).code == 0
    prerelease = "--prerelease" in args
    assert load_file(path, display=image).data["status"] == (
        "prerelease" if prerelease else "supported"
    )


def test_new_from_carries_release_overrides(cli: CliFn, workspace: Path) -> None:
    run = cli("new", "debian-14", "--from", "debian-13", "--codename", "duke")
    assert run.code == 0, run.output
    data = load_file(workspace / "images" / "debian-14.yaml", display="x").data
    assert data["codename"] == "duke" and data["release"] == "14"
    assert data["extra_repositories"][0]["packages"] == ["ovmf-amdsev"]
    assert data["versions"]["kernel"] == "6.12.118"  # a string, quoted on write
    assert "status: supported" in (workspace / "images" / "debian-14.yaml").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["debian-13"], "images/debian-13.yaml already exists"),
        (["gentoo-2025"], "unknown distribution 'gentoo'"),
        (["fedora"], "'fedora' is not a release name"),
        (["Fedora-45"], "'Fedora-45' is not a release name"),
        (["fedora-45;rm"], "is not a release name"),
        (["fedora-../../etc"], "is not a release name"),
        (["-fedora-45"], "No such option"),
        (
            ["ubuntu-26.10", "--prerelease"],
            "Ubuntu's mkosi Release= is a codename: pass --codename",
        ),
        (["debian-15"], "Debian's mkosi Release= is a codename: pass --codename"),
        (
            ["fedora-45", "--from", "debian-13"],
            "--from debian-13 is a debian release; fedora-45 is fedora",
        ),
        (["fedora-45", "--from", "fedora-99"], "no image 'fedora-99'"),
        (["debian-14", "--codename", "Bad Name"], "codename: 'Bad Name' is not a codename"),
    ],
)
def test_new_refuses(cli: CliFn, workspace: Path, args: list[str], message: str) -> None:
    before = sorted(p.name for p in (workspace / "images").iterdir())
    run = cli("new", *args)
    assert run.code != 0
    assert message in run.output, run.output
    assert "Traceback" not in run.output
    assert sorted(p.name for p in (workspace / "images").iterdir()) == before
    assert not (workspace / "build").exists()


def test_unknown_distribution_says_how_to_add_one(cli: CliFn) -> None:
    run = cli("new", "gentoo-2025")
    assert "create images/gentoo.yaml" in run.stderr


def test_new_for_a_broken_distro_file_refuses(cli: CliFn, workspace: Path) -> None:
    (workspace / "images" / "fedora.yaml").write_text("schema_version: 1\n")
    run = cli("new", "fedora-45")
    assert run.code == 1 and "images/fedora.yaml has errors; fix them first" in run.stderr
    assert not (workspace / "images" / "fedora-45.yaml").exists()


# --- names on the command line: control characters and odd names, everywhere ---------------

NAME_VARIANTS: list[Callable[[str], str]] = [
    lambda n: n + "\n",
    lambda n: "\n" + n,
    lambda n: n[:3] + "\n" + n[3:],
    lambda n: n + "\r\n",
    lambda n: "\t" + n,
    lambda n: n + "\x00",
    lambda n: n + "\x1b[2J",
    lambda n: n + "\x7f",
    lambda n: n + "\x85",
    lambda n: n + "\u2028",
    lambda n: n + " ",
    lambda n: " " + n,
    lambda n: n + "/..",
    lambda n: "../" + n,
    lambda n: n.upper() + "X",
]
# (arguments with {} for the name, a good name, what the error names)
NAME_PLACES = [
    (["show", "{}"], "debian-13", "'IMAGE'"),
    (["validate", "{}"], "debian-13", "'[IMAGES]...'"),
    (["render", "{}"], "debian-13", "'[IMAGES]...'"),
    (["build", "{}", "--mkosi-version", "25.3"], "debian-13", "'[IMAGES]...'"),
    (["run", "{}", "--dry-run"], "debian-13", "'IMAGE'"),
    (["new", "{}", "--codename", "duke"], "debian-14", "is not a release name"),
    (["new", "debian-14", "--codename", "{}"], "duke", "--codename"),
    (["new", "debian-14", "--codename", "duke", "--from", "{}"], "debian-13", "'--from'"),
    (["render", "debian-13", "--mkosi-version", "{}"], "25.3", "'--mkosi-version'"),
]


def snapshot(workspace: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(workspace)): p.read_bytes() for p in workspace.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize(
    ("args", "good", "named"), NAME_PLACES, ids=[" ".join(a) for a, _, _ in NAME_PLACES]
)
def test_odd_names_are_refused_everywhere(
    cli: CliFn, workspace: Path, args: list[str], good: str, named: str
) -> None:
    before = snapshot(workspace)
    for variant in NAME_VARIANTS:
        name = variant(good)
        run = cli(*[a.replace("{}", name) for a in args])
        assert run.code == 1, (name, run.output)
        assert named in run.stderr, (name, run.stderr)
        assert "Traceback" not in run.output and "internal error" not in run.output
        assert snapshot(workspace) == before, name  # nothing written, nothing half-written
        assert not (workspace / "build").exists() and not (workspace / "out").exists()
        # what reaches the terminal shows the name escaped, on one line
        assert name not in run.output or name.isprintable()


def test_a_codename_yaml_would_misread_is_quoted(cli: CliFn, workspace: Path) -> None:
    for codename, image in [("yes", "debian-14"), ("null", "debian-15"), ("on", "debian-16")]:
        run = cli("new", image, "--codename", codename, "--no-render")
        assert run.code == 0, run.output
        data = load_file(workspace / "images" / f"{image}.yaml", display=image).data
        assert data["codename"] == codename
