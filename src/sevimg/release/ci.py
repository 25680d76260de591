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
from pathlib import PurePosixPath
from typing import Any

import yaml

from sevimg.catalog.index import Catalog
from sevimg.catalog.pipeline import Checked, check_catalog
from sevimg.catalog.resolve import roles_of
from sevimg.mkosi_versions import OLDEST_MKOSI
from sevimg.problems import SevimgError
from sevimg.release.plan import DEVEL_TAG

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
    text = render(entries, skipped)
    if unsafe := debug_flags(text):
        raise AssertionError(f"the generated workflow passes {', '.join(unsafe)}")
    return Workflow(text, entries, skipped)


# CI builds and publishes release images only: a workflow passing one of these
# could put a debug image (console autologin) on a release.
DEBUG_FLAGS = ("--allow-debug", "--debug-image")


def debug_flags(text: str) -> list[str]:
    """The debug options a workflow's text passes (none, for one `sevimg ci` wrote)."""
    return [flag for flag in DEBUG_FLAGS if flag in text]


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are YAML)."""
    return json.dumps(value)


def render(entries: Sequence[MatrixEntry], skipped: Sequence[tuple[str, int]] = ()) -> str:
    """The workflow's text. Deterministic: sorted entries, no timestamps, no versions of sevimg."""
    lines: list[str] = []
    add = lines.append
    add("# Generated by `sevimg ci` from images/*.yaml: do not edit by hand.")
    add("# After adding, removing or changing a release, run `sevimg ci` and commit this file;")
    add("# the `check` job below (`sevimg ci --check`) fails while it is stale.")
    if skipped:
        add("#")
        add("# Not built, because `sevimg validate` finds errors in them:")
        for image, errors in skipped:
            add(f"#   {image} ({errors} error{'s' if errors != 1 else ''})")
    add("")
    add("name: Build and release images")
    add("")
    add("on:")
    add("  push:")
    add("    branches: [main]")
    add('    tags: ["v*"]')
    add("  pull_request:")
    add("  workflow_dispatch:")
    add("  # Weekly: do the archives still carry what the catalog declares? (the `archive` job)")
    add("  schedule:")
    add(f"    - cron: {_q(ARCHIVE_CRON)}")
    add("")
    add("permissions:")
    add("  contents: read")
    add("")
    add("concurrency:")
    add("  group: build-and-release-${{ github.ref }}")
    add("  # Pull requests: only the newest push matters. main and tags: finish every run.")
    add("  cancel-in-progress: ${{ github.event_name == 'pull_request' }}")
    add("")
    add("jobs:")
    add("  check:")
    add("    name: workflow matches the catalog")
    add("    if: github.event_name != 'schedule'")
    add(f"    runs-on: {RUNNER}")
    add("    timeout-minutes: 15")
    add("    steps:")
    _setup_steps(add)
    add("      - name: Check this workflow against images/")
    add("        run: .venv/bin/sevimg ci --check")
    add("")
    add("  archive:")
    add("    name: the archives still carry what the catalog declares")
    add("    # Scheduled and on demand; fails when a release no longer meets the SEV floors,")
    add("    # a package vanished, a firmware file is gone, or a declared version drifted.")
    add("    if: github.event_name == 'schedule' || github.event_name == 'workflow_dispatch'")
    add(f"    runs-on: {RUNNER}")
    add("    timeout-minutes: 30")
    add("    steps:")
    _setup_steps(add)
    add("      - name: Install gpgv and the archive keyrings the build uses")
    add("        run: |")
    add("          sudo apt-get update -qq")
    add("          sudo apt-get install -y -qq --no-install-recommends debian-archive-keyring")
    add("          sudo apt-get install -y -qq --no-install-recommends gpgv")
    add("      - name: Check every release against its repositories")
    add('        run: .venv/bin/sevimg archive --all --markdown "$GITHUB_STEP_SUMMARY"')
    add("")
    add("  build:")
    add("    name: build ${{ matrix.image }} (${{ matrix.roles }})")
    add("    needs: check")
    add(f"    runs-on: {RUNNER}")
    add("    timeout-minutes: 180")
    add("    strategy:")
    add("      fail-fast: false")
    add("      matrix:")
    add("        include:")
    for entry in entries:
        first = True
        for key, value in entry.as_dict().items():
            add(f"          {'- ' if first else '  '}{key}: {_q(value)}")
            first = False
    add("    steps:")
    _setup_steps(add)
    add("      - name: Let mkosi use unprivileged user namespaces")
    add("        # Ubuntu's AppArmor restricts them by default; mkosi's sandbox needs them.")
    add("        run: sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")
    add("      - name: Install the packages mkosi needs on the runner")
    add("        run: |")
    add("          sudo apt-get update -qq")
    add("          sudo apt-get install -y -qq --no-install-recommends debian-archive-keyring")
    add(f"      - name: Install mkosi {MKOSI_VERSION}")
    add(f"        run: sudo tools/install-mkosi {MKOSI_VERSION}")
    add("      - name: Build")
    add("        env:")
    add("          IMAGE: ${{ matrix.image }}")
    add("          BUILD_ARGS: ${{ matrix.build-args }}")
    add("        run: |")
    add("          # Reproducible timestamps in the manifests: the commit's time.")
    add("          SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)")
    add("          export SOURCE_DATE_EPOCH")
    add("          # BUILD_ARGS is empty or `--role guest`: split on purpose.")
    add(
        '          sudo --preserve-env=SOURCE_DATE_EPOCH .venv/bin/sevimg build "$IMAGE" $BUILD_ARGS -o out'
    )
    add("      - name: Upload the artifact folder")
    add(f"        uses: {UPLOAD_ARTIFACT.uses()}")
    add("        with:")
    add(f"          name: {ARTIFACT_PREFIX}${{{{ matrix.image }}}}")
    add("          path: out/")
    add("          if-no-files-found: error")
    add("          retention-days: 7")
    add("          compression-level: 0  # UKIs are compressed already")
    add("      - name: Keep the build logs of a failed build")
    add("        if: failure()")
    add(f"        uses: {UPLOAD_ARTIFACT.uses()}")
    add("        with:")
    add("          name: logs-${{ matrix.image }}")
    add("          path: out/logs/")
    add("          if-no-files-found: ignore")
    add("")
    add("  publish:")
    add("    name: publish to the release (devel from main, vX.Y from tags)")
    add("    needs: [check, build]")
    add(
        "    if: github.event_name == 'push' && "
        "(github.ref == 'refs/heads/main' || startsWith(github.ref, 'refs/tags/v'))"
    )
    add(f"    runs-on: {RUNNER}")
    add("    timeout-minutes: 60")
    add("    permissions:")
    add("      contents: write  # create the release, upload and replace assets")
    add("      id-token: write  # sign the artifact attestations (Sigstore, through GitHub's OIDC)")
    add("      attestations: write  # store them with the repository")
    add("    concurrency:")
    add("      group: publish-${{ github.ref }}")
    add("      cancel-in-progress: false")
    add("    steps:")
    _setup_steps(add)
    add("      - name: Download every build's artifact folder")
    add(f"        uses: {DOWNLOAD_ARTIFACT.uses()}")
    add("        with:")
    add(f"          pattern: {ARTIFACT_PREFIX}*")
    add("          path: artifacts")
    add("      - name: Merge them into one folder with one SHA256SUMS")
    add(f"        run: .venv/bin/sevimg merge-artifacts artifacts/{ARTIFACT_PREFIX}* -o out")
    add("      - name: Attest the images, their manifests and SHA256SUMS")
    add("        # A verifier checks a download with `gh attestation verify FILE -R OWNER/REPO`.")
    add(f"        uses: {ATTEST_BUILD_PROVENANCE.uses()}")
    add("        with:")
    add("          subject-path: |")
    add("            out/*.efi")
    add("            out/*.manifest.json")
    add("            out/SHA256SUMS")
    add("      - name: Publish")
    add("        env:")
    add("          GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}")
    add("          # v* tags publish to their own release, main to the rolling `devel`.")
    add(f"          TAG: ${{{{ github.ref_type == 'tag' && github.ref_name || '{DEVEL_TAG}' }}}}")
    add('        run: .venv/bin/sevimg publish --repo "$GITHUB_REPOSITORY" --tag "$TAG" --from out')
    return "\n".join(lines) + "\n"


def _setup_steps(add: Any) -> None:
    """Check out, set up Python, install sevimg into .venv (root runs it from there too)."""
    add(f"      - uses: {CHECKOUT.uses()}")
    add("        with:")
    add("          persist-credentials: false")
    add(f"      - uses: {SETUP_PYTHON.uses()}")
    add("        with:")
    add(f"          python-version: {_q(PYTHON_VERSION)}")
    add("      - name: Install sevimg")
    add("        run: |")
    add("          python -m venv .venv")
    add("          .venv/bin/python -m pip install --quiet .")


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
