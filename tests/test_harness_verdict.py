"""The harness's attestation verdict: a required check that could not run fails it; revocation is
checked against the KDS (or the lab's cache, or the lab's certificate folder) and recorded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sevimg_cert import result
from tests import certkit, crlkit
from tests.crlkit import NOW, make_crl
from tests.fakekds import FakeKds, serve
from tests.harnesskit import fake_host
from tests.test_harness import Answer, run_harness, steps

MEASUREMENT = certkit.MEASUREMENT
SYNTH = certkit.make_chain("Genoa")


@pytest.fixture
def kds() -> Iterator[FakeKds]:
    with serve(FakeKds(SYNTH, "Genoa", certkit.CHIP_ID.hex())) as running:
        yield running


def answering(socket: Path, nonce: bytes, timeout: float) -> Answer:
    """A guest that answers at once with a report over the harness's nonce."""
    spec = certkit.ReportSpec(report_data=nonce, measurement=MEASUREMENT)
    return Answer(nonce=nonce, report=certkit.signed_report(spec))


def harness_with(tmp_path: Path, kds: FakeKds | None, **changes: Any) -> dict[str, Any]:
    cmdline = f"console=ttyS0 sevimg.kds={kds.url}" if kds else "console=ttyS0"
    host = fake_host(tmp_path, sev_snp="Y", cmdline=cmdline)
    for name, data in changes.pop("folder", {}).items():
        (host.root / "etc/sevimg/certs").mkdir(parents=True, exist_ok=True)
        (host.root / "etc/sevimg/certs" / name).write_bytes(data)
    _, doc, _ = run_harness(
        host,
        trusted_arks=(SYNTH.ark,),
        measure=changes.pop("measure", lambda *a, **k: MEASUREMENT),
        ask_guest=answering,
        now=lambda: NOW,
        **changes,
    )
    return doc


def test_a_current_crl_from_the_kds_is_checked_and_recorded(tmp_path: Path, kds: FakeKds) -> None:
    kds.crls["vcek"] = crlkit.der(make_crl())
    doc = harness_with(tmp_path, kds)
    assert doc["result"] == "pass"
    revocation = steps(doc, "attestation")["revocation"]
    assert revocation["result"] == "pass" and "optional" not in revocation
    assert doc["evidence"]["revocation"].startswith("checked: ASK (serial")
    assert kds.seen("crl-vcek") == 1
    assert doc["evidence"]["reported_tcb"] == {
        "bootloader": 3,
        "tee": 0,
        "snp": 23,
        "microcode": 213,
        "raw": "03000000000017d5",
    }


def test_a_revoked_ask_fails_the_run(tmp_path: Path, kds: FakeKds) -> None:
    kds.crls["vcek"] = crlkit.der(make_crl((SYNTH.ask.serial_number,)))
    doc = harness_with(tmp_path, kds)
    assert doc["result"] == "fail" and doc["milestone"] is None
    revocation = steps(doc, "attestation")["revocation"]
    assert revocation["result"] == "fail" and "revoked on" in revocation["detail"]
    assert doc["evidence"]["revocation"].startswith("revoked: ASK (serial")


def test_a_forged_crl_fails_the_run(tmp_path: Path, kds: FakeKds) -> None:
    kds.crls["vcek"] = crlkit.der(make_crl(signer="rogue"))
    doc = harness_with(tmp_path, kds)
    assert doc["result"] == "fail"
    assert doc["evidence"]["revocation"].startswith("CRL refused:")


def test_a_crl_in_the_labs_certificate_folder_is_checked(tmp_path: Path) -> None:
    folder = {
        "cert_chain.pem": certkit.pem(SYNTH.ask) + certkit.pem(SYNTH.ark),
        "vcek.der": certkit.der(SYNTH.vcek),
        "crl.der": crlkit.der(make_crl((SYNTH.ask.serial_number,))),
    }
    doc = harness_with(tmp_path, None, folder=folder)
    assert doc["result"] == "fail"
    assert doc["evidence"]["revocation"].startswith("revoked: ASK")


