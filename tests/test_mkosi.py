"""mkosi is the judge: every tree of the catalog, parsed by the real mkosi 25.3 and 27.1.

Assertions are on what mkosi resolved (`mkosi --json summary`), not on our
own text. The mkosi versions are installed by `tools/install-mkosi` (the
`tests` nox session does that); a missing one fails these tests loudly.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sevimg.atomic import write_trees
from sevimg.catalog.index import load_catalog
from sevimg.catalog.pipeline import check_catalog, specs_or_raise
from sevimg.catalog.spec import ImageSpec
from sevimg.imaging import judge, mkosi
from sevimg.problems import SevimgError
from sevimg.render.trees import Renderer
from sevimg.workspace import Workspace
from tests.conftest import REPO, CliFn

pytestmark = pytest.mark.mkosi

WS = Workspace(REPO)
SPECS: list[ImageSpec] = specs_or_raise(*check_catalog(load_catalog(WS)))
IDS = [s.image_id for s in SPECS]
# (tree rendered for, mkosi that parses it)
PAIRS = [("25.3", "25.3"), ("25.3", "27.1"), ("27.1", "27.1")]


@dataclass(frozen=True)
class Parsed:
    tree: Path
    returncode: int
    stderr: str
    image: dict[str, Any]


def require_mkosi(version: str) -> mkosi.Mkosi:
    found = mkosi.find(WS.cache_dir, version)
    if found is None:
        pytest.fail(
            f"mkosi {version} is not installed: run tools/install-mkosi {version} (nox -s tests does)"
        )
    return found


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str], Parsed]:
    """Render every spec for each target and parse each tree with each mkosi, once."""
    jobs: list[tuple[str, str, str, Path, mkosi.Mkosi]] = []
    for target, parser in PAIRS:
        out = tmp_path_factory.mktemp(f"trees-{target}")
        renderer = Renderer(WS.search_path("templates"), target)
        write_trees([renderer.render(s) for s in SPECS], out)
        tool = require_mkosi(parser)
        jobs += [(target, parser, s.image_id, out / s.image_id, tool) for s in SPECS]

    def run(job: tuple[str, str, str, Path, mkosi.Mkosi]) -> tuple[tuple[str, str, str], Parsed]:
        target, parser, image_id, tree, tool = job
        proc = tool.run(["-C", str(tree), "--json", "summary"], cwd=tree)
        image = json.loads(proc.stdout)["Images"][-1] if proc.returncode == 0 else {}
        return (target, parser, image_id), Parsed(tree, proc.returncode, proc.stderr, image)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(run, jobs))


@pytest.mark.parametrize(("target", "parser"), PAIRS)
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_mkosi_resolves_what_the_yaml_means(
    parsed: dict[tuple[str, str, str], Parsed], spec: ImageSpec, target: str, parser: str
) -> None:
    result = parsed[(target, parser, spec.image_id)]
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"mkosi {parser} warned: {result.stderr}"
    image = result.image
    assert image["Distribution"] == spec.mkosi_distribution
    assert image["Release"] == spec.mkosi_release
    assert image["Format"] == "uki"
    assert image["ImageId"] == spec.image_id == f"{spec.role}-{spec.image}"
    assert image["Packages"] == sorted(spec.packages)
    assert image["KernelCommandLine"] == list(spec.kernel_command_line)
    for token in image["KernelCommandLine"]:
        assert '"' not in token and " " not in token
    sources = [(t["Source"], t["Target"]) for t in image["ExtraTrees"]]
    assert (str(result.tree / "extra"), None) in sources
    if spec.role == "host":
        assert (str(result.tree / "guest-image"), "/usr/local/lib/guest-image") in sources
    assert image["Environment"].get("VERSION") == (
        spec.release if spec.release != spec.mkosi_release else None
    )
    assert image["Autologin"] is False and image["RootPassword"] is None
    assert judge.compare_summary(image, result.tree, spec) == []


@pytest.mark.parametrize("spec", [s for s in SPECS if s.role == "guest"], ids=lambda s: s.image_id)
def test_guest_modules_as_mkosi_sees_them(
    parsed: dict[tuple[str, str, str], Parsed], spec: ImageSpec
) -> None:
    old = parsed[("25.3", "25.3", spec.image_id)].image
    assert old["KernelModulesExclude"] == [".*"]
    for regex in (
        r"(^|/)sev-guest\.ko",
        r"(^|/)msr\.ko",
        r"(^|/)virtio_net\.ko",
        "^net/vmw_vsock/",
        "^drivers/virtio/",
    ):
        assert regex in old["KernelModulesInclude"]
    new = parsed[("27.1", "27.1", spec.image_id)].image
    assert new["KernelModulesExclude"] == []
    for glob in ("sev-guest", "msr", "virtio_net", "/net/vmw_vsock/", "/drivers/virtio/"):
        assert glob in new["KernelModules"]


def test_the_catalog_essentials_are_covered(parsed: dict[tuple[str, str, str], Parsed]) -> None:
    """Each release's kernel, QEMU, OVMF and systemd-boot packages, per role, as mkosi resolved them."""
    images = {
        image_id: p.image for (t, m, image_id), p in parsed.items() if (t, m) == ("25.3", "25.3")
    }
    essentials = {
        "host-debian-13": (
            "debian",
            "trixie",
            {"linux-image-amd64", "qemu-system-x86", "ovmf-amdsev", "systemd-boot-efi"},
        ),
        "guest-debian-13": ("debian", "trixie", {"linux-image-amd64", "systemd-boot-efi"}),
        "host-debian-forky": (
            "debian",
            "forky",
            {"linux-image-amd64", "qemu-system-x86", "ovmf-amdsev", "systemd-boot-efi"},
        ),
        "host-debian-sid": (
            "debian",
            "sid",
            {"linux-image-amd64", "qemu-system-x86", "ovmf-amdsev", "systemd-boot-efi"},
        ),
        "host-ubuntu-26.04": (
            "ubuntu",
            "resolute",
            # -virtual: every module without linux-firmware and Intel's microcode.
            {
                "linux-image-virtual",
                "amd64-microcode",
                "qemu-system-x86",
                "ovmf-amdsev",
                "systemd-boot-efi",
            },
        ),
        "guest-ubuntu-24.04": (
            "ubuntu",
            "noble",
            {"linux-image-virtual", "systemd-boot-efi", "plymouth"},
        ),
        "host-ubuntu-25.10": (
            "ubuntu",
            "questing",
            {"linux-image-generic", "qemu-system-x86", "ovmf", "systemd-boot-efi"},
        ),
        "host-fedora-41": (
            "fedora",
            "41",
            {"kernel", "qemu-system-x86-core", "edk2-ovmf", "systemd-boot-unsigned"},
        ),
        "guest-fedora-rawhide": ("fedora", "rawhide", {"kernel", "systemd-boot-unsigned"}),
        "host-centos-10": (
            "centos",
            "10",
            {"kernel", "qemu-kvm-core", "edk2-ovmf", "systemd-boot-unsigned"},
        ),
        "guest-centos-10": (
            "centos",
            "10",
            {"kernel", "kernel-modules-core", "systemd-boot-unsigned"},
        ),
        "host-rocky-10": (
            "rocky",
            "10",
            {"kernel", "qemu-kvm-core", "edk2-ovmf", "systemd-boot-unsigned"},
        ),
        "host-alma-10": (
            "alma",
            "10",
            {"kernel", "qemu-kvm-core", "edk2-ovmf", "systemd-boot-unsigned"},
        ),
    }
    for image_id, (distribution, release, packages) in essentials.items():
        image = images[image_id]
        assert (image["Distribution"], image["Release"]) == (distribution, release), image_id
        assert packages <= set(image["Packages"]), (image_id, packages - set(image["Packages"]))
    assert images["guest-ubuntu-26.04"]["Repositories"] == ["universe"]
    assert images["host-centos-10"]["RepositoryKeyFetch"] is True
    assert (
        "qemu-system" not in images["host-debian-forky"]["Packages"]
    )  # every-arch emulators stay out


