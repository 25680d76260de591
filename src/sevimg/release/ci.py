"""Generate the GitHub Actions workflow that builds every release of the catalog and publishes it.

A pure function of the catalog: one matrix entry per release that checks
without errors (with the roles it has), the same bytes for the same
catalog. `sevimg ci --check` compares the committed file with what this
module makes, so a release added to images/ without regenerating the
workflow fails CI instead of silently never being built.

Every action is pinned to a full commit SHA (tags can be moved); the
version it stands for is in a comment next to it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2
import yaml

from sevimg.catalog.index import Catalog
from sevimg.catalog.pipeline import Checked, check_catalog
from sevimg.catalog.resolve import roles_of
from sevimg.mkosi_versions import OLDEST_MKOSI
from sevimg.problems import SevimgError
from sevimg.release.plan import DEVEL_TAG
from sevimg.workspace import packaged

WORKFLOW_PATH = PurePosixPath(".github/workflows/build-and-release.yml")
MKOSI_VERSION = OLDEST_MKOSI  # what the workflow installs
RUNNER = "ubuntu-24.04"
ARCHIVE_CRON = "17 5 * * 1"  # Mondays 05:17 UTC: off the hour, as GitHub asks of schedules
PYTHON_VERSION = "3.12"
ARTIFACT_PREFIX = "out-"


@dataclass(frozen=True)
class PinnedAction:
    """An action at a full commit SHA, and the release tag that commit is."""

    repo: str
    sha: str
    version: str

    def uses(self) -> str:
        """The `uses:` value with its version comment."""
        return f"{self.repo}@{self.sha} # {self.version}"


# Looked up from the actions' release tags; bump SHA and version together.
CHECKOUT = PinnedAction("actions/checkout", "11bd71901bbe5b1630ceea73d27597364c9af683", "v4.2.2")
SETUP_PYTHON = PinnedAction(
    "actions/setup-python", "a26af69be951a213d495a4c3e4e4022e16d87065", "v5.6.0"
)
UPLOAD_ARTIFACT = PinnedAction(
    "actions/upload-artifact", "ea165f8d65b6e75b540449e92b4886f43607fa02", "v4.6.2"
)
DOWNLOAD_ARTIFACT = PinnedAction(
    "actions/download-artifact", "d3f86a106a0bac45b974a628896c90dbdf5c8093", "v4.3.0"
)
ATTEST_BUILD_PROVENANCE = PinnedAction(
    "actions/attest-build-provenance", "a2bbfa25375fe432b6a289bc6b6cd05ecd0c4c32", "v4.1.0"
)
ACTIONS = (CHECKOUT, SETUP_PYTHON, UPLOAD_ARTIFACT, DOWNLOAD_ARTIFACT, ATTEST_BUILD_PROVENANCE)


@dataclass(frozen=True)
class MatrixEntry:
    """One build job: a release and the roles it has."""

    image: str
    roles: tuple[str, ...]

    @property
    def build_args(self) -> str:
        """Extra `sevimg build` arguments: --role when the release has only one."""
        return f"--role {self.roles[0]}" if len(self.roles) == 1 else ""

    def as_dict(self) -> dict[str, str]:
        """The matrix entry as it appears in the workflow."""
        return {"image": self.image, "roles": " ".join(self.roles), "build-args": self.build_args}


@dataclass(frozen=True)
class Workflow:
    """The generated workflow and what went into it."""

    text: str
    entries: tuple[MatrixEntry, ...]
    skipped: tuple[tuple[str, int], ...]  # (release, number of errors)


def matrix_of(
    checked: Sequence[Checked],
) -> tuple[tuple[MatrixEntry, ...], tuple[tuple[str, int], ...]]:
    """Matrix entries for the releases without errors, and the releases skipped for errors."""
    entries: list[MatrixEntry] = []
    skipped: list[tuple[str, int]] = []
    for c in sorted(checked, key=lambda c: c.entry.image):
        if not c.ok:
            skipped.append((c.entry.image, sum(p.is_error for p in c.problems)))
            continue
        entries.append(MatrixEntry(c.entry.image, tuple(roles_of(c.entry))))
    return tuple(entries), tuple(skipped)


def generate(catalog: Catalog) -> Workflow:
    """The workflow for `catalog` (every release checked as `sevimg validate` does)."""
    checked, _ = check_catalog(catalog)
    entries, skipped = matrix_of(checked)
    if not entries:
        raise SevimgError(
            "no release of the catalog checks without errors; there is nothing to build",
            hint="run `sevimg validate`",
        )
    text = render(entries, skipped, catalog.workspace.search_path("templates"))
    if unsafe := debug_flags(text):
        raise AssertionError(f"the generated workflow passes {', '.join(unsafe)}")
    return Workflow(text, entries, skipped)


# CI builds and publishes release images only: a workflow passing one of these
# could put a debug image (console autologin) on a release.
DEBUG_FLAGS = ("--allow-debug", "--debug-image")


def debug_flags(text: str) -> list[str]:
    """The debug options a workflow's text passes (none, for one `sevimg ci` wrote)."""
    return [flag for flag in DEBUG_FLAGS if flag in text]


