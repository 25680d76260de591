"""JSON files sevimg reads (manifests, the host's result, reports) with values json.loads lets through.

Python's json module accepts `NaN` and `Infinity`, raises a bare ValueError
for integers longer than 4300 digits and a RecursionError for deep
nesting; none of that may end as an internal error. Each command that
reads an artifact folder refuses such a manifest with its name, exit 1,
and writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from sevimg.problems import SevimgError, parse_json
from sevimg.serve.jobs import parse_report
from tests.artifactkit import make_folder
from tests.conftest import CliFn

ODD: dict[str, Callable[[str], str]] = {
    "nan size": lambda t: re.sub(r'"size": \d+', '"size": NaN', t),
    "infinity size": lambda t: re.sub(r'"size": \d+', '"size": Infinity', t),
    "minus infinity": lambda t: re.sub(r'"size": \d+', '"size": -Infinity', t),
    "huge size": lambda t: re.sub(r'"size": \d+', '"size": ' + "9" * 5000, t),
    "1e400 size": lambda t: re.sub(r'"size": \d+', '"size": 1e400', t),
    "negative size": lambda t: re.sub(r'"size": \d+', '"size": -1', t),
    "float size": lambda t: re.sub(r'"size": (\d+)', r'"size": \1.5', t),
    "bool size": lambda t: re.sub(r'"size": \d+', '"size": true', t),
    "deep nesting": lambda t: "[" * 100_000 + "]" * 100_000,
    "deep object": lambda t: '{"a":' * 50_000 + "1" + "}" * 50_000,
    "a list": lambda t: "[]",
    "a string": lambda t: '"x"',
    "null": lambda t: "null",
    "empty": lambda t: "",
    "byte order mark": lambda t: "\ufeff" + t,
    "not utf-8": lambda t: t.replace('"role"', '"r\udcffle"'),
    "lone surrogate": lambda t: t.replace('"role"', '"\\ud800"'),
    "nul in key": lambda t: t.replace('"role"', '"ro\\u0000le"'),
    "truncated": lambda t: t[: len(t) // 2],
    "trailing garbage": lambda t: t + "}",
}


def _spoil(folder: Path, how: str) -> None:
    manifest = folder / "guest-debian-13.manifest.json"
    text = ODD[how](manifest.read_text())
    manifest.write_bytes(text.encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("how", ODD)
def test_odd_manifests_are_refused_by_name(
    cli: CliFn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    folder = make_folder(tmp_path / "out", ["debian-13"])
    _spoil(folder, how)
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_" + "x" * 36)
    monkeypatch.setenv("GITHUB_API_URL", "http://127.0.0.1:9")
    merged = tmp_path / "merged"
    for command in (
        ("publish", "--repo", "acme/x", "--tag", "devel", "--from", str(folder), "--dry-run"),
        ("serve", "--from", str(folder), "--bind", "127.0.0.1:0"),
        ("merge-artifacts", str(folder), "-o", str(merged)),
    ):
        run = cli(*command)
        assert run.code == 1, (command, run.output)
        assert "guest-debian-13.manifest.json" in run.stderr, (command, run.output)
        assert "internal error" not in run.output and "unexpectedly" not in run.output
        assert "Traceback" not in run.output
    assert not merged.exists() or not any(merged.iterdir())


@pytest.mark.parametrize("how", [k for k in ODD if k not in ("not utf-8", "byte order mark")])
def test_parse_json_refuses_with_the_name_or_parses(how: str) -> None:
    text = ODD[how]('{"size": 1, "role": "guest"}')
    try:
        value = parse_json(text, "thing.json")
    except SevimgError as exc:
        assert "thing.json" in str(exc) or any("thing.json" in str(p) for p in exc.problems)
    else:  # valid JSON of the wrong shape is for the schema to refuse
        assert (
            how
            in (
                "negative size",
                "float size",
                "bool size",
                "a list",
                "a string",
                "null",
                "lone surrogate",
                "nul in key",
                "1e400 size",
            )
            or value
        )


@pytest.mark.parametrize("how", ["nan size", "huge size", "deep nesting", "deep object", "empty"])
def test_a_report_put_to_serve_is_a_value_error_never_a_crash(how: str) -> None:
    body = ODD[how]('{"title": "t", "body": "b", "size": 1}').encode()
    # Deep nesting is refused before parsing (a report is two levels deep).
    expected = "nested deeper than" if how.startswith("deep") else "not JSON"
    with pytest.raises(ValueError, match=expected):
        parse_report(body)


SUMMARIES = {
    "deep nesting": "python3 -c 'print(\"[\" * 100000)'",
    "images a number": "echo '{\"Images\": 5}'",
    "images empty list of lists": "echo '{\"Images\": [[]]}'",
    "a list": "echo '[]'",
    "a number": "echo 5",
    "nan": "echo NaN",
    "huge integer": "python3 -c 'print(\"9\" * 5000)'",
    "nothing": "true",
}


@pytest.mark.parametrize("summary", SUMMARIES.values(), ids=SUMMARIES.keys())
def test_an_odd_mkosi_summary_is_a_located_error(
    cli: CliFn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, summary: str
) -> None:
    fake = tmp_path / "mkosi"
    fake.write_text(
        f'#!/bin/sh\ncase "$*" in *--version*) echo "mkosi 25.3";; *summary*) {summary};; esac\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("SEVIMG_MKOSI", str(fake))
    run = cli("validate", "debian-13", "--mkosi")
    assert run.code == 1, run.output
    assert "images/debian-13.yaml: error: guest-debian-13: mkosi 25.3 printed no usable" in (
        run.stderr
    ), run.output
    assert "internal error" not in run.output
