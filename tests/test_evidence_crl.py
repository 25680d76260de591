"""Revocation over the real evidence corpus: AMD's own CRLs, and forged ones, for every set.

AMD's CRL for a product is signed by its ARK, whose private key nobody here
has: so a CRL that revokes something cannot be made for a real chain. What
can be checked for every set is that a CRL carrying the real ARK's name but
another key's signature is refused (a chain failure, never "revoked"), and
that AMD's real CRLs in the corpus (a set's crl.der, fetched from KDS by
its source) verify under the pinned ARK of their product, revoke nothing,
and count for no other product. Synthetic revocations are tests/test_crl.py's.
"""

from __future__ import annotations

import json
from datetime import timedelta
from functools import cache
from pathlib import Path

import pytest

from sevimg_cert import crl
from sevimg_cert.certs import serial
from sevimg_cert.checks import Failure, Verdict
from sevimg_cert.verify import REVOCATION, Result
from tests import crlkit
from tests.conftest import CliFn
from tests.test_evidence import EVIDENCE, SETS, Evidence, failing, load

# The sets carrying AMD's real CRL (crl.der); expect.json's crl_current_at is when it is current.
REAL_CRLS = [n for n in SETS if (EVIDENCE / n / "crl.der").is_file()]


@cache
def real_crl(name: str) -> crl.Crl:
    return crl.parse_crl((EVIDENCE / name / "crl.der").read_bytes(), f"{name}/crl.der")


def revocation(result: Result) -> tuple[Verdict, str, Failure]:
    check = next(c for c in result.checks if c.name == REVOCATION)
    return check.verdict, check.reason, check.failure


def forged(evidence: Evidence, revoked: tuple[int, ...] = ()) -> bytes:
    """A CRL in the name of the set's ARK, signed by another key, current at the set's time."""
    at = evidence.crl_time
    made = crlkit.make_crl(
        revoked,
        signer="rogue",
        issuer=evidence.chain.ark.subject,
        this_update=at - timedelta(days=10),
        next_update=at + timedelta(days=20),
    )
    return crlkit.der(made)


def test_the_corpus_has_a_real_crl() -> None:
    assert REAL_CRLS, "no set in tests/data/evidence carries AMD's CRL (crl.der)"


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("revokes", [False, True], ids=["empty", "revoking-the-intermediate"])
def test_a_crl_signed_by_another_key_is_refused_for_every_real_set(
    name: str, revokes: bool
) -> None:
    evidence = load(name)
    revoked = (serial(evidence.chain.ask),) if revokes else ()
    given = crl.parse_crl(forged(evidence, revoked), "forged.crl")
    result = evidence.run(crls=(given,), now=lambda: evidence.crl_time)
    verdict, reason, failure = revocation(result)
    assert verdict is Verdict.FAIL and failure is Failure.CHAIN, reason
    assert "CRL refused: forged.crl: its signature does not verify with the ARK's key" in reason
    assert "revoked" not in reason and result.failure is Failure.CHAIN
    assert set(failing(result, evidence)) == {REVOCATION}


@pytest.mark.parametrize("crl_set", REAL_CRLS)
@pytest.mark.parametrize("name", SETS)
def test_amds_real_crl_revokes_nothing_and_counts_only_for_its_product(
    name: str, crl_set: str
) -> None:
    evidence, amd = load(name), real_crl(crl_set)
    at = load(crl_set).crl_time
    result = evidence.run(crls=(amd,), now=lambda: at)
    verdict, reason, failure = revocation(result)
    if amd.crl.issuer == evidence.chain.ark.subject:  # the same product's ARK signed it
        intermediate = "ASVK" if evidence.expect["signing_key"] == "VLEK" else "ASK"
        assert verdict is Verdict.PASS, reason
        assert f"{intermediate} (serial {serial(evidence.chain.ask):#x}) not revoked" in reason
        assert failing(result, evidence) == {}
    else:
        assert verdict is Verdict.FAIL and failure is Failure.CHAIN, reason
        assert "not this chain's ARK" in reason


@pytest.mark.parametrize("crl_set", REAL_CRLS)
def test_amds_real_crl_out_of_date_or_altered_is_refused(crl_set: str) -> None:
    evidence, amd = load(crl_set), real_crl(crl_set)
    end = crl.next_update(amd.crl)
    assert end is not None
    cases = {
        "expired": (amd, end + timedelta(seconds=1)),
        "not valid yet": (amd, crl.this_update(amd.crl) - timedelta(seconds=1)),
    }
    data = bytearray((EVIDENCE / crl_set / "crl.der").read_bytes())
    data[-10] ^= 0x01  # inside the signature
    cases["does not verify with the ARK's key"] = (crl.parse_crl(bytes(data), "x"), end)
    for why, (given, at) in cases.items():
        result = evidence.run(crls=(given,), now=lambda at=at: at)
        verdict, reason, failure = revocation(result)
        assert verdict is Verdict.FAIL and failure is Failure.CHAIN and why in reason, reason


def _verify_args(evidence: Evidence, *more: str) -> list[str]:
    folder = EVIDENCE / evidence.name
    args = ["verify", str(folder / "report.bin"), "--certs", str(folder), "--json"]
    args += ["--nonce", evidence.raw[0x50:0x90].hex()]
    args += ["--measurement", evidence.raw[0x90:0xC0].hex()]
    args += ["--vmpl", str(evidence.expect["vmpl"]), "--at", evidence.crl_time.isoformat()]
    return [*args, *more]


@pytest.mark.parametrize("name", SETS)
def test_sevimg_verify_refuses_a_forged_crl_for_every_real_set_with_exit_3(
    name: str, cli: CliFn, tmp_path: Path
) -> None:
    evidence = load(name)
    (tmp_path / "forged.crl").write_bytes(forged(evidence, (serial(evidence.chain.ask),)))
    run = cli(*_verify_args(evidence, "--crl", str(tmp_path / "forged.crl")))
    assert run.code == 3, run.output
    doc = json.loads(run.stdout)
    assert doc["failure"] == "chain" and doc["exit_code"] == 3
    check = next(c for c in doc["checks"] if c["name"] == REVOCATION)
    assert check["verdict"] == "fail" and "does not verify with the ARK's key" in check["reason"]


@pytest.mark.parametrize("crl_set", REAL_CRLS)
def test_sevimg_verify_checks_amds_real_crl(crl_set: str, cli: CliFn, tmp_path: Path) -> None:
    evidence = load(crl_set)
    crl_file = EVIDENCE / crl_set / "crl.der"
    run = cli(*_verify_args(evidence, "--crl", str(crl_file), "--require-crl"))
    assert run.code == 0, run.output
    doc = json.loads(run.stdout)
    check = next(c for c in doc["checks"] if c["name"] == REVOCATION)
    assert check["verdict"] == "pass" and check["required"] and doc["not_checked"] == []
    # As PEM, and judged a day after its nextUpdate: refused, exit 3.
    pem = tmp_path / "amd.crl"
    pem.write_bytes(crlkit.pem(real_crl(crl_set).crl))
    end = crl.next_update(real_crl(crl_set).crl)
    assert end is not None
    args = _verify_args(evidence, "--crl", str(pem))
    args[args.index("--at") + 1] = (end + timedelta(days=1)).isoformat()
    stale = cli(*args)
    assert stale.code == 3 and "expired" in stale.stdout, stale.output
