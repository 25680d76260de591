"""`sevimg verify`: the command line over the verifier, run in-process (the `cli` fixture)."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import pytest

from sevimg_cert.verify import CHECK_NAMES
from tests import certkit as kit
from tests.certkit import MEASUREMENT, NONCE, ReportSpec
from tests.conftest import CliFn
from tests.fakekds import FakeKds, closed_port_url, serve


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def case(tmp_path: Path) -> Path:
    """A folder with report.bin, certs/ (KDS layout) and ark.pem (the synthetic root)."""
    return kit.verify_case(tmp_path)


def good_args(case: Path, report: str = "report.bin") -> list[str]:
    return kit.verify_args(case, report=report)


def test_a_genuine_report_verifies(cli: CliFn, case: Path) -> None:
    before = tree(case)
    run = cli(*good_args(case))
    assert run.code == 0, run.output
    assert "verified: every required check passed" in run.stdout
    for name in CHECK_NAMES:
        assert name in run.stdout
    assert run.stdout.count(" pass ") == len(CHECK_NAMES) - 1 and " fail " not in run.stdout
    assert "not checked (optional): revocation" in run.stdout
    assert tree(case) == before  # verify writes nothing


def test_json_is_the_structured_result(cli: CliFn, case: Path) -> None:
    run = cli(*good_args(case), "--json")
    assert run.code == 0, run.output
    result = json.loads(run.stdout)
    assert result["verified"] is True and result["report_file"] == str(case / "report.bin")
    assert [c["name"] for c in result["checks"]] == list(CHECK_NAMES)
    verdicts = {c["name"]: c["verdict"] for c in result["checks"]}
    assert verdicts.pop("revocation") == "skip" and set(verdicts.values()) == {"pass"}
    assert [c["name"] for c in result["not_checked"]] == ["revocation"]
    assert result["failure"] is None and result["exit_code"] == 0
    assert result["report"]["version"] == 5 and result["report"]["measurement"] == MEASUREMENT.hex()
    assert result["certificates"]["vcek"]["source"] == str(case / "certs" / "vcek.der")
    assert result["certificates"]["ark"]["subject"].startswith("CN=ARK-Genoa")


@pytest.mark.parametrize("wrap", [0, 64, 76])
def test_the_base64_of_a_report_is_accepted(cli: CliFn, case: Path, wrap: int) -> None:
    text = base64.b64encode((case / "report.bin").read_bytes()).decode()
    if wrap:
        text = "\n".join(text[i : i + wrap] for i in range(0, len(text), wrap))
    (case / "report.b64").write_text(text + "\n")
    run = cli(*good_args(case, "report.b64"))
    assert run.code == 0, run.output


def _write_report(case: Path, spec: ReportSpec) -> None:
    (case / "report.bin").write_bytes(kit.signed_report(spec))


DEFECTS: dict[str, tuple[str, str, int]] = {
    # name: (failing check, reason shown on stderr, exit status: 1 evidence, 3 chain)
    "wrong-nonce": ("request data", "not the nonce", 1),
    "short-nonce": ("request data", "not the nonce", 1),
    "wrong-measurement": ("measurement", "expected " + MEASUREMENT[::-1].hex(), 1),
    "untrusted-root": ("ARK", "is not one of AMD's pinned roots", 3),
    "debug": ("debug policy", "allows debugging", 1),
    "vmpl": ("VMPL", "report is for VMPL 0, expected 1", 1),
    "truncated": ("report structure", "truncated: 1000 bytes", 1),
    "unknown-version": ("report structure", "report version 9", 1),
    "hwid": ("VCEK hwID", "VCEK is for chip", 3),
    "tcb": ("VCEK TCB", "ucodeSPL: VCEK 1, report 213", 3),
    "vcek-by-rogue": ("VCEK", "SEV-VCEK is not signed by SEV-Genoa", 3),
    "garbage-vcek": ("certificates", "vcek.der: not an X.509 certificate", 3),
}
KINDS = {1: "evidence", 3: "chain"}


@pytest.mark.parametrize("name", DEFECTS)
def test_each_defect_exits_with_its_class_naming_the_failed_check(
    cli: CliFn, case: Path, name: str
) -> None:
    args = good_args(case)
    if name == "wrong-nonce":
        args[args.index("--nonce") + 1] = bytes(64).hex()
    elif name == "short-nonce":
        args[args.index("--nonce") + 1] = NONCE[:32].hex()
    elif name == "wrong-measurement":
        args[args.index("--measurement") + 1] = MEASUREMENT[::-1].hex()
    elif name == "untrusted-root":
        del args[args.index("--trusted-ark") : args.index("--trusted-ark") + 2]
    elif name == "debug":
        _write_report(case, ReportSpec(policy=0x30000 | 1 << 19))
    elif name == "vmpl":
        args += ["--vmpl", "1"]
    elif name == "truncated":
        (case / "report.bin").write_bytes((case / "report.bin").read_bytes()[:1000])
    elif name == "unknown-version":
        data = bytearray((case / "report.bin").read_bytes())
        data[0] = 9
        (case / "report.bin").write_bytes(bytes(data))
    elif name in ("hwid", "tcb", "vcek-by-rogue"):
        change = {
            "hwid": {"hwid": bytes(64)},
            "tcb": {"tcb": replace(kit.Tcb(), ucode=1)},
            "vcek-by-rogue": {"signer": "rogue"},
        }[name]
        (case / "certs" / "vcek.der").write_bytes(kit.der(kit.make_vcek(**change)))  # type: ignore[arg-type]
    elif name == "garbage-vcek":
        (case / "certs" / "vcek.der").write_bytes(b"\x30\x82garbage")
    check, reason, code = DEFECTS[name]
    run = cli(*args)
    assert run.code == code, run.output
    assert "Traceback" not in run.output
    kind = KINDS[code]
    assert (
        f"sevimg: error: {case / 'report.bin'}: not verified ({kind}, exit {code}): {check}: "
        in run.stderr
    )
    assert reason in run.stderr
    json_run = cli(*args, "--json")
    as_json = json.loads(json_run.stdout)
    assert json_run.code == code and as_json["exit_code"] == code
    assert as_json["verified"] is False and as_json["failure"] == kind
    assert [c["name"] for c in as_json["checks"] if c["verdict"] == "fail"] == [check]


def test_missing_expectations_are_reported_as_not_checked(cli: CliFn, case: Path) -> None:
    run = cli(
        "verify",
        str(case / "report.bin"),
        "--certs",
        str(case / "certs"),
        "--trusted-ark",
        str(case / "ark.pem"),
    )
    assert run.code == 6
    assert "not verified (incomplete, exit 6): no check failed" in run.stderr
    assert "not checked (required, so not a pass): request data, measurement" in run.stderr


def _bad_inputs(case: Path) -> dict[str, tuple[list[str], str]]:
    report, certs, ark = str(case / "report.bin"), str(case / "certs"), str(case / "ark.pem")
    (case / "garbage.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    (case / "adir").mkdir(exist_ok=True)
    (case / "huge.bin").write_bytes(bytes(70000))
    return {
        "missing-report": (
            ["verify", str(case / "nope.bin"), "--certs", certs],
            "nope.bin: no such file",
        ),
        "report-is-a-folder": (
            ["verify", str(case / "adir"), "--certs", certs],
            "adir: not a regular file",
        ),
        "huge-report": (
            ["verify", str(case / "huge.bin"), "--certs", certs],
            "70000 bytes; an attestation report is 1184",
        ),
        "nonce-not-hex": (
            ["verify", report, "--certs", certs, "--nonce", "zz"],
            "--nonce: 'zz' is not hexadecimal",
        ),
        "nonce-odd": (
            ["verify", report, "--certs", certs, "--nonce", "abc"],
            "--nonce: 'abc' has an odd number of hex digits",
        ),
        "nonce-empty": (
            ["verify", report, "--certs", certs, "--nonce", ""],
            "--nonce: '' is not hexadecimal",
        ),
        "nonce-0x-only": (
            ["verify", report, "--certs", certs, "--nonce", "0x"],
            "is not hexadecimal",
        ),
        "nonce-spaces": (
            ["verify", report, "--certs", certs, "--nonce", "12 34"],
            "is not hexadecimal",
        ),
        "nonce-too-long": (
            ["verify", report, "--certs", certs, "--nonce", "ab" * 65],
            "--nonce: 65 bytes; at most 64",
        ),
        "measurement-short": (
            ["verify", report, "--certs", certs, "--measurement", "ab" * 47],
            "--measurement: 47 bytes; it must be 48",
        ),
        "measurement-long": (
            ["verify", report, "--certs", certs, "--measurement", "ab" * 49],
            "--measurement: 49 bytes; it must be 48",
        ),
        "measurement-not-hex": (
            ["verify", report, "--certs", certs, "--measurement", "xyz"],
            "--measurement: 'xyz' is not hexadecimal",
        ),
        "certs-missing": (
            ["verify", report, "--certs", str(case / "none")],
            "--certs: " + str(case / "none") + ": no such folder",
        ),
        "certs-is-a-file": (
            ["verify", report, "--certs", ark],
            "--certs: " + ark + ": not a folder",
        ),
        "measurement-and-expect-from": (
            ["verify", report, "--certs", certs, "--measurement", "ab" * 48, "--expect-from", ark],
            "give --measurement HEX or --expect-from FILE, not both",
        ),
        "kds-ftp": (
            ["verify", report, "--kds", "ftp://kds.example"],
            "--kds: 'ftp://kds.example' is not an http:// or https:// URL",
        ),
        "kds-empty": (
            ["verify", report, "--kds", ""],
            "--kds: '' is not an http:// or https:// URL",
        ),
        "kds-no-scheme": (
            ["verify", report, "--kds", "kdsintf.amd.com"],
            "is not an http:// or https:// URL",
        ),
        "kds-bad-port": (
            ["verify", report, "--kds", "http://h:port"],
            "--kds: 'http://h:port' is not a URL",
        ),
        "kds-secret-bad-port": (
            ["verify", report, "--kds", "http://u:hunter2@h:port"],
            "--kds: 'http://h:port' is not a URL",
        ),
        "trusted-ark-missing": (
            ["verify", report, "--certs", certs, "--trusted-ark", str(case / "no.pem")],
            "--trusted-ark: " + str(case / "no.pem") + ": no such file",
        ),
        "trusted-ark-garbage": (
            ["verify", report, "--certs", certs, "--trusted-ark", str(case / "garbage.pem")],
            "garbage.pem: not an X.509 certificate",
        ),
        "trusted-ark-folder": (
            ["verify", report, "--certs", certs, "--trusted-ark", str(case / "adir")],
            "adir: is a folder",
        ),
    }


BAD_INPUTS = [
    "missing-report", "report-is-a-folder", "huge-report", "nonce-not-hex", "nonce-odd", "nonce-empty", "nonce-0x-only",
    "nonce-spaces", "nonce-too-long", "measurement-short", "measurement-long", "measurement-not-hex", "certs-missing",
    "certs-is-a-file", "measurement-and-expect-from", "kds-ftp", "kds-empty", "kds-no-scheme", "kds-bad-port", "kds-secret-bad-port",
    "trusted-ark-missing", "trusted-ark-garbage", "trusted-ark-folder",
]  # fmt: skip


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_is_a_clean_error(cli: CliFn, case: Path, name: str) -> None:
    args, message = _bad_inputs(case)[name]
    before = tree(case)
    run = cli(*args)
    assert run.code == 2, run.output
    assert message in run.stderr, run.stderr
    assert "Traceback" not in run.output and "internal error" not in run.output
    assert "hunter2" not in run.output
    assert run.stdout == ""  # nothing verified, nothing half-printed
    # With --json, stdout is still exactly one JSON object, saying why.
    json_run = cli(*args, "--json")
    assert json_run.code == 2 and json_run.stderr == ""
    doc = json.loads(json_run.stdout)
    assert doc["verified"] is False and doc["failure"] == "usage" and doc["exit_code"] == 2
    assert message in doc["error"] and doc["checks"] == []
    assert "hunter2" not in json_run.output
    assert tree(case) == before


def _kds(product: str = "Genoa") -> FakeKds:
    synth = kit.make_chain(product)
    return FakeKds(chain=synth, product=product, hwid=kit.CHIP_ID.hex())


def test_certificates_from_a_kds_that_answers_429_first(cli: CliFn, case: Path) -> None:
    state = _kds()
    state.faults["vcek"] = [429]
    with serve(state):
        run = cli(
            *[a for a in good_args(case) if a not in ("--certs", str(case / "certs"))],
            "--kds",
            state.url,
        )
    assert run.code == 0, run.output
    assert state.seen("vcek") == 2 and state.seen("chain") == 1


def test_an_unreachable_kds_is_a_clean_error(cli: CliFn, case: Path) -> None:
    url = closed_port_url().replace("http://", "http://lab:hunter2@")
    run = cli(
        "verify",
        str(case / "report.bin"),
        "--kds",
        url,
        "--kds-attempts",
        "2",
        "--nonce",
        NONCE.hex(),
    )
    assert run.code == 5 and "Traceback" not in run.output
    assert "not verified (fetch, exit 5): certificates: AMD KDS at http://127.0.0.1:" in run.stderr
    assert "could not be reached after 2 attempts" in run.stderr and "hunter2" not in run.output


@pytest.mark.parametrize(
    ("made_by", "product"),
    [("Milan", None), ("Genoa", None), ("Milan", "milan"), ("Milan", "MILAN")],
)
def test_a_version_2_report_takes_its_product_from_the_option_or_kds(
    cli: CliFn, case: Path, made_by: str, product: str | None
) -> None:
    state = _kds(made_by)
    _write_report(case, ReportSpec(version=2, product=made_by))
    (case / "ark.pem").write_bytes(kit.pem(state.chain.ark))
    args = [a for a in good_args(case) if a not in ("--certs", str(case / "certs"))]
    with serve(state):
        run = cli(*args, "--kds", state.url, *(["--product", product] if product else []))
    assert run.code == 0, run.output
    vcek_asks = [p for k, p, _ in state.requests if k in ("vcek", "unknown") and "/crl" not in p]
    # Named, KDS is asked once; unnamed, under Milan and then Genoa until it knows the chip.
    assert len(vcek_asks) == (2 if made_by == "Genoa" and product is None else 1)


def test_a_version_2_report_kds_does_not_know_asks_for_the_product(cli: CliFn, case: Path) -> None:
    state = _kds("Milan")
    state.hwid = "ab" * 64  # another chip
    _write_report(case, ReportSpec(version=2, product="Milan"))
    args = [a for a in good_args(case) if a not in ("--certs", str(case / "certs"))]
    with serve(state):
        run = cli(*args, "--kds", state.url, "--json")
    doc = json.loads(run.stdout)
    reason = next(c["reason"] for c in doc["checks"] if c["name"] == "certificates")
    assert run.code == 5 and doc["failure"] == "fetch"
    assert "knows its chip under no product (as Milan: HTTP 404; as Genoa: HTTP 404)" in reason
    assert "name it with --product milan or genoa" in reason


def test_values_are_shown_literally_not_as_markup(cli: CliFn, case: Path) -> None:
    odd = case / "[bold red]x"
    odd.mkdir()
    (odd / "report.bin").write_bytes((case / "report.bin").read_bytes())
    kit.write_folder(odd / "[certs]", kit.make_chain(), "pem")
    run = cli("verify", str(odd / "report.bin"), "--certs", str(odd / "[certs]"), "--json")
    assert json.loads(run.stdout)["certificates"]["vcek"]["source"] == str(
        odd / "[certs]" / "vcek.pem"
    )
    run = cli("verify", str(odd / "report.bin"), "--certs", str(odd / "[certs]"))
    assert "[bold red]x" in run.stdout.replace("\n", "")
    assert "[certs]" in run.stdout
