"""`sevimg ci`: the generated workflow against the catalog, and --check."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sevimg.catalog.index import Catalog, load_catalog
from sevimg.catalog.pipeline import check_catalog
from sevimg.catalog.resolve import roles_of
from sevimg.release import ci
from sevimg.workspace import Workspace
from tests.conftest import RELEASES, REPO, CliFn

WORKFLOW = ".github/workflows/build-and-release.yml"


def parse(text: str) -> dict[str, Any]:
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    # YAML 1.1 reads the key `on` as True; GitHub reads it as "on".
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["steps"])


def runs(job: dict[str, Any]) -> str:
    return "\n".join(str(s.get("run", "")) for s in steps(job))


def test_matrix_is_the_catalog(catalog: Catalog) -> None:
    workflow = ci.generate(catalog)
    data = parse(workflow.text)
    include = data["jobs"]["build"]["strategy"]["matrix"]["include"]
    checked, _ = check_catalog(catalog)
    expected = [
        {
            "image": c.entry.image,
            "roles": " ".join(roles_of(c.entry)),
            "build-args": "" if len(roles_of(c.entry)) == 2 else "--role guest",
        }
        for c in sorted(checked, key=lambda c: c.entry.image)
        if c.ok
    ]
    assert include == expected
    assert len(include) == len(catalog.entries) == RELEASES
    by_image = {e["image"]: e for e in include}
    assert by_image["ubuntu-24.04"] == {
        "image": "ubuntu-24.04",
        "roles": "guest",
        "build-args": "--role guest",
    }
    assert by_image["debian-13"]["roles"] == "guest host"
    assert workflow.skipped == ()


def test_generation_is_deterministic(workspace: Path) -> None:
    first = ci.generate(load_catalog(Workspace(workspace))).text
    second = ci.generate(load_catalog(Workspace(workspace))).text
    assert first == second
    # Nothing that changes from run to run or machine to machine.
    assert str(workspace) not in first
    assert "sevimg_version" not in first


def test_jobs_do_what_the_release_process_needs(catalog: Catalog) -> None:
    data = parse(ci.generate(catalog).text)
    on = data["on"]
    assert on["push"] == {"branches": ["main"], "tags": ["v*"]}
    assert data["permissions"] == {"contents": "read"}
    jobs = data["jobs"]
    assert set(jobs) == {"check", "build", "publish", "archive", "certification-matrix"}

    assert ".venv/bin/sevimg ci --check" in runs(jobs["check"])
    # Builds never run on the weekly schedule: only the archive check does.
    assert on["schedule"] == [{"cron": ci.ARCHIVE_CRON}]
    assert "workflow_dispatch" in on
    # Nor on issue events: those only regenerate the certification matrix.
    assert jobs["check"]["if"] == "github.event_name != 'schedule' && github.event_name != 'issues'"

    build = jobs["build"]
    assert build["needs"] == "check"
    assert build["strategy"]["fail-fast"] is False
    script = runs(build)
    assert "sudo tools/install-mkosi 25.3" in script
    assert "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0" in script
    assert "python -m pip install --quiet ." in script
    assert '.venv/bin/sevimg build "$IMAGE" $BUILD_ARGS -o out' in script
    build_step = next(s for s in steps(build) if s.get("name") == "Build")
    assert build_step["env"] == {
        "IMAGE": "${{ matrix.image }}",
        "BUILD_ARGS": "${{ matrix.build-args }}",
    }
    upload = next(
        s for s in steps(build) if "upload-artifact" in str(s.get("uses")) and "if" not in s
    )
    assert upload["with"]["name"] == "out-${{ matrix.image }}"
    assert upload["with"]["path"] == "out/"

    publish = jobs["publish"]
    assert publish["needs"] == ["check", "build"]
    assert publish["permissions"] == {
        "contents": "write",
        "id-token": "write",
        "attestations": "write",
    }
    condition = publish["if"]
    assert "github.event_name == 'push'" in condition
    assert "github.ref == 'refs/heads/main'" in condition
    assert "startsWith(github.ref, 'refs/tags/v')" in condition
    download = next(s for s in steps(publish) if "download-artifact" in str(s.get("uses")))
    assert download["with"] == {"pattern": "out-*", "path": "artifacts"}
    script = runs(publish)
    assert ".venv/bin/sevimg merge-artifacts artifacts/out-* -o out" in script
    assert '.venv/bin/sevimg publish --repo "$GITHUB_REPOSITORY" --tag "$TAG" --from out' in script
    # Attested after the merge, before publishing: what is published is what was attested.
    names = [s.get("name") or s.get("uses") for s in steps(publish)]
    attest = next(s for s in steps(publish) if "attest-build-provenance" in str(s.get("uses")))
    assert names.index(attest["name"]) < names.index("Publish")
    assert attest["with"]["subject-path"].split() == [
        "out/*.efi",
        "out/*.manifest.json",
        "out/SHA256SUMS",
    ]
    publish_step = next(s for s in steps(publish) if s.get("name") == "Publish")
    assert publish_step["env"] == {
        "GITHUB_TOKEN": "${{ secrets.GITHUB_TOKEN }}",
        "TAG": "${{ github.ref_type == 'tag' && github.ref_name || 'devel' }}",
    }
    archive = jobs["archive"]
    assert "github.event_name == 'schedule'" in archive["if"]
    assert "github.event_name == 'workflow_dispatch'" in archive["if"]
    assert "needs" not in archive and "permissions" not in archive
    script = runs(archive)
    assert '.venv/bin/sevimg archive --all --markdown "$GITHUB_STEP_SUMMARY"' in script
    assert "gpgv" in script

    # The token reaches only the publish step and the matrix job's two steps.
    with_token = [
        (name, s.get("name"))
        for name, job in jobs.items()
        for s in steps(job)
        if "secrets." in str(s)
    ]
    assert with_token == [
        ("publish", "Publish"),
        ("certification-matrix", "Regenerate the matrix from every certificate issue"),
        ("certification-matrix", "Propose the change as a pull request"),
    ]
    assert ci.generate(catalog).text.count("secrets.") == 3


def test_every_action_is_pinned_to_a_commit(catalog: Catalog) -> None:
    text = ci.generate(catalog).text
    uses = re.findall(r"uses: (\S+)(.*)", text)
    assert len(uses) >= 9
    for ref, comment in uses:
        assert re.fullmatch(r"actions/[a-z-]+@[0-9a-f]{40}", ref), ref
        assert re.fullmatch(r" # v\d+\.\d+\.\d+", comment), comment
    assert {a.repo for a in ci.ACTIONS} == {r.split("@")[0] for r, _ in uses}


def test_run_scripts_are_valid_bash(catalog: Catalog) -> None:
    data = parse(ci.generate(catalog).text)
    for name, job in data["jobs"].items():
        for step in steps(job):
            if "run" not in step:
                continue
            script = re.sub(r"\$\{\{[^}]*\}\}", "x", str(step["run"]))
            done = subprocess.run(
                ["bash", "-n", "-c", script], capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, f"{name}: {done.stderr}"


def test_a_release_with_errors_is_skipped_and_said_so(cli: CliFn, workspace: Path) -> None:
    release = workspace / "images" / "fedora-43.yaml"
    release.write_text(release.read_text().replace("status: supported", "status: sometimes"))
    run = cli("ci", "--stdout")
    assert run.code == 0, run.output
    assert "skipped fedora-43:" in run.stderr and "sevimg validate fedora-43" in run.stderr
    data = parse(run.stdout)
    images = [e["image"] for e in data["jobs"]["build"]["strategy"]["matrix"]["include"]]
    assert "fedora-43" not in images and "fedora-42" in images
    assert "#   fedora-43 (1 error)" in run.stdout


# --- writing and --check ---------------------------------------------------------------------


def test_ci_writes_the_file_and_check_passes(cli: CliFn, workspace: Path) -> None:
    run = cli("ci")
    assert run.code == 0, run.output
    target = workspace / WORKFLOW
    assert run.stdout.strip() == f"wrote {WORKFLOW} ({RELEASES} releases)"
    assert target.read_text() == cli("ci", "--stdout").stdout
    check = cli("ci", "--check")
    assert check.code == 0, check.output
    assert f"is up to date ({RELEASES} releases)" in check.stdout


def test_check_fails_after_a_release_is_added(cli: CliFn, workspace: Path) -> None:
    assert cli("ci").code == 0
    shutil.copy(workspace / "images" / "fedora-43.yaml", workspace / "images" / "fedora-45.yaml")
    new = workspace / "images" / "fedora-45.yaml"
    new.write_text(new.read_text().replace('release: "43"', 'release: "45"'))
    assert cli("validate", "fedora-45").code == 0
    check = cli("ci", "--check")
    assert check.code == 1
    assert f"{WORKFLOW}: fedora-45 is missing from the matrix (roles: guest host)" in check.stderr
    assert f"sevimg: error: {WORKFLOW} is stale" in check.stderr
    assert f"hint: run `sevimg ci` and commit {WORKFLOW}" in check.stderr
    # Regenerating fixes it.
    assert cli("ci").code == 0
    assert cli("ci", "--check").code == 0


def test_check_names_removed_and_changed_entries(cli: CliFn, workspace: Path) -> None:
    assert cli("ci").code == 0
    (workspace / "images" / "rocky-10.yaml").unlink()
    fedora = workspace / "images" / "fedora-43.yaml"
    fedora.write_text(fedora.read_text() + "roles: [guest]\n")
    ubuntu = workspace / "images" / "ubuntu-24.04.yaml"
    ubuntu.write_text(re.sub(r"(?m)^roles: \[guest\]\n", "", ubuntu.read_text()))
    check = cli("ci", "--check")
    assert check.code == 1
    assert (
        "rocky-10 is in the matrix but should not be (it is no longer in images/)" in check.stderr
    )
    assert (
        "fedora-43 differs: roles 'guest host' in the file, 'guest' from the catalog"
        in check.stderr
    )
    # ubuntu-24.04's host fails the SEV floors (kernel 6.8, QEMU 8.2: no SEV-SNP; its
    # OVMF 2024.02 only warns): as a host it has errors, so it drops out.
    assert "skipped ubuntu-24.04:" in check.stderr
    assert "ubuntu-24.04 is in the matrix but should not be (it has 2 error(s) now)" in check.stderr


def test_check_notices_a_hand_edit_and_a_missing_file(cli: CliFn, workspace: Path) -> None:
    missing = cli("ci", "--check")
    assert missing.code == 1 and f"{WORKFLOW} does not exist" in missing.stderr
    assert cli("ci").code == 0
    target = workspace / WORKFLOW
    target.write_text(target.read_text().replace("timeout-minutes: 60", "timeout-minutes: 61"))
    check = cli("ci", "--check")
    assert check.code == 1
    assert "the matrix agrees, but the rest of the file differs" in check.stderr
    target.write_text("not: [a workflow")
    check = cli("ci", "--check")
    assert check.code == 1 and "the committed workflow cannot be read" in check.stderr


def test_output_option(cli: CliFn, workspace: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.yml"
    assert cli("ci", "--output", str(target)).code == 0
    assert target.is_file() and not (workspace / WORKFLOW).exists()
    assert cli("ci", "--check", "--output", str(target)).code == 0
    assert cli("ci", "--stdout", "--check").code == 1


def test_the_committed_workflow_is_current(cli: CliFn) -> None:
    check = cli("ci", "--check", root=REPO)
    assert check.code == 0, check.output


def test_render_quotes_every_matrix_value() -> None:
    text = ci.render([ci.MatrixEntry("debian-13", ("guest", "host"))])
    assert '- image: "debian-13"' in text
    assert 'roles: "guest host"' in text
    assert 'build-args: ""' in text


def test_the_workflow_never_publishes_debug_images(catalog: Catalog) -> None:
    text = ci.generate(catalog).text
    assert ci.debug_flags(text) == []
    assert "--allow-debug" not in text and "--debug-image" not in text
    assert "sevimg publish " in text and "sevimg merge-artifacts " in text


@pytest.mark.parametrize(
    ("old", "new", "flag"),
    [
        ('--tag "$TAG" --from out', '--tag "$TAG" --from out --allow-debug', "--allow-debug"),
        (
            "-o out\n      - name: Attest",
            "-o out --allow-debug\n      - name: Attest",
            "--allow-debug",
        ),
        ("$BUILD_ARGS -o out", "$BUILD_ARGS --debug-image -o out", "--debug-image"),
        ("sevimg publish --repo", "sevimg publish --allow-debug --repo", "--allow-debug"),
    ],
)
def test_check_refuses_a_workflow_that_passes_a_debug_flag(
    cli: CliFn, workspace: Path, old: str, new: str, flag: str
) -> None:
    assert cli("ci").code == 0
    target = workspace / WORKFLOW
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new))
    check = cli("ci", "--check")
    assert check.code == 1
    assert f"it passes {flag}: CI builds and publishes release images only" in check.stderr


def test_a_certificate_issue_regenerates_the_matrix_as_a_pull_request(catalog: Catalog) -> None:
    data = parse(ci.generate(catalog).text)
    assert {"opened", "edited", "milestoned", "labeled"} <= set(data["on"]["issues"]["types"])
    # Issue events never wait behind (or cancel) a build of main.
    assert "github.event_name == 'issues'" in data["concurrency"]["group"]
    job = data["jobs"]["certification-matrix"]
    assert job["if"] == (
        "github.event_name == 'issues' && contains(github.event.issue.labels.*.name, 'certificate')"
    )
    assert job["permissions"] == {
        "contents": "write",
        "pull-requests": "write",
        "issues": "read",
    }
    script = runs(job)
    # Regenerated whole from every certificate issue, not edited row by row.
    assert (
        '.venv/bin/sevimg matrix --github-issues "$GITHUB_REPOSITORY" --update README.md' in script
    )
    assert 'gh pr create --head "$BRANCH"' in script
    # Nothing an issue's author wrote reaches the shell: no github.event.issue.* in any script.
    assert "github.event.issue" not in script
    for step in steps(job):
        if "uses" in step:
            assert re.search(r"@[0-9a-f]{40}\b", step["uses"]), step["uses"]
    # Every other job stays off issue events.
    for name in ("check", "build", "publish", "archive"):
        other = data["jobs"][name]
        assert (
            "issues" not in str(other.get("if", "")) or "!=" in str(other["if"]) or name == "build"
        )
    assert data["jobs"]["build"]["needs"] == "check"
