"""Credentials in URLs: never in any output, message, log or file sevimg writes.

A sentinel password is put in every place a URL with credentials can come
from (--api-url, GITHUB_API_URL, sevimg.local.yaml's proxy and mirrors, the
HTTP(S)_PROXY variables), real commands are run, and the sentinel is looked
for in what they printed and in every file they wrote. The one file allowed
to hold a mirror's password is apt's auth.conf.d entry sevimg writes for
mkosi's sandbox (mode 0600), which is how apt is meant to receive it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sevimg.imaging import mkosi
from sevimg.imaging.sandbox import APT_AUTH, apt_auth
from sevimg.problems import SevimgError, error
from sevimg.redact import has_credentials, redact_text, redact_url, split_credentials
from sevimg.release.github import Token
from tests.conftest import REPO, CliFn
from tests.leaks import child_pids, files_containing

SECRET = "Sent1nelPassw0rd"


# --- the helper ---------------------------------------------------------------------------------

WITH_CREDENTIALS = [
    (f"http://user:{SECRET}@proxy.example:3128", "http://***@proxy.example:3128"),
    (f"https://user:{SECRET}@mirror.example/debian/", "https://***@mirror.example/debian/"),
    (f"http://{SECRET}@mirror.example/", "http://***@mirror.example/"),
    (f"http://user:{SECRET}@[::1]:3128", "http://***@[::1]:3128"),
    (f"socks5h://u:{SECRET}@10.0.0.1:1080", "socks5h://***@10.0.0.1:1080"),
    (f"HTTP://U:{SECRET}@H", "HTTP://***@H"),
    (f"http://user:{SECRET}@with@at@host/x", "http://***@host/x"),
    (f"http://us%40er:{SECRET}%3A@host/", "http://***@host/"),
    (f"http://user:{SECRET} spaced@host/", "http://***@host/"),
    (f"user:{SECRET}@proxy.example:3128", "***@proxy.example:3128"),
    (f"HTTPS_PROXY=user:{SECRET}@proxy:3128", "HTTPS_PROXY=***@proxy:3128"),
    (f"proxy: 'http://u:{SECRET}@p:1' is bad", "proxy: 'http://***@p:1' is bad"),
    (f'"http://u:it\'s{SECRET}@p:1"', '"http://***@p:1"'),
    (
        f"-o Acquire::http::Proxy=http://u:{SECRET}@127.0.0.1:9 install",
        "-o Acquire::http::Proxy=http://***@127.0.0.1:9 install",
    ),
    (
        f"two: http://a:{SECRET}@h1/x and https://b:{SECRET}@h2/y",
        "two: http://***@h1/x and https://***@h2/y",
    ),
    (f"line\nhttp://a:{SECRET}@h\nnext", "line\nhttp://***@h\nnext"),
]
WITHOUT_CREDENTIALS = [
    "http://deb.debian.org/debian",
    "https://api.github.com/repos/acme/x/releases/tags/v1@x",
    "Get:1 http://deb.debian.org/debian trixie InRelease [140 kB]",
    "git@github.com:acme/sev-images.git",
    "write to someone@example.org",
    "ghcr.io/acme/img:tag@sha256:0123",
    "sevimg.local.yaml:2:8: error: proxy: 'http://p:3128; rm -rf /' is not an http URL",
    "http://[::1]:8080/x",
    "no url at all",
    "",
]


@pytest.mark.parametrize(("text", "expected"), WITH_CREDENTIALS)
def test_credentials_are_replaced(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert SECRET not in redact_text(text)
    assert redact_text(redact_text(text)) == expected  # idempotent


@pytest.mark.parametrize("text", WITHOUT_CREDENTIALS)
def test_text_without_credentials_is_unchanged(text: str) -> None:
    assert redact_text(text) == text
    assert not has_credentials(text)


def test_redact_url_is_redact_text_for_one_url() -> None:
    assert redact_url(f"http://u:{SECRET}@h/x") == "http://***@h/x"
    assert has_credentials(f"http://u:{SECRET}@h/x")


@pytest.mark.parametrize(
    ("url", "bare", "user", "password"),
    [
        ("http://u:p@h/debian", "http://h/debian", "u", "p"),
        ("http://u@h:8080/", "http://h:8080/", "u", None),
        ("https://us%40er:p%3As%2Fs@h/x", "https://h/x", "us@er", "p:s/s"),
        ("http://u:p@[::1]:3142/debian", "http://[::1]:3142/debian", "u", "p"),
        ("http://h/debian", "http://h/debian", None, None),
    ],
)
def test_split_credentials(url: str, bare: str, user: str | None, password: str | None) -> None:
    assert split_credentials(url) == (bare, user, password)


def test_messages_problems_and_the_token_are_redacted_where_they_are_made() -> None:
    url = f"http://u:{SECRET}@h/x"
    exc = SevimgError(f"cannot reach {url}", [error("f.yaml", f"bad {url}")], hint=f"see {url}")
    assert SECRET not in f"{exc} {exc.hint} {exc.problems[0]} {exc.problems[0].as_dict()}"
    token = Token("ghp_abcdef0123456789", "GITHUB_TOKEN")
    assert token.scrub(f"{url} Bearer ghp_abcdef0123456789") == "http://***@h/x Bearer ***"


@pytest.mark.parametrize(
    ("logins", "expected"),
    [
        ([("http://h/debian", None, None)], ""),
        (
            [("http://h/debian", "u", SECRET)],
            f"machine http://h/debian login u password {SECRET}\n",
        ),
        (
            [("https://h:8443/debian/", "u", "p"), ("https://h:8443/debian-security/", "u", "q")],
            "machine https://h:8443/debian login u password p\n"
            "machine https://h:8443/debian-security login u password q\n",
        ),
        (
            [("http://h/", "u", "p"), ("http://h/", "u", "p")],
            "machine http://h login u password p\n",
        ),
    ],
)
def test_apt_auth_entries(logins: list[tuple[str, str | None, str | None]], expected: str) -> None:
    text = apt_auth(logins)
    assert text.split("\n", 1)[-1] == expected if expected else text == ""


@pytest.mark.parametrize("password", ["a b", "a\tb", "a\nb"])
def test_apt_auth_refuses_what_it_cannot_carry_without_showing_it(password: str) -> None:
    with pytest.raises(SevimgError, match="space or control character") as caught:
        apt_auth([("http://h/debian", "u", password)])
    assert password not in str(caught.value)


# --- every command, every place -----------------------------------------------------------------


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text, text


def _only_allowed_files(*roots: Path) -> None:
    """The sentinel is in no file but sevimg.local.yaml and apt's auth entries (0600)."""
    for root in roots:
        for path in files_containing(root, SECRET):
            if path.name == "sevimg.local.yaml":
                continue
            assert path.as_posix().endswith(APT_AUTH), path
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