def test_mkosi_25_refuses_trees_for_26_and_newer(
    parsed: dict[tuple[str, str, str], Parsed],
) -> None:
    tree = parsed[("27.1", "27.1", "guest-debian-13")].tree
    proc = require_mkosi("25.3").run(["-C", str(tree), "--json", "summary"], cwd=tree)
    assert proc.returncode != 0 and "Unknown setting KernelModules" in proc.stderr


def test_mismatch_detection_notices_a_hand_edit(
    parsed: dict[tuple[str, str, str], Parsed], tmp_path: Path
) -> None:
    spec = next(s for s in SPECS if s.image_id == "host-debian-13")
    tree = tmp_path / "tree"
    subprocess.run(
        ["cp", "-a", str(parsed[("25.3", "25.3", spec.image_id)].tree), str(tree)], check=True
    )
    conf = tree / "mkosi.conf"
    conf.write_text(
        conf.read_text()
        .replace("        ovmf-amdsev\n", "")
        .replace("Release=trixie", "Release=bookworm")
    )
    found = judge.mkosi_mismatches(require_mkosi("25.3"), tree, spec)
    assert any(m.startswith('Release: mkosi resolved "bookworm"') for m in found)
    assert any(m.startswith("Packages:") for m in found)


@pytest.mark.parametrize("version", ["25.3", "27.1"])
def test_both_mkosi_versions_find_the_hosts_postinst_and_notice_it_missing(
    parsed: dict[tuple[str, str, str], Parsed], tmp_path: Path, version: str
) -> None:
    spec = next(s for s in SPECS if s.image_id == "host-debian-forky")
    original = parsed[(version, version, spec.image_id)]
    assert original.image["PostInstallationScripts"] == [
        str((original.tree / "mkosi.postinst").resolve())
    ]
    tree = tmp_path / "tree"
    subprocess.run(["cp", "-a", str(original.tree), str(tree)], check=True)
    (tree / "mkosi.postinst").unlink()
    found = judge.mkosi_mismatches(require_mkosi(version), tree, spec)
    assert [m for m in found if m.startswith("PostInstallationScripts: mkosi resolved []")], found


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_generated_scripts_and_units_pass_their_checkers(
    parsed: dict[tuple[str, str, str], Parsed], spec: ImageSpec
) -> None:
    tree = parsed[("25.3", "25.3", spec.image_id)].tree
    assert list(judge.generated_scripts(tree)), "every image carries its check script"
    units = list(judge.generated_units(tree))
    assert units and all(u.stat().st_size for u in units)  # masks (empty files) are not verified
    if spec.role == "guest":  # which a guest has: masked units, and they are left out
        masks = list((tree / "extra/etc/systemd/system").glob("*.service"))
        assert any(u.stat().st_size == 0 for u in masks)
    assert judge.script_problems(tree) == []
    assert judge.unit_problems(tree) == []


