"""No distribution, family or release is named in the Python packages: they are catalog data.

What a distribution needs (package names, keyrings, pockets, firmware and
QEMU paths, mirrors) lives in images/ (families/*.yaml and <distro>.yaml), so
that adding one is a YAML change. This test reads every string literal and
name in src/ and fails on any distribution, family or release name that the
allow-list below does not justify. Prose may give examples: comments,
docstrings and messages that say "e.g." are not read.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import tokenize
from pathlib import Path

import pytest

from tests.conftest import REPO

SOURCES = sorted(p for pkg in ("sevimg", "sevimg_cert") for p in (REPO / "src" / pkg).rglob("*.py"))

# Distribution, family and release names (and codenames) a fact could carry.
NAMES = (
    "debian", "ubuntu", "fedora", "centos", "rocky", "alma", "almalinux", "rhel",
    "opensuse", "suse", "sles", "leap", "tumbleweed", "mageia", "kali",
    "trixie", "forky", "sid", "bookworm", "bullseye", "noble", "jammy", "plucky",
    "oracular", "questing", "resolute", "rawhide",
)  # fmt: skip
# Not scanned: "arch" and "stream" (kernel paths arch/x86/..., byte streams).
PATTERN = re.compile(r"(?<![a-z0-9])(" + "|".join(NAMES) + r")(?![a-z])", re.IGNORECASE)

# Python 3.12 splits f-strings into parts; 3.11 keeps each one a STRING token.
KINDS = {tokenize.STRING, tokenize.NAME, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}

# (file below src/, the literal's text) → why it may name a distribution.
ALLOWED: dict[tuple[str, str], str] = {
    # python-debian's import name: the deb822 reader, not a distribution fact.
    ("sevimg/archive/deb.py", "debian"): "python-debian's module name (deb822 indexes)",
    ("sevimg/archive/read.py", "debian"): "python-debian's module name (version comparison)",
    ("sevimg/archive/read.py", "debian_support"): "python-debian's module name",
    ("sevimg/archive/development.py", "debian"): "python-debian's module name (deb822 Release)",
    ("sevimg/archive/deb.py", "debian_support"): "python-debian's module name (version syntax)",
    ("sevimg/imaging/builder.py", "debian"): "mkosi's default tools tree (ToolsTreeDistribution=)",
    ("sevimg/imaging/builder.py", "trixie"): "mkosi's default tools tree (ToolsTreeRelease=)",
    # The build machine, not the catalog: which host package manager can
    # bootstrap mkosi's tools tree, and the CI runner's image.
    ("sevimg/machine/doctor.py", "Debian/Ubuntu"): "the build machine's apt-get",
    ("sevimg/machine/doctor.py", "Fedora/EL"): "the build machine's dnf",
    ("sevimg/machine/doctor.py", "Fedora"): "the build machine's dnf5",
    ("sevimg/machine/doctor.py", "openSUSE"): "the build machine's zypper",
    (
        "sevimg/machine/doctor.py",
        "build on a Debian, Ubuntu or Fedora machine, or pass a prebuilt --tools-tree",
    ): "advice about the build machine",
    ("sevimg/release/ci.py", "ubuntu-24.04"): "the GitHub Actions runner image",
    # `sevimg new --help`: which distributions take codenames and pre-releases
    # is data (release_is_codename, prerelease_codename); the help gives examples.
    ("sevimg/cli/new.py", "The codename mkosi's Release= takes (Debian, Ubuntu)."): "help",
    (
        "sevimg/cli/new.py",
        "the codename is read from the archive (Ubuntu's devel, Debian's testing) or the ",
    ): "help text: examples of development series",
    (
        "sevimg/cli/new.py",
        "catalog (Fedora rawhide); warns when the release is out already.",
    ): "help text: examples of development series",
    # The lazy group's command table repeats `run`'s one-line help, an example image.
    (
        "sevimg/cli/group.py",
        "Launch the guest UKI of IMAGE (debian-13, or a path to a .efi) as an SEV-SNP guest.",
    ): "help text",
    # The .deb format (an ar archive) of pinned tools, not a distribution.
    (
        "sevimg/imaging/unpack.py",
        'f"{what}: not a Debian package (no ar archive header)"',
    ): "format",
}


def _docstring_lines(tree: ast.AST) -> set[int]:
    """Line numbers of module, class and function docstrings (prose, not facts)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                doc = body[0].value
                lines.update(range(doc.lineno, (doc.end_lineno or doc.lineno) + 1))
    return lines


def offenders(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the string literals and names in `path` that name a distribution."""
    source = path.read_text(encoding="utf-8")
    docs = _docstring_lines(ast.parse(source))
    found: list[tuple[int, str]] = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in KINDS:
            continue
        if tok.start[0] in docs:
            continue
        text = tok.string
        if tok.type == tokenize.STRING:
            with contextlib.suppress(ValueError, SyntaxError):  # f-strings stay as written
                text = str(ast.literal_eval(text))
        if "e.g." in text:  # an example in a message, as in a docstring
            continue
        if PATTERN.search(text):
            found.append((tok.start[0], text))
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO / "src")))
def test_no_distribution_names_in_python(path: Path) -> None:
    rel = str(path.relative_to(REPO / "src"))
    bad = [(line, text) for line, text in offenders(path) if (rel, text) not in ALLOWED]
    assert not bad, "\n".join(
        f"src/{rel}:{line}: {text!r} names a distribution; move the fact to images/ "
        "(families/*.yaml or <distro>.yaml), or justify it in ALLOWED"
        for line, text in bad
    )


def test_every_allowed_entry_is_still_used() -> None:
    """An allow-list entry whose literal is gone must go too, or the list only grows."""
    used = {
        (str(p.relative_to(REPO / "src")), text) for p in SOURCES for _line, text in offenders(p)
    }
    assert set(ALLOWED) <= used, sorted(set(ALLOWED) - used)


@pytest.mark.parametrize(
    "snippet",
    [
        'KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"\n',
        'x = {"sid", "unstable"}\n',
        "def f():\n    return 'noble'\n",
        "FEDORA_MIRROR = 1\n",
        'x = f"{a}-Rawhide"\n',
        'x = ("opensuse", "tumbleweed")\n',
        "x = 'AlmaLinux'\n",
        "def f():\n    '''Docstring.'''\n    return 'leap'\n",
    ],
)
def test_the_check_sees_a_distribution_name(snippet: str, tmp_path: Path) -> None:
    """The scan catches names in literals, identifiers and f-strings (table of cases)."""
    path = tmp_path / "mod.py"
    path.write_text(snippet)
    assert offenders(path)


@pytest.mark.parametrize(
    "snippet",
    [
        "# Debian keeps its security archive apart\nx = 1\n",
        "def f():\n    '''Build host-debian-13 from images/debian-13.yaml.'''\n",
        'x = "modules.alias"\n',  # 'alias' is not 'alma'
        'x = "search"\n',  # 'arch' inside a word is not the distribution
        'x = "consider"\n',  # 'sid' inside a word
    ],
)
def test_prose_and_lookalikes_pass(snippet: str, tmp_path: Path) -> None:
    path = tmp_path / "mod.py"
    path.write_text(snippet)
    assert offenders(path) == []
