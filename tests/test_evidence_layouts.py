"""Every real evidence set through `sevimg verify`, laid out the ways users hand it over.

A certificate folder of DER files (vcek.der or vlek.der, ask.der, ark.der),
one PEM holding the whole chain (as clouds hand it out), and the result.json
a certification run writes (the harness's own evidence form): each verifies
with AMD's pinned root of the set's product, and says which key signed it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from sevimg_cert import roots
from sevimg_cert.result import Evidence as ResultEvidence
from tests.conftest import CliFn
from tests.test_evidence import SETS, Evidence, load


def _key(evidence: Evidence) -> str:
    return "vlek" if evidence.expect["signing_key"] == "VLEK" else "vcek"


def _layout(evidence: Evidence, how: str, tmp_path: Path) -> list[str]:
    """The arguments verifying the set laid out `how` under tmp_path."""
    chain, folder = evidence.chain, tmp_path / "certs"
    folder.mkdir()
    report = tmp_path / "report.bin"
    report.write_bytes(evidence.raw)
    expect = [
        "--nonce",
        evidence.raw[0x50:0x90].hex(),
        "--measurement",
        evidence.raw[0x90:0xC0].hex(),
    ]
    if how == "der-files":
        intermediate = "asvk" if _key(evidence) == "vlek" else "ask"
        for name, cert in (
            (_key(evidence), chain.vcek),
            (intermediate, chain.ask),
            ("ark", chain.ark),
        ):
            (folder / f"{name}.der").write_bytes(cert.public_bytes(Encoding.DER))
        return [str(report), "--certs", str(folder), *expect]
    if how == "one-pem":
        whole = b"".join(c.public_bytes(Encoding.PEM) for c in (chain.ask, chain.vcek, chain.ark))
        (folder / f"{_key(evidence)}.pem").write_bytes(whole)
        return [str(report), "--certs", str(folder), *expect]
    # The harness's result: its evidence gives report, nonce, measurement and the key.
    made = ResultEvidence(
        report=evidence.raw,
        nonce=evidence.raw[0x50:0x90],
        expected_measurement=evidence.raw[0x90:0xC0],
        vcek_pem=chain.vcek.public_bytes(Encoding.PEM).decode(),
        product=evidence.product.value,
    )
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"evidence": made.as_dict()}))
    return [str(result)]


@pytest.mark.parametrize("how", ["der-files", "one-pem", "result-json"])
@pytest.mark.parametrize("name", SETS)
def test_a_real_set_verifies_laid_out_as_users_hand_it_over(
    name: str, how: str, cli: CliFn, tmp_path: Path
) -> None:
    evidence = load(name)
    args = _layout(evidence, how, tmp_path)
    run = cli("verify", *args, "--vmpl", str(evidence.expect["vmpl"]), "--json")
    doc: dict[str, Any] = json.loads(run.stdout)
    failed = {c["name"] for c in doc["checks"] if c["verdict"] == "fail"}
    assert failed == ({"debug policy"} if evidence.expect["debug"] else set()), doc["checks"]
    assert run.code == (1 if evidence.expect["debug"] else 0), run.output
    assert doc["signing_key"] == evidence.expect["signing_key"]
    assert doc["report"]["product"] == evidence.product.value
    pinned = roots.for_product(evidence.product)
    assert doc["certificates"]["ark"]["sha256"] == roots.fingerprint(pinned.ark)
    from_evidence = {n for n, src in doc["expected"].items() if src["from_evidence"]}
    assert from_evidence == ({"nonce", "measurement"} if how == "result-json" else set())
