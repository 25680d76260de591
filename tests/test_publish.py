"""`sevimg publish` end to end: real files, through real HTTP, into the fake GitHub API.

Every test asserts on the server's final state (and, where it matters, on
what the public saw after every single request).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from sevimg import progress
from sevimg.artifacts.checksums import SHA256SUMS, read_sha256sums, sha256_file, write_sha256sums
from sevimg.artifacts.manifest import Manifest, write_manifest
from sevimg.cli import release as release_cli
from sevimg.problems import SevimgError
from sevimg.release.folder import load_artifact_folder
from sevimg.release.github import GitHub, GitHubError, Token, url_segment
from sevimg.release.plan import (
    DISPATCH_TYPES,
    HOST_TYPE,
    TMP_PREFIX,
    Plan,
    check_tag,
    content_type_for,
    is_prerelease,
    tag_problem,
)
from sevimg.release.publish import SilentReporter, publish
from tests.artifactkit import efi_bytes, make_folder
from tests.conftest import REPO, CliFn, Run
from tests.fakegithub import READ_TOKEN, TOKEN, FakeClock, FakeGitHub
from tests.leaks import child_pids

IMAGES = ("debian-13", "ubuntu-26.04")
GUEST_ONLY = ("fedora-43",)
ALL_NAMES = sorted(
    [
        f"{role}-{image}{ext}"
        for image in IMAGES
        for role in ("guest", "host")
        for ext in (".efi", ".manifest.json")
    ]
    + [f"guest-{image}{ext}" for image in GUEST_ONLY for ext in (".efi", ".manifest.json")]
    + [SHA256SUMS]
)
HOSTS = sorted(f"host-{image}.efi" for image in IMAGES)


@pytest.fixture
def reporter() -> SilentReporter:
    return SilentReporter()


@pytest.fixture
def gh(fake: FakeGitHub, clock: FakeClock, reporter: SilentReporter) -> Iterator[GitHub]:
    with GitHub(
        f"{fake.owner}/{fake.repo}",
        Token(TOKEN, "GITHUB_TOKEN"),
        api_url=fake.api_url,
        clock=clock,
        log=reporter.info,
    ) as client:
        yield client


def artifacts(tmp_path: Path, generation: int = 1, name: str = "out") -> Path:
    return make_folder(
        tmp_path / f"{name}{generation}",
        [*IMAGES, *GUEST_ONLY],
        generation=generation,
        guest_only=GUEST_ONLY,
    )


def final_assets(fake: FakeGitHub, tag: str = "devel") -> dict[str, tuple[str, bytes, str]]:
    release = fake.release(tag)
    assert release is not None
    return {a.name: (a.content_type, a.data, a.state) for a in release.assets}


def assert_published(fake: FakeGitHub, folder: Path, tag: str = "devel") -> None:
    """The release is public and holds exactly the folder's files, each with its right type."""
    release = fake.release(tag)
    assert release is not None and not release.draft
    assets = final_assets(fake, tag)
    assert sorted(assets) == ALL_NAMES
    for name, (ctype, data, state) in assets.items():
        assert state == "uploaded"
        assert data == (folder / name).read_bytes(), name
        assert ctype == content_type_for(name)
        if name.startswith("host-") and name.endswith(".efi"):
            assert ctype == "application/vnd.dispatch+efi"
        else:
            assert ctype not in DISPATCH_TYPES, name
    sums = assets[SHA256SUMS][1].decode()
    for line in sums.splitlines():
        sha, name = line.split("  ")
        assert hashlib.sha256(assets[name][1]).hexdigest() == sha
    assert sorted(line.split("  ")[1] for line in sums.splitlines()) == [
        n for n in ALL_NAMES if n != SHA256SUMS
    ]


def writes(fake: FakeGitHub) -> list[str]:
    return [f"{r.method} {r.path}" for r in fake.requests if r.method != "GET"]


# --- the happy paths ----------------------------------------------------------------------------


def test_first_publish_creates_a_draft_and_publishes_it_complete(
    fake: FakeGitHub, gh: GitHub, tmp_path: Path
) -> None:
    folder = artifacts(tmp_path)
    plan, outcome = publish(gh, folder, "devel")
    assert outcome is not None
    assert plan.release_action == "create"
    assert sorted(outcome.created) == ALL_NAMES and not outcome.replaced and not outcome.kept
    assert_published(fake, folder)
    release = fake.release("devel")
    assert release is not None and release.prerelease
    assert len(fake.releases) == 1
    # SHA256SUMS on the release is byte for byte the folder's.
    assert final_assets(fake)[SHA256SUMS][1] == (folder / SHA256SUMS).read_bytes()
    # Nobody saw the release before it was complete: it was a draft until then.
    seen = [s["devel"] for s in fake.snapshots if "devel" in s]
    assert seen and all(list(names) == ALL_NAMES for names in seen)
    # Uploads went to the release's upload_url host, never to the API host.
    uploads = [r for r in fake.requests if r.method == "POST" and "name" in r.query]
    assert uploads and all(r.server == "uploads" for r in uploads)


def test_a_version_tag_makes_a_normal_release(fake: FakeGitHub, gh: GitHub, tmp_path: Path) -> None:
    folder = artifacts(tmp_path)
    publish(gh, folder, "v1.2.0")
    release = fake.release("v1.2.0")
    assert release is not None and not release.prerelease and not release.draft
    assert is_prerelease("devel") and not is_prerelease("v2") and is_prerelease("vnext")


