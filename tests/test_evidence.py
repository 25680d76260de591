"""Real SEV-SNP evidence: reports with the AMD certificates that signed them, from public repositories.

Each set under tests/data/evidence/<name>/ holds report.bin (the 1184-byte
report), the key that signed it (vcek.der/.pem or vlek.der) and, where its
source had them, the ASK (ask.pem) or ASK and ARK (cert_chain.pem); a
missing intermediate or root is AMD's pinned one. SOURCE names the
repository, path, commit and licence; expect.json what the set is
(product, report version, signing key, VMPL, whether the policy allows
debugging). Every test here runs over every set, so a set dropped in is
tested without a change here.

The report's own fields (nonce at 0x50, measurement at 0x90, chip ID at
0x1A0) are read here at the offsets of the SEV-SNP ABI spec (56860,
ATTESTATION_REPORT), not through the parser under test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from sevimg_cert import attest, roots
from sevimg_cert.certs import Chain, endorsement_kind, load_folder, vcek_hwid
from sevimg_cert.report import Product, parse_report
from sevimg_cert.verify import CHECK_NAMES, Expected, Result, Verdict, verify
from tests import certkit as kit
from tests.conftest import CliFn

EVIDENCE = Path(__file__).parent / "data" / "evidence"
SETS = sorted(p.name for p in EVIDENCE.iterdir() if (p / "report.bin").is_file())
# Folders with a key but no report (another chip's certificate for the tampering tests).
KEYS = sorted(p.name for p in EVIDENCE.iterdir() if (p / "expect.json").is_file())
DEBUG = "debug policy"


@dataclass(frozen=True)
class Evidence:
    """One set, loaded."""

    name: str
    raw: bytes
    chain: Chain
    expect: dict[str, Any]

    @property
    def product(self) -> Product:
        return Product.parse(self.expect["product"])

    @property
    def crl_time(self) -> datetime:
        """When the set's CRL is current (its expect.json says), else any fixed time."""
        return datetime.fromisoformat(self.expect.get("crl_current_at", "2026-07-01T00:00:00Z"))

    @property
    def given(self) -> Product | None:
        """What `--product` says: needed only for a version 2 report."""
        return self.product if self.expect["version"] == 2 else None

    def expected(self, **changes: object) -> Expected:
        base = Expected(self.raw[0x50:0x90], self.raw[0x90:0xC0], self.expect["vmpl"])
        return replace(base, **changes)  # type: ignore[arg-type]

    def run(
        self, raw: bytes | None = None, chain: Chain | None = None, **changes: object
    ) -> Result:
        return verify(
            self.raw if raw is None else raw,
            self.chain if chain is None else chain,
            self.expected(**changes),
            product=self.given,
        )


@cache
def load(name: str) -> Evidence:
    folder = EVIDENCE / name
    expect = json.loads((folder / "expect.json").read_text())
    return Evidence(name, (folder / "report.bin").read_bytes(), load_folder(folder), expect)


def failing(result: Result, evidence: Evidence) -> dict[str, str]:
    """The checks that did not pass, but a debug policy the set's source has (a test VM's).

    An optional check that did not run (revocation without a CRL) is not among them.
    """
    return {
        c.name: c.reason
        for c in result.checks
        if c.verdict is not Verdict.PASS
        and (c.required or c.verdict is Verdict.FAIL)
        and not (c.name == DEBUG and evidence.expect["debug"])
    }


def flip(raw: bytes, at: int) -> bytes:
    out = bytearray(raw)
    out[at] ^= 0x01
    return bytes(out)


def test_the_corpus_covers_every_product_version_and_signing_key() -> None:
    seen = {(load(n).expect["product"], load(n).expect["version"]) for n in SETS}
    keys = {load(n).expect["signing_key"] for n in SETS}
    assert {p for p, _ in seen} == {"Milan", "Genoa", "Turin"}
    assert {v for _, v in seen} >= {2, 3, 5}
    assert keys == {"VCEK", "VLEK"}


