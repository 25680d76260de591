"""Render an :class:`ImageSpec` into an mkosi configuration tree (in memory).

Pure: spec + target mkosi version + templates → a :class:`Tree` of files with
their bytes and modes. Which file comes from which template is decided here;
what goes into each file is decided by the resolver; the templates only lay
it out. Writing trees to disk is :mod:`sevimg.atomic`'s job.
"""

from __future__ import annotations

import importlib.resources
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath
from typing import Any

from sevimg.catalog import payload
from sevimg.catalog.spec import GUEST_EMBED_DIR, GUEST_EMBED_PATH, ImageSpec, KernelModules
from sevimg.mkosi_versions import OLDEST_MKOSI, parse_mkosi_version
from sevimg.problems import SevimgError, error
from sevimg.render import guard, launch
from sevimg.render.apt import deb822
from sevimg_cert.installed import PACKAGES_JSON

# mkosi gained KernelModules= (globs, '-' excludes) in v26 and deprecated the
# regex-based KernelModulesInclude=/KernelModulesExclude= there.
KERNEL_MODULES_GLOBS_SINCE = (26,)

EXTRA = "extra"
SANDBOX = "sandbox"
# The apt preferences that keep a spec's excluded_packages out of the image (the
# underscore: an extra repository's name, which has none, never gives this file name).
EXCLUDE_PREF = "etc/apt/preferences.d/sevimg_exclude.pref"
GUEST_TREE = "guest-image"

# The host's certification code: the sevimg_cert package, as installed with
# sevimg, below the harness's import path (PYTHONPATH in the image).
CERT_PACKAGE = "sevimg_cert"
PYTHON_DIR = "usr/lib/sevimg/python"
ATTEST_RULES = "usr/lib/udev/rules.d/90-sevimg-attest.rules"
ATTEST_RESPONDER = "usr/libexec/sevimg/attest-responder"
# mkosi runs the config folder's mkosi.postinst after installing packages and
# before dropping the package database (mkosi 25.3 and 27.1 alike).
POSTINST = "mkosi.postinst"
# An empty unit file here masks the unit (systemd.unit(5)).
MASK_DIR = "etc/systemd/system"
MACHINE_ID = "etc/machine-id"


def has_sandbox(spec: ImageSpec) -> bool:
    """Whether the tree has a sandbox/ for mkosi (extra sources, or apt pins)."""
    return bool(spec.apt_sources or spec.rpm_repos or spec.excluded_packages)


@dataclass(frozen=True)
class File:
    """One rendered file."""

    path: PurePosixPath
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Tree:
    """A rendered mkosi tree for one image."""

    image_id: str
    files: tuple[File, ...]

    def file(self, path: str) -> File:
        """The file at `path` (relative to the tree), for tests and callers."""
        for f in self.files:
            if str(f.path) == path:
                return f
        raise KeyError(path)