CLOSED = "127.0.0.1:9"  # the discard port: nothing listens here


def _local_yaml(cache: Path) -> str:
    return (
        "schema_version: 1\n"
        f"proxy: http://proxyuser:{SECRET}@{CLOSED}\n"
        f"cache_dir: {cache}\n"
        "mirrors:\n"
        "  debian:\n"
        f"    url: http://mirroruser:{SECRET}@{CLOSED}/debian\n"
        f"    security_url: https://secuser:{SECRET}@{CLOSED}/debian-security/\n"
        "  ubuntu:\n"
        f"    url: http://{SECRET}@{CLOSED}/ubuntu\n"
        "  fedora:\n"
        f"    url: https://rpmuser:{SECRET}@{CLOSED}/fedora\n"
    )


ENV_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")


@pytest.fixture
def proxies_with_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_PROXIES:
        monkeypatch.setenv(name, f"http://envuser:{SECRET}@{CLOSED}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


@pytest.mark.parametrize(
    "args",
    [
        ("doctor", "--no-network"),
        ("doctor", "--json", "--timeout", "1"),
        ("doctor", "--timeout", "1"),
        ("validate", "debian-13"),
        ("show", "debian-13", "--role", "host"),
        ("list", "--json"),
        ("render", "debian-13", "ubuntu-26.04", "--mkosi-version", "25.3"),
    ],
)
def test_secrets_in_settings_and_environment_are_never_shown(
    cli: CliFn, workspace: Path, tmp_path: Path, proxies_with_secret: None, args: tuple[str, ...]
) -> None:
    (workspace / "sevimg.local.yaml").write_text(_local_yaml(tmp_path / "cache"))
    children = child_pids()
    run = cli(*args)
    assert (
        run.code in (0, 1) and "Traceback" not in run.output and "internal error" not in run.output
    )
    _no_secret(run.stdout, run.stderr)
    if args[0] == "doctor":
        assert "local settings" in run.stdout
        if "--no-network" not in args:
            assert "(sevimg.local.yaml)" in run.stdout  # the local mirrors were probed
    _only_allowed_files(workspace, tmp_path)
    assert child_pids() <= children


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("proxy", f"http://u:{SECRET}@proxy.example:3128/?x"),
        ("proxy", f"ftp://u:{SECRET}@proxy.example"),
        ("proxy", f"http://u:{SECRET}$x@proxy.example"),
        ("proxy", f"http://u:{SECRET}@proxy.example:3128#f"),
        ("proxy", f"u:{SECRET}@proxy.example:3128"),
        ("mirrors: {debian: {url", f"http://u:{SECRET}@m.example/a b"),
        ("mirrors: {debian: {url", f"http://u:{SECRET}@m.example/debian;rm"),
        ("mirrors: {fedora: {url", f"http://u:{SECRET}@@m.example/"),
        ("mirrors: {ubuntu: {security_url", f"http://u:{SECRET} @m.example/"),
    ],
)
@pytest.mark.parametrize("command", [("build", "debian-13"), ("doctor", "--no-network")])
def test_a_refused_setting_is_located_without_its_password(
    cli: CliFn, workspace: Path, key: str, value: str, command: tuple[str, ...]
) -> None:
    closing = "}" * key.count("{")
    (workspace / "sevimg.local.yaml").write_text(f"schema_version: 1\n{key}: '{value}'{closing}\n")
    run = cli(*command)
    assert run.code == 1 and "Traceback" not in run.output
    _no_secret(run.stdout, run.stderr)
    assert "sevimg.local.yaml:2:" in run.output
    assert "***@" in run.output