@pytest.mark.parametrize("name", KEYS)
def test_every_set_says_where_it_comes_from(name: str) -> None:
    source = (EVIDENCE / name / "SOURCE").read_text()
    assert re.search(r"^repository: https://github\.com/[\w.-]+/[\w.-]+$", source, re.M)
    licence = re.search(r"^licence: \S+ \(see \.\./(LICENSES/[\w.-]+\.txt)\)$", source, re.M)
    assert licence and (EVIDENCE / licence[1]).is_file()
    for file in (EVIDENCE / name).iterdir():
        if file.name not in ("SOURCE", "expect.json"):
            assert re.search(rf"^  {re.escape(file.name)}: \S+ @ [0-9a-f]{{40}}$", source, re.M)


@pytest.mark.parametrize("name", SETS)
def test_a_genuine_report_verifies(name: str) -> None:
    evidence = load(name)
    result = evidence.run()
    assert [c.name for c in result.checks] == list(CHECK_NAMES)
    assert failing(result, evidence) == {}
    assert result.passed is not evidence.expect["debug"]
    report = result.report
    assert report is not None and report.version == evidence.expect["version"]
    assert report.product is evidence.product and report.vmpl == evidence.expect["vmpl"]
    assert report.signing_key == evidence.expect["signing_key"]
    assert result.as_dict()["signing_key"] == evidence.expect["signing_key"]
    signature = next(c for c in result.checks if c.name == "report signature")
    assert f"by the {evidence.expect['signing_key']}" in signature.reason
    pinned = roots.for_product(evidence.product)
    assert roots.fingerprint(evidence.chain.ark) == roots.fingerprint(pinned.ark)
    intermediate = pinned.asvk if evidence.expect["signing_key"] == "VLEK" else pinned.ask
    assert roots.fingerprint(evidence.chain.ask) == roots.fingerprint(intermediate)


@pytest.mark.parametrize("name", SETS)
def test_without_a_product_the_report_or_its_root_names_the_processor(name: str) -> None:
    evidence = load(name)
    result = verify(evidence.raw, evidence.chain, evidence.expected())
    assert failing(result, evidence) == {}
    assert result.report is not None and result.report.product is evidence.product
    if evidence.expect["version"] == 2:  # the root of the chain names the processor
        assert f"AMD's {evidence.product.value} root ends the chain" in result.checks[0].reason


@pytest.mark.parametrize("name", SETS)
def test_the_key_certifies_the_reported_tcb_and_chip_as_kds_issued_it(name: str) -> None:
    evidence = load(name)
    key = evidence.chain.vcek
    assert endorsement_kind(key) == evidence.expect["signing_key"]
    hwid = vcek_hwid(key)
    chip = evidence.raw[0x1A0:0x1E0]
    if evidence.expect["signing_key"] == "VLEK":
        assert hwid is None and not any(chip)
    else:
        size = 8 if evidence.product is Product.TURIN else 64
        assert hwid is not None and len(hwid) == size
        assert hwid == chip[:size] and not any(chip[size:])


TAMPER: dict[str, Callable[[Evidence], tuple[Result, set[str]]]] = {
    # A changed measurement no longer carries the signature, nor equals what was expected.
    "measurement": lambda e: (
        e.run(flip(e.raw, 0x90), measurement=e.raw[0x90:0xC0]),
        {"measurement", "report signature"},
    ),
    "measurement-expected": lambda e: (
        e.run(measurement=flip(e.raw[0x90:0xC0], 47)),
        {"measurement"},
    ),
    "nonce": lambda e: (
        e.run(flip(e.raw, 0x50), nonce=e.raw[0x50:0x90]),
        {"request data", "report signature"},
    ),
    "nonce-expected": lambda e: (e.run(nonce=flip(e.raw[0x50:0x90], 0)), {"request data"}),
    "signature-r": lambda e: (e.run(flip(e.raw, 0x2A0)), {"report signature"}),
    "signature-s": lambda e: (e.run(flip(e.raw, 0x2E8 + 10)), {"report signature"}),
    "host-data": lambda e: (e.run(flip(e.raw, 0xC0)), {"report signature"}),
    "policy": lambda e: (e.run(flip(e.raw, 0x08)), {"report signature"}),
    "vmpl-expected": lambda e: (e.run(vmpl=(e.expect["vmpl"] + 1) % 4), {"VMPL"}),
}


@pytest.mark.parametrize("how", TAMPER)
@pytest.mark.parametrize("name", SETS)
def test_a_tampered_copy_fails_for_the_right_reason(name: str, how: str) -> None:
    evidence = load(name)
    result, expected = TAMPER[how](evidence)
    assert set(failing(result, evidence)) == expected and not result.passed


