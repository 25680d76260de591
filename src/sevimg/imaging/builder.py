"""`sevimg build`: run mkosi on rendered trees and collect checked artifacts.

The side-effect edge of the pipeline. Per run: one tools tree (built once
per mkosi version and tools distribution, then reused), one package cache,
mkosi's incremental cache; per image: render, stage pinned tools, run mkosi
(full output to out/logs/<image>.log), check the real artifact, then move it
into out/ with its manifest and an updated SHA256SUMS. A guest is built
before the host that embeds it, and never twice in one run. An image whose
inputs have not changed since its last successful build is skipped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from sevimg import interrupt, lock
from sevimg.artifacts import checksums, names
from sevimg.artifacts.manifest import (
    ExpectedMeasurement,
)
from sevimg.atomic import remove_stale, write_file_atomic, write_tree
from sevimg.catalog.spec import FamilyFacts, ImageSpec
from sevimg.imaging import collect, examine, measurement, mkosilog, pins, sandbox, state, uki
from sevimg.imaging.mkosi import Mkosi
from sevimg.problems import SevimgError
from sevimg.render.trees import GUEST_TREE, Renderer, with_file
from sevimg.settings import LocalConfig, ToolPin

# mkosi's own default tools tree (ToolsTreeDistribution= on a Debian host).
DEFAULT_TOOLS_TREE = ("debian", "trixie")

Report = Callable[[str], None]
Stage = Callable[[str, str], None]  # (task: an image id or TOOLS_TREE, what it is doing)
TOOLS_TREE = "tools tree"


@dataclass(frozen=True)
class BuildSettings:
    """Everything a build run needs besides the specs."""

    workspace_root: Path
    build_dir: Path  # rendered trees
    out_dir: Path  # artifacts
    cache_dir: Path  # tools tree, packages, incremental images, downloads, state
    mkosi: Mkosi
    renderer: Renderer
    local: LocalConfig = field(default_factory=LocalConfig)
    pins: tuple[ToolPin, ...] = ()
    with_tools: bool = True
    tools_dir: Path | None = None
    force: bool = False
    strict: bool = False  # an image over its size budget fails instead of warning
    # image id → `name=version` packages apt must install exactly (sevimg reproduce)
    pinned_packages: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # mkosi distribution → family: which take apt sources, with what keyring and pockets.
    families: Mapping[str, FamilyFacts] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What happened to one image."""

    image_id: str
    status: str  # built | skipped | failed
    seconds: float
    artifact: Path | None = None
    size: int = 0
    warnings: tuple[str, ...] = ()
    error: str = ""


def build_order(specs: Iterable[ImageSpec]) -> list[ImageSpec]:
    """Guests before hosts; each image once."""
    unique = {s.image_id: s for s in specs}
    return sorted(unique.values(), key=lambda s: (s.role != "guest", s.image_id))