def test_publishing_again_replaces_without_a_gap(
    fake: FakeGitHub, gh: GitHub, tmp_path: Path
) -> None:
    publish(gh, artifacts(tmp_path, 1), "devel")
    first = len(fake.snapshots)
    rebuilt = artifacts(tmp_path, 2)
    plan, outcome = publish(gh, rebuilt, "devel")
    assert outcome is not None and plan.release_action == "update"
    # Every file changed (the manifests hold the new sha256s, so SHA256SUMS did too).
    assert sorted(outcome.replaced) == ALL_NAMES
    assert_published(fake, rebuilt)
    later = [set(s["devel"]) for s in fake.snapshots[first:]]
    assert len(later) > 3 * len(ALL_NAMES)  # upload, delete, rename per asset, and more
    assert_never_without_an_asset(later)
    assert not any(a.startswith(TMP_PREFIX) for a in final_assets(fake))


def assert_never_without_an_asset(snapshots: list[set[str]]) -> None:
    """After every request, every asset was there: under its name, or (new, checked) under its temporary name.

    GitHub cannot rename over an existing asset, so between deleting the old
    asset and renaming the new one (two consecutive requests) the content
    is up only as `sevimg-tmp-<name>`, a name that still contains the
    original, so dispatch's substring filters keep finding it.
    """
    gaps = 0
    for names in snapshots:
        for name in ALL_NAMES:
            if name not in names:
                assert TMP_PREFIX + name in names, f"the release lacked {name} at some moment"
                gaps += 1
    # One request-long gap per replaced asset, never more.
    assert gaps <= len(ALL_NAMES)


def test_publishing_the_same_files_keeps_everything(
    fake: FakeGitHub, gh: GitHub, tmp_path: Path
) -> None:
    folder = artifacts(tmp_path)
    publish(gh, folder, "devel")
    before = len(writes(fake))
    _plan, outcome = publish(gh, folder, "devel")
    assert outcome is not None
    assert sorted(outcome.kept) == ALL_NAMES and not outcome.created and not outcome.replaced
    assert len(writes(fake)) == before  # nothing written at all
    assert_published(fake, folder)


def test_a_wrong_content_type_is_replaced(fake: FakeGitHub, gh: GitHub, tmp_path: Path) -> None:
    folder = artifacts(tmp_path)
    release = fake.add_release("devel", prerelease=True)
    # Someone uploaded the guest with a dispatch type and the host without one.
    guest = folder / "guest-debian-13.efi"
    host = folder / "host-debian-13.efi"
    fake.add_asset(release, guest.name, guest.read_bytes(), HOST_TYPE)
    fake.add_asset(release, host.name, host.read_bytes(), "application/octet-stream")
    plan, _ = publish(gh, folder, "devel")
    by_name = {i.name: i for i in plan.items}
    assert by_name[guest.name].action == "replace"
    assert by_name[guest.name].reason == f"content type is {HOST_TYPE}"
    assert by_name[host.name].action == "replace"
    assert_published(fake, folder)


def test_only_the_named_images_are_published(fake: FakeGitHub, gh: GitHub, tmp_path: Path) -> None:
    folder = artifacts(tmp_path)
    publish(gh, folder, "devel", images=["debian-13"])
    assets = final_assets(fake)
    assert sorted(assets) == [
        SHA256SUMS,
        "guest-debian-13.efi",
        "guest-debian-13.manifest.json",
        "host-debian-13.efi",
        "host-debian-13.manifest.json",
    ]
    listed = read_sums(assets[SHA256SUMS][1], tmp_path)
    assert sorted(listed) == sorted(n for n in assets if n != SHA256SUMS)
    # A second run for another image: SHA256SUMS then covers both.
    publish(gh, folder, "devel", images=["ubuntu-26.04"])
    assets = final_assets(fake)
    listed = read_sums(assets[SHA256SUMS][1], tmp_path)
    assert sorted(listed) == sorted(n for n in assets if n != SHA256SUMS)
    assert len(listed) == 8
    for name, sha in listed.items():
        assert sha == sha256_file(folder / name)
    with pytest.raises(SevimgError, match=r"no artifacts for rocky-10 in .* \(it has: debian-13"):
        publish(gh, folder, "devel", images=["rocky-10"])