@cache
def key_chain(name: str) -> tuple[Product, Chain]:
    """The product and chain of any folder, with or without a report."""
    folder = EVIDENCE / name
    product = Product.parse(json.loads((folder / "expect.json").read_text())["product"])
    return product, load_folder(folder)


def _others(evidence: Evidence) -> list[tuple[str, Chain]]:
    """Every other chip's (or provider's) key of the same product in the corpus."""
    mine = vcek_hwid(evidence.chain.vcek), evidence.chain.vcek
    found = []
    for name in KEYS:
        product, chain = key_chain(name)
        if product is evidence.product and (vcek_hwid(chain.vcek), chain.vcek) != mine:
            found.append((name, chain))
    return found


@pytest.mark.parametrize("name", SETS)
def test_another_chips_certificate_fails(name: str) -> None:
    evidence = load(name)
    others = _others(evidence)
    if not others:
        pytest.fail(f"{name}: the corpus has no other {evidence.product.value} key to swap in")
    for other, swapped in others:
        chain = replace(evidence.chain, vcek=swapped.vcek, ask=swapped.ask)
        problems = failing(evidence.run(chain=chain), evidence)
        assert "report signature" in problems, (other, problems)
        swapped_kind = endorsement_kind(chain.vcek)
        if (
            swapped_kind != evidence.expect["signing_key"]
        ):  # a VLEK where the report names its VCEK ...
            assert "certificate given is SEV-V" in problems["report signature"]
            continue
        assert "does not verify" in problems["report signature"], (other, problems)
        if swapped_kind == "VCEK":
            assert "VCEK is for chip" in problems["VCEK hwID"], (other, problems)


@pytest.mark.parametrize("name", SETS)
def test_another_products_root_fails(name: str) -> None:
    evidence = load(name)
    for product in Product:
        if product is evidence.product:
            continue
        pinned = roots.for_product(product)
        vlek = evidence.expect["signing_key"] == "VLEK"
        chain = replace(evidence.chain, ask=pinned.asvk if vlek else pinned.ask, ark=pinned.ark)
        problems = failing(evidence.run(chain=chain), evidence)
        assert "is not signed by" in problems["VCEK"], problems
        assert f"AMD's {product.value} root" in problems["ARK"], problems
        assert set(problems) == {"VCEK", "ARK"}
        # The right intermediate under another product's root: the ASK fails.
        chain = replace(evidence.chain, ark=pinned.ark)
        problems = failing(evidence.run(chain=chain), evidence)
        assert set(problems) == {"ASK", "ARK"} and "does not verify" in problems["ASK"]


@pytest.mark.parametrize("name", SETS)
def test_a_report_read_as_another_product_fails(name: str) -> None:
    evidence = load(name)
    wrong = Product.MILAN if evidence.product is Product.TURIN else Product.TURIN
    result = verify(evidence.raw, evidence.chain, evidence.expected(), product=wrong)
    problems = failing(result, evidence)
    assert "ARK" in problems and "VCEK TCB" in problems, problems
    assert "report signature" not in problems  # the bytes are genuine; the reading is wrong


@pytest.mark.parametrize("name", SETS)
def test_sevimg_verify_takes_a_set_as_it_is(name: str, cli: CliFn) -> None:
    evidence = load(name)
    folder = EVIDENCE / name
    args = ["verify", str(folder / "report.bin"), "--certs", str(folder), "--json"]
    args += [
        "--nonce",
        evidence.raw[0x50:0x90].hex(),
        "--measurement",
        evidence.raw[0x90:0xC0].hex(),
    ]
    args += ["--vmpl", str(evidence.expect["vmpl"])]
    if evidence.given is not None:
        args += ["--product", evidence.given.value.lower()]
    run = cli(*args)
    result = json.loads(run.stdout)
    assert result["signing_key"] == evidence.expect["signing_key"]
    assert result["verified"] is not evidence.expect["debug"] and run.code == int(
        evidence.expect["debug"]
    )
    assert result["certificates"]["ark"]["sha256"] == roots.fingerprint(
        roots.for_product(evidence.product).ark
    )


# The test kit makes what KDS makes ----------------------------------------------------------


