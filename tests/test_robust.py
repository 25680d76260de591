"""Diagnostic commands survive the input they diagnose, and print it as it is.

Three classes, each fed many values: catalog values and paths that look like
Rich markup or emoji codes (printed literally by every command), broken
catalogs (each command reports them located and exits 1, never 70), and odd
output folders (they work, or are refused before anything is written).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import fakes
from tests.artifactkit import make_folder
from tests.conftest import CliFn, Run
from tests.fakegithub import TOKEN, FakeGitHub

# --- markup and emoji ------------------------------------------------------------------------

MARKUP = [
    "[/red]",
    "[/]",
    "[bold]b[/bold]",
    "[bold]",
    "[link=http://x]y",
    "[link=http://x]y[/link]",
    ":smile:",
    ":thumbs_up: :cross_mark:",
    "[red",
    "[[x]]",
    "[on red]x",
    "[@click]x[/]",
    "[#ff0000]x",
    "[/bold red on white]",
    "x[b]y[/b]z",
    "[blink]x[/blink]",
    "[reverse]",
]


def _set_status(workspace: Path, value: str) -> None:
    path = workspace / "images" / "debian-13.yaml"
    text = path.read_text().replace("status: supported", f"status: {json.dumps(value)}")
    path.write_text(text)


def _add_key(workspace: Path, value: str) -> None:
    path = workspace / "images" / "debian-13.yaml"
    path.write_text(path.read_text() + f"{json.dumps(value)}: 1\n")


PLACES: dict[str, Callable[[Path, str], None]] = {"status": _set_status, "unknown key": _add_key}

COMMANDS: list[tuple[str, ...]] = [
    ("list",),
    ("list", "--json"),
    ("show", "debian-13"),
    ("validate",),
    ("validate", "--json"),
    ("doctor", "--no-network"),
    ("doctor", "--no-network", "--json"),
    ("render", "debian-13"),
    ("build", "debian-13"),
]


def _literal(run: Run, value: str, as_json: bool) -> bool:
    """The value appears as written (JSON output escapes it the JSON way)."""
    if as_json:
        return json.dumps(value)[1:-1] in run.stdout or value in run.stderr
    return value in run.output


# One of each way Rich would misread a value: a closing tag (MarkupError), a
# style (swallowed), an emoji code (replaced), a link (hidden).
REPRESENTATIVES = ["[/]", "[bold]b[/bold]", ":smile:", "[link=http://x]y"]

# Every command for a bad status value; the text outputs also for an unknown key.
# Each with one representative of each class of markup; the whole table through
# the text and the JSON output of one command (the printing is shared).
PLACED = [
    pytest.param(value, place, command, id=f"{value}-{place}-{' '.join(command)}")
    for place in PLACES
    for command in COMMANDS
    if place == "status" or "--json" not in command
    for value in REPRESENTATIVES
] + [
    pytest.param(value, place, command, id=f"{value}-{place}-{' '.join(command)}")
    for place, command in (
        ("status", ("validate",)),
        ("status", ("validate", "--json")),
        ("unknown key", ("validate",)),
    )
    for value in MARKUP
    if value not in REPRESENTATIVES
]


@pytest.mark.parametrize(("value", "place", "command"), PLACED)
def test_markup_in_the_catalog_is_printed_literally(
    cli: CliFn, workspace: Path, fake_mkosi: Path, value: str, place: str, command: tuple[str, ...]
) -> None:
    PLACES[place](workspace, value)
    run = cli(*command)
    assert run.code == 1, run.output
    assert "internal error" not in run.output
    assert _literal(run, value, "--json" in command), run.output
    assert "debian-13.yaml" in run.output
    if "--json" in command:
        json.loads(run.stdout)
    assert not (workspace / "build").exists()


@pytest.mark.parametrize("value", [v for v in MARKUP if "/" not in v])
def test_markup_in_a_file_name_is_printed_literally(
    cli: CliFn, workspace: Path, fake_mkosi: Path, value: str
) -> None:
    (workspace / "images" / f"{value}.yaml").write_text("schema_version: 1\n")
    for command in (("list",), ("validate",), ("doctor", "--no-network")):
        run = cli(*command)
        assert run.code == 1, run.output
        assert f"images/{value}.yaml" in run.stderr, run.output
        assert "internal error" not in run.output


@pytest.mark.parametrize("value", MARKUP)
def test_markup_in_a_guest_path_is_printed_literally(
    cli: CliFn, tmp_path: Path, value: str
) -> None:
    folder = tmp_path / value.replace("/", "_")
    folder.mkdir()
    guest = folder / "guest.efi"
    guest.write_bytes(b"MZ")
    for flags in ((), ("--no-sev", "--accel", "tcg")):
        run = cli("run", str(guest), "--dry-run", *flags)
        assert run.code == 0, run.output
        assert shlex.quote(str(guest)) in run.stdout
    missing = cli("run", str(folder / "missing.efi"))
    assert missing.code == 1
    assert f"{folder / 'missing.efi'} does not exist" in missing.stderr


# --- broken catalogs -------------------------------------------------------------------------


def _edit(name: str, old: str, new: str) -> Callable[[Path], None]:
    def apply(images: Path) -> None:
        path = images / name
        text = path.read_text()
        assert old in text, (name, old)
        path.write_text(text.replace(old, new, 1))

    return apply


def _append(name: str, text: str) -> Callable[[Path], None]:
    def apply(images: Path) -> None:
        with (images / name).open("ab") as handle:
            handle.write(text.encode("utf-8", "surrogateescape"))  # lone \udcXX: a raw byte

    return apply


def _write(name: str, content: bytes) -> Callable[[Path], None]:
    def apply(images: Path) -> None:
        (images / name).write_bytes(content)

    return apply


def _replace_with_dir(name: str) -> Callable[[Path], None]:
    def apply(images: Path) -> None:
        path = images / name
        if path.exists():
            path.unlink()
        path.mkdir()

    return apply


def _remove(name: str) -> Callable[[Path], None]:
    def apply(images: Path) -> None:
        (images / name).unlink()

    return apply


# (id, breakage, the file that is reported, an image `show` must refuse, or None)
BROKEN: list[tuple[str, Callable[[Path], None], str, str | None]] = [
    ("bad yaml", _append("debian-13.yaml", "  bad: [\n"), "debian-13.yaml", "debian-13"),
    ("tab indent", _append("debian-13.yaml", "x:\n\t- y\n"), "debian-13.yaml", "debian-13"),
    ("unknown key", _append("debian-13.yaml", "packagez: []\n"), "debian-13.yaml", "debian-13"),
    (
        "status int",
        _edit("debian-13.yaml", "status: supported", "status: 5"),
        "debian-13.yaml",
        "debian-13",
    ),
    (
        "kernel list",
        _edit("debian-13.yaml", 'kernel: "6.12.118"', "kernel: [1]"),
        "debian-13.yaml",
        "debian-13",
    ),
    (
        "kernel map",
        _edit("debian-13.yaml", 'kernel: "6.12.118"', "kernel: {a: 1}"),
        "debian-13.yaml",
        "debian-13",
    ),
    (
        "kernel float",
        _edit("debian-13.yaml", 'kernel: "6.12.118"', "kernel: 6.12"),
        "debian-13.yaml",
        "debian-13",
    ),
    (
        "versions scalar",
        _edit("debian-13.yaml", "versions:\n", "versions: 5\nversionz:\n"),
        "debian-13.yaml",
        "debian-13",
    ),
    ("roles scalar", _append("debian-13.yaml", "roles: guest\n"), "debian-13.yaml", "debian-13"),
    (
        "roles junk",
        _append("debian-13.yaml", "roles: [1, {a: 2}, host]\n"),
        "debian-13.yaml",
        "debian-13",
    ),
    (
        "release list",
        _edit("debian-13.yaml", 'release: "13"', "release: [13]"),
        "debian-13.yaml",
        "debian-13",
    ),
    (
        "release mismatch",
        _edit("debian-13.yaml", 'release: "13"', 'release: "14"'),
        "debian-13.yaml",
        "debian-13",
    ),
    (
        "codename map",
        _edit("debian-13.yaml", "codename: trixie", "codename: {a: 1}"),
        "debian-13.yaml",
        "debian-13",
    ),
    ("top-level list", _write("debian-13.yaml", b"- 1\n- 2\n"), "debian-13.yaml", "debian-13"),
    ("top-level scalar", _write("debian-13.yaml", b"hello\n"), "debian-13.yaml", "debian-13"),
    ("empty", _write("debian-13.yaml", b""), "debian-13.yaml", "debian-13"),
    (
        "duplicate key",
        _append("debian-13.yaml", "status: eol\n"),
        "debian-13.yaml",
        "debian-13",
    ),
    (
        "alias",
        _append("debian-13.yaml", "common: &a {add_packages: [x]}\nguest: *a\n"),
        "debian-13.yaml",
        "debian-13",
    ),
    ("two documents", _append("debian-13.yaml", "---\na: 1\n"), "debian-13.yaml", "debian-13"),
    ("tag", _append("debian-13.yaml", "name: !!binary aGVsbG8=\n"), "debian-13.yaml", "debian-13"),
    (
        "not utf-8",
        _append("debian-13.yaml", "name: caf\udce9\n"),
        "debian-13.yaml",
        "debian-13",
    ),
    (
        "huge",
        _write("debian-13.yaml", b"# " + b"x" * 300_000 + b"\n"),
        "debian-13.yaml",
        "debian-13",
    ),
    ("folder named release", _replace_with_dir("debian-13.yaml"), "debian-13.yaml", "debian-13"),
    (
        "folder named new release",
        _replace_with_dir("debian-99.yaml"),
        "debian-99.yaml",
        "debian-99",
    ),
    ("no distro file", _remove("debian.yaml"), "debian-13.yaml", "debian-13"),
    ("release of unknown distro", _write("foo-1.yaml", b'release: "1"\n'), "foo-1.yaml", "foo-1"),
    (
        "distro mkosi scalar",
        _edit("debian.yaml", "mkosi:\n  distribution: debian\n", "mkosi: 5\nmkosiz:\n"),
        "debian.yaml",
        "debian-13",
    ),
    (
        "distro distribution list",
        _edit("debian.yaml", "  distribution: debian", "  distribution: [debian]"),
        "debian.yaml",
        "debian-13",
    ),
    (
        "distro repository scalar",
        _edit("debian.yaml", "repository:\n", "repository: 7\nrepositoryz:\n"),
        "debian.yaml",
        "debian-13",
    ),
    (
        "distro repository without url",
        _edit("debian.yaml", "  url: http://deb.debian.org/debian", "  uri: http://x"),
        "debian.yaml",
        "debian-13",
    ),
    ("distro empty", _write("debian.yaml", b""), "debian.yaml", "debian-13"),
    ("distro scalar", _write("debian.yaml", b"debian\n"), "debian.yaml", "debian-13"),
    ("distro bad yaml", _write("debian.yaml", b"a: [\n"), "debian.yaml", "debian-13"),
    ("bad file name", _write("Debian_13.yaml", b"x: 1\n"), "Debian_13.yaml", None),
    ("yml suffix", _write("debian-14.yml", b'release: "14"\n'), "debian-14.yml", None),
]


@pytest.mark.parametrize(
    ("breakage", "reported", "image"),
    [pytest.param(b, f, i, id=name) for name, b, f, i in BROKEN],
)
@pytest.mark.parametrize(
    "command",
    [("list",), ("list", "--json"), ("validate",), ("doctor", "--no-network"), ("show",)],
    ids=" ".join,
)
def test_broken_catalogs_are_reported_not_crashed_on(
    cli: CliFn,
    workspace: Path,
    fake_mkosi: Path,
    breakage: Callable[[Path], None],
    reported: str,
    image: str | None,
    command: tuple[str, ...],
) -> None:
    if command == ("show",):
        command = ("show", image or "debian-13")
    breakage(workspace / "images")
    run = cli(*command)
    assert "internal error" not in run.output and "Traceback" not in run.output
    if command[0] == "show" and image is None:
        assert run.code == 0, run.output  # the broken file is not this release's
        return
    assert run.code == 1, run.output
    # `show` names the release's own file (its problem says the distribution file is broken)
    files = {reported, f"{image}.yaml"} if command[0] == "show" else {reported}
    located = re.compile(rf"images/({'|'.join(map(re.escape, files))})(:\d+:\d+)?: error: ")
    assert located.search(run.stderr), run.output
    if command == ("list",) and image is not None:
        row = next(line for line in run.stdout.splitlines() if f" {image} " in line)
        assert "invalid" in row and "valid" not in row.replace("invalid", "")
        assert f"{image}: invalid: " in run.stdout
    if command == ("list", "--json") and image is not None:
        rows = {row["image"]: row for row in json.loads(run.stdout)}
        assert rows[image]["valid"] is False and rows[image]["problem"]
    if command[0] == "doctor":
        row = next(line for line in run.stdout.splitlines() if line.startswith("│ catalog "))
        assert "FAIL" in row


def test_doctor_and_list_agree_with_validate_on_a_clean_catalog(cli: CliFn) -> None:
    assert cli("validate").code == 0
    assert cli("list").code == 0
    doctor = cli("doctor", "--no-network", "--json")
    checks = {c["check"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["catalog"]["status"] == "OK"


def test_broken_catalog_in_a_real_process(sevimg_process: CliFn, workspace: Path) -> None:
    (workspace / "images" / "debian-13.yaml").write_text(
        'status: "[/red]"\nversions: {kernel: [1]}\n'
    )
    for command in (("list",), ("doctor", "--no-network"), ("validate",), ("show", "debian-13")):
        run = sevimg_process(*command)
        assert run.code == 1, run.output
        assert "Traceback" not in run.stderr and "internal error" not in run.stderr
        assert "[/red]" in run.output


# --- odd output folders ----------------------------------------------------------------------

ODD = [
    "out[x]",
    "out[/x]",
    "out [bold]x[/bold]",
    "with space",
    "ünïcødé-ø-日本",
    "-leading-dash",
    "--output",
    "[link=http://x]y",
    ":smile:",
    "a'quote",
    'a"dq',
    "semi;colon & amp",
    "$HOME*?",
    "comma,colon:",
]


@pytest.mark.parametrize("name", ODD)
def test_build_into_an_odd_folder(cli: CliFn, workspace: Path, fake_mkosi: Path, name: str) -> None:
    folder = workspace / name
    run = cli("build", "debian-13", "--role", "guest", "--without-tools", "-o", str(folder))
    assert run.code == 0, run.output
    assert (folder / "guest-debian-13.efi").is_file()
    assert (folder / "guest-debian-13.manifest.json").is_file()
    sums = (folder / "SHA256SUMS").read_text()
    assert "guest-debian-13.efi" in sums and "guest-debian-13.manifest.json" in sums
    assert f"artifacts in {folder}" in run.stdout
    assert f"(cd {shlex.quote(str(folder))} && sha256sum -c SHA256SUMS)" in run.stdout
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("name", ODD)
def test_render_into_an_odd_folder(cli: CliFn, workspace: Path, name: str) -> None:
    folder = workspace / name
    run = cli("render", "debian-13", "--mkosi-version", "25.3", "-o", str(folder))
    assert run.code == 0, run.output
    assert (folder / "guest-debian-13" / "mkosi.conf").is_file()
    assert (folder / "host-debian-13" / "mkosi.conf").is_file()
    assert "wrote " in run.stdout and "(guest-debian-13)" in run.stdout


@pytest.mark.parametrize("name", ["ca,che", "ca:che", "a,b:c", "new\nline"])
def test_a_cache_mkosi_would_misread_is_refused_before_anything_is_written(
    cli: CliFn,
    workspace: Path,
    fake_mkosi: Path,
    tmp_path: Path,
    name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = tmp_path / name
    monkeypatch.setenv("SEVIMG_CACHE", str(cache))
    run = cli("build", "debian-13", "--role", "guest", "--without-tools")
    assert run.code == 1, run.output
    assert "which mkosi reads as a separator" in run.stderr
    assert not (workspace / "out").exists() and not (cache / "build").exists()


def test_relative_odd_output_folder_in_a_real_process(
    sevimg_process: CliFn, workspace: Path, fake_mkosi: Path
) -> None:
    """`-o -x[/y]`, relative: click takes it as the option's value, the build lands there."""
    run = sevimg_process("build", "debian-13", "--role", "guest", "--without-tools", "-o", "-x[/y]")
    assert run.code == 0, run.output
    assert (workspace / "-x[" / "y]" / "guest-debian-13.efi").is_file()
    assert "Traceback" not in run.stderr