def test_the_lab_folder_without_a_crl_or_kds_passes_with_revocation_listed_apart(
    tmp_path: Path,
) -> None:
    folder = {
        "cert_chain.pem": certkit.pem(SYNTH.ask) + certkit.pem(SYNTH.ark),
        "vcek.der": certkit.der(SYNTH.vcek),
    }
    doc = harness_with(tmp_path, None, folder=folder)
    assert doc["result"] == "pass"
    revocation = steps(doc, "attestation")["revocation"]
    assert revocation == {
        "name": "revocation",
        "result": "skip",
        "detail": "no CRL given (--crl FILE, or the product's from KDS with --kds)",
        "optional": True,
    }
    assert doc["evidence"]["revocation"].startswith("not checked: no CRL given")


def test_a_measurement_that_could_not_be_computed_fails_attestation_too(
    tmp_path: Path, kds: FakeKds
) -> None:
    def broken(*args: Any, **kwargs: Any) -> bytes:
        raise ValueError("no OVMF metadata")

    doc = harness_with(tmp_path, kds, measure=broken)
    tests = {t["name"]: t for t in doc["levels"][0]["tests"]}
    attestation = steps(doc, "attestation")
    assert attestation["measurement"]["result"] == "skip"
    assert attestation["report_signature"]["result"] == "pass"
    # Once, a skipped step beside passing ones passed the test: no more.
    assert tests["attestation"]["result"] == "fail"
    assert doc["result"] == "fail"


@pytest.mark.parametrize(
    ("outcomes", "optional", "combined"),
    [
        (["pass", "skip"], [False, False], "fail"),
        (["pass", "skip"], [False, True], "pass"),
        (["skip", "skip"], [False, True], "skip"),
        (["pass", "fail"], [False, True], "fail"),
        (["pass", "skip", "error"], [False, False, False], "error"),
        (["pass", "pass"], [False, False], "pass"),
    ],
)
def test_a_test_passes_only_when_every_required_step_passed(
    outcomes: list[str], optional: list[bool], combined: str
) -> None:
    found = [
        result.Step(f"s{i}", result.Outcome(o), "why", optional=opt)
        for i, (o, opt) in enumerate(zip(outcomes, optional, strict=True))
    ]
    assert result.combine_steps(found).value == combined
    test = result.Test("t", "d", "guest", "a", "b", tuple(found))
    back = result.Test(
        "t",
        "d",
        "guest",
        "a",
        "b",
        tuple(
            result.Step(
                s["name"],
                result.Outcome(s["result"]),
                s["detail"],
                optional=s.get("optional", False),
            )
            for s in test.as_dict()["steps"]
        ),
    )
    assert back.result is test.result  # the JSON keeps what decides the outcome


def test_the_markdown_names_the_required_skip_and_lists_optional_ones_apart(
    tmp_path: Path, kds: FakeKds
) -> None:
    def broken(*args: Any, **kwargs: Any) -> bytes:
        raise ValueError("no OVMF metadata")

    kds.faults["crl"] = [404]  # this KDS has no CRL for the product: revocation cannot run
    host = fake_host(tmp_path, sev_snp="Y", cmdline=f"sevimg.kds={kds.url}")
    _, _, md = run_harness(
        host,
        trusted_arks=(SYNTH.ark,),
        measure=broken,
        ask_guest=answering,
        now=lambda: NOW,
    )
    assert "**First failure:** expected_measurement / measure: cannot compute" in md
    assert (
        "### Not Checked (optional)\n\n- attestation / revocation: the CRL could not be fetched"
        in md
    )


def test_an_unreadable_crl_in_the_lab_folder_fails_rather_than_being_ignored(
    tmp_path: Path,
) -> None:
    folder = {
        "cert_chain.pem": certkit.pem(SYNTH.ask) + certkit.pem(SYNTH.ark),
        "vcek.der": certkit.der(SYNTH.vcek),
        "crl.pem": b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    }
    doc = harness_with(tmp_path, None, folder=folder)
    assert doc["result"] == "fail"
    detail = steps(doc, "attestation")["revocation"]["detail"]
    assert (
        detail.startswith("CRL refused: ")
        and "crl.pem: not a certificate revocation list" in detail
    )