def _serial(cert: x509.Certificate) -> int:
    """The serial number, read from the DER (cryptography warns when asked for a zero one)."""
    tbs = kit._split(kit._contents(kit.der(cert)))[0]
    serial = kit._split(kit._contents(tbs))[1]
    return int.from_bytes(kit._contents(serial), "big", signed=True)


@pytest.mark.parametrize("name", [n for n in SETS if load(n).expect["signing_key"] == "VCEK"])
def test_the_kit_encodes_a_vcek_as_kds_does(name: str) -> None:
    evidence = load(name)
    real = evidence.chain.vcek
    report = parse_report(evidence.raw, product=evidence.given)
    tcb = report.reported_tcb
    made = kit.make_vcek(
        evidence.product.value,
        report.chip_id,
        kit.Tcb(tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode, tcb.fmc),
    )

    def amd(cert: x509.Certificate) -> list[tuple[str, bytes]]:
        return [
            (e.oid.dotted_string, e.value.public_bytes())
            for e in cert.extensions
            if e.oid.dotted_string.startswith("1.3.6.1.4.1.3704.")
        ]

    assert _serial(real) == _serial(made) == 0
    assert amd(made) == amd(real)
    assert made.subject == real.subject and made.issuer == real.issuer
    assert made.signature_algorithm_oid == real.signature_algorithm_oid


@pytest.mark.parametrize("name", [n for n in SETS if load(n).expect["signing_key"] == "VLEK"])
def test_the_kit_encodes_a_vlek_as_kds_does(name: str) -> None:
    evidence = load(name)
    real = evidence.chain.vcek
    tcb = parse_report(evidence.raw, product=evidence.given).reported_tcb
    made = kit.make_vlek(
        evidence.product.value, kit.Tcb(tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode, tcb.fmc)
    )

    def amd(cert: x509.Certificate) -> list[tuple[str, bytes]]:
        # csp_id (.1.5) names the cloud provider: the kit's is its own.
        return [
            (
                e.oid.dotted_string,
                b"" if e.oid.dotted_string.endswith(".1.5") else e.value.public_bytes(),
            )
            for e in cert.extensions
            if e.oid.dotted_string.startswith("1.3.6.1.4.1.3704.")
        ]

    assert _serial(real) == _serial(made) == 0
    assert amd(made) == amd(real)
    assert made.subject == real.subject and made.issuer == real.issuer


@pytest.mark.parametrize("name", SETS)
def test_a_set_with_its_whole_chain_in_one_file_loads_the_same(name: str, tmp_path: Path) -> None:
    evidence = load(name)
    kind = "vlek" if evidence.expect["signing_key"] == "VLEK" else "vcek"
    chain = evidence.chain
    whole = b"".join(kit.pem(c) for c in (chain.ark, chain.vcek, chain.ask))
    (tmp_path / f"{kind}.pem").write_bytes(whole)
    again = load_folder(tmp_path)
    assert (again.vcek, again.ask, again.ark) == (chain.vcek, chain.ask, chain.ark)
    assert failing(evidence.run(chain=again), evidence) == {}


@pytest.mark.parametrize("name", SETS)
def test_the_in_image_verifier_takes_a_set_from_the_labs_folder(name: str, tmp_path: Path) -> None:
    evidence = load(name)
    folder = tmp_path / attest.CERTS_DIR
    folder.mkdir(parents=True)
    for file in (EVIDENCE / name).iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    log: list[str] = []
    verified = attest.verify_report(
        tmp_path,
        evidence.raw,
        evidence.raw[0x50:0x90],
        evidence.raw[0x90:0xC0],
        series=None,
        kds_url=None,
        kds_attempts=1,
        trusted_arks=(),
        log=log.append,
        now=lambda: evidence.crl_time,
    )
    result = verified.result
    expected_vmpl = {"VMPL"} if evidence.expect["vmpl"] else set()
    assert set(failing(result, evidence)) == expected_vmpl  # the harness expects VMPL 0
    assert verified.product == evidence.product.value and verified.vcek_pem is not None
    assert log == [f"certificates from /{attest.CERTS_DIR}"]
    # A set with AMD's CRL (crl.der) has it read from the lab's folder and checked.
    recorded = verified.revocation or ""
    if (EVIDENCE / name / "crl.der").is_file():
        assert recorded.startswith("checked: ASK (serial"), recorded
    else:
        assert recorded.startswith("not checked: no CRL given"), recorded
