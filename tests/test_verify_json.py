"""`sevimg verify` for scripts: one JSON object on every path, exit codes, where expectations came from."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests import certkit as kit
from tests.certkit import MEASUREMENT, NONCE
from tests.conftest import CliFn

SYNTH = kit.make_chain()


@pytest.fixture
def case(tmp_path: Path) -> Path:
    report = kit.signed_report()
    (tmp_path / "report.bin").write_bytes(report)
    kit.write_folder(tmp_path / "certs", SYNTH, "kds")
    (tmp_path / "ark.pem").write_bytes(kit.pem(SYNTH.ark))
    evidence = {
        "report": base64.b64encode(report).decode(),
        "nonce": NONCE.hex(),
        "expected_measurement": MEASUREMENT.hex(),
        "vcek": kit.pem(SYNTH.vcek).decode(),
        "product": "Genoa",
    }
    (tmp_path / "result.json").write_text(json.dumps({"evidence": evidence}))
    return tmp_path


def CERTS(case: Path) -> list[str]:
    # The synthetic chain: its names are AMD's, so the pinned ASK must not complete it.
    return ["--certs", str(case / "certs"), "--trusted-ark", str(case / "ark.pem")]


def one_object(stdout: str) -> dict[str, Any]:
    """stdout parsed as exactly one JSON object (json.loads refuses trailing text)."""
    doc = json.loads(stdout)
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["verify", "--json"], "Missing argument 'REPORT'"),
        (["verify", "REPORT", "--vmpl", "9", "--json"], "--vmpl"),
        (["verify", "REPORT", "--no-such-option", "--json"], "No such option"),
        (["verify", "REPORT", "--product", "naples", "--json"], "--product"),
        (["verify", "REPORT", "--json", "--kds-attempts", "0"], "--kds-attempts"),
    ],
)
def test_usage_errors_still_print_one_json_object(
    cli: CliFn, case: Path, argv: list[str], says: str
) -> None:
    argv = [str(case / "report.bin") if a == "REPORT" else a for a in argv]
    run = cli(*argv)
    assert run.code == 2, run.output
    doc = one_object(run.stdout)
    assert doc["verified"] is False and doc["failure"] == "usage" and doc["exit_code"] == 2
    assert says in str(doc["error"]) and doc["checks"] == []


def test_without_json_a_usage_error_is_clicks_own(cli: CliFn, case: Path) -> None:
    run = cli("verify", str(case / "report.bin"), "--vmpl", "9")
    assert run.code == 2 and run.stdout == "" and "--vmpl" in run.stderr


@pytest.mark.parametrize("what", ["no-report", "not-json-nor-md", "missing"])
def test_evidence_that_cannot_be_verified_gives_json(cli: CliFn, case: Path, what: str) -> None:
    path = case / "bad.json"
    if what == "no-report":
        path.write_text(json.dumps({"evidence": {"report": None, "nonce": None}}))
    elif what == "not-json-nor-md":
        path.write_text("hello")
    run = cli("verify", str(path), "--json")
    assert run.code == 2 and run.stderr == ""
    doc = one_object(run.stdout)
    assert doc["failure"] == "usage" and doc["report_file"] == str(path)
    assert str(path) in str(doc["error"])


def test_every_check_is_in_the_json_with_its_reason_and_kind(cli: CliFn, case: Path) -> None:
    run = cli("verify", str(case / "report.bin"), "--certs", str(case / "certs"), "--json")
    assert run.code == 3  # the synthetic root is not trusted: a chain failure
    doc = one_object(run.stdout)
    for check in doc["checks"]:
        assert check["reason"] and check["verdict"] in ("pass", "fail", "skip")
        assert ("failure" in check) is (check["verdict"] == "fail")
    assert doc["failure"] == "chain"


def test_expectations_taken_from_the_evidence_are_said_to_be(cli: CliFn, case: Path) -> None:
    args = ["verify", str(case / "result.json"), *CERTS(case)]
    run = cli(*args)
    assert run.code == 0, run.output
    text = " ".join(run.stdout.split())
    assert "the nonce was taken from the evidence itself" in text
    assert "the measurement was taken from the evidence itself" in text
    doc = one_object(cli(*args, "--json").stdout)
    expected = doc["expected"]
    assert expected["nonce"]["from_evidence"] is True
    assert expected["measurement"]["source"] == "evidence"
    assert len(doc["notes"]) == 2
    given = one_object(cli(*args, "--nonce", NONCE.hex(), "--json").stdout)
    assert given["expected"]["nonce"] == {
        "value": NONCE.hex(),
        "source": "--nonce",
        "from_evidence": False,
    }
    assert len(given["notes"]) == 1


def _manifest(case: Path, measurement: str | None) -> Path:
    data: dict[str, object] = {"image_id": "guest-debian-forky", "role": "guest"}
    if measurement is not None:
        data["expected_measurement"] = {"measurement": measurement, "vcpus": 1}
    path = case / "guest-debian-forky.manifest.json"
    path.write_text(json.dumps(data))
    return path


def test_expect_from_a_manifest(cli: CliFn, case: Path) -> None:
    base = ["verify", str(case / "result.json"), *CERTS(case)]
    manifest = _manifest(case, MEASUREMENT.hex())
    doc = one_object(cli(*base, "--expect-from", str(manifest), "--json").stdout)
    assert doc["verified"] is True
    assert (
        doc["expected"]["measurement"]["source"] == f"--expect-from {manifest} (guest-debian-forky)"
    )
    other = _manifest(case, MEASUREMENT[::-1].hex())
    run = cli(*base, "--expect-from", str(other))
    assert run.code == 1 and "measurement: is " in run.stderr


@pytest.mark.parametrize(
    "layout",
    [
        lambda m: {"images": {"guest-debian-forky": {"expected_measurement": m, "vcpus": 1}}},
        lambda m: {"guest-debian-forky": {"expected_measurement": {"measurement": m}}},
        lambda m: [{"image": "guest-debian-forky", "measurement": m, "uki_sha256": "ab"}],
    ],
)
def test_expect_from_a_measurements_file_by_image(cli: CliFn, case: Path, layout: object) -> None:
    path = case / "measurements.json"
    path.write_text(json.dumps(layout(MEASUREMENT.hex())))  # type: ignore[operator]
    base = ["verify", str(case / "result.json"), *CERTS(case)]
    ok = cli(*base, "--expect-from", str(path), "--expect-image", "guest-debian-forky")
    assert ok.code == 0, ok.output
    unknown = cli(*base, "--expect-from", str(path), "--expect-image", "guest-x", "--json")
    assert unknown.code == 2 and "has no entry for image 'guest-x'" in str(
        one_object(unknown.stdout)["error"]
    )
    no_image = cli(*base, "--expect-from", str(path))
    assert no_image.code == 2 and "--expect-image" in no_image.stderr


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"image_id": "guest-a"}', "names no expected measurement"),
        (
            '{"image_id": "guest-a", "expected_measurement": {"measurement": "zz"}}',
            "not hexadecimal",
        ),
        ("{not json", "is not valid JSON"),
    ],
)
def test_a_bad_expect_from_is_bad_usage(cli: CliFn, case: Path, content: str, says: str) -> None:
    (case / "m.json").write_text(content)
    run = cli("verify", str(case / "result.json"), "--expect-from", str(case / "m.json"))
    assert run.code == 2 and says in run.stderr


def test_help_documents_every_exit_code(cli: CliFn) -> None:
    run = cli("verify", "--help")
    assert run.code == 0
    text = " ".join(run.stdout.split())
    for code, words in [
        (0, "verified"),
        (1, "the evidence does not match"),
        (2, "bad usage"),
        (3, "the chain or the report's signature does not hold"),
        (4, "revoked"),
        (5, "could not fetch"),
        (6, "a required check could not run"),
        (70, "an internal error"),
    ]:
        assert f"{code} {words}" in text, (code, text)


def _crash(*_: object, **__: object) -> None:
    # Stands in for a bug: nothing in the verifier raises on bad input, so one is injected.
    raise RuntimeError("boom at https://user:hunter2@kds.example/x")


@pytest.mark.parametrize("where", ["sevimg.cli.certify.verify", "sevimg.cli.certify.read_report"])
def test_an_internal_error_still_prints_one_json_object_exit_70(
    cli: CliFn, case: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.setattr(where, _crash)
    run = cli("verify", str(case / "report.bin"), *CERTS(case), "--json")
    assert run.code == 70, run.output
    doc = one_object(run.stdout)
    assert doc["failure"] == "internal" and doc["exit_code"] == 70 and doc["verified"] is False
    assert doc["error"].startswith("internal error: RuntimeError: boom")
    assert doc["report_file"] == str(case / "report.bin") and doc["checks"] == []
    assert "hunter2" not in run.output  # credentials in the message are redacted
    assert "This is a bug in sevimg" in run.stderr and "Traceback" not in run.output
    plain = cli("verify", str(case / "report.bin"), *CERTS(case))
    assert (
        plain.code == 70 and plain.stdout == "" and "internal error: RuntimeError" in plain.stderr
    )
