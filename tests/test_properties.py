"""Property tests: whatever is thrown at validate, render and new, the answer is a clean
error (or a correct success), never a traceback, and never a half-written tree."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sevimg.cli import main
from tests.conftest import IMAGES, examples

SETTINGS = settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
FEWER = settings(
    SETTINGS, max_examples=examples(30)
)  # narrow strategies: fewer examples cover them

KNOWN_SECTIONS = {"[Distribution]", "[Output]", "[Content]", "[Build]"}
SETTING = re.compile(r"^[A-Z][A-Za-z]+=(.*)$")
LIST_ITEM = re.compile(r"^        [A-Za-z0-9^(/*.\-][A-Za-z0-9+._/\\()|^*,=:-]*$")
HOSTILE = [
    "\n",
    "\r",
    "[Build]",
    "=",
    "%",
    "$(id)",
    "`id`",
    ";",
    "'",
    '"',
    "\\",
    " ",
    ",",
    "\t",
    "\x00",
    "../",
]
# Every control character a string could smuggle in, and the Unicode line breaks.
CONTROL_CHARS = [chr(c) for c in range(0x20)] + ["\x7f", "\x85", "\u2028", "\u2029"]
controls = st.text(st.sampled_from(CONTROL_CHARS), min_size=1, max_size=3)


def framed(base: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """`base` with control characters before, after, around or inside it."""

    def place(pre: str, value: str, post: str, where: str) -> str:
        if where == "lead":
            return pre + value
        if where == "trail":
            return value + post
        if where == "both":
            return pre + value + post
        middle = len(value) // 2
        return value[:middle] + pre + value[middle:]

    return st.builds(
        place, controls, base, controls, st.sampled_from(["lead", "trail", "both", "inside"])
    )


image_names = st.from_regex(r"(debian|fedora|ubuntu)-(1[4-9]|[a-z]{3,8})", fullmatch=True)


@contextmanager
def workspace() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="sevimg-prop-"))
    try:
        shutil.copytree(IMAGES, root / "images")
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def invoke(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--root", str(root), *args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(
            f"sevimg {' '.join(args)} crashed: {result.exception!r}"
        ) from result.exception
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert "internal error" not in output, output
    return result.exit_code, output


def assert_conf_well_formed(text: str) -> None:
    """Every line of a rendered mkosi.conf is one we meant to write."""
    for line in text.splitlines():
        if not line or line.startswith("# "):
            continue
        if line.startswith("["):
            assert line in KNOWN_SECTIONS, line
        elif line.startswith(" "):
            assert LIST_ITEM.match(line), repr(line)
        else:
            match = SETTING.match(line)
            assert match, repr(line)
            assert all(c not in match.group(1) for c in "\n\r%`$;'\"\\"), repr(line)


def check_render(root: Path) -> None:
    code, output = invoke(root, "render", "--all", "--mkosi-version", "25.3")
    build = root / "build"
    if code == 0:
        for conf in build.glob("*/mkosi.conf"):
            assert_conf_well_formed(conf.read_text())
    else:
        assert code == 1, output
        assert not build.exists(), "render failed but wrote output"
        assert re.search(r"^images/\S+\.yaml(:\d+:\d+)?: error: ", output, re.M), output


# --- arbitrary bytes as a release file -------------------------------------------------


@SETTINGS
@given(st.text(max_size=400))
def test_any_text_as_a_release_file(text: str) -> None:
    with workspace() as root:
        (root / "images" / "debian-13.yaml").write_text(
            text, encoding="utf-8", errors="surrogatepass"
        )
        code, output = invoke(root, "validate", "debian-13")
        assert code in (0, 1)
        if code == 1:
            assert "images/debian-13.yaml" in output
        check_render(root)


@SETTINGS
@given(st.binary(max_size=300))
def test_any_bytes_as_a_release_file(data: bytes) -> None:
    with workspace() as root:
        (root / "images" / "fedora-44.yaml").write_bytes(data)
        code, _ = invoke(root, "validate")
        assert code in (0, 1)
        check_render(root)


# --- structured mutations of a valid release --------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(HOSTILE).flatmap(
        lambda bad: st.builds(
            lambda a, b: a + bad + b, st.text("abz09-.", max_size=8), st.text("abz09-.", max_size=8)
        )
    ),
    framed(st.sampled_from(["trixie", "qemu-kvm", "/usr/bin/qemu", "6.12", "quiet", "13"])),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)

PATHS: list[tuple[str, ...]] = [
    ("release",),
    ("codename",),
    ("status",),
    ("roles",),
    ("archived",),
    ("versions", "kernel"),
    ("versions", "qemu"),
    ("host", "add_packages"),
    ("host", "remove_packages"),
    ("guest", "add_packages"),
    ("common", "add_kernel_command_line"),
    ("guest", "remove_kernel_command_line"),
    ("host", "qemu_binary"),
    ("host", "sev_firmware"),
    ("host", "ovmf"),
    ("guest", "kernel"),
    ("guest", "kernel_modules"),
    ("extra_repositories",),
    ("name",),
    ("schema_version",),
    ("unexpected",),
]


def set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(PATHS), values), min_size=1, max_size=3))
def test_mutated_release_files(mutations: list[tuple[tuple[str, ...], Any]]) -> None:
    with workspace() as root:
        path = root / "images" / "debian-13.yaml"
        data = yaml.safe_load(path.read_text())
        for where, value in mutations:
            set_path(data, where, value)
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
        code, output = invoke(root, "validate", "debian-13")
        assert code in (0, 1), output
        check_render(root)


@SETTINGS
@given(
    st.sampled_from(["add_packages", "add_kernel_command_line"]), st.text(min_size=1, max_size=40)
)
def test_strings_that_pass_the_schema_stay_on_one_line(key: str, value: str) -> None:
    with workspace() as root:
        path = root / "images" / "fedora-44.yaml"
        path.write_text(path.read_text() + yaml.safe_dump({"guest": {key: [value]}}))
        check_render(root)


# --- odd names for `new` ---------------------------------------------------------------


@SETTINGS
@given(
    st.one_of(st.text(max_size=40), framed(image_names)).filter(lambda s: not s.startswith("-")),
    st.booleans(),
)
def test_new_with_odd_names(name: str, prerelease: bool) -> None:
    with workspace() as root:
        before = sorted(p.name for p in (root / "images").iterdir())
        args = ["new", name, "--mkosi-version", "25.3"] + (["--prerelease"] if prerelease else [])
        code, output = invoke(root, *args)
        after = sorted(p.name for p in (root / "images").iterdir())
        if code == 0:
            assert after == sorted([*before, f"{name}.yaml"])
            assert re.fullmatch(
                r"[a-z][a-z0-9]{1,31}-(?:[0-9]{1,4}(?:\.[0-9]{1,4})?|[a-z][a-z0-9]{1,31})", name
            )
            for conf in (root / "build").glob("*/mkosi.conf"):
                assert_conf_well_formed(conf.read_text())
        else:
            assert code in (1, 2), output
            assert after == before
            assert not (root / "build").exists()


# --- control characters around otherwise good values ----------------------------------------

# (path, a good value, where the value goes: itself or inside a list)
GOOD_STRINGS: list[tuple[tuple[str, ...], str, bool]] = [
    (("codename",), "trixie", False),
    (("name",), "Debian 13", False),
    (("versions", "kernel"), "6.12.118", False),
    (("versions", "ovmf"), "2025.02", False),
    (("host", "add_packages"), "qemu-utils", True),
    (("host", "remove_packages"), "avahi-daemon", True),
    (("guest", "add_kernel_command_line"), "console=ttyS0", True),
    (("host", "qemu_binary"), "/usr/bin/qemu-system-x86_64", False),
    (("host", "sev_firmware"), "/usr/share/ovmf/OVMF.amdsev.fd", False),
    (("guest", "kernel"), "linux-image-amd64", False),
    (("guest", "kernel_modules", "include"), "vfio", True),
    (("common", "systemd_boot"), "systemd-boot-efi", False),
]


@FEWER
@given(st.sampled_from(GOOD_STRINGS), st.data())
def test_control_characters_never_pass(
    target: tuple[tuple[str, ...], str, bool], data: st.DataObject
) -> None:
    where, good, listed = target
    value = data.draw(framed(st.just(good)))
    with workspace() as root:
        path = root / "images" / "debian-13.yaml"
        loaded = yaml.safe_load(path.read_text())
        set_path(loaded, where, [value] if listed else value)
        path.write_text(yaml.safe_dump(loaded, allow_unicode=False))
        code, output = invoke(root, "validate", "debian-13")
        assert code == 1, output
        field = ".".join(where) + ("[0]" if listed else "")
        assert f"error: {field}: " in output and "control character" in output, output
        check_render(root)


@FEWER
@given(framed(image_names), st.sampled_from([[], ["--prerelease"], ["--codename", "duke"]]))
def test_new_refuses_names_with_control_characters(name: str, extra: list[str]) -> None:
    with workspace() as root:
        before = sorted(p.name for p in (root / "images").iterdir())
        code, output = invoke(root, "new", name, "--no-render", *extra)
        assert code == 1, output
        assert sorted(p.name for p in (root / "images").iterdir()) == before
        assert not (root / "build").exists()


@FEWER
@given(framed(st.sampled_from(["duke", "trixie", "forky", "stonking"])))
def test_new_refuses_codenames_with_control_characters(codename: str) -> None:
    with workspace() as root:
        before = sorted(p.name for p in (root / "images").iterdir())
        code, output = invoke(root, "new", "debian-14", "--codename", codename)
        assert code == 1, output
        assert "--codename" in output
        assert sorted(p.name for p in (root / "images").iterdir()) == before
        assert not (root / "build").exists()


@FEWER
@given(
    st.sampled_from(["show", "validate", "render", "build"]),
    framed(st.sampled_from(["debian-13", "fedora-44", "ubuntu-24.04"])),
)
def test_image_arguments_with_control_characters_are_refused(command: str, name: str) -> None:
    with workspace() as root:
        code, output = invoke(root, command, name)
        assert code == 1, output
        assert "Invalid value for" in output and "IMAGE" in output
        assert not (root / "build").exists() and not (root / "out").exists()