# --- publish: names that come from GitHub ----------------------------------------------------


@pytest.mark.parametrize("value", MARKUP)
def test_publish_prints_remote_asset_names_literally(
    cli: CliFn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A draft left by an interrupted run holds an asset with an odd name: the plan shows it as it is."""
    folder = make_folder(tmp_path / "out", ["debian-13"])
    with FakeGitHub(tokens={TOKEN: "write"}) as fake:
        draft = fake.add_release("devel", draft=True, prerelease=True)
        fake.add_asset(draft, f"{value}.efi", b"", "application/efi", state="starter")
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        monkeypatch.setenv("GITHUB_API_URL", fake.api_url)
        run = cli(
            "publish",
            "--repo",
            "acme/sev-images",
            "--tag",
            "devel",
            "--from",
            str(folder),
            "--dry-run",
        )
    assert run.code == 0, run.output
    assert f"remove {value}.efi (state starter" in run.stdout


# --- doctor: a broken mkosi ------------------------------------------------------------------

BROKEN_MKOSI = {
    "garbage": "#!/bin/sh\necho garbage\n",
    "empty": "#!/bin/sh\n",
    "name only": "#!/bin/sh\necho mkosi\n",
    "fails": "#!/bin/sh\necho oops >&2\nexit 3\n",
    "markup": "#!/bin/sh\necho '[/red] :smile:'\n",
    "binary": "#!/bin/sh\nprintf '\\377\\376\\000'\n",
    "not executable": None,
    "missing": "",
}


@pytest.mark.parametrize("kind", BROKEN_MKOSI)
def test_doctor_reports_a_broken_mkosi(
    cli: CliFn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    path = tmp_path / "mkosi"
    text = BROKEN_MKOSI[kind]
    if text is None:
        path.write_text("#!/bin/sh\necho mkosi 25.3\n")
    elif text:
        fakes.install(tmp_path, "mkosi", text)
    monkeypatch.setenv("SEVIMG_MKOSI", str(path))
    run = cli("doctor", "--no-network")
    assert run.code == 1, run.output
    assert "internal error" not in run.output
    row = next(line for line in run.stdout.splitlines() if line.startswith("│ mkosi "))
    assert "FAIL" in row


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("debian-14.yaml", "debian-14.yaml"),  # a loop onto itself
        ("debian-15.yaml", "debian-16.yaml"),  # dangling
        ("debian-17.yaml", "/proc/self/mem"),  # unreadable as text
    ],
)
@pytest.mark.parametrize("command", [("validate",), ("list",), ("show", "debian-13")])
def test_odd_symlinks_in_the_catalog_are_reported_not_crashed_on(
    cli: CliFn, workspace: Path, name: str, target: str, command: tuple[str, ...]
) -> None:
    (workspace / "images" / name).symlink_to(target)
    run = cli(*command)
    assert "Traceback" not in run.output and "internal error" not in run.output
    if command[0] != "show":
        assert run.code == 1
        assert f"images/{name}" in run.stderr