def test_publish_through_a_proxy_with_a_password_never_shows_it(
    cli: CliFn, tmp_path: Path, proxies_with_secret: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sevimg.cli import release as release_cli
    from tests.artifactkit import make_folder
    from tests.fakegithub import TOKEN, FakeClock, FakeGitHub

    monkeypatch.setattr(release_cli, "CLOCK", FakeClock())
    folder = make_folder(tmp_path / "out", ["debian-13"])
    with FakeGitHub(tokens={TOKEN: "write"}) as fake:
        args = ["publish", "--repo", "acme/sev-images", "--tag", "devel", "--from", str(folder)]
        run = cli(*args, "--api-url", fake.api_url, "--token", TOKEN)
        # Every request went to the proxy (which does not answer), none to the fake.
        assert fake.requests == []
        _no_secret(run.stdout, run.stderr, *fake.log_lines)
    assert run.code == 1 and "no answer from" in run.stderr and TOKEN not in run.output


def test_api_url_credentials_are_refused_without_showing_them(
    cli: CliFn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.artifactkit import make_folder

    folder = make_folder(tmp_path / "out", ["debian-13"])
    base = ["publish", "--repo", "acme/x", "--tag", "devel", "--from", str(folder), "--dry-run"]
    run = cli(*base, "--api-url", f"https://user:{SECRET}@ghe.example/api/v3")
    assert run.code == 1 and "--api-url: 'https://***@ghe.example/api/v3'" in run.stderr
    monkeypatch.setenv("GITHUB_API_URL", f"https://{SECRET}@ghe.example/api/v3")
    run2 = cli(*base)
    assert run2.code == 1 and "GITHUB_API_URL: 'https://***@ghe.example/api/v3'" in run2.stderr
    _no_secret(run.output, run2.output)


# --- a real mkosi run -----------------------------------------------------------------------------


@pytest.mark.mkosi  # the real mkosi, as root; fails (never skips) without them
@pytest.mark.parametrize("proxy_from", ["sevimg.local.yaml", "environment"])
def test_a_build_through_mirror_and_proxy_with_passwords_shows_and_logs_none(
    cli: CliFn,
    workspace: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    proxy_from: str,
) -> None:
    if os.geteuid() != 0 or mkosi.find(REPO / ".cache") is None:
        pytest.fail("a real build needs root and mkosi (tools/install-mkosi)")
    cache = tmp_path / "cache"
    text = _local_yaml(cache)
    if proxy_from == "environment":
        text = "\n".join(line for line in text.splitlines() if not line.startswith("proxy:")) + "\n"
        for name in ENV_PROXIES:
            monkeypatch.setenv(name, f"http://envuser:{SECRET}@{CLOSED}")
    (workspace / "sevimg.local.yaml").write_text(text)
    children = child_pids()
    run = cli("build", "debian-13", "--role", "guest", "-o", str(tmp_path / "out"))
    # The mirror does not answer, so mkosi fails; what matters is what it left.
    assert run.code == 1 and "mkosi failed building the tools tree" in run.stderr, run.output
    _no_secret(run.stdout, run.stderr)
    log = tmp_path / "out" / "logs" / "tools-tree.log"
    assert "***@" in log.read_text()  # apt was handed the proxy (mkosi printed it, redacted)
    _only_allowed_files(workspace, tmp_path)
    auth = cache / "sandbox" / "tools" / APT_AUTH
    assert f"login mirroruser password {SECRET}" in auth.read_text()
    assert f"login secuser password {SECRET}" in auth.read_text()
    sources = (cache / "sandbox" / "tools" / "etc/apt/sources.list.d/mkosi.sources").read_text()
    assert f"URIs: http://{CLOSED}/debian\n" in sources and "@" not in sources
    assert child_pids() <= children