class Renderer:
    """Templates loaded once; renders any number of specs."""

    def __init__(self, template_dirs: Sequence[Path], mkosi_version: str = OLDEST_MKOSI) -> None:
        self.mkosi_version = mkosi_version
        self.version = parse_mkosi_version(mkosi_version)
        import jinja2  # noqa: PLC0415 - only rendering needs it; `validate` and `--help` do not

        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(d) for d in template_dirs]),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,  # noqa: S701 - config files and shell, not HTML
        )
        self.env.globals["deb822"] = deb822
        self.env.filters["shquote"] = shlex.quote
        self.cert_files = package_files(CERT_PACKAGE)

    def render(self, spec: ImageSpec) -> Tree:
        """All files of the tree for `spec`, sorted by path."""
        files: list[File] = []
        ctx = self.context(spec)
        origin: dict[str, str] = {}  # rendered path → the template file it came from

        def add(template: str, path: str, mode: int = 0o644, **extra: Any) -> None:
            loaded = self.env.get_template(template)
            origin[path] = loaded.filename or template
            files.append(File(PurePosixPath(path), loaded.render(**ctx, **extra).encode(), mode))

        add("mkosi.conf.j2", "mkosi.conf")
        for source in spec.apt_sources:
            name = "mkosi" if source.name == "mkosi" else f"sevimg-{source.name}"
            add(
                "sandbox/apt.sources.j2",
                f"{SANDBOX}/etc/apt/sources.list.d/{name}.sources",
                source=source,
            )
            if source.only_packages:
                add(
                    "sandbox/apt.pref.j2",
                    f"{SANDBOX}/etc/apt/preferences.d/{name}.pref",
                    source=source,
                )
        if spec.excluded_packages:
            add("sandbox/apt.exclude.pref.j2", f"{SANDBOX}/{EXCLUDE_PREF}")
        for repo in spec.rpm_repos:
            add(
                "sandbox/rpm.repo.j2",
                f"{SANDBOX}/etc/yum.repos.d/sevimg-{repo.name}.repo",
                repo=repo,
            )

        add("payload/image.env.j2", f"{EXTRA}/etc/sevimg/image.env")
        add("payload/wired.network.j2", f"{EXTRA}/etc/systemd/network/80-sevimg-wired.network")
        add("payload/sevimg.preset.j2", f"{EXTRA}/usr/lib/systemd/system-preset/20-sevimg.preset")
        for unit in spec.payload.units:
            add(f"payload/{spec.role}/{unit}.j2", f"{EXTRA}/usr/lib/systemd/system/{unit}")
        check = f"{spec.role}-check"
        add(f"payload/{spec.role}/{check}.sh.j2", f"{EXTRA}/usr/libexec/sevimg/{check}", 0o755)
        if spec.payload.modules_load:
            add(
                "payload/guest/modules-load.conf.j2",
                f"{EXTRA}/etc/modules-load.d/sevimg-guest.conf",
            )
        for unit in spec.payload.masked_units:
            files.append(File(PurePosixPath(f"{EXTRA}/{MASK_DIR}/{unit}"), b""))
        if spec.payload.transient_machine_id:
            # Empty, not mkosi's "uninitialized": systemd still makes a new id
            # on every boot, but the boot is not a first boot (no preset-all,
            # no first-boot units), which costs seconds under TCG.
            files.append(File(PurePosixPath(f"{EXTRA}/{MACHINE_ID}"), b""))
        if spec.role == "guest":
            add(
                "payload/guest/attest-responder.sh.j2",
                f"{EXTRA}/{ATTEST_RESPONDER}",
                0o755,
            )
            add("payload/guest/attest.rules.j2", f"{EXTRA}/{ATTEST_RULES}")
        if spec.role == "host":
            add("guest-image/README.j2", f"{GUEST_TREE}/README")
            for name, content in self.cert_files:
                path = f"{EXTRA}/{PYTHON_DIR}/{CERT_PACKAGE}/{name}"
                files.append(File(PurePosixPath(path), content, 0o644))
            add("payload/host/launch.json.j2", f"{EXTRA}/etc/sevimg/launch.json")
            add(
                "payload/host/mkosi.postinst.j2",
                POSTINST,
                0o755,
                packages=spec.payload.recorded_packages,
                query=spec.payload.package_version_query,
                packages_json=PACKAGES_JSON,
            )

        if not spec.debug:
            rendered = {str(f.path): (f.content, f.mode) for f in files}
            if found := guard.check_files(rendered, EXTRA):
                raise SevimgError(
                    f"{spec.image_id}: the rendered tree opens a way in",
                    [error(origin.get(path, path), f"{path}: {why}") for path, why in found],
                    hint="a workspace's templates/ override the packaged ones; a published "
                    "image may not have these (a --debug-image build may)",
                )
        return Tree(spec.image_id, tuple(sorted(files, key=lambda f: f.path)))

    def context(self, spec: ImageSpec) -> dict[str, Any]:
        """Everything the templates see, precomputed: the templates make no decisions."""
        sources = ", ".join(spec.sources[:-1]) + " and " + spec.sources[-1]
        extra_trees = [EXTRA]
        if spec.role == "host":
            extra_trees.append(f"{GUEST_TREE}:{GUEST_EMBED_DIR}")
        generated = f"Generated by sevimg from {sources}; do not edit."
        return {
            "spec": spec,
            "generated": generated,
            "target": f"Written for mkosi {self.mkosi_version} ({self.kernel_modules_syntax()}).",
            "regenerate": f"Change the YAML and run `sevimg render {spec.image}`.",
            # Provenance: each catalog file with the SHA-256 of the bytes it was rendered from.
            "provenance": [
                f"{path} sha256:{sha}"
                for path, sha in zip(spec.sources, spec.source_sha256, strict=True)
            ],
            "kernel_module_settings": self.kernel_module_settings(spec.kernel_modules),
            "extra_trees": extra_trees,
            "sandbox": has_sandbox(spec),
            "bool": lambda value: "yes" if value else "no",
            "env": self.image_env(spec),
            "launch_json": self.host_launch_json(generated) if spec.role == "host" else "",
            "ready_marker": launch.READY_MARKER,
            "min_memory_mb": launch.MIN_MEMORY_MB,
            "default_cbitpos": launch.DEFAULT_CBITPOS,
            "attest_port": launch.ATTEST_PORT,
            "attest_device_unit": launch.device_unit(f"/dev/virtio-ports/{launch.ATTEST_PORT}"),
            "attest_rules": f"/{ATTEST_RULES}",
            "attest_modules": payload.GUEST_ATTEST_MODULES,
            "attest_load": tuple(payload.GUEST_TSM_REPORT_MODULES),
        }

    def kernel_modules_syntax(self) -> str:
        """Which kernel-module settings this target gets, for the tree's header."""
        if self.version >= KERNEL_MODULES_GLOBS_SINCE:
            return "KernelModules= globs: mkosi 26 or newer"
        return "KernelModulesInclude=/Exclude= regexes: any mkosi from 25.3"

    def kernel_module_settings(self, rules: KernelModules) -> list[tuple[str, list[str]]]:
        """(setting, values) pairs for the target mkosi version."""
        if self.version >= KERNEL_MODULES_GLOBS_SINCE:
            globs = ["*"] if rules.keep_all else []
            globs += [f"-{_glob(e)}" for e in rules.exclude]
            globs += [_glob(e) for e in rules.include]
            return [("KernelModules", globs)] if globs != ["*"] else []
        settings: list[tuple[str, list[str]]] = []
        exclude = [".*"] if not rules.keep_all else [_regex(e) for e in rules.exclude]
        if exclude:
            settings.append(("KernelModulesExclude", exclude))
        if rules.include:
            settings.append(("KernelModulesInclude", [_regex(e) for e in rules.include]))
        return settings

    @staticmethod
    def image_env(spec: ImageSpec) -> list[tuple[str, str]]:
        """/etc/sevimg/image.env: what the payload scripts know about their image."""
        env = [
            ("SEVIMG_IMAGE_ID", spec.image_id),
            ("SEVIMG_IMAGE", spec.image),
            ("SEVIMG_ROLE", spec.role),
            ("SEVIMG_DISTRO", spec.distro),
            ("SEVIMG_RELEASE", spec.release),
        ]
        if spec.role == "host":
            env += [
                ("SEVIMG_QEMU", spec.payload.qemu_binary or ""),
                ("SEVIMG_SEV_FIRMWARE", spec.payload.sev_firmware or ""),
                ("SEVIMG_GUEST_EFI", GUEST_EMBED_PATH),
                ("SEVIMG_GUEST_IMAGE_ID", spec.payload.guest_image or ""),
            ]
        return env

    @staticmethod
    def host_launch_json(generated: str) -> str:
        """/etc/sevimg/launch.json: the SNP launch argv with {placeholders} the harness fills in."""
        argv = launch.snp_command(
            launch.Launch(
                qemu="{qemu}",
                firmware="{firmware}",
                kernel="{kernel}",
                memory_mb="{memory_mb}",
                cbitpos="{cbitpos}",
            )
        )
        doc = {
            "comment": generated,
            "argv": argv,
            "channel": launch.channel_args("{socket}"),
            "memory_mb": launch.MIN_MEMORY_MB,
        }
        return json.dumps(doc, indent=2)