def test_checkers_catch_real_mistakes(
    parsed: dict[tuple[str, str, str], Parsed], tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    subprocess.run(
        ["cp", "-a", str(parsed[("25.3", "25.3", "host-debian-13")].tree), str(tree)], check=True
    )
    script = tree / "extra/usr/libexec/sevimg/host-check"
    script.write_text(script.read_text() + "\nif [ $x = 1 ]; then echo $undefined\n")
    problems = judge.script_problems(tree)
    assert any("bash -n" in p for p in problems)
    script.write_text(
        script.read_text().replace("\nif [ $x = 1 ]; then echo $undefined\n", "\necho $1 `date`\n")
    )
    assert any("shellcheck" in p and "SC2006" in p for p in judge.script_problems(tree))
    unit = tree / "extra/usr/lib/systemd/system/sevimg-host-check.service"
    unit.write_text(
        unit.read_text().replace(
            "ExecStart=/usr/libexec/sevimg/host-check",
            "ExecStart=/usr/libexec/sevimg/missing\nBogusKey=1",
        )
    )
    problems = judge.unit_problems(tree)
    assert any("is not executable" in p for p in problems) and any(
        "BogusKey" in p for p in problems
    )


def test_validate_with_mkosi(cli: CliFn, workspace: Path) -> None:
    run = cli("validate", "--mkosi", "--mkosi-version", "25.3", "debian-13", "ubuntu-24.04")
    assert run.code == 0, run.output
    # A workspace template that writes a setting mkosi does not know is caught by mkosi itself.
    own = workspace / "templates"
    own.mkdir()
    conf = (
        (REPO / "templates" / "mkosi.conf.j2")
        .read_text()
        .replace("WithDocs=no", "WithDocs=no\nWithDocumentation=no")
    )
    (own / "mkosi.conf.j2").write_text(conf)
    run = cli("validate", "--mkosi", "--mkosi-version", "27.1", "debian-13")
    assert run.code == 1
    assert "images/debian-13.yaml: error: guest-debian-13: mkosi 27.1 warned" in run.stderr
    assert "Unknown setting WithDocumentation" in run.stderr
    missing = cli("validate", "--mkosi", "--mkosi-version", "26.0", "debian-13")
    assert (
        missing.code == 1
        and "mkosi 26.0 not found" in missing.stderr
        and "tools/install-mkosi 26.0" in missing.stderr
    )


# --- whatever answers to the name mkosi: hung, babbling, broken --------------------------------


def fake_mkosi(folder: Path, body: str | bytes, *, mode: int = 0o755) -> Path:
    """A real executable standing in for mkosi (SEVIMG_MKOSI points at it)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mkosi"
    path.write_bytes(body.encode() if isinstance(body, str) else body)
    path.chmod(mode)
    return path


def running(marker: str) -> list[str]:
    """Live processes whose command line mentions `marker` (zombies have none)."""
    deadline = time.monotonic() + 3
    while True:
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in text and str(os.getpid()) != cmdline.parent.name:
                found.append(text)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


HANGS = {
    "sleeps": "#!/bin/sh\nsleep 3171\n",
    "execs-sleep": "#!/bin/sh\nexec sleep 3172\n",
    "child-in-background": "#!/bin/sh\nsleep 3173 &\nsleep 3174\n",
    "ignores-term": "#!/bin/sh\ntrap '' TERM INT HUP\nsleep 3175\n",
    "prints-then-hangs": "#!/bin/sh\necho 'mkosi 25.3'\nsleep 3176\n",
}


# These look for their fake mkosi's `sleep 317x` among every process: run alone
# (serial), so that another worker's hung fake is not taken for a leftover of theirs.
HUNG = pytest.mark.serial


@HUNG
@pytest.mark.parametrize("body", HANGS.values(), ids=HANGS.keys())
def test_a_hung_mkosi_times_out_and_leaves_nothing_running(tmp_path: Path, body: str) -> None:
    path = fake_mkosi(tmp_path / "bin", body)
    started = time.monotonic()
    with pytest.raises(SevimgError) as info:
        mkosi.version_of(path, timeout=1)
    assert time.monotonic() - started < 10
    assert info.value.message == f"{path} --version did not answer within 1 s; stopped it"
    assert running("317") == []


GARBAGE = {
    "nothing": "",
    "a word": "hello\n",
    "no version": "mkosi\n",
    "letters": "mkosi abc\n",
    "two lines": "mkosi 25.3\nmkosi 27.1\n",
    "trailing junk": "mkosi 25.3; rm -rf /\n",
    "escape codes": "\x1b[31mmkosi 25.3\x1b[0m\n",
    "huge number": "mkosi 99999999999999999999.1\n",
    "long line": "mkosi " + "9" * 10_000 + "\n",
    "other program": "Python 3.13.5\n",
    "control": "mkosi 25.3\x00\n",
}


@pytest.mark.parametrize("output", GARBAGE.values(), ids=GARBAGE.keys())
def test_an_mkosi_that_prints_garbage_is_named(tmp_path: Path, output: str) -> None:
    printed = tmp_path / "printed"
    printed.write_text(output)
    path = fake_mkosi(tmp_path / "bin", f"#!/bin/sh\ncat '{printed}'\n")
    with pytest.raises(SevimgError) as info:
        mkosi.version_of(path)
    message = info.value.message
    assert message.startswith(f"{path} does not look like mkosi: `--version` printed ")
    assert len(message) < 300 and message.isprintable()


def test_binary_output_is_no_crash(tmp_path: Path) -> None:
    printed = tmp_path / "printed"
    printed.write_bytes(b"\xff\xfe\x00mkosi\x80 25.3\n")
    path = fake_mkosi(tmp_path / "bin", f"#!/bin/sh\ncat '{printed}'\n")
    with pytest.raises(SevimgError, match="does not look like mkosi"):
        mkosi.version_of(path)


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("mkosi 25.3\n", "25.3"),
        ("mkosi 27.1\n", "27.1"),
        ("mkosi 26~devel\n", "26"),
        ("25.3\n", "25.3"),
    ],
)
def test_a_plain_answer_is_read(tmp_path: Path, output: str, version: str) -> None:
    path = fake_mkosi(tmp_path / "bin", f"#!/bin/sh\nprintf '{output}'\n")
    assert mkosi.version_of(path) == version


BROKEN = [
    (
        "#!/bin/sh\necho 'no such option' >&2\nexit 3\n",
        0o755,
        "--version failed (exit status 3): 'no such option'",
    ),
    ("#!/bin/sh\necho 'mkosi 25.3'\n", 0o644, "cannot run"),
    (b"\x7fELF\x00garbage", 0o755, "cannot run"),
    ("#!/nonexistent/interpreter\n", 0o755, "cannot run"),
]


@pytest.mark.parametrize(("body", "mode", "expected"), BROKEN)
def test_an_mkosi_that_cannot_answer_is_named(
    tmp_path: Path, body: str | bytes, mode: int, expected: str
) -> None:
    path = fake_mkosi(tmp_path / "bin", body, mode=mode)
    with pytest.raises(SevimgError) as info:
        mkosi.version_of(path)
    assert str(path) in info.value.message and expected in info.value.message


COMMANDS = [["validate", "--mkosi", "debian-13"], ["build", "debian-13"], ["render", "debian-13"]]


# A hang costs the real timeout (10 s): once through the CLI is enough.
@pytest.mark.parametrize(
    ("command", "kind"),
    [(COMMANDS[0], "hangs")] + [(c, k) for c in COMMANDS for k in ("garbage", "missing")],
)
@HUNG
def test_commands_fail_cleanly_with_a_bad_mkosi(
    sevimg_process: CliFn,
    workspace: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    kind: str,
) -> None:
    body = {"hangs": HANGS["sleeps"], "garbage": GARBAGE["a word"], "missing": ""}[kind]
    path = fake_mkosi(tmp_path / "bin", body) if kind != "missing" else tmp_path / "nope" / "mkosi"
    monkeypatch.setenv("SEVIMG_MKOSI", str(path))
    started = time.monotonic()
    run = sevimg_process(*command)
    assert run.code == 1, run.output
    assert "sevimg: error: " in run.stderr and str(path) in run.stderr
    assert "Traceback" not in run.output and "internal error" not in run.output
    assert time.monotonic() - started < mkosi.VERSION_TIMEOUT + 20
    assert not (workspace / "build").exists() and not (workspace / "out").exists()
    assert running("3171") == []


@HUNG
def test_doctor_reports_a_hung_mkosi(
    sevimg_process: CliFn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = fake_mkosi(tmp_path / "bin", HANGS["sleeps"])
    monkeypatch.setenv("SEVIMG_MKOSI", str(path))
    run = sevimg_process("doctor", "--no-network", "--json")
    assert run.code == 1
    check = next(c for c in json.loads(run.stdout)["checks"] if c["check"] == "mkosi")
    assert check["status"] == "FAIL" and "did not answer within 10 s" in check["detail"]
    assert running("3171") == []
