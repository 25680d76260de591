"""`sevimg matrix` as a command: files it writes, errors it gives, certificate issues it reads.

The GitHub side is the fake on 127.0.0.1 (GITHUB_API_URL), reached through
the real client `publish` and `serve` use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sevimg.lab import markdown as md
from sevimg.lab.issues import issue_record
from tests.conftest import CliFn
from tests.fakegithub import FakeGitHub
from tests.test_matrix import DOC, save

# --- the command --------------------------------------------------------------------------


def test_the_command_writes_markdown_html_and_updates_twice_the_same(
    tmp_path: Path, cli: CliFn
) -> None:
    folder = tmp_path / "results"
    save(
        folder,
        "a",
        {
            "title": "debian forky SEV version 3.0",
            "labels": ["certificate", "os-debian-forky", "proc-7003"],
            "milestone": "c3.0.0-0",
        },
        "2026-12-01T10:00:00Z",
    )
    doc = tmp_path / "README.md"
    doc.write_text(DOC)
    args = (
        "matrix",
        str(folder),
        "--markdown",
        str(tmp_path / "m.md"),
        "--html",
        str(tmp_path / "m.html"),
        "--update",
        str(doc),
    )
    first = cli(*args)
    assert first.code == 0, first.output
    outputs = [(tmp_path / n).read_bytes() for n in ("m.md", "m.html", "README.md")]
    assert cli(*args).code == 0
    assert [(tmp_path / n).read_bytes() for n in ("m.md", "m.html", "README.md")] == outputs
    text = doc.read_text()
    assert text.startswith("# My lab\n\nintro\n\n") and text.endswith("\n\n## Later\nkept\n")
    assert "| Debian Forky | ✅ [c3.0.0-0](results/a.md) |" in text
    stdout = cli("matrix", str(folder))
    assert stdout.code == 0 and "AMD EPYC 7003 (Milan)" in stdout.stdout


def test_the_command_refuses_bad_input_without_a_traceback(tmp_path: Path, cli: CliFn) -> None:
    nothing = cli("matrix")
    assert nothing.code != 0 and "nothing to read" in nothing.output
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "x.json").write_text("[1")
    bad = cli("matrix", str(folder), "--markdown", str(tmp_path / "m.md"))
    assert bad.code != 0 and "x.json" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "m.md").exists()
    no_markers = tmp_path / "plain.md"
    no_markers.write_text("hello\n")
    (folder / "x.json").unlink()
    refused = cli(
        "matrix", str(folder), "--markdown", str(tmp_path / "m.md"), "--update", str(no_markers)
    )
    assert refused.code != 0 and f"no {md.START} line" in refused.output
    assert no_markers.read_text() == "hello\n"
    assert not (tmp_path / "m.md").exists()  # nothing written when any output is refused


def test_certificate_issues_from_github_through_the_api_client(
    cli: CliFn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeGitHub("acme", "certs") as github:
        github.add_issue(
            "debian forky SEV version 3.0",
            ["certificate", "os-debian-forky", "proc-9004"],
            milestone="c3.0.0-0",
            created_at="2026-12-01T00:00:00Z",
        )
        github.add_issue(
            "debian forky SEV version 3.0",
            ["certificate", "os-debian-forky", "proc-9004"],
            created_at="2026-12-02T00:00:00Z",
        )
        github.add_issue(
            "ubuntu 26.04 SEV version 3.0",
            ["certificate", "os-ubuntu-26.04", "proc-9005"],
            milestone="c3.0.0-0",
            created_at="2026-12-03T00:00:00Z",
            state="closed",
        )
        github.add_issue(
            "not a certificate", ["bug", "os-debian-13", "proc-9005"], milestone="c3.0.0-0"
        )
        github.add_issue(
            "a pull request", ["certificate", "os-debian-13", "proc-9005"], pull_request=True
        )
        for n in range(120):  # more than one page of 100
            github.add_issue(
                f"old {n} SEV version 3.0",
                ["certificate", "os-debian-13", "proc-7003"],
                created_at=f"2025-01-01T00:{n // 60:02d}:{n % 60:02d}Z",
            )
        github.add_issue(
            "debian 13 SEV version 3.0",
            ["certificate", "os-debian-13", "proc-7003"],
            milestone="c3.0.0-0",
            created_at="2026-06-01T00:00:00Z",
        )
        monkeypatch.setenv("GITHUB_API_URL", github.api_url)
        monkeypatch.delenv("GITHUB_TOKEN", raising=False)
        monkeypatch.setenv(
            "PATH", "/nonexistent"
        )  # no `gh`: unauthenticated, as for a public repository
        out = tmp_path / "m.md"
        run = cli("matrix", "--github-issues", "acme/certs", "--markdown", str(out))
        assert run.code == 0, run.output
        pages = [r for r in github.requests if r.path.endswith("/issues")]
    text = out.read_text()
    url = "https://github.com/acme/certs/issues/"
    assert f"| Debian Forky | ❌ [failed]({url}2) |" in text  # the newer issue wins
    assert f"| Ubuntu 26.04 | ✅ [c3.0.0-0]({url}3) |" in text  # closed issues count too
    assert f"| Debian 13 | ✅ [c3.0.0-0]({url}{len(github.issues)}) |" in text  # from page 2
    assert "not a certificate" not in text and "a pull request" not in text
    assert len(pages) == 2 and all(p.query.get("labels") == ["certificate"] for p in pages)
    assert text.index("(Milan)") < text.index("(Genoa)") < text.index("(Turin)")


def test_github_refusing_is_a_clean_error(cli: CliFn, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeGitHub("acme", "certs") as github:
        monkeypatch.setenv("GITHUB_API_URL", github.api_url)
        monkeypatch.setenv("PATH", "/nonexistent")
        monkeypatch.delenv("GITHUB_TOKEN", raising=False)
        run = cli("matrix", "--github-issues", "acme/other")
    assert run.code != 0 and "Traceback" not in run.output
    assert "certificate issues of acme/other" in run.output


@pytest.mark.parametrize(
    "item",
    [
        {"number": 1, "title": "t", "pull_request": {}},
        {"number": "1", "title": "t"},
        {"number": 1, "title": None},
    ],
)
def test_what_github_lists_that_is_no_issue_is_left_out(item: dict[str, Any]) -> None:
    assert issue_record(item) is None


def test_an_issues_odd_fields_are_read_as_far_as_they_make_sense() -> None:
    record = issue_record(
        {
            "number": 5,
            "title": "x SEV version 3.0",
            "labels": ["certificate", {"name": "proc-7003"}, {"name": 3}, None],
            "milestone": {"title": ["c3.0.0-0"]},
            "html_url": "javascript:alert(1)",
            "created_at": 17,
        }
    )
    assert record is not None
    assert record.labels == ("certificate", "proc-7003")
    assert record.milestone is None and record.link == "" and record.when == ""
    assert record.version == "3.0" and record.series == "7003"
