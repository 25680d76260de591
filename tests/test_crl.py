"""Revocation: AMD-shaped CRLs (tests.crlkit) read, judged and applied, in the verifier and in `sevimg verify`."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from sevimg_cert import crl
from sevimg_cert.attest import crl_fetcher
from sevimg_cert.certs import Chain, serial
from sevimg_cert.checks import Failure, Verdict
from sevimg_cert.kds import Kds
from sevimg_cert.policy import Policy
from sevimg_cert.verify import REVOCATION, Expected, Result, verify
from tests import certkit as kit
from tests import crlkit
from tests.certkit import MEASUREMENT, NONCE, ReportSpec
from tests.conftest import CliFn
from tests.crlkit import NEXT_UPDATE, NOW, THIS_UPDATE, make_crl
from tests.fakekds import FakeKds, serve

EVIDENCE_CRL = Path(__file__).parent / "data" / "evidence" / "atakit-gcp-milan-v5" / "crl.der"
SYNTH = kit.make_chain()  # one chain: each make_chain() gives the ASK a new random serial


def chain_of(synth: kit.SynthChain) -> Chain:
    return Chain(synth.vcek, synth.ask, synth.ark, {"vcek": "t", "ask": "t", "ark": "t"})


def run(*crls: bytes, require: bool = False, spec: ReportSpec | None = None) -> Result:
    synth = SYNTH
    expected = Expected(
        NONCE,
        MEASUREMENT,
        0,
        (synth.ark,),
        policy=Policy(require_revocation_check=require),
        crls=tuple(crl.parse_crl(data, f"crl{i}") for i, data in enumerate(crls)),
        now=lambda: NOW,
    )
    return verify(kit.signed_report(spec), chain_of(synth), expected)


def revocation(result: Result) -> tuple[Verdict, str, Failure, bool]:
    check = next(c for c in result.checks if c.name == REVOCATION)
    return check.verdict, check.reason, check.failure, check.required


def ask_serial() -> int:
    return SYNTH.ask.serial_number


@pytest.mark.parametrize("encode", [crlkit.der, crlkit.pem])
def test_a_crl_revoking_the_ask_fails_with_revoked(encode: object) -> None:
    data = encode(make_crl((12345, ask_serial())))  # type: ignore[operator]
    result = run(data)
    verdict, reason, failure, _ = revocation(result)
    assert verdict is Verdict.FAIL and failure is Failure.REVOKED
    assert f"ASK (serial {ask_serial():#x}) revoked" in reason
    assert not result.passed and result.failure is Failure.REVOKED


@pytest.mark.parametrize("encode", [crlkit.der, crlkit.pem])
def test_an_empty_current_crl_of_the_ark_passes(encode: object) -> None:
    result = run(encode(make_crl()))  # type: ignore[operator]
    verdict, reason, _, _ = revocation(result)
    assert verdict is Verdict.PASS, reason
    assert "not revoked by crl0" in reason and result.passed and not result.not_checked


def test_a_crl_listing_serial_0_does_not_revoke_a_serial_0_vcek() -> None:
    # Every VCEK KDS issues has serial 0 (so does certkit's): an entry for 0
    # names no certificate, and would otherwise revoke every chip.
    assert serial(SYNTH.vcek) == 0
    result = run(crlkit.der(make_crl((0,))))
    verdict, reason, _, _ = revocation(result)
    assert verdict is Verdict.PASS, reason
    assert f"ASK (serial {ask_serial():#x}) not revoked" in reason and "VCEK" not in reason
    assert result.passed


def test_a_crl_listing_serial_0_and_the_ask_revokes_the_ask_only() -> None:
    result = run(crlkit.der(make_crl((0, ask_serial()))))
    verdict, reason, failure, _ = revocation(result)
    assert verdict is Verdict.FAIL and failure is Failure.REVOKED
    assert f"ASK (serial {ask_serial():#x}) revoked" in reason and "VCEK" not in reason


def test_a_vcek_with_a_serial_is_looked_up_by_it() -> None:
    vcek = kit.with_serial(SYNTH.vcek, 0x1234, kit.rsa_key("ask"))
    chain = replace(chain_of(SYNTH), vcek=vcek)
    expected = Expected(NONCE, MEASUREMENT, 0, (SYNTH.ark,), now=lambda: NOW)
    listed = replace(expected, crls=(crl.parse_crl(crlkit.der(make_crl((0x1234,))), "c"),))
    verdict, reason, failure, _ = revocation(verify(kit.signed_report(), chain, listed))
    assert verdict is Verdict.FAIL and failure is Failure.REVOKED
    assert "VCEK (serial 0x1234) revoked" in reason
    other = replace(expected, crls=(crl.parse_crl(crlkit.der(make_crl((0x1235,))), "c"),))
    verdict, reason, _, _ = revocation(verify(kit.signed_report(), chain, other))
    assert verdict is Verdict.PASS and "VCEK (serial 0x1234) not revoked" in reason


def test_a_crl_revoking_other_serials_passes() -> None:
    result = run(crlkit.der(make_crl((1, 2, ask_serial() + 1))))
    assert revocation(result)[0] is Verdict.PASS and result.passed


def test_a_crl_signed_by_another_key_is_refused() -> None:
    # Same issuer name as the ARK, another key's signature: a forged CRL.
    result = run(crlkit.der(make_crl(signer="rogue")))
    verdict, reason, failure, _ = revocation(result)
    assert verdict is Verdict.FAIL and failure is Failure.CHAIN
    assert "CRL refused: crl0: its signature does not verify with the ARK's key" in reason
    assert "revoked" not in reason and not result.passed


def test_a_forged_crl_revoking_the_ask_is_still_refused_not_revoked() -> None:
    result = run(crlkit.der(make_crl((ask_serial(),), signer="rogue")))
    assert revocation(result)[2] is Failure.CHAIN


@pytest.mark.parametrize(
    ("this", "next_", "why"),
    [
        (THIS_UPDATE - timedelta(days=60), THIS_UPDATE - timedelta(days=30), "expired: nextUpdate"),
        (NOW + timedelta(days=1), NOW + timedelta(days=30), "not valid yet"),
    ],
)
def test_a_crl_that_is_not_current_is_refused(this: object, next_: object, why: str) -> None:
    result = run(crlkit.der(make_crl(this_update=this, next_update=next_)))  # type: ignore[arg-type]
    verdict, reason, failure, _ = revocation(result)
    assert verdict is Verdict.FAIL and failure is Failure.CHAIN and why in reason


def test_the_clock_decides_currency_at_both_ends() -> None:
    data = crl.parse_crl(crlkit.der(make_crl()), "x").crl
    assert crl.currency_problem(data, THIS_UPDATE) is None
    assert crl.currency_problem(data, NEXT_UPDATE) is None
    assert crl.currency_problem(data, NEXT_UPDATE + timedelta(seconds=1)) is not None
    assert crl.currency_problem(data, THIS_UPDATE - timedelta(seconds=1)) is not None


def test_another_products_crl_is_ignored_beside_ours_and_refused_alone() -> None:
    milan = crlkit.der(make_crl((ask_serial(),), issuer_cn="ARK-Milan"))
    both = run(milan, crlkit.der(make_crl()))
    verdict, reason, _, _ = revocation(both)
    assert verdict is Verdict.PASS and "ignored crl0: issued by" in reason
    alone = run(milan)
    verdict, reason, failure, _ = revocation(alone)
    assert verdict is Verdict.FAIL and failure is Failure.CHAIN and "not this chain's ARK" in reason


def test_without_a_crl_revocation_is_optional_unless_required() -> None:
    result = run()
    verdict, reason, _, required = revocation(result)
    assert verdict is Verdict.SKIP and not required and "no CRL given" in reason
    assert result.passed and [c.name for c in result.not_checked] == [REVOCATION]
    strict = run(require=True)
    verdict, reason, failure, required = revocation(strict)
    assert verdict is Verdict.FAIL and required and failure is Failure.INCOMPLETE
    assert not strict.passed and "required, not checked" in reason


def test_revocation_of_a_report_that_cannot_be_read_is_still_optional() -> None:
    result = verify(b"short", chain_of(kit.make_chain()), Expected(now=lambda: NOW))
    verdict, _, _, required = revocation(result)
    assert verdict is Verdict.SKIP and not required and not result.passed


@pytest.mark.parametrize(
    "data", [b"", b"garbage", b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"]
)
def test_what_is_not_a_crl_is_a_clean_error(data: bytes) -> None:
    with pytest.raises(crl.CrlError, match="where: not a certificate revocation list"):
        crl.parse_crl(data, "where")


def test_a_huge_crl_is_refused_before_parsing() -> None:
    with pytest.raises(crl.CrlError, match="too large"):
        crl.parse_crl(bytes(crl.MAX_CRL + 1), "big")


# --- from KDS (a fake on loopback, AMD's path layout) ---------------------------------


def _kds(**crls: bytes) -> FakeKds:
    synth = SYNTH
    return FakeKds(chain=synth, product="Genoa", hwid=kit.CHIP_ID.hex(), crls=dict(crls))


def _fetching(client: Kds, spec: ReportSpec | None = None) -> Result:
    synth = SYNTH
    expected = Expected(
        NONCE, MEASUREMENT, 0, (synth.ark,), fetch_crl=crl_fetcher(client), now=lambda: NOW
    )
    return verify(kit.signed_report(spec), chain_of(synth), expected)


def test_the_products_crl_is_fetched_from_kds_at_amds_path() -> None:
    state = _kds(vcek=crlkit.der(make_crl((ask_serial(),))))
    with serve(state):
        result = _fetching(Kds(state.url, attempts=1))
    assert [p for k, p, _ in state.requests if k == "crl-vcek"] == ["/vcek/v1/Genoa/crl"]
    verdict, reason, failure, _ = revocation(result)
    assert verdict is Verdict.FAIL and failure is Failure.REVOKED and "/vcek/v1/Genoa/crl" in reason


def test_a_vlek_signed_report_takes_the_vlek_crl() -> None:
    state = _kds(vlek=crlkit.der(make_crl()))
    spec = ReportSpec(key_info=1 << 2)  # KEY_INFO bits 4:2 = 1: signed with a VLEK
    with serve(state):
        result = _fetching(Kds(state.url, attempts=1), spec)
    assert [p for k, p, _ in state.requests if k.startswith("crl")] == ["/vlek/v1/Genoa/crl"]
    assert revocation(result)[0] is Verdict.PASS


def test_a_kds_without_the_crl_leaves_revocation_optional_and_says_why() -> None:
    state = _kds()
    state.faults["crl"] = [404]  # this KDS has no CRL for the product
    with serve(state):
        result = _fetching(Kds(state.url, attempts=1))
    verdict, reason, _, required = revocation(result)
    assert verdict is Verdict.SKIP and not required
    assert "could not be fetched" in reason and "HTTP 404" in reason


def test_the_crl_fetch_stops_at_its_deadline() -> None:
    # A KDS that keeps answering 503: with a budget of 10 s on a clock that the
    # waits advance, the fetch gives up within the time, not after 20 attempts:
    # a wait that would end past the budget is not begun.
    state = _kds()
    state.faults["crl-vcek"] = [503] * 20
    state.crls["vcek"] = crlkit.der(make_crl())
    state.retry_after = None  # the client's own backoff: 4 s, then 8 s (cut to what is left)
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    client = Kds(
        "http://x", attempts=20, backoff=4.0, sleep=sleep, budget=10.0, clock=lambda: clock[0]
    )
    with serve(state):
        client = replace(client, base_url=state.url)
        result = _fetching(client)
    verdict, reason, _, _ = revocation(result)
    assert verdict is Verdict.SKIP and "within 10 s" in reason
    assert state.seen("crl-vcek") == 2  # at 0 s and 4 s; a wait of 8 s more would pass 10 s
    assert clock[0] == pytest.approx(4.0)


# --- the command line ---------------------------------------------------------------


@pytest.fixture
def case(tmp_path: Path) -> Path:
    return kit.verify_case(tmp_path, SYNTH)


def args(case: Path, *more: str) -> list[str]:
    return kit.verify_args(case, *more)


AT = ["--at", NOW.isoformat()]


@pytest.mark.parametrize("encode", [crlkit.der, crlkit.pem])
def test_verify_crl_revoking_the_ask_exits_4(cli: CliFn, case: Path, encode: object) -> None:
    (case / "amd.crl").write_bytes(encode(make_crl((ask_serial(),))))  # type: ignore[operator]
    run_ = cli(*args(case, "--crl", str(case / "amd.crl"), *AT))
    assert run_.code == 4, run_.output
    assert "not verified (revoked, exit 4): revocation: ASK (serial" in run_.stderr
    assert "revoked on" in run_.stderr


def test_verify_crl_listing_serial_0_does_not_revoke_the_vcek(cli: CliFn, case: Path) -> None:
    (case / "zero.crl").write_bytes(crlkit.der(make_crl((0,))))
    passed = cli(*args(case, "--crl", str(case / "zero.crl"), *AT))
    assert passed.code == 0, passed.output
    (case / "both.crl").write_bytes(crlkit.der(make_crl((0, ask_serial()))))
    run_ = cli(*args(case, "--crl", str(case / "both.crl"), *AT, "--json"))
    assert run_.code == 4, run_.output
    doc = json.loads(run_.stdout)
    check = next(c for c in doc["checks"] if c["name"] == "revocation")
    assert doc["failure"] == "revoked" and check["verdict"] == "fail"
    assert "ASK (serial" in check["reason"] and "revoked" in check["reason"]
    assert "VCEK" not in check["reason"]


def test_verify_with_an_empty_crl_checks_revocation(cli: CliFn, case: Path) -> None:
    (case / "amd.crl").write_bytes(crlkit.der(make_crl()))
    run_ = cli(*args(case, "--crl", str(case / "amd.crl"), *AT, "--json"))
    assert run_.code == 0, run_.output
    doc = json.loads(run_.stdout)
    check = next(c for c in doc["checks"] if c["name"] == "revocation")
    assert check["verdict"] == "pass" and doc["not_checked"] == []


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: make_crl(signer="rogue"), "does not verify with the ARK's key"),
        (lambda: make_crl(next_update=THIS_UPDATE + timedelta(days=1)), "expired"),
    ],
)
def test_verify_refuses_a_crl_that_does_not_count_with_exit_3(
    cli: CliFn, case: Path, make: object, why: str
) -> None:
    (case / "amd.crl").write_bytes(crlkit.der(make()))  # type: ignore[operator]
    run_ = cli(*args(case, "--crl", str(case / "amd.crl"), *AT, "--json"))
    assert run_.code == 3, run_.output
    doc = json.loads(run_.stdout)
    assert doc["failure"] == "chain" and why in doc["checks"][-1]["reason"]


def test_the_at_time_decides_currency(cli: CliFn, case: Path) -> None:
    (case / "amd.crl").write_bytes(crlkit.der(make_crl()))
    later = (NEXT_UPDATE + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert cli(*args(case, "--crl", str(case / "amd.crl"), "--at", later)).code == 3
    assert cli(*args(case, "--crl", str(case / "amd.crl"), "--at", "not a time")).code == 2


def test_verify_require_crl_without_one_exits_6(cli: CliFn, case: Path) -> None:
    run_ = cli(*args(case, "--require-crl"))
    assert run_.code == 6, run_.output
    assert "revocation: required, not checked: no CRL given" in run_.stderr


@pytest.mark.parametrize("content", [b"", b"not a crl"])
def test_an_unreadable_crl_file_is_bad_usage(cli: CliFn, case: Path, content: bytes) -> None:
    (case / "bad.crl").write_bytes(content)
    run_ = cli(*args(case, "--crl", str(case / "bad.crl"), "--json"))
    assert run_.code == 2
    doc = json.loads(run_.stdout)
    assert doc["failure"] == "usage" and "--crl: " in doc["error"] and "bad.crl" in doc["error"]
    missing = cli(*args(case, "--crl", str(case / "none.crl")))
    assert missing.code == 2 and "none.crl: no such file" in missing.stderr


def test_verify_with_certs_and_kds_fetches_only_the_crl(cli: CliFn, case: Path) -> None:
    state = _kds(vcek=crlkit.der(make_crl((ask_serial(),))))
    with serve(state):
        run_ = cli(*args(case, "--kds", state.url, *AT))
    assert run_.code == 4, run_.output
    assert state.seen("crl-vcek") == 1 and state.seen("vcek") == 0 and state.seen("chain") == 0


def test_a_kds_answering_garbage_or_too_much_is_refused_or_not_checked() -> None:
    state = _kds(vcek=b"<html>cache error</html>")
    with serve(state):
        garbage = _fetching(Kds(state.url, attempts=1))
    verdict, reason, failure, _ = revocation(garbage)
    assert verdict is Verdict.FAIL and failure is Failure.CHAIN
    assert "CRL refused:" in reason and "not a certificate revocation list" in reason
    state = _kds(vcek=bytes((1 << 20) + 1))
    with serve(state):
        huge = _fetching(Kds(state.url, attempts=1))
    verdict, reason, _, required = revocation(huge)
    assert verdict is Verdict.SKIP and not required and "larger than" in reason


def test_the_pss_parameters_are_read_from_the_der_where_cryptography_does_not() -> None:
    # cryptography 43 gives no hash for an RSA-PSS CRL; the parameters are then read from
    # the DER, and only AMD's (SHA-384, MGF1 SHA-384, salt 48) are taken.
    real = EVIDENCE_CRL.read_bytes()
    assert crl._pss_sha384(crl.parse_crl(real, "amd").crl)
    assert crl._pss_sha384(make_crl())
    sha256 = x509.CertificateRevocationListBuilder().issuer_name(kit.amd_name("ARK-Genoa"))
    sha256 = sha256.last_update(THIS_UPDATE).next_update(NEXT_UPDATE)
    pss256 = padding.PSS(padding.MGF1(hashes.SHA256()), 32)
    other = sha256.sign(kit.rsa_key("ark"), hashes.SHA256(), rsa_padding=pss256)
    assert not crl._pss_sha384(other)
    assert not crl._pss_sha384(sha256.sign(kit.rsa_key("ark"), hashes.SHA384()))  # PKCS#1 v1.5
