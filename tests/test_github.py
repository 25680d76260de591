"""The GitHub client against the fake API: auth, pagination, uploads, retries, rate limits."""

from __future__ import annotations

import hashlib
import pickle
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sevimg.problems import SevimgError
from sevimg.release.github import (
    DEFAULT_API_URL,
    Asset,
    GitHub,
    GitHubError,
    Release,
    RetryPolicy,
    Token,
    check_repo,
    resolve_api_url,
    resolve_token,
    url_segment,
)
from tests.fakegithub import READ_TOKEN, TOKEN, FakeClock, FakeGitHub

DISPATCH_EFI = "application/vnd.dispatch+efi"


@pytest.fixture
def logs() -> list[str]:
    return []


def client(
    fake: FakeGitHub, clock: FakeClock, logs: list[str], token: str | None = TOKEN
) -> GitHub:
    return GitHub(
        f"{fake.owner}/{fake.repo}",
        Token(token, "GITHUB_TOKEN") if token else None,
        api_url=fake.api_url,
        clock=clock,
        log=logs.append,
    )


@pytest.fixture
def gh(fake: FakeGitHub, clock: FakeClock, logs: list[str]) -> Iterator[GitHub]:
    with client(fake, clock, logs) as c:
        yield c


def upload(gh: GitHub, release: Release, path: Path, name: str, ctype: str) -> Asset:
    return gh.upload_asset(
        release,
        path,
        name=name,
        label=name,
        content_type=ctype,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def no_token_in(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
        assert READ_TOKEN not in text


# --- the token -------------------------------------------------------------------------------


def test_token_never_prints_itself() -> None:
    token = Token(TOKEN, "GITHUB_TOKEN")
    assert token.reveal() == TOKEN
    no_token_in(
        repr(token), str(token), f"{token}", f"{token!r}", repr([token]), repr({"t": token})
    )
    assert "GITHUB_TOKEN" in repr(token)
    assert token.scrub(f"Authorization: Bearer {TOKEN}") == "Authorization: Bearer ***"
    with pytest.raises(TypeError):
        pickle.dumps(token)
    gh = GitHub("acme/sev-images", token, api_url="http://127.0.0.1:9")
    no_token_in(repr(gh), repr(vars(gh)) if hasattr(gh, "__dict__") else "")
    gh.close()


def test_token_with_odd_characters_is_refused_without_echo() -> None:
    with pytest.raises(SevimgError) as caught:
        Token("ghp_abc\ndef", "--token")
    assert "ghp_abc" not in str(caught.value)
    with pytest.raises(SevimgError, match="empty"):
        Token("  ", "GITHUB_TOKEN")


def test_token_sources_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gh = tmp_path / "gh"
    gh.write_text(f"#!/bin/sh\n[ \"$1 $2\" = 'auth token' ] && echo {READ_TOKEN}\n")
    gh.chmod(gh.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    env = {"GITHUB_TOKEN": TOKEN}
    first = resolve_token("ghp_fromoption", env)
    assert first is not None and first.reveal() == "ghp_fromoption" and first.source == "--token"
    second = resolve_token(None, env)
    assert second is not None and second.reveal() == TOKEN and second.source == "GITHUB_TOKEN"
    third = resolve_token(None, {})
    assert third is not None and third.reveal() == READ_TOKEN and third.source == "gh auth token"
    assert resolve_token(None, {}, use_gh=False) is None
    gh.write_text("#!/bin/sh\necho 'not logged in' >&2\nexit 1\n")
    assert resolve_token(None, {}) is None


def test_api_url_sources() -> None:
    assert resolve_api_url(None, {}) == DEFAULT_API_URL
    assert resolve_api_url(None, {"GITHUB_API_URL": "https://ghe.example/api/v3/"}) == (
        "https://ghe.example/api/v3"
    )
    assert resolve_api_url("http://127.0.0.1:1", {"GITHUB_API_URL": "https://x"}) == (
        "http://127.0.0.1:1"
    )
    with pytest.raises(SevimgError, match="not an http"):
        resolve_api_url("ftp://x", {})


REFUSED_API_URLS = {
    "remote http": "http://api.github.com",
    "remote http ghe": "http://ghe.example/api/v3",
    "http lookalike host": "http://127.0.0.1.evil.example",
    "http localhost suffix": "http://localhost.evil.example",
    "userinfo": "https://user:s3cr3t@api.github.com",
    "userinfo no password": "https://s3cr3t@api.github.com",
    "userinfo loopback": "http://u:s3cr3t@127.0.0.1:9",
    "file": "file:///etc/passwd",
    "no scheme": "api.github.com",
    "ftp": "ftp://api.github.com",
    "dot dot": "https://ghe.example/api/v3/../../x",
    "dot": "https://ghe.example/./api",
    "query": "https://ghe.example/api?x=1",
    "empty query": "https://ghe.example/api?",
    "fragment": "https://ghe.example/api#x",
    "newline": "https://api.github.com\n",
    "leading newline": "\nhttps://api.github.com",
    "tab": "https://api.github.com\t",
    "nul": "https://api.github.com\x00",
    "escape": "https://api.github.com\x1b[31m",
    "space inside": "https://api.github .com",
    "empty": "",
    "port 0": "https://api.github.com:0",
    "bad port": "https://api.github.com:99999",
    "no host": "https:///api",
}
ACCEPTED_API_URLS = {
    "https": ("https://api.github.com", "https://api.github.com"),
    "ghe": ("https://ghe.example/api/v3/", "https://ghe.example/api/v3"),
    "loopback": ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    "loopback 127/8": ("http://127.1.2.3:1/api", "http://127.1.2.3:1/api"),
    "localhost": ("http://localhost:9/", "http://localhost:9"),
    "ipv6 loopback": ("http://[::1]:9", "http://[::1]:9"),
}


@pytest.mark.parametrize("url", REFUSED_API_URLS.values(), ids=REFUSED_API_URLS.keys())
@pytest.mark.parametrize("source", ["--api-url", "GITHUB_API_URL"])
def test_api_urls_that_cannot_carry_the_token_safely_are_refused(url: str, source: str) -> None:
    if source == "GITHUB_API_URL" and not url:  # an empty variable is an unset one
        assert resolve_api_url(None, {source: url}) == DEFAULT_API_URL
        return
    with pytest.raises(SevimgError) as caught:
        if source == "--api-url":
            resolve_api_url(url, {})
        else:
            resolve_api_url(None, {"GITHUB_API_URL": url})
    message = str(caught.value) + caught.value.hint
    assert message.startswith(f"{source}: ") and "s3cr3t" not in message


@pytest.mark.parametrize(("url", "kept"), ACCEPTED_API_URLS.values(), ids=ACCEPTED_API_URLS.keys())
def test_api_urls_that_can_carry_the_token(url: str, kept: str) -> None:
    assert resolve_api_url(url, {}) == kept


# --- releases and drafts ---------------------------------------------------------------------


def test_drafts_are_found_by_listing_not_by_tag(
    fake: FakeGitHub, gh: GitHub, clock: FakeClock, logs: list[str]
) -> None:
    assert gh.release_by_tag("devel") is None
    draft = gh.create_release("devel", prerelease=True, name="devel", body="", target="abc123")
    assert draft.draft and draft.prerelease
    assert gh.release_by_tag("devel") is None  # GitHub hides drafts from tag lookups
    found = gh.draft_by_tag("devel")
    assert found is not None and found.id == draft.id
    with client(fake, clock, logs, token=None) as anonymous:
        assert anonymous.draft_by_tag("devel") is None
    published = gh.publish_release(draft)
    assert not published.draft
    seen = gh.release_by_tag("devel")
    assert seen is not None and seen.id == draft.id
    assert fake.releases[0].target_commitish == "abc123"


def test_duplicate_tag_is_a_422_with_its_code(fake: FakeGitHub, gh: GitHub) -> None:
    fake.add_release("v1.0")
    with pytest.raises(GitHubError) as caught:
        gh.create_release("v1.0", prerelease=False, name="v1.0", body="", target=None)
    assert caught.value.status == 422
    assert "already_exists" in caught.value.codes
    assert "creating release v1.0" in str(caught.value)


def test_every_request_carries_the_headers_github_wants(fake: FakeGitHub, gh: GitHub) -> None:
    gh.release_by_tag("devel")
    gh.create_release("devel", prerelease=True, name="devel", body="", target=None)
    assert fake.requests
    for request in fake.requests:
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers["accept"] == "application/vnd.github+json"
        assert headers["x-github-api-version"] == "2022-11-28"
        assert headers["user-agent"].startswith("sevimg/")
        assert headers["authorization"] == f"Bearer {TOKEN}"


# --- pagination ------------------------------------------------------------------------------


def test_list_assets_follows_every_page(fake: FakeGitHub, gh: GitHub) -> None:
    release = fake.add_release("devel", prerelease=True)
    for i in range(250):
        fake.add_asset(release, f"filler-{i:03}.bin", b"x")
    gh_release = gh.release_by_tag("devel")
    assert gh_release is not None
    names = [a.name for a in gh.list_assets(gh_release)]
    assert names == [f"filler-{i:03}.bin" for i in range(250)]
    pages = [r for r in fake.requests if r.path.endswith("/assets") and r.method == "GET"]
    assert len(pages) == 3
    assert all(r.query.get("per_page") == ["100"] for r in pages)
    # Later pages come from GitHub's Link header, which names the repository by id.
    assert pages[1].path.startswith("/repositories/")


def test_draft_lookup_pages_through_many_releases(fake: FakeGitHub, gh: GitHub) -> None:
    draft = fake.add_release("devel", draft=True)
    for i in range(130):
        fake.add_release(f"v0.{i}")
    found = gh.draft_by_tag("devel")
    assert found is not None and found.id == draft.id


# --- uploads ---------------------------------------------------------------------------------


def test_upload_streams_to_the_upload_url_with_the_exact_type(
    fake: FakeGitHub, gh: GitHub, tmp_path: Path
) -> None:
    data = bytes(range(256)) * 12_000  # 3 MB: several chunks
    path = tmp_path / "host-debian-13.efi"
    path.write_bytes(data)
    release = gh.create_release("devel", prerelease=True, name="devel", body="", target=None)
    seen: list[int] = []
    asset = gh.upload_asset(
        release,
        path,
        name=path.name,
        label="host image",
        content_type=DISPATCH_EFI,
        sha256=hashlib.sha256(data).hexdigest(),
        progress=seen.append,
    )
    assert asset.digest == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert asset.content_type == DISPATCH_EFI
    assert asset.state == "uploaded" and asset.size == len(data)
    stored = fake.release("devel")
    assert stored is not None and stored.assets[0].data == data
    post = [r for r in fake.requests if r.method == "POST" and r.server == "uploads"]
    assert len(post) == 1
    headers = {k.lower(): v for k, v in post[0].headers.items()}
    assert headers["content-type"] == DISPATCH_EFI
    assert headers["content-length"] == str(len(data))
    assert "transfer-encoding" not in headers
    assert post[0].query == {"name": ["host-debian-13.efi"], "label": ["host image"]}
    assert seen[0] == 0 and seen[-1] == len(data) and len(seen) > 3
    assert seen == sorted(seen)


@pytest.mark.parametrize("drop", [False, True], ids=["502", "dropped-connection"])
def test_a_broken_upload_is_cleaned_up_and_retried(
    fake: FakeGitHub, gh: GitHub, clock: FakeClock, logs: list[str], tmp_path: Path, drop: bool
) -> None:
    path = tmp_path / "guest-debian-13.efi"
    path.write_bytes(b"G" * 200_000)
    release = gh.create_release("devel", prerelease=True, name="devel", body="", target=None)
    fake.fail("POST", r"/repos/.*/assets", 502, starter=True, drop=drop)
    asset = upload(gh, release, path, path.name, "application/efi")
    stored = fake.release("devel")
    assert stored is not None
    assert [(a.name, a.state) for a in stored.assets] == [("guest-debian-13.efi", "uploaded")]
    assert asset.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert any("starter" in line for line in logs)
    assert clock.sleeps == [2.0]


def test_an_upload_whose_answer_was_lost_is_not_repeated(
    fake: FakeGitHub, gh: GitHub, tmp_path: Path
) -> None:
    path = tmp_path / "SHA256SUMS"
    path.write_bytes(b"sums\n")
    release = gh.create_release("devel", prerelease=True, name="devel", body="", target=None)
    stored = fake.release("devel")
    assert stored is not None
    # The first upload is stored, but its answer is a 502 (GitHub sometimes does this).
    fake.add_asset(stored, "SHA256SUMS", b"sums\n", "text/plain")
    asset = upload(gh, release, path, "SHA256SUMS", "text/plain")
    assert asset.name == "SHA256SUMS"
    assert len(stored.assets) == 1


def test_an_upload_onto_a_real_asset_is_refused(
    fake: FakeGitHub, gh: GitHub, tmp_path: Path
) -> None:
    path = tmp_path / "x.efi"
    path.write_bytes(b"new")
    release = gh.create_release("devel", prerelease=True, name="devel", body="", target=None)
    stored = fake.release("devel")
    assert stored is not None
    fake.add_asset(stored, "x.efi", b"old", "application/efi")
    with pytest.raises(GitHubError, match="already_exists"):
        upload(gh, release, path, "x.efi", "application/efi")
    assert stored.assets[0].data == b"old"


# --- retries and rate limits -------------------------------------------------------------------


def test_5xx_is_retried_with_capped_backoff(fake: FakeGitHub, gh: GitHub, clock: FakeClock) -> None:
    fake.fail("GET", r".*/releases/tags/devel", 503, times=4)
    assert gh.release_by_tag("devel") is None
    assert clock.sleeps == [2.0, 4.0, 8.0, 16.0]
    assert RetryPolicy().delay(10) == 60.0


def test_5xx_that_does_not_stop_is_one_clear_line(
    fake: FakeGitHub, gh: GitHub, clock: FakeClock
) -> None:
    fake.fail("GET", r".*/releases/tags/devel", 502, times=100)
    with pytest.raises(GitHubError) as caught:
        gh.release_by_tag("devel")
    text = str(caught.value)
    assert text == "looking up release devel of acme/sev-images: GitHub answered 502 Server Error"
    assert len(clock.sleeps) == RetryPolicy().attempts - 1


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_rate_limit_honours_retry_after(
    fake: FakeGitHub, gh: GitHub, clock: FakeClock, logs: list[str], status: int
) -> None:
    fake.secondary_rate_limit("GET", ".*", status=status, retry_after=37)
    assert gh.release_by_tag("devel") is None
    assert clock.sleeps == [37.0]
    assert any("secondary rate limit" in line for line in logs)


def test_secondary_rate_limit_without_retry_after_backs_off_from_a_minute(
    fake: FakeGitHub, gh: GitHub, clock: FakeClock
) -> None:
    fake.secondary_rate_limit("GET", ".*", retry_after=None, times=3)
    assert gh.release_by_tag("devel") is None
    assert clock.sleeps == [60.0, 120.0, 240.0]


@pytest.mark.parametrize("status", [403, 429])
def test_primary_rate_limit_waits_until_reset(
    fake: FakeGitHub, gh: GitHub, clock: FakeClock, status: int
) -> None:
    start = clock.now
    fake.primary_rate_limit("GET", ".*", reset_in=300, status=status)
    assert gh.release_by_tag("devel") is None
    assert clock.sleeps == [pytest.approx(301.0, abs=1.0)]
    assert clock.now >= start + 300


def test_a_rate_limit_too_far_away_is_reported(
    fake: FakeGitHub, gh: GitHub, clock: FakeClock
) -> None:
    fake.primary_rate_limit("GET", ".*", reset_in=4 * 3600)
    with pytest.raises(GitHubError, match=r"primary rate limit lifts only in 240 minutes"):
        gh.release_by_tag("devel")
    assert clock.sleeps == []


def test_uploads_wait_out_rate_limits_too(
    fake: FakeGitHub, gh: GitHub, clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "a.efi"
    path.write_bytes(b"a" * 5000)
    release = gh.create_release("devel", prerelease=True, name="devel", body="", target=None)
    fake.secondary_rate_limit("POST", r".*/assets", retry_after=5)
    asset = upload(gh, release, path, "a.efi", "application/efi")
    assert asset.size == 5000
    assert clock.sleeps == [5.0]


# --- errors ----------------------------------------------------------------------------------


def test_bad_token_is_one_line_naming_its_source(
    fake: FakeGitHub, clock: FakeClock, logs: list[str]
) -> None:
    with (
        client(fake, clock, logs, token="ghp_WRONGwrongWRONG") as gh,
        pytest.raises(GitHubError) as caught,
    ):
        gh.release_by_tag("devel")
    text = str(caught.value)
    assert "GitHub rejected the token from GITHUB_TOKEN (401 Bad credentials)" in text
    assert "ghp_WRONGwrongWRONG" not in text
    assert "\n" not in text


def test_read_only_token_names_the_missing_permission(
    fake: FakeGitHub, clock: FakeClock, logs: list[str]
) -> None:
    with client(fake, clock, logs, token=READ_TOKEN) as gh, pytest.raises(GitHubError) as caught:
        gh.create_release("devel", prerelease=True, name="devel", body="", target=None)
    text = str(caught.value)
    assert caught.value.status == 403
    assert "needs contents=write on acme/sev-images" in text
    assert "permissions: contents: write" in text
    no_token_in(text)


def test_unknown_repository_is_a_404_line(fake: FakeGitHub, clock: FakeClock) -> None:
    with (
        GitHub("acme/nope", Token(TOKEN, "--token"), api_url=fake.api_url, clock=clock) as gh,
        pytest.raises(GitHubError) as caught,
    ):
        assert gh.draft_by_tag("devel") is None  # GitHub answers 404 for the listing too
        gh.create_release("devel", prerelease=True, name="devel", body="", target=None)
    assert str(caught.value) == (
        "creating release devel in acme/nope: not found (404); "
        "acme/nope does not exist or the token cannot see it"
    )


def test_a_server_without_the_release_listing_has_no_drafts(fake: FakeGitHub, gh: GitHub) -> None:
    fake.fail("GET", r".*/releases", 404, times=1)
    assert gh.draft_by_tag("devel") is None
    fake.fail("GET", r".*/releases", 500, times=100)
    with pytest.raises(
        GitHubError, match="listing releases of acme/sev-images: GitHub answered 500"
    ):
        gh.draft_by_tag("devel")


def test_unreachable_api_is_one_line_after_retries(clock: FakeClock) -> None:
    with (
        GitHub("acme/x", Token(TOKEN, "--token"), api_url="http://127.0.0.1:9", clock=clock) as gh,
        pytest.raises(GitHubError) as caught,
    ):
        gh.release_by_tag("devel")
    assert "no answer from 127.0.0.1:9" in str(caught.value)
    assert len(clock.sleeps) == RetryPolicy().attempts - 1
    no_token_in(str(caught.value))


def test_token_appears_in_no_error_or_log(
    fake: FakeGitHub, clock: FakeClock, logs: list[str], tmp_path: Path
) -> None:
    texts: list[str] = []
    fake.secondary_rate_limit("GET", ".*", retry_after=1)
    fake.fail("GET", r".*/releases", 500)
    with client(fake, clock, logs) as gh:
        release = gh.create_release("devel", prerelease=True, name="devel", body="", target=None)
        gh.draft_by_tag("devel")
        fake.fail("POST", r".*/assets", 500, times=100, starter=True)
        path = tmp_path / "a.efi"
        path.write_bytes(b"a")
        with pytest.raises(GitHubError) as caught:
            upload(gh, release, path, "a.efi", "application/efi")
        texts += [str(caught.value), repr(caught.value), repr(gh)]
    texts += logs + fake.log_lines
    no_token_in(*texts)
    assert logs  # there was something to check


# --- names that are not names -------------------------------------------------------------------

BAD_REPOS = [
    "o/.",
    "o/..",
    "o/r\n",
    "o\n/r",
    "o/r\r",
    "o/r\t",
    " o/r",
    "o/r ",
    "o/r.git",
    "o/R.GIT",
    "o/.git",
    "o/",
    "/r",
    "o",
    "",
    "/",
    "o/r/x",
    "o//r",
    "../r",
    "o/../r",
    "o/r x",
    "o/r%2e",
    "o/r?x",
    "o/r#x",
    "o/r@x",
    "o/r:x",
    "o/r\\x",
    "-o/r",
    "o-/r",
    "o--x/r",
    "o_x/r",
    "o.x/r",
    "ö/r",
    "o/ř",
    "o/r\x00",
    "a" * 40 + "/r",
    "o/" + "r" * 101,
]
GOOD_REPOS = [
    "acme/sev-images",
    "a/b",
    "A-b-C/x.y_z",
    "a" * 39 + "/r",
    "o/" + "r" * 100,
    "o/.github",
    "o/..x",
    "o/x.",
    "o/_",
    "o/-",
    "0/0",
    "o/git",
    "o/.gitx",
    "o/r.gi",
    "o/x.git.y",
    "1-2-3/R",
]


@pytest.mark.parametrize("repo", BAD_REPOS)
def test_check_repo_refuses_what_github_does(repo: str) -> None:
    with pytest.raises(SevimgError) as caught:
        check_repo(repo)
    assert str(caught.value).startswith(f"--repo: {repo!r} is not a repository name")
    with pytest.raises(SevimgError):
        GitHub(repo, Token(TOKEN, "--token"), api_url="http://127.0.0.1:9")


@pytest.mark.parametrize("repo", GOOD_REPOS)
def test_check_repo_accepts_what_github_does(repo: str) -> None:
    assert check_repo(repo) == repo


@pytest.mark.parametrize(
    ("value", "segment"),
    [
        (".", "%2E"),
        ("..", "%2E%2E"),
        ("a/b", "a%2Fb"),
        ("v1.0", "v1.0"),
        ("release/2026", "release%2F2026"),
        ("a b", "a%20b"),
        ("a?b#c", "a%3Fb%23c"),
        ("é", "%C3%A9"),
        ("%2e", "%252e"),
    ],
)
def test_url_segment(value: str, segment: str) -> None:
    assert url_segment(value) == segment


@pytest.mark.parametrize("tag", ["v1.0", "release/2026", "v1@x", "é-1"])
def test_tags_travel_as_one_encoded_segment(fake: FakeGitHub, gh: GitHub, tag: str) -> None:
    assert gh.release_by_tag(tag) is None
    (request,) = fake.requests
    assert request.raw_path == f"/repos/acme/sev-images/releases/tags/{url_segment(tag)}"
    assert request.path == f"/repos/acme/sev-images/releases/tags/{tag}"


BAD_API_URLS = [
    "ftp://api.example",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "api.github.com",
    "//api.github.com",
    "https://",
    "https:///path",
    "https://user:PASSWORD@api.example",
    "https://ghp_TOKEN@api.example",
    "http://api.example/?x=1",
    "http://api.example/api?",
    "http://api.example/#top",
    "http://api.example:99999",
    "http://api.example:port",
    "http://api.example:0",
    "http://api.example /v3",
    "http://api.example/\n",
    "http://api.example\t/v3",
    "http://api.example/api/../v3",
    "http://api.example/./v3",
    "http://[::1",
    "",
    "   ",
]
GOOD_API_URLS = [
    ("https://api.github.com", "https://api.github.com"),
    ("https://api.github.com/", "https://api.github.com"),
    ("http://127.0.0.1:1", "http://127.0.0.1:1"),
    ("https://ghe.example/api/v3/", "https://ghe.example/api/v3"),
    ("HTTPS://API.GITHUB.COM", "HTTPS://API.GITHUB.COM"),
    ("http://[::1]:8080/api", "http://[::1]:8080/api"),
    (" https://api.github.com ", "https://api.github.com"),
]


@pytest.mark.parametrize("url", BAD_API_URLS)
@pytest.mark.parametrize("source", ["--api-url", "GITHUB_API_URL"])
def test_bad_api_urls_are_refused_naming_their_source(url: str, source: str) -> None:
    option, env = (url, {}) if source == "--api-url" else (None, {"GITHUB_API_URL": url})
    if source == "GITHUB_API_URL" and not url:
        assert resolve_api_url(option, env) == DEFAULT_API_URL  # an empty variable is unset
        return
    with pytest.raises(SevimgError) as caught:
        resolve_api_url(option, env)
    message = str(caught.value)
    assert message.startswith(f"{source}: ") and "is not a usable GitHub API URL" in message
    assert "PASSWORD" not in message and "ghp_TOKEN" not in message


@pytest.mark.parametrize(("url", "expected"), GOOD_API_URLS)
def test_good_api_urls(url: str, expected: str) -> None:
    assert resolve_api_url(url, {}) == expected
    assert resolve_api_url(None, {"GITHUB_API_URL": url}) == expected


@pytest.mark.parametrize(
    "proxy",
    [
        "ftp://user:PROXYPASS@proxy.example",
        "http://user:PROXYPASS@proxy.example:port",
        "socks5://user:PROXYPASS@127.0.0.1:1",
    ],
)
def test_an_unusable_proxy_variable_is_one_clean_line(
    monkeypatch: pytest.MonkeyPatch, proxy: str
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(GitHubError) as caught:
        GitHub("acme/x", Token(TOKEN, "--token"), api_url="http://api.example")
    message = str(caught.value)
    assert "\n" not in message and "PROXYPASS" not in message and TOKEN not in message
    assert "HTTPS_PROXY" in message
