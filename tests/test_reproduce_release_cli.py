"""`sevimg reproduce --release`: naming the release, and the command line against the fake GitHub.

The releases are those of tests/test_reproduce_release.py; these runs stop
where this workspace's catalog files differ from the made-up ones the
manifests record (after the download), or at the error the release gives.
Retries back off on the fake clock; nothing sleeps.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sevimg.problems import SevimgError
from sevimg.release.published import ReleaseRef, parse_release_ref
from tests.artifactkit import make_folder
from tests.conftest import CliFn
from tests.fakegithub import TOKEN, FakeClock, FakeGitHub
from tests.test_reproduce_release import UKIS, publish

# --- naming the release ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "repo", "tag"),
    [
        ("acme/sev-images@v1.2.3", "acme/sev-images", "v1.2.3"),
        ("acme/sev-images@devel", "acme/sev-images", "devel"),
        ("https://github.com/acme/sev-images/releases/tag/v1.2.3", "acme/sev-images", "v1.2.3"),
        ("https://github.com/acme/x.y/releases/tag/feature/a%40b/", "acme/x.y", "feature/a@b"),
    ],
)
def test_a_release_is_named_by_repo_and_tag_or_by_address(text: str, repo: str, tag: str) -> None:
    assert parse_release_ref(text, api_url_set=False) == ReleaseRef(repo, tag)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("acme/sev-images", "names no tag; write OWNER/NAME@TAG"),
        ("../etc@v1", "is not a repository name"),
        ("acme/sev-images@v1..2", "holds '..'"),
        ("acme/sev-images@v1\x1b[31m", "control"),
        ("http://github.com/acme/x/releases/tag/v1", "is not a release's address"),
        ("https://github.com/acme/x/releases/v1", "is not a release's address"),
        (
            "https://evil.example/acme/x/releases/tag/v1",
            "not github.com; name its API with --api-url",
        ),
    ],
)
def test_a_bad_release_name_is_refused_before_any_request(text: str, message: str) -> None:
    with pytest.raises(SevimgError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_release_ref(text, api_url_set=False)


def test_another_host_is_taken_only_with_its_api_set() -> None:
    text = "https://ghe.example/acme/x/releases/tag/v1"
    assert parse_release_ref(text, api_url_set=True) == ReleaseRef("acme/x", "v1")


def test_folder_names_are_plain_and_keep_odd_tags_apart() -> None:
    assert ReleaseRef("acme/x", "v1.0").folder_name == "acme+x+v1.0"
    slash, at = ReleaseRef("acme/x", "a/b").folder_name, ReleaseRef("acme/x", "a@b").folder_name
    assert slash.startswith("acme+x+a_b-") and at.startswith("acme+x+a_b-") and slash != at


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> FakeGitHub:
    from sevimg.cli import reproduce as reproduce_cli

    monkeypatch.setattr(reproduce_cli, "CLOCK", clock)
    monkeypatch.setenv("GITHUB_API_URL", fake.api_url)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("PATH", str(tmp_path / "no-gh"))  # never ask a real gh
    return fake


def test_the_command_downloads_a_release_then_checks_its_inputs(
    cli: CliFn, env: FakeGitHub, tmp_path: Path
) -> None:
    publish(env, tmp_path)
    dl, rebuilt = tmp_path / "dl", tmp_path / "rebuilt"
    run = cli(
        "reproduce",
        "--release",
        "https://github.com/acme/sev-images/releases/tag/v1.0.0",
        "--download-dir",
        str(dl),
        "-o",
        str(rebuilt),
    )
    assert run.code == 1
    assert "reading release acme/sev-images@v1.0.0" in run.output
    assert "token from GITHUB_TOKEN" in run.output and TOKEN not in run.output
    assert "downloading host-debian-13.efi (4.1 kB)" in run.output
    assert f"release acme/sev-images@v1.0.0 is in {dl}" in run.output
    # make_folder records made-up catalog hashes: this workspace's files differ.
    assert "guest-debian-13: images/debian-13.yaml: sha256 " in run.output
    assert "nothing was built" in run.output and "Traceback" not in run.output
    assert f"hint: check out commit {'a' * 40} (measurements.json's source_commit)" in run.output
    assert sorted(p.name for p in dl.glob("*.efi")) == list(UKIS)
    assert not rebuilt.exists()


def test_the_command_on_a_missing_release(cli: CliFn, env: FakeGitHub, tmp_path: Path) -> None:
    run = cli(
        "reproduce", "--release", "acme/sev-images@v9.9.9", "--download-dir", str(tmp_path / "d")
    )
    assert run.code == 1
    assert "acme/sev-images has no published release 'v9.9.9'" in run.output
    assert "Traceback" not in run.output and not (tmp_path / "d").exists()


def test_the_command_takes_a_folder_or_a_release(cli: CliFn, tmp_path: Path) -> None:
    both = cli("reproduce", str(tmp_path), "--release", "acme/x@v1")
    assert both.code == 2 and "one of them" in both.output
    assert cli("reproduce").code == 2
    stray = cli("reproduce", str(tmp_path), "--token", "x")
    assert stray.code == 2 and "--token is for --release" in stray.output
    bad = cli("reproduce", "--release", "acme/x")
    assert bad.code == 1 and "names no tag" in bad.output


def test_the_command_picks_images_in_a_folder_too(cli: CliFn, tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "published", ["debian-13"])
    run = cli("reproduce", str(folder), "--image", "debian-14")
    assert run.code == 1 and "has no image debian-14" in run.output
    run = cli("reproduce", str(folder), "--image", "guest-debian-13")
    assert "guest-debian-13: images/debian-13.yaml" in run.output
    assert "host-debian-13:" not in run.output


def test_a_rejected_token_is_named_by_its_source_never_shown(
    cli: CliFn, env: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(env, tmp_path)
    wrong = "ghp_WRONGwrongWRONG0123456789abcdef"
    monkeypatch.setenv("GITHUB_TOKEN", wrong)
    run = cli(
        "reproduce", "--release", "acme/sev-images@v1.0.0", "--download-dir", str(tmp_path / "d")
    )
    assert run.code == 1
    assert "GitHub rejected the token from GITHUB_TOKEN (401 Bad credentials)" in run.output
    assert wrong not in run.output and "Traceback" not in run.output
    assert not (tmp_path / "d").exists()


def test_the_command_when_github_cannot_be_reached(
    cli: CliFn, env: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("GITHUB_API_URL", f"http://127.0.0.1:{port}")
    run = cli(
        "reproduce", "--release", "acme/sev-images@v1.0.0", "--download-dir", str(tmp_path / "d")
    )
    assert run.code == 1 and "Traceback" not in run.output
    assert (
        f"looking up release v1.0.0 of acme/sev-images: no answer from 127.0.0.1:{port}"
        in run.output
    )
    assert clock.sleeps == [2.0, 4.0, 8.0, 16.0, 32.0]  # backed off on the fake clock, not slept
    assert not (tmp_path / "d").exists()