def package_files(package: str) -> tuple[tuple[str, bytes], ...]:
    """(relative name, bytes) of every file of an installed package, sorted; no bytecode.

    Read through importlib.resources, so an installed sevimg ships what it
    was installed with, not whatever a source checkout holds.
    """
    found: list[tuple[str, bytes]] = []

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            name = f"{prefix}{child.name}"
            if child.is_dir():
                if child.name != "__pycache__":
                    walk(child, f"{name}/")
            elif child.is_file() and not child.name.endswith((".pyc", ".pyo")):
                found.append((name, child.read_bytes()))

    walk(importlib.resources.files(package), "")
    return tuple(sorted(found))


def _regex(entry: str) -> str:
    """mkosi 25 regex, matched against module paths below kernel/ (drivers/virtio/virtio_pci.ko)."""
    # Entries are schema-constrained to [a-z0-9_/-]: nothing to escape.
    if entry.endswith("/"):
        return "^" + entry
    return r"(^|/)" + entry + r"\.ko"


def _glob(entry: str) -> str:
    """mkosi 26+ glob: folders anchored below kernel/, names matched on the basename."""
    return "/" + entry if entry.endswith("/") else entry


def with_file(tree: Tree, path: str, content: bytes) -> Tree:
    """`tree` with one more file (the guest UKI a host embeds)."""
    files = (*tree.files, File(PurePosixPath(path), content, 0o644))
    return Tree(tree.image_id, tuple(sorted(files, key=lambda f: f.path)))