class Builder:
    """Builds specs with mkosi into the artifact folder."""

    def __init__(self, settings: BuildSettings, report: Report, stage: Stage | None = None) -> None:
        self.s = settings
        self.report = report
        self.stage = stage or (lambda _task, _line: None)
        self.shared_seconds = 0.0  # the tools tree's build, shared by every image
        self.logs = settings.out_dir / names.LOGS_DIR
        self.state_dir = settings.cache_dir / "state"
        self.guest_artifacts: dict[str, Path] = {}

    # --- the run -----------------------------------------------------------------------

    def run(self, specs: Sequence[ImageSpec]) -> list[Outcome]:
        """Build every spec (guests first); stops at the first failure.

        Holds the locks of the rendered trees' folder, the artifact folder and
        the build cache for the whole run, and first clears what interrupted
        runs left there.
        """
        sandbox.check_mkosi_path(self.s.cache_dir, "the build cache")
        for tree in self.s.local.sandbox_trees:
            sandbox.check_mkosi_path(tree, "the sandbox tree")
        for spec in specs:  # a template that opens a way in fails here, before anything is written
            self.s.renderer.render(spec)
        with (
            lock.hold(self.s.cache_dir, "the build cache"),
            lock.hold(self.s.build_dir, "the tree folder"),
            lock.hold(self.s.out_dir, "the artifact folder"),
        ):
            for folder in (self.s.build_dir, self.s.out_dir, self.state_dir):
                remove_stale(folder)
            self.logs.mkdir(parents=True, exist_ok=True)
            return self._run(specs)

    def _run(self, specs: Sequence[ImageSpec]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        tools_tree: Path | None = None
        for spec in build_order(specs):
            interrupt.check()
            started = time.monotonic()
            try:
                tree = self.render(spec)
                staged = self.stage_pins(spec)
                key = self.inputs_key(tree, staged)
                if not self.s.force and (skipped := self.up_to_date(spec, key)) is not None:
                    outcomes.append(
                        Outcome(
                            spec.image_id,
                            "skipped",
                            time.monotonic() - started,
                            skipped,
                            skipped.stat().st_size,
                        )
                    )
                    self.report(
                        f"{spec.image_id}: up to date ({names.artifact_name(spec.image_id)}), skipped"
                    )
                    continue
                if tools_tree is None:
                    shared = time.monotonic()
                    tools_tree = self.tools_tree()
                    # Shared work is reported once, not in the first image's time.
                    self.shared_seconds = time.monotonic() - shared
                    started += self.shared_seconds
                outcome = self.build_one(spec, tools_tree, staged, key, started)
            except SevimgError as exc:
                outcomes.append(
                    Outcome(spec.image_id, "failed", time.monotonic() - started, error=exc.message)
                )
                raise
            outcomes.append(outcome)
        return outcomes

    # --- inputs ------------------------------------------------------------------------

    def render(self, spec: ImageSpec) -> Path:
        """Render the spec's tree into build/, with the built guest in a host's guest tree."""
        tree = self.s.renderer.render(spec)
        if spec.role == "host":
            guest_id = spec.payload.guest_image or ""
            guest = self.guest_artifacts.get(guest_id) or self.s.out_dir / names.artifact_name(
                guest_id
            )
            if not guest.is_file():
                raise SevimgError(
                    f"{spec.image_id} embeds {guest_id}, which has not been built",
                    hint=f"sevimg build {spec.image}",
                )
            tree = with_file(tree, f"{GUEST_TREE}/guest.efi", guest.read_bytes())
        return write_tree(tree, self.s.build_dir / spec.image_id)

    def stage_pins(self, spec: ImageSpec) -> dict[str, ToolPin]:
        """Pinned tools for this role, staged as an extra tree (or none, --without-tools)."""
        if not self.s.with_tools:
            return {}
        dest = self.s.cache_dir / "staged-tools" / spec.image_id
        return pins.stage(
            self.s.pins, spec.role, self.s.cache_dir, dest, self.s.tools_dir, self.s.local.proxy
        )

    def inputs_key(self, tree: Path, staged: Mapping[str, ToolPin]) -> str:
        """A digest of everything that decides the artifact's content (:func:`state.inputs_key`)."""
        tools = (*self.tools_tree_id(), *self.tools_tree_packages())
        return state.inputs_key(self.s.mkosi.version, tools, self.s.local, tree, staged)

    def up_to_date(self, spec: ImageSpec, key: str) -> Path | None:
        """The existing artifact when it was built from exactly these inputs, else None."""
        artifact = state.up_to_date(self.state_dir, self.s.out_dir, spec.image_id, key)
        if artifact is not None and spec.role == "guest":
            self.guest_artifacts[spec.image_id] = artifact
        return artifact

    # --- mkosi ---------------------------------------------------------------------------

    def tools_tree_id(self) -> tuple[str, str, str]:
        """(mkosi version, distribution, release) of the tools tree."""
        distribution, release = self.s.local.tools_tree or DEFAULT_TOOLS_TREE
        return self.s.mkosi.version, distribution, release

    def tools_tree_packages(self) -> tuple[str, ...]:
        """What the tools tree installs besides mkosi-tools: its family's `apt.tools_tree_packages`
        (every apt family's keyring: Signed-By= is read inside the tools tree)."""
        family = self.s.families.get(self.tools_tree_id()[1])
        return family.apt_tools_tree_packages if family else ()

    def tools_tree(self) -> Path:
        """The shared tools tree, built on first use."""
        version, distribution, release = self.tools_tree_id()
        extra = self.tools_tree_packages()
        name = f"mkosi-{version}-{distribution}-{release}"
        if extra:  # another package list is another tree
            name += "-" + hashlib.sha256(" ".join(extra).encode()).hexdigest()[:12]
        folder = self.s.cache_dir / "tools" / name
        tree = folder / "tree"
        if (folder / ".complete").is_file() and tree.is_dir():
            return tree
        started = time.monotonic()
        # From the folder's making on: an interruption anywhere leaves no half tree behind.
        try:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            args = [
                "--directory=",
                "--include=mkosi-tools",
                f"--distribution={distribution}",
                f"--release={release}",
                "--format=directory",
                f"--output-directory={folder}",
                "--output=tree",
                *self.common_args(),
                *self.sandbox_args(distribution, release, "tools", ()),
                *(f"--package={package}" for package in extra),
                "build",
            ]
            self.report(
                f"tools tree: building {distribution} {release} with mkosi {version} (once; reused by every image)"
            )
            self.run_mkosi(
                args,
                log=self.logs / "tools-tree.log",
                cwd=folder,
                what="the tools tree",
                mirrors=sandbox.mirror_label(self.s.local, distribution),
                task=TOOLS_TREE,
            )
            (folder / ".complete").write_text(f"{distribution} {release} mkosi {version}\n")
            self.report(
                f"tools tree: built in {time.monotonic() - started:.0f} s "
                "(shared by every image; not counted in their times)"
            )
        except BaseException:
            with interrupt.deferred():  # half a tools tree is of no use to the next run
                shutil.rmtree(folder, ignore_errors=True)
            raise
        return tree

    def common_args(self) -> list[str]:
        """Caches, for images and the tools tree alike (the proxy goes in the environment)."""
        return [
            f"--package-cache-directory={self.s.cache_dir / 'packages'}",
            f"--cache-directory={self.s.cache_dir / 'incremental'}",
            "--incremental=yes",
        ]

    def sandbox_args(
        self, distribution: str, release: str, name: str, repositories: Sequence[str]
    ) -> list[str]:
        """--sandbox-tree/--mirror arguments from sevimg.local.yaml for one distribution release."""
        return sandbox.mirror_args(
            self.s.local,
            self.s.families.get(distribution),
            self.s.cache_dir / "sandbox" / name,
            distribution,
            release,
            repositories,
        )

    def build_one(
        self,
        spec: ImageSpec,
        tools_tree: Path,
        staged: Mapping[str, ToolPin],
        key: str,
        started: float,
    ) -> Outcome:
        """mkosi build, check, and publish one image into out/."""
        output = self.s.cache_dir / "output" / spec.image_id
        shutil.rmtree(output, ignore_errors=True)
        output.mkdir(parents=True)
        try:
            return self._build_one(spec, tools_tree, staged, key, started, output)
        finally:
            # mkosi's output was copied into out/ or is rejected: either way scratch.
            with interrupt.deferred():
                shutil.rmtree(output, ignore_errors=True)

    def _build_one(
        self,
        spec: ImageSpec,
        tools_tree: Path,
        staged: Mapping[str, ToolPin],
        key: str,
        started: float,
        output: Path,
    ) -> Outcome:
        tree = self.s.build_dir / spec.image_id
        args = [
            "-C",
            str(tree),
            f"--tools-tree={tools_tree}",
            f"--output-directory={output}",
            *self.common_args(),
        ]
        if not spec.apt_replace_default_sources:  # an archived release keeps its own sources
            args += self.sandbox_args(
                spec.mkosi_distribution, spec.mkosi_release, spec.image_id, spec.repositories
            )
        if staged:
            args.append(f"--extra-tree={self.s.cache_dir / 'staged-tools' / spec.image_id}")
        args += [f"--package={p}" for p in self.s.pinned_packages.get(spec.image_id, ())]
        args.append("build")
        log = self.logs / f"{spec.image_id}.log"
        self.report(f"{spec.image_id}: building with mkosi {self.s.mkosi.version} (log: {log})")
        mirrors = sandbox.mirror_label(self.s.local, spec.mkosi_distribution)
        self.run_mkosi(
            args, log=log, cwd=tree, what=spec.image_id, mirrors=mirrors, task=spec.image_id
        )

        built = output / names.artifact_name(spec.image_id)
        if not built.is_file():
            raise SevimgError(f"mkosi finished but wrote no {built.name}", hint=f"see {log}")
        packages = collect.mkosi_packages(output / f"{spec.image_id}.manifest")
        guest_sha = None
        if spec.role == "host":
            guest_sha = checksums.sha256_file(tree / GUEST_TREE / "guest.efi")
        self.stage(spec.image_id, "post-build checks: the UKI, packages, SEV floors")
        findings = examine.check(spec, uki.read_uki(built), packages, guest_sha)
        over = examine.over_budget(spec, built.stat().st_size)
        if over and self.s.strict:
            findings = replace(findings, errors=(*findings.errors, over))
        elif over:
            findings = replace(findings, warnings=(*findings.warnings, over))
        if findings.errors:
            rejected = self.s.cache_dir / "rejected" / built.name
            rejected.parent.mkdir(parents=True, exist_ok=True)
            built.replace(rejected)  # kept for a look; mkosi's output folder is scratch
            raise SevimgError(
                f"{spec.image_id} was built but fails its checks; not copied to {self.s.out_dir}",
                hint="; ".join(findings.errors) + f" (the rejected image is {rejected})",
            )

        measured = None
        if spec.role == "host":
            self.stage(spec.image_id, "post-build checks: the guest's expected measurement")
            measured = self.measure_guest(spec, built, tree / GUEST_TREE / "guest.efi")
        final = self.publish(spec, built, packages, staged, guest_sha, measured)
        write_file_atomic(
            self.state_dir / f"{spec.image_id}.json",
            json.dumps({"inputs": key, "sha256": checksums.sha256_file(final)}).encode(),
        )
        if spec.role == "guest":
            self.guest_artifacts[spec.image_id] = final
        seconds = time.monotonic() - started
        size = final.stat().st_size
        self.report(f"{spec.image_id}: built {final.name}, {size / 1e6:.1f} MB, in {seconds:.0f} s")
        for message in findings.warnings:
            self.report(f"{spec.image_id}: warning: {message}")
        return Outcome(spec.image_id, "built", seconds, final, size, findings.warnings)

    def measure_guest(self, spec: ImageSpec, host: Path, guest: Path) -> ExpectedMeasurement | None:
        """The embedded guest's expected measurement under the built host's own OVMF.

        None, with a note, when no sev-snp-measure wheel is pinned or the
        build runs --without-tools: then no manifest claims a measurement.
        """
        libraries = (
            pins.python_libraries(
                self.s.pins, self.s.cache_dir, self.s.tools_dir, self.s.local.proxy
            )
            if self.s.with_tools
            else None
        )
        if libraries is None:
            self.report(
                f"{spec.image_id}: no expected measurement in the manifests "
                "(sev-snp-measure is not pinned in sevimg.yaml, or --without-tools)"
            )
            return None
        firmware = spec.payload.sev_firmware or ""
        measured = measurement.compute(
            guest, measurement.host_firmware(host, firmware), firmware, libraries
        )
        return ExpectedMeasurement(
            host_image_id=spec.image_id,
            ovmf=measured.ovmf,
            ovmf_sha256=measured.ovmf_sha256,
            vcpus=measured.vcpus,
            vcpu_type=measured.vcpu_type,
            measurement=measured.measurement.hex(),
            sev_snp_measure=measured.tool_version,
        )

    def publish(
        self,
        spec: ImageSpec,
        built: Path,
        packages: Mapping[str, str],
        staged: Mapping[str, ToolPin],
        guest_sha: str | None,
        measured: ExpectedMeasurement | None = None,
    ) -> Path:
        """The checked artifact into out/ with its manifest and SHA256SUMS (:func:`collect.publish`)."""
        return collect.publish(
            self.s.out_dir,
            spec,
            built,
            collect.Contents(self.s.mkosi.version, self.s.pins, staged, packages, guest_sha),
            measured,
            self.report,
        )

    def run_mkosi(
        self,
        args: Sequence[str],
        *,
        log: Path,
        cwd: Path,
        what: str,
        mirrors: str = "",
        task: str = "",
    ) -> None:
        """Run mkosi, its output to `log` and its steps to the progress line (see :mod:`.mkosilog`)."""
        mkosilog.run(
            self.s.mkosi.path,
            args,
            log=log,
            cwd=cwd,
            what=what,
            proxy=self.s.local.proxy,
            stage=lambda line: self.stage(task or what, line),
            mirrors=mirrors,
        )
