"""Check rendered trees with the real tools: mkosi, bash, shellcheck, systemd-analyze.

mkosi is the judge of the mkosi configuration: a tree passes when `mkosi
--json summary` accepts it without a word on stderr and resolves it to what
the spec says. Generated scripts pass `bash -n` and shellcheck; generated
units pass `systemd-analyze verify` against a root made of this machine's
systemd units plus the tree's own files.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sevimg import interrupt, proc
from sevimg.atomic import scratch_folder, write_tree
from sevimg.catalog.spec import GUEST_EMBED_DIR, ImageSpec
from sevimg.imaging.mkosi import Mkosi
from sevimg.problems import Problem, error
from sevimg.render.trees import EXTRA, GUEST_TREE, POSTINST, SANDBOX, Renderer, has_sandbox

HOST_SYSTEMD = Path("/usr/lib/systemd")


def _image(summary: dict[str, Any]) -> dict[str, Any]:
    images = summary.get("Images") or [summary]
    image = images[-1]  # the last image is the main one (subimages come first)
    if not isinstance(image, dict):
        raise TypeError(f"an image is {type(image).__name__}, not an object")
    return image


def mkosi_mismatches(mkosi: Mkosi, tree: Path, spec: ImageSpec) -> list[str]:
    """Run `mkosi --json summary` on `tree`: what it resolved differently from the spec, or warned about."""
    proc = mkosi.run(["-C", str(tree), "--json", "summary"], cwd=tree)
    if proc.returncode != 0:
        return [
            f"mkosi {mkosi.version} rejected the tree: {proc.stderr.strip() or proc.stdout.strip()}"
        ]
    found: list[str] = []
    if proc.stderr.strip():
        found.append(f"mkosi {mkosi.version} warned: {proc.stderr.strip()}")
    try:
        image = _image(json.loads(proc.stdout))
    except (ValueError, RecursionError, IndexError, AttributeError, KeyError, TypeError) as exc:
        return [*found, f"mkosi {mkosi.version} printed no usable JSON summary: {exc}"]
    return found + compare_summary(image, tree, spec)


def compare_summary(image: dict[str, Any], tree: Path, spec: ImageSpec) -> list[str]:
    """Differences between one image of an mkosi summary and the spec it was rendered from."""
    found: list[str] = []
    root = tree.resolve()
    expected_trees = [{"Source": str(root / EXTRA), "Target": None}]
    if spec.role == "host":
        expected_trees.append({"Source": str(root / GUEST_TREE), "Target": GUEST_EMBED_DIR})
    expected: dict[str, Any] = {
        "Distribution": spec.mkosi_distribution,
        "Release": spec.mkosi_release,
        "Architecture": spec.architecture,
        "Format": "uki",
        "ImageId": spec.image_id,
        "Output": spec.image_id,
        "Packages": sorted(spec.packages),
        "KernelCommandLine": list(spec.kernel_command_line),
        "Repositories": list(spec.repositories),
        "RepositoryKeyFetch": spec.repository_key_fetch,
        "Mirror": spec.mirror,
        "ExtraTrees": expected_trees,
        "SandboxTrees": [{"Source": str(root / SANDBOX), "Target": None}]
        if has_sandbox(spec)
        else [],
        "RemoveFiles": list(spec.remove_files),
        "ManifestFormat": ["json"],
        "Autologin": spec.autologin,
        "RootPassword": None,
        # mkosi finds the tree's mkosi.postinst itself: a host records its package versions.
        "PostInstallationScripts": [str(root / POSTINST)] if spec.role == "host" else [],
    }
    for key, want in expected.items():
        got = image.get(key)
        if got != want:
            found.append(
                f"{key}: mkosi resolved {json.dumps(got)}, the spec says {json.dumps(want)}"
            )
    environment = image.get("Environment") or {}
    for name, value in spec.environment:
        if environment.get(name) != value:
            found.append(f"Environment: {name}={environment.get(name)!r}, the spec says {value!r}")
    if not spec.environment and "VERSION" in environment:
        found.append(f"Environment: unexpected VERSION={environment['VERSION']!r}")
    return found


def generated_scripts(tree: Path) -> Iterator[Path]:
    """Executable files with a shell shebang in the tree."""
    for path in sorted(tree.rglob("*")):
        if path.is_file() and path.stat().st_mode & 0o111:
            with path.open("rb") as handle:
                first = handle.readline()
            if first.startswith(b"#!") and (b"bash" in first or b"/sh" in first):
                yield path


def generated_units(tree: Path) -> Iterator[Path]:
    """systemd unit files in the tree's extra trees, but the empty ones: an empty unit file
    masks its unit (systemd.unit(5)), and has nothing in it to verify."""
    for folder in ("usr/lib/systemd/system", "etc/systemd/system"):
        for pattern in ("*.service", "*.timer"):
            yield from (
                u for u in sorted((tree / EXTRA / folder).glob(pattern)) if u.stat().st_size
            )


CHECKER_TIMEOUT = 120.0


def _run(tool: str, *args: str) -> tuple[int, str]:
    """Exit status and combined output of one checker run (in its own process group)."""
    try:
        done = proc.run([tool, *args], timeout=CHECKER_TIMEOUT, merge_output=True)
    except OSError as exc:
        return 127, f"cannot run {tool}: {exc.strerror or exc}"
    except proc.TimedOut:
        return 124, f"{tool} did not finish within {CHECKER_TIMEOUT:g} s"
    return done.returncode, done.stdout.strip()


def script_problems(tree: Path) -> list[str]:
    """`bash -n` and shellcheck findings for every generated script."""
    found: list[str] = []
    shellcheck = shutil.which("shellcheck")
    for script in generated_scripts(tree):
        name = script.relative_to(tree)
        code, output = _run("bash", "-n", str(script))
        if code != 0:
            found.append(f"{name}: bash -n: {output}")
        if shellcheck is None:
            found.append(f"{name}: shellcheck not installed (apt-get install shellcheck)")
            continue
        code, output = _run(shellcheck, "--format=gcc", "--shell=bash", str(script))
        if code != 0:
            found += [f"{name}: shellcheck: {line}" for line in output.splitlines()]
    return found


def unit_problems(tree: Path) -> list[str]:
    """`systemd-analyze verify` findings for every generated unit, checked offline."""
    units = list(generated_units(tree))
    if not units:
        return []
    analyze = shutil.which("systemd-analyze")
    if analyze is None or not HOST_SYSTEMD.is_dir():
        return ["systemd-analyze or /usr/lib/systemd not found: units not verified"]
    found: list[str] = []
    with scratch_folder("sevimg-units-") as root:
        # The units depend on the standard targets, which come from this
        # machine's systemd; ExecStart= paths must resolve in the tree.
        (root / "usr" / "lib").mkdir(parents=True)
        shutil.copytree(HOST_SYSTEMD, root / "usr" / "lib" / "systemd", symlinks=True)
        shutil.copytree(tree / EXTRA, root, symlinks=True, dirs_exist_ok=True)
        for unit in units:
            code, output = _run(analyze, "verify", f"--root={root}", "--man=no", unit.name)
            output = output.replace(str(root), "")
            if code != 0 or output:
                found.append(
                    f"{unit.relative_to(tree)}: systemd-analyze verify: {output or f'exit {code}'}"
                )
    return found


def check_specs(specs: Iterable[ImageSpec], renderer: Renderer, tool: Mkosi) -> list[Problem]:
    """Render each spec into a scratch folder and check it with mkosi and the script/unit checkers.

    Problems are attributed to the release file the spec came from.
    """
    problems: list[Problem] = []
    with scratch_folder("sevimg-check-") as tmp:
        for spec in specs:
            interrupt.check()
            tree = write_tree(renderer.render(spec), tmp / spec.image_id)
            found = mkosi_mismatches(tool, tree, spec) + script_problems(tree) + unit_problems(tree)
            problems += [error(spec.sources[0], message, field=spec.image_id) for message in found]
    return problems