def read_sums(data: bytes, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "downloaded-SHA256SUMS"
    path.write_bytes(data)
    return read_sha256sums(path)


def test_a_release_with_more_than_100_assets(fake: FakeGitHub, gh: GitHub, tmp_path: Path) -> None:
    folder = artifacts(tmp_path)
    release = fake.add_release("devel", prerelease=True)
    for i in range(150):
        fake.add_asset(release, f"aaa-filler-{i:03}.txt", b"f", "text/plain")
    # Our assets sit on page 2 and 3 of 100: unseen without pagination, their
    # upload would be refused as a duplicate.
    for name in ALL_NAMES:
        fake.add_asset(release, name, (folder / name).read_bytes(), content_type_for(name))
    host = folder / "host-debian-13.efi"
    host.write_bytes(efi_bytes("host-debian-13", 9))
    folder = rebuild_sums(folder)
    _plan, outcome = publish(gh, folder, "devel")
    assert outcome is not None
    assert set(outcome.replaced) == {host.name, "host-debian-13.manifest.json", SHA256SUMS}
    assert len(outcome.kept) == len(ALL_NAMES) - 3
    stored = fake.release("devel")
    assert stored is not None and len(stored.assets) == 150 + len(ALL_NAMES)
    assert final_assets(fake)[host.name][1] == host.read_bytes()


def rebuild_sums(folder: Path) -> Path:
    """After changing an image by hand: its manifest and SHA256SUMS as a rebuild writes them."""
    for manifest_path in folder.glob("*.manifest.json"):
        manifest = Manifest.from_json(manifest_path.read_text())
        image = folder / manifest.artifact
        if sha256_file(image) != manifest.sha256:
            fixed = Manifest.from_json(
                manifest.to_json()
                .replace(manifest.sha256, sha256_file(image))
                .replace(f'"size": {manifest.size}', f'"size": {image.stat().st_size}')
            )
            write_manifest(folder, fixed)
    write_sha256sums(folder)
    return folder


# --- leftovers and faults -------------------------------------------------------------------------


def test_a_502_mid_upload_is_survived(
    fake: FakeGitHub, gh: GitHub, clock: FakeClock, tmp_path: Path
) -> None:
    folder = artifacts(tmp_path)
    fake.fail("POST", r".*/assets", 502, starter=True, times=2)
    publish(gh, folder, "devel")
    assert_published(fake, folder)
    assert clock.sleeps == [2.0, 4.0]  # one upload failed twice: backoff doubles


def test_a_failed_replacement_leaves_the_old_asset(
    fake: FakeGitHub, gh: GitHub, clock: FakeClock, tmp_path: Path
) -> None:
    old = artifacts(tmp_path, 1)
    publish(gh, old, "devel")
    first = len(fake.snapshots)
    fake.fail("POST", r".*/assets", 502, starter=True, times=1000)
    with pytest.raises(GitHubError) as caught:
        publish(gh, artifacts(tmp_path, 2), "devel")
    assert "\n" not in str(caught.value)
    assert "GitHub answered 502" in str(caught.value)
    # Still the first build, complete, and it never lacked anything.
    assets = final_assets(fake)
    for name in ALL_NAMES:
        assert assets[name][1] == (old / name).read_bytes()
    assert all(set(ALL_NAMES) <= set(s["devel"]) for s in fake.snapshots[first:])
    # The next run cleans up what the broken one left and finishes the job.
    fake.faults.clear()
    new = artifacts(tmp_path, 2)
    publish(gh, new, "devel")
    assert_published(fake, new)


def test_a_corrupted_upload_is_caught_by_its_digest(
    fake: FakeGitHub, gh: GitHub, tmp_path: Path
) -> None:
    old = artifacts(tmp_path, 1)
    publish(gh, old, "devel")
    fake.corrupt_uploads = 1
    with pytest.raises(GitHubError, match=r"GitHub's digest is sha256:[0-9a-f]{64}, the file's is"):
        publish(gh, artifacts(tmp_path, 2), "devel")
    assets = final_assets(fake)
    assert sorted(assets) == ALL_NAMES  # the bad copy was removed, the old one kept
    assert all(assets[n][1] == (old / n).read_bytes() for n in ALL_NAMES)


def test_leftovers_of_an_interrupted_run_are_cleaned(
    fake: FakeGitHub, gh: GitHub, reporter: SilentReporter, tmp_path: Path
) -> None:
    folder = artifacts(tmp_path)
    draft = fake.add_release("devel", draft=True, prerelease=True)
    fake.add_asset(draft, "guest-debian-13.efi", b"", "application/efi", state="starter")
    fake.add_asset(draft, f"{TMP_PREFIX}host-debian-13.efi", b"half", HOST_TYPE)
    fake.add_asset(
        draft, "host-debian-13.efi", (folder / "host-debian-13.efi").read_bytes(), HOST_TYPE
    )
    plan, outcome = publish(gh, folder, "devel", reporter=reporter)
    assert outcome is not None
    assert plan.release_action == "publish"
    assert {a.name for a in plan.cleanup} == {
        "guest-debian-13.efi",
        f"{TMP_PREFIX}host-debian-13.efi",
    }
    assert "host-debian-13.efi" in outcome.kept
    assert len(fake.releases) == 1  # the draft was finished, not duplicated
    assert_published(fake, folder)
    assert any("state starter" in line for line in reporter.infos)


def test_rate_limits_while_publishing_are_waited_out(
    fake: FakeGitHub, gh: GitHub, clock: FakeClock, tmp_path: Path
) -> None:
    folder = artifacts(tmp_path)
    fake.secondary_rate_limit("POST", r".*/assets", status=403, retry_after=45)
    fake.secondary_rate_limit("PATCH", ".*", status=429, retry_after=None)
    fake.primary_rate_limit("GET", r".*/releases/tags/.*", reset_in=600, status=429)
    fake.fail("GET", r".*/assets", 503)
    publish(gh, folder, "devel")
    assert_published(fake, folder)
    assert sorted(clock.sleeps) == [2.0, 45.0, 60.0, pytest.approx(601.0, abs=1.0)]


def test_a_server_error_creating_the_release_makes_no_second_draft(
    fake: FakeGitHub, gh: GitHub, clock: FakeClock, tmp_path: Path
) -> None:
    folder = artifacts(tmp_path)
    fake.fail("POST", r".*/releases", 500)
    publish(gh, folder, "devel")
    assert len(fake.releases) == 1
    assert_published(fake, folder)


def test_a_read_only_token_changes_nothing(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    folder = artifacts(tmp_path)
    with (
        GitHub(
            "acme/sev-images", Token(READ_TOKEN, "GITHUB_TOKEN"), api_url=fake.api_url, clock=clock
        ) as gh,
        pytest.raises(GitHubError) as caught,
    ):
        publish(gh, folder, "devel")
    assert "needs contents=write" in str(caught.value)
    assert fake.releases == []


def test_a_broken_folder_is_refused_before_any_request(
    fake: FakeGitHub, gh: GitHub, tmp_path: Path
) -> None:
    folder = artifacts(tmp_path)
    with (folder / "guest-debian-13.efi").open("ab") as handle:
        handle.write(b"!")
    with pytest.raises(SevimgError, match="is not publishable") as caught:
        publish(gh, folder, "devel")
    assert "guest-debian-13.efi: error: SHA-256 is" in "\n".join(map(str, caught.value.problems))
    assert fake.requests == []


def test_dry_run_writes_nothing(fake: FakeGitHub, gh: GitHub, tmp_path: Path) -> None:
    publish(gh, artifacts(tmp_path, 1), "devel")
    before = writes(fake)
    folder = artifacts(tmp_path, 2)
    (folder / "guest-fedora-43.efi").write_bytes(
        (tmp_path / "out1" / "guest-fedora-43.efi").read_bytes()
    )
    rebuild_sums(folder)
    plans: list[Plan] = []
    plan, outcome = publish(gh, folder, "devel", dry_run=True, on_plan=plans.append)
    assert outcome is None and plans == [plan]
    assert writes(fake) == before
    actions = {i.name: i.action for i in plan.items}
    assert actions["guest-fedora-43.efi"] == "keep"
    assert actions["host-debian-13.efi"] == "replace"


# --- dispatch's view ------------------------------------------------------------------------------


def dispatch_select(
    api_url: str, repo: str, tag: str, filters: list[str]
) -> list[dict[str, object]]:
    """dispatch's selection rule, as shared/reference/dispatch.md states it."""
    response = httpx.get(
        f"{api_url}/repos/{repo}/releases/tags/{tag}",
        headers={"Accept": "application/vnd.github+json", "User-Agent": "dispatch"},
    )
    response.raise_for_status()
    chosen = []
    for asset in response.json()["assets"]:
        wanted = {
            "application/vnd.dispatch+efi",
            "application/vnd.dispatch+iso",
            "application/vnd.dispatch+img",
        }
        if asset["content_type"] not in wanted:
            continue
        if filters and not any(f in asset["name"] for f in filters):
            continue
        chosen.append(
            {k: asset[k] for k in ("name", "size", "browser_download_url", "content_type")}
        )
    return sorted(chosen, key=lambda a: str(a["name"]))


def test_dispatch_picks_exactly_the_host_images(
    fake: FakeGitHub, gh: GitHub, tmp_path: Path
) -> None:
    folder = artifacts(tmp_path)
    draft_seen: list[int] = []
    publish(
        gh,
        folder,
        "devel",
        on_plan=lambda _: draft_seen.append(
            httpx.get(
                f"{fake.api_url}/repos/acme/sev-images/releases/tags/devel",
                headers={"User-Agent": "d"},
            ).status_code
        ),
    )
    assert draft_seen == [404]
    jobs = dispatch_select(fake.api_url, "acme/sev-images", "devel", [])
    assert [j["name"] for j in jobs] == HOSTS
    for job in jobs:
        data = httpx.get(str(job["browser_download_url"])).content  # anonymous, like dispatch
        assert data == (folder / str(job["name"])).read_bytes()
        assert job["size"] == len(data)
    assert [
        j["name"] for j in dispatch_select(fake.api_url, "acme/sev-images", "devel", ["ubuntu"])
    ] == ["host-ubuntu-26.04.efi"]
    assert dispatch_select(fake.api_url, "acme/sev-images", "devel", ["fedora"]) == []
    # The published SHA256SUMS checks every downloaded asset.
    sums = httpx.get(f"{fake.api_url}/acme/sev-images/releases/download/devel/SHA256SUMS").text
    for line in sums.splitlines():
        sha, name = line.split("  ")
        body = httpx.get(f"{fake.api_url}/acme/sev-images/releases/download/devel/{name}").content
        assert hashlib.sha256(body).hexdigest() == sha


# --- the command line -------------------------------------------------------------------------------


@pytest.fixture
def fake_clock_for_cli(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> FakeClock:
    monkeypatch.setattr(release_cli, "CLOCK", clock)
    return clock


def test_cli_publishes_and_never_shows_the_token(
    cli: CliFn,
    fake: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_clock_for_cli: FakeClock,
) -> None:
    folder = artifacts(tmp_path)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_API_URL", fake.api_url)
    fake.fail("POST", r".*/assets", 502, starter=True)
    fake.secondary_rate_limit("GET", ".*", retry_after=3)
    dry = cli(
        "publish", "--repo", "acme/sev-images", "--tag", "devel", "--from", str(folder), "--dry-run"
    )
    assert dry.code == 0, dry.output
    assert "create" in dry.stdout and "application/vnd.dispatch+efi" in dry.stdout
    assert "host-debian-13.efi" in dry.stdout and "4.1 kB" in dry.stdout
    assert fake.releases == []
    run = cli("publish", "--repo", "acme/sev-images", "--tag", "devel", "--from", str(folder))
    assert run.code == 0, run.output
    assert f"published {len(ALL_NAMES)} assets" in run.stdout
    assert_published(fake, folder)
    again = cli(
        "publish", "--repo", "acme/sev-images", "--tag", "devel", "--from", str(folder), "--dry-run"
    )
    assert (
        again.code == 0 and f"0 to create, 0 to replace, {len(ALL_NAMES)} to keep" in again.stdout
    )
    for text in (dry.output, run.output, again.output, *fake.log_lines):
        assert TOKEN not in text


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (
            "ghp_SEVIMGbadTOKEN000111222",
            "GitHub rejected the token from GITHUB_TOKEN (401 Bad credentials)",
        ),
        (READ_TOKEN, "needs contents=write on acme/sev-images"),
    ],
)
def test_cli_failures_are_one_line(
    cli: CliFn,
    fake: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_clock_for_cli: FakeClock,
    token: str,
    expected: str,
) -> None:
    folder = artifacts(tmp_path)
    monkeypatch.setenv("GITHUB_TOKEN", token)
    run = cli(
        "publish",
        "--repo",
        "acme/sev-images",
        "--tag",
        "devel",
        "--from",
        str(folder),
        "--api-url",
        fake.api_url,
    )
    assert run.code == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sevimg: error: ") and expected in lines[0]
    assert token not in run.output
    assert "Traceback" not in run.output


def test_cli_reports_a_missing_token_and_repo(
    cli: CliFn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = artifacts(tmp_path)
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("GITHUB_REPOSITORY", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no gh
    run = cli("publish", "--tag", "devel", "--from", str(folder))
    assert run.code == 1 and "--repo OWNER/NAME" in run.stderr
    run = cli("publish", "--repo", "acme/x", "--tag", "devel", "--from", str(folder))
    assert run.code == 1 and "no GitHub token" in run.stderr
    run = cli(
        "publish", "--repo", "not a repo", "--tag", "devel", "--from", str(folder), "--token", TOKEN
    )
    assert run.code == 1 and "is not a repository name" in run.stderr
    assert TOKEN not in run.output


def test_a_real_process_publishes_and_fails_cleanly(
    sevimg_process: CliFn, fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = artifacts(tmp_path)
    monkeypatch.setenv("GITHUB_API_URL", fake.api_url)
    monkeypatch.setenv("GITHUB_TOKEN", READ_TOKEN)
    denied = sevimg_process(
        "publish", "--repo", "acme/sev-images", "--tag", "v1.0.0", "--from", str(folder)
    )
    assert denied.code == 1
    assert denied.stderr.count("\n") == 1 and "needs contents=write" in denied.stderr
    assert "Traceback" not in denied.stderr and READ_TOKEN not in denied.output
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    done = sevimg_process(
        "publish", "--repo", "acme/sev-images", "--tag", "v1.0.0", "--from", str(folder)
    )
    assert done.code == 0, done.output
    assert TOKEN not in done.output
    assert_published(fake, folder, "v1.0.0")


def test_merge_artifacts_command(cli: CliFn, tmp_path: Path) -> None:
    a = make_folder(tmp_path / "artifacts" / "out-debian-13", ["debian-13"])
    b = make_folder(
        tmp_path / "artifacts" / "out-fedora-43", ["fedora-43"], guest_only=["fedora-43"]
    )
    run = cli("merge-artifacts", str(a), str(b), "-o", str(tmp_path / "out"))
    assert run.code == 0, run.output
    assert "6 files and SHA256SUMS" in run.stdout
    assert sorted(read_sha256sums(tmp_path / "out" / SHA256SUMS)) == sorted(
        p.name for p in (tmp_path / "out").iterdir() if p.name != SHA256SUMS
    )
    again = cli("merge-artifacts", str(a), "-o", str(tmp_path / "out"))
    assert again.code == 1 and "not an empty folder" in again.stderr


def test_environment_is_left_alone() -> None:
    # The tests above set GITHUB_* only through monkeypatch.
    assert os.environ.get("GITHUB_TOKEN") not in (TOKEN, READ_TOKEN)


# --- the wrapper scripts ------------------------------------------------------------------------------


def run_tool(tool: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    # Without a .venv in the checkout, the wrappers find the sevimg of this interpreter.
    base["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", "")])
    return subprocess.run(
        [str(REPO / "tools" / tool), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("ref", "ref_name", "tag"),
    [("refs/heads/main", "main", "devel"), ("refs/tags/v1.4.0", "v1.4.0", "v1.4.0")],
)
def test_tools_publish_maps_the_ref_to_the_release(
    fake: FakeGitHub, tmp_path: Path, ref: str, ref_name: str, tag: str
) -> None:
    folder = artifacts(tmp_path)
    env = {
        "GITHUB_REPOSITORY": "acme/sev-images",
        "GITHUB_REF": ref,
        "GITHUB_REF_NAME": ref_name,
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_API_URL": fake.api_url,
    }
    done = run_tool("publish", "--from", str(folder), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"release {tag} of acme/sev-images" in done.stdout
    assert TOKEN not in done.stdout + done.stderr
    assert_published(fake, folder, tag)
    # The token went through the environment, not the command line.
    assert all(TOKEN not in line for line in fake.log_lines)


def test_tools_publish_skips_other_refs_and_needs_its_environment(
    fake: FakeGitHub, tmp_path: Path
) -> None:
    folder = artifacts(tmp_path)
    env = {
        "GITHUB_REPOSITORY": "acme/sev-images",
        "GITHUB_REF": "refs/heads/feature",
        "GITHUB_TOKEN": TOKEN,
    }
    done = run_tool("publish", "--from", str(folder), env=env)
    assert done.returncode == 0 and "nothing to publish" in done.stdout
    assert fake.requests == []
    missing = run_tool("publish", env={"GITHUB_REF": "refs/heads/main"})
    assert missing.returncode == 1 and "GITHUB_REPOSITORY is not set" in missing.stderr
    helped = run_tool("publish", "--help", env={})
    assert helped.returncode == 0 and "GITHUB_REF" in helped.stdout


def test_tools_build_usage() -> None:
    helped = run_tool("build", "--help", env={})
    assert helped.returncode == 0 and "tools/build IMAGE..." in helped.stdout
    bare = run_tool("build", env={})
    assert bare.returncode == 2 and "tools/build IMAGE..." in bare.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_wrappers_pass_shellcheck() -> None:
    done = subprocess.run(
        ["shellcheck", str(REPO / "tools" / "build"), str(REPO / "tools" / "publish")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout


def test_dry_run_without_a_token_plans_from_the_public_view(
    cli: CliFn, fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = artifacts(tmp_path)
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no gh to ask
    run = cli(
        "publish",
        "--repo",
        "acme/sev-images",
        "--tag",
        "devel",
        "--from",
        str(folder),
        "--api-url",
        fake.api_url,
        "--dry-run",
    )
    assert run.code == 0, run.output
    assert "warning: no token" in run.stderr
    assert "create it as a draft prerelease" in run.stdout
    assert all(
        r.method == "GET" and "authorization" not in {k.lower() for k in r.headers}
        for r in fake.requests
    )
    missing = cli(
        "publish",
        "--repo",
        "acme/nope",
        "--tag",
        "devel",
        "--from",
        str(folder),
        "--api-url",
        fake.api_url,
        "--token",
        TOKEN,
    )
    assert missing.code == 1
    assert missing.stderr.strip() == (
        "sevimg: error: creating release devel in acme/nope: not found (404); "
        "acme/nope does not exist or the token cannot see it"
    )


def test_large_uploads_get_a_progress_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(release_cli, "err", Console(file=screen, force_terminal=True, width=100))
    reporter = release_cli.ConsoleReporter()
    total = progress.TRANSFER_BAR_MIN_BYTES * 2
    with reporter.progress("host-debian-13.efi", total) as advance:
        for sent in range(0, total + 1, total // 4):
            advance(sent)
    assert "host-debian-13.efi" in screen.getvalue()
    quiet = io.StringIO()
    monkeypatch.setattr(release_cli, "err", Console(file=quiet, force_terminal=False))
    with reporter.progress("small", total) as advance:
        advance(total)
    assert quiet.getvalue() == ""  # logs and pipes get no bar


# --- debug images never reach dispatch ----------------------------------------------------------
#
# Every way an artifact folder can hold a debug build, against publish,
# publish --dry-run and merge-artifacts, with and without --allow-debug.


def _edit_manifest(folder: Path, name: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Change a manifest's JSON by hand and re-list it in SHA256SUMS (so only the content lies)."""
    path = folder / name
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2) + "\n")
    write_sha256sums(folder)


def _debug_named(images: list[str], guest_only: tuple[str, ...] = ()) -> Callable[[Path], Path]:
    return lambda root: make_folder(root / "out", images, debug=True, guest_only=guest_only)


def _release_named(images: list[str]) -> Callable[[Path], Path]:
    return lambda root: make_folder(root / "out", images)


def _mixed(root: Path) -> Path:
    folder = make_folder(root / "out", ["debian-13"])
    return make_folder(folder, ["ubuntu-26.04"], debug=True)


def _old_manifest_without_flag(root: Path) -> Path:
    folder = make_folder(root / "out", ["debian-13"], debug=True)
    for name in ("host-debian-13-debug.manifest.json", "guest-debian-13-debug.manifest.json"):
        _edit_manifest(folder, name, lambda data: data.pop("debug"))
    return folder


def _lying(
    name: str, change: Callable[[dict[str, Any]], None], *, debug: bool = False
) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        folder = make_folder(root / "out", ["debian-13"], debug=debug)
        _edit_manifest(folder, name, change)
        return folder

    return build


# (builder, the debug .efi files, or None when the folder is refused as inconsistent
# whatever the options, and then what the error names)
DEBUG_FOLDERS: dict[str, tuple[Callable[[Path], Path], list[str] | None, str]] = {
    "debian-13": (
        _debug_named(["debian-13"]),
        ["guest-debian-13-debug.efi", "host-debian-13-debug.efi"],
        "",
    ),
    "ubuntu-26.04": (
        _debug_named(["ubuntu-26.04"]),
        ["guest-ubuntu-26.04-debug.efi", "host-ubuntu-26.04-debug.efi"],
        "",
    ),
    "debian-sid": (
        _debug_named(["debian-sid"]),
        ["guest-debian-sid-debug.efi", "host-debian-sid-debug.efi"],
        "",
    ),
    "fedora-rawhide guest only": (
        _debug_named(["fedora-rawhide"], ("fedora-rawhide",)),
        ["guest-fedora-rawhide-debug.efi"],
        "",
    ),
    "two releases": (
        _debug_named(["debian-13", "fedora-43"], ("fedora-43",)),
        ["guest-debian-13-debug.efi", "guest-fedora-43-debug.efi", "host-debian-13-debug.efi"],
        "",
    ),
    "beside release images": (
        _mixed,
        ["guest-ubuntu-26.04-debug.efi", "host-ubuntu-26.04-debug.efi"],
        "",
    ),
    "a release called debug": (
        _release_named(["debian-debug"]),
        ["guest-debian-debug.efi", "host-debian-debug.efi"],
        "",
    ),
    "a distribution called debug": (
        _release_named(["debug-13"]),
        ["guest-debug-13.efi", "host-debug-13.efi"],
        "",
    ),
    "a manifest from before the debug key": (
        _old_manifest_without_flag,
        ["guest-debian-13-debug.efi", "host-debian-13-debug.efi"],
        "",
    ),
    "manifest says debug under a release name": (
        _lying("host-debian-13.manifest.json", lambda d: d.update(debug=True)),
        None,
        "host-debian-13.manifest.json: error: debug: is true, but image_id 'host-debian-13' lacks the -debug suffix",
    ),
    "guest manifest says debug under a release name": (
        _lying("guest-debian-13.manifest.json", lambda d: d.update(debug=True)),
        None,
        "guest-debian-13.manifest.json: error: debug: is true",
    ),
    "release host embeds a debug guest": (
        _lying(
            "host-debian-13.manifest.json",
            lambda d: d["embedded_guest"].update(image_id="guest-debian-13-debug"),
        ),
        None,
        "host-debian-13.manifest.json: error: embedded_guest.image_id: 'guest-debian-13-debug' is a debug guest",
    ),
    "debug name, manifest says release": (
        _lying("host-debian-13-debug.manifest.json", lambda d: d.update(debug=False), debug=True),
        None,
        "host-debian-13-debug.manifest.json: error: debug: is false, but image_id 'host-debian-13-debug' ends in -debug",
    ),
    "debug flag that is not a boolean": (
        _lying("host-debian-13.manifest.json", lambda d: d.update(debug="no")),
        None,
        "host-debian-13.manifest.json:6:12: error: debug: expected true or false, got a string",
    ),
}
MODES = ("publish", "dry-run", "merge")


def _run_mode(cli: CliFn, fake: FakeGitHub, folder: Path, mode: str, allow: bool) -> Run:
    extra = ["--allow-debug"] if allow else []
    if mode == "merge":
        return cli("merge-artifacts", str(folder), "-o", str(folder.parent / "merged"), *extra)
    args = ["--repo", "acme/sev-images", "--tag", "devel", "--from", str(folder)]
    args += ["--api-url", fake.api_url, "--token", TOKEN]
    return cli("publish", *args, *(["--dry-run"] if mode == "dry-run" else []), *extra)


@pytest.mark.parametrize("allow", [False, True], ids=["refused", "allow-debug"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(DEBUG_FOLDERS))
def test_debug_images_never_get_a_dispatch_type(
    cli: CliFn,
    fake: FakeGitHub,
    tmp_path: Path,
    fake_clock_for_cli: FakeClock,
    case: str,
    mode: str,
    allow: bool,
) -> None:
    build, debug_files, inconsistency = DEBUG_FOLDERS[case]
    folder = build(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    children = child_pids()
    run = _run_mode(cli, fake, folder, mode, allow)
    assert "Traceback" not in run.output and TOKEN not in run.output
    assert child_pids() <= children
    if debug_files is None or not allow:
        # Refused: exit 1, located, nothing sent, nothing merged, no debris.
        assert run.code == 1, run.output
        if debug_files is None:
            assert inconsistency in run.stderr, run.stderr
            assert "is not publishable" in run.stderr
        else:
            for name in debug_files:
                assert f"{folder / name}: error: a debug image (" in run.stderr, run.stderr
            assert "hint: to " in run.stderr and "pass --allow-debug" in run.stderr
        assert fake.requests == []
        assert sorted(p.name for p in tmp_path.iterdir()) == before
        return
    assert run.code == 0, run.output
    if mode == "merge":
        merged = load_artifact_folder(tmp_path / "merged")
        assert {f.name for f in merged.debug_images()} == set(debug_files)
        return
    if mode == "dry-run":
        assert writes(fake) == []
        rows = {
            line.split()[1]: line.split()[2]
            for line in run.stdout.splitlines()
            if line.startswith("create ")
        }
        for name in debug_files:
            assert rows[name] == "application/efi", run.stdout
        assert {n for n, t in rows.items() if t in DISPATCH_TYPES} == {
            n for n in rows if n.startswith("host-") and n.endswith(".efi") and n not in debug_files
        }
        return
    assets = final_assets(fake)
    assert sorted(assets) == sorted(p.name for p in folder.iterdir() if p.is_file())
    for name in debug_files:
        assert assets[name][0] == "application/efi"
    dispatched = [j["name"] for j in dispatch_select(fake.api_url, "acme/sev-images", "devel", [])]
    assert not set(dispatched) & set(debug_files)
    assert dispatched == sorted(
        n for n in assets if n.startswith("host-") and n.endswith(".efi") and n not in debug_files
    )


DEBUGISH_NAMES = [
    "host-debian-13-debug.efi",
    "host-ubuntu-26.04-debug.efi",
    "host-fedora-rawhide-debug.efi",
    "host-debian-debug.efi",
    "host-debug-13.efi",
    "host-debug-debug.efi",
    "host-debian-13-DEBUG.efi",
    "host-debian-13-debug-debug.efi",
    "host-Debian-13-Debug.efi",
    "guest-debian-13-debug.efi",
    "host-x-debug",
    "host-debian-13-debug.iso",
]


@pytest.mark.parametrize("name", DEBUGISH_NAMES)
@pytest.mark.parametrize("flag", [False, True])
def test_no_debug_name_gets_a_dispatch_type(name: str, flag: bool) -> None:
    assert content_type_for(name, debug=flag) not in DISPATCH_TYPES


@pytest.mark.parametrize(
    "name", ["host-debian-13.efi", "host-ubuntu-26.04.efi", "host-fedora-rawhide.efi"]
)
def test_a_release_host_gets_dispatch_unless_flagged_debug(name: str) -> None:
    assert content_type_for(name) == HOST_TYPE
    assert content_type_for(name, debug=True) == "application/efi"


def test_a_debug_asset_left_on_the_release_with_a_dispatch_type_is_warned_about(
    fake: FakeGitHub, gh: GitHub, reporter: SilentReporter, tmp_path: Path
) -> None:
    folder = artifacts(tmp_path)
    release = fake.add_release("devel", prerelease=True)
    fake.add_asset(release, "host-debian-13-debug.efi", b"old debug", HOST_TYPE)
    publish(gh, folder, "devel", reporter=reporter)
    assert any(
        "host-debian-13-debug.efi on the release is a debug image but has the dispatch type" in w
        for w in reporter.warnings
    ), reporter.warnings


def test_the_library_refuses_debug_too(fake: FakeGitHub, gh: GitHub, tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "out", ["debian-13"], debug=True)
    with pytest.raises(SevimgError, match="is a debug image|are debug images") as caught:
        publish(gh, folder, "devel", dry_run=True)
    assert "--allow-debug" in caught.value.hint
    assert fake.requests == []
    plan, _ = publish(gh, folder, "devel", dry_run=True, allow_debug=True)
    assert {i.name: i.content_type for i in plan.items}[
        "host-debian-13-debug.efi"
    ] == "application/efi"


# --- names that are not names never take the token anywhere -----------------------------------

BAD_TAGS = [
    "",
    " ",
    "a b",
    "v1\n",
    "\nv1",
    "v1\t",
    "v1\r",
    "v1\x00",
    "v1\x7f",
    "-x",
    "--help",
    "/x",
    "x/",
    "a//b",
    "a..b",
    "..",
    "x.lock",
    "a/b.lock",
    "a/b.lock/c",
    ".x",
    "a/.b",
    "x.",
    "x~1",
    "x^",
    "x:y",
    "x?",
    "x*",
    "x[",
    "x\\y",
    "x@{y}",
    "@",
    "v" * 256,
]
# Stricter than git on purpose: shown on GitHub, these would mislead.
SPOOFING_TAGS = [
    "v1\x85",
    "v1\x9b31m",
    "v1\u202e0.1v",
    "v1\u2066x",
    "v1\u200f",
    "v1\u2028",
    "v1\x1b[2J",
]
GOOD_TAGS = [
    "devel",
    "v1.2.3",
    "v1.0.0-rc.1",
    "release/2026",
    "v1@x",
    "é",
    "a.b",
    "x-y_z+1",
    "v" * 255,
]


@pytest.mark.parametrize("tag", BAD_TAGS + SPOOFING_TAGS)
def test_bad_tags_are_refused_as_git_would(tag: str) -> None:
    why = tag_problem(tag)
    assert why is not None
    with pytest.raises(SevimgError, match=r"^--tag: .* is not a usable tag name: "):
        check_tag(tag)
    # git agrees, except where sevimg is stricter on purpose (a leading -, a lone @, length).
    if (
        shutil.which("git")
        and "\x00" not in tag
        and not tag.startswith("-")
        and tag != "@"
        and len(tag) <= 255
        and tag not in SPOOFING_TAGS
    ):
        git = subprocess.run(["git", "check-ref-format", f"refs/tags/{tag}"], check=False)
        assert git.returncode != 0, tag


@pytest.mark.parametrize("tag", GOOD_TAGS)
def test_good_tags_are_accepted_as_git_would(tag: str) -> None:
    assert tag_problem(tag) is None and check_tag(tag) == tag
    if shutil.which("git"):
        git = subprocess.run(["git", "check-ref-format", f"refs/tags/{tag}"], check=False)
        assert git.returncode == 0, tag


def _publish_args(fake: FakeGitHub, folder: Path, *extra: str) -> list[str]:
    return ["publish", "--from", str(folder), "--api-url", fake.api_url, "--token", TOKEN, *extra]


def _refused_before_any_request(run: Run, fake: FakeGitHub, start: str, children: set[int]) -> None:
    assert run.code == 1, run.output
    lines = run.stderr.strip().splitlines()
    assert lines[0].startswith(f"sevimg: error: {start}"), run.stderr
    assert "Traceback" not in run.output and TOKEN not in run.output
    assert fake.requests == [], [r.raw_path for r in fake.requests]
    assert child_pids() <= children


@pytest.mark.parametrize(
    "repo",
    [
        "o/.",
        "o/..",
        "o/r\n",
        "acme/sev-images\n",
        "acme/../x",
        "o/r.git",
        "-o/r",
        "o--x/r",
        "o/",
        "o/r/releases",
        "acme/sev-images#",
        "a" * 40 + "/r",
    ],
)
@pytest.mark.parametrize("source", ["--repo", "GITHUB_REPOSITORY"])
def test_a_bad_repository_sends_nothing(
    cli: CliFn,
    fake: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    repo: str,
    source: str,
) -> None:
    folder = artifacts(tmp_path)
    children = child_pids()
    if source == "--repo":
        run = cli(*_publish_args(fake, folder, f"--repo={repo}", "--tag", "devel"))
    else:
        monkeypatch.setenv("GITHUB_REPOSITORY", repo)
        run = cli(*_publish_args(fake, folder, "--tag", "devel"))
    _refused_before_any_request(run, fake, f"{source}: {repo!r} is not a repository name", children)


@pytest.mark.parametrize("tag", BAD_TAGS)
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_bad_tag_sends_nothing(
    cli: CliFn, fake: FakeGitHub, tmp_path: Path, tag: str, dry_run: bool
) -> None:
    folder = artifacts(tmp_path)
    children = child_pids()
    extra = ["--dry-run"] if dry_run else []
    run = cli(*_publish_args(fake, folder, "--repo", "acme/sev-images", f"--tag={tag}", *extra))
    _refused_before_any_request(run, fake, f"--tag: {tag!r} is not a usable tag name", children)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1",
        "http://user:APIPASSWORD@127.0.0.1:{port}",
        "http://127.0.0.1:{port}/?repo=acme/sev-images",
        "http://127.0.0.1:{port}/#x",
        "http://127.0.0.1:{port}/x/../",
        "http://127.0.0.1:{port}\n",
        "127.0.0.1:{port}",
        "http://127.0.0.1:99999",
    ],
)
@pytest.mark.parametrize("source", ["--api-url", "GITHUB_API_URL"])
def test_a_bad_api_url_sends_nothing(
    cli: CliFn,
    fake: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    source: str,
) -> None:
    folder = artifacts(tmp_path)
    url = url.format(port=fake.api_url.rsplit(":", 1)[1])
    children = child_pids()
    args = [
        "publish",
        "--from",
        str(folder),
        "--repo",
        "acme/sev-images",
        "--tag",
        "devel",
        "--token",
        TOKEN,
    ]
    if source == "--api-url":
        args.append(f"--api-url={url}")
    else:
        monkeypatch.setenv("GITHUB_API_URL", url)
    run = cli(*args)
    _refused_before_any_request(run, fake, f"{source}: ", children)
    assert "is not a usable GitHub API URL" in run.stderr
    assert "APIPASSWORD" not in run.output


@pytest.mark.parametrize("repo", ["acme/sev-images", "acme/.github", "acme/..x", "a-b/c.d_e-f"])
@pytest.mark.parametrize("tag", ["devel", "v1.2.3", "release/2026", "v1@x"])
def test_good_names_reach_exactly_their_own_url(
    cli: CliFn, fake: FakeGitHub, tmp_path: Path, repo: str, tag: str
) -> None:
    folder = artifacts(tmp_path)
    run = cli(*_publish_args(fake, folder, "--repo", repo, "--tag", tag, "--dry-run"))
    assert run.code in (0, 1) and "Traceback" not in run.output
    owner, name = repo.split("/")
    assert fake.requests
    for request in fake.requests:
        assert request.raw_path.startswith(f"/repos/{owner}/{name}/releases"), request.raw_path
    assert fake.requests[0].raw_path == f"/repos/{owner}/{name}/releases/tags/{url_segment(tag)}"
    if repo == "acme/sev-images":
        assert run.code == 0, run.output