TEMPLATE = "ci/build-and-release.yml.j2"


def _environment(template_dirs: Sequence[Path]) -> jinja2.Environment:
    # GitHub's own expressions are ${{ }}: the template's delimiters are [[ ]] and [% %].
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in template_dirs]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - a YAML file, not HTML
        block_start_string="[%",
        block_end_string="%]",
        variable_start_string="[[",
        variable_end_string="]]",
        comment_start_string="[#",
        comment_end_string="#]",
    )
    env.filters["quoted"] = json.dumps  # a YAML double-quoted scalar (JSON strings are YAML)
    return env


# The certification matrix's job regenerates the part of this file between
# the <!-- sevimg-matrix:start/end --> markers, on its own branch.
MATRIX_FILE = "README.md"
MATRIX_BRANCH = "sevimg/certification-matrix"


def render(
    entries: Sequence[MatrixEntry],
    skipped: Sequence[tuple[str, int]] = (),
    template_dirs: Sequence[Path] | None = None,
) -> str:
    """The workflow's text. Deterministic: sorted entries, no timestamps, no versions of sevimg.

    `template_dirs`: where templates/ci/ is looked for (the workspace's copy
    first); the shipped templates when None.
    """
    env = _environment(template_dirs if template_dirs is not None else packaged("templates"))
    return env.get_template(TEMPLATE).render(
        entries=entries,
        skipped=skipped,
        runner=RUNNER,
        cron=ARCHIVE_CRON,
        python_version=PYTHON_VERSION,
        mkosi_version=MKOSI_VERSION,
        devel_tag=DEVEL_TAG,
        artifact_prefix=ARTIFACT_PREFIX,
        checkout=CHECKOUT.uses(),
        setup_python=SETUP_PYTHON.uses(),
        upload_artifact=UPLOAD_ARTIFACT.uses(),
        download_artifact=DOWNLOAD_ARTIFACT.uses(),
        attest_build_provenance=ATTEST_BUILD_PROVENANCE.uses(),
        matrix_file=MATRIX_FILE,
        matrix_branch=MATRIX_BRANCH,
    )


def matrix_in(text: str) -> list[dict[str, Any]]:
    """The build matrix of a workflow's text; SevimgError when it has none."""
    try:
        data = yaml.safe_load(text)
        include = data["jobs"]["build"]["strategy"]["matrix"]["include"]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise SevimgError(
            f"it has no jobs.build.strategy.matrix.include ({type(exc).__name__})"
        ) from None
    if not isinstance(include, list):
        raise SevimgError("its jobs.build.strategy.matrix.include is not a list")
    return [e for e in include if isinstance(e, dict)]


def differences(committed: str, workflow: Workflow) -> list[str]:
    """How the committed workflow text differs from the generated one, one line each."""
    if committed == workflow.text:
        return []
    unsafe = [
        f"it passes {flag}: CI builds and publishes release images only, never debug ones"
        for flag in debug_flags(committed)
    ]
    try:
        old = {str(e.get("image")): e for e in matrix_in(committed)}
    except SevimgError as exc:
        return [*unsafe, f"the committed workflow cannot be read: {exc.message}"]
    new: Mapping[str, dict[str, str]] = {e.image: e.as_dict() for e in workflow.entries}
    found: list[str] = list(unsafe)
    for image in sorted(set(new) - set(old)):
        found.append(f"{image} is missing from the matrix (roles: {new[image]['roles']})")
    for image in sorted(set(old) - set(new)):
        why = dict(workflow.skipped).get(image)
        reason = f"it has {why} error(s) now" if why else "it is no longer in images/"
        found.append(f"{image} is in the matrix but should not be ({reason})")
    for image in sorted(set(old) & set(new)):
        if {k: str(v) for k, v in old[image].items()} != new[image]:
            found.append(
                f"{image} differs: roles {old[image].get('roles')!r} in the file, {new[image]['roles']!r} from the catalog"
            )
    if not found:
        found.append(
            "the matrix agrees, but the rest of the file differs (edited by hand, or written by another version of sevimg)"
        )
    return found
