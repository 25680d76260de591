"""The attestation verifier against a synthetic AMD chain: what passes, and each reason to fail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from cryptography.exceptions import UnsupportedAlgorithm
from hypothesis import given, settings
from hypothesis import strategies as st

from sevimg_cert import roots
from sevimg_cert.certs import CertError, Chain, load_folder
from sevimg_cert.report import Product
from sevimg_cert.verify import (
    CHAIN_CHECKS,
    CHECK_NAMES,
    Expected,
    Result,
    Verdict,
    pad_nonce,
    verify,
)
from tests import certkit as kit
from tests.certkit import MEASUREMENT, NONCE, ReportSpec, SynthChain, Tcb
from tests.conftest import examples


def as_chain(synth: SynthChain) -> Chain:
    return Chain(synth.vcek, synth.ask, synth.ark, {"vcek": "test", "ask": "test", "ark": "test"})


def expected_for(synth: SynthChain | None = None, **changes: object) -> Expected:
    trusted = (synth.ark,) if synth is not None else ()
    return replace(Expected(NONCE, MEASUREMENT, 0, trusted), **changes)  # type: ignore[arg-type]


def verdicts(result: Result) -> dict[str, Verdict]:
    return {c.name: c.verdict for c in result.checks}


def failing(result: Result) -> dict[str, str]:
    """Checks that failed, or required ones that did not run (optional skips are listed apart)."""
    return {
        c.name: c.reason
        for c in result.checks
        if c.verdict is Verdict.FAIL or (c.verdict is Verdict.SKIP and c.required)
    }


def spec_for(product: str, version: int = 5, **changes: object) -> ReportSpec:
    if product == "Turin":
        return kit.turin_spec(version=version, **changes)
    return replace(ReportSpec(version=version, product=product), **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
@pytest.mark.parametrize("version", [2, 3, 5])
def test_a_genuine_report_passes_every_check(version: int, product: str) -> None:
    synth = kit.make_chain(product)
    raw = kit.signed_report(spec_for(product, version))
    given_product = Product(product) if version == 2 else None
    result = verify(raw, as_chain(synth), expected_for(synth), product=given_product)
    assert [c.name for c in result.checks] == list(CHECK_NAMES)
    assert failing(result) == {} and result.passed
    assert result.as_dict()["verified"] is True and result.as_dict()["report"]["version"] == version


@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
@pytest.mark.parametrize("version", [3, 5])
def test_a_report_a_vlek_signed_verifies_through_the_asvk(version: int, product: str) -> None:
    ark = kit.make_ark(product)
    chain = Chain(
        kit.make_vlek(product), kit.make_asvk(product), ark, {"vcek": "t", "ask": "t", "ark": "t"}
    )
    spec = spec_for(product, version, key_info=1 << 2, chip_id=bytes(64))
    result = verify(
        kit.signed_report(spec, kit.ec_key("vlek")), chain, expected_for(None, trusted_arks=(ark,))
    )
    assert failing(result) == {} and result.passed
    assert result.as_dict()["signing_key"] == "VLEK" and chain.endorser == "VLEK"
    reasons = {c.name: c.reason for c in result.checks}
    assert "names no chip" in reasons["VCEK hwID"] and "by the VLEK" in reasons["report signature"]
    # The same report under a VCEK's chain: the report names its VLEK.
    synth = kit.make_chain(product)
    vcek_chain = as_chain(replace(synth, vcek_key=kit.ec_key("vlek")))
    problems = failing(
        verify(kit.signed_report(spec, kit.ec_key("vlek")), vcek_chain, expected_for(synth))
    )
    assert (
        list(problems) == ["report signature"]
        and "says its VLEK signed it" in problems["report signature"]
    )


def test_a_vcek_report_under_a_vlek_fails_the_signature() -> None:
    ark = kit.make_ark()
    chain = Chain(kit.make_vlek(), kit.make_asvk(), ark, {"vcek": "t", "ask": "t", "ark": "t"})
    raw = kit.signed_report(ReportSpec(), kit.ec_key("vlek"))
    problems = failing(verify(raw, chain, expected_for(None, trusted_arks=(ark,))))
    assert list(problems) == ["report signature"]
    assert (
        "says its VCEK signed it, but the certificate given is SEV-VLEK"
        in problems["report signature"]
    )


@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
def test_a_chip_id_the_host_masked_is_not_compared(product: str) -> None:
    synth = kit.make_chain(product)
    raw = kit.signed_report(spec_for(product, 5, chip_id=bytes(64)))
    result = verify(raw, as_chain(synth), expected_for(synth))
    assert failing(result) == {} and result.passed
    assert "MASK_CHIP_ID" in next(c.reason for c in result.checks if c.name == "VCEK hwID")


@dataclass(frozen=True)
class Case:
    """A tampered report, chain or expectation, and the one check that must fail because of it."""

    check: str
    reason: str
    product: str = "Genoa"
    spec: dict[str, object] = field(default_factory=dict)
    chain: Callable[[SynthChain], SynthChain] | None = None
    expected: dict[str, object] = field(default_factory=dict)
    signed_over: Callable[[bytes], bytes] | None = None
    trusted: bool = True


def flip(at: int) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        out = bytearray(data)
        out[at] ^= 0x01
        return bytes(out)

    return change


def vcek(**kwargs: object) -> Callable[[SynthChain], SynthChain]:
    def change(synth: SynthChain) -> SynthChain:
        options = dict(kwargs)
        product = str(options.pop("product", "Genoa"))
        chip = options.pop("chip", kit.TURIN_CHIP_ID if product == "Turin" else kit.CHIP_ID)
        return synth.with_(vcek=kit.make_vcek(product, chip, **options))  # type: ignore[arg-type]

    return change


def without_extension(suffix: str, product: str = "Genoa") -> Callable[[SynthChain], SynthChain]:
    chip = kit.TURIN_CHIP_ID if product == "Turin" else kit.CHIP_ID
    tcb = kit.TURIN_TCB if product == "Turin" else Tcb()
    exts = [
        e
        for e in kit.vcek_extensions(product, chip, tcb)
        if not e.oid.dotted_string.endswith(suffix)
    ]
    return lambda synth: synth.with_(vcek=kit.make_vcek(product, chip, tcb, extensions=exts))


CASES = {
    # request data
    **{
        f"nonce-{i}": Case("request data", "not the nonce", expected={"nonce": n})
        for i, n in enumerate(
            [bytes(64), NONCE[:-1] + b"\x00", NONCE[:32], b"other", NONCE[1:], b"\xff" * 64]
        )
    },
    "nonce-padded-differs": Case(
        "request data",
        "not the nonce",
        spec={"report_data": NONCE[:32] + b"\x01" + bytes(31)},
        expected={"nonce": NONCE[:32]},
    ),
    # measurement
    **{
        f"measurement-{i}": Case("measurement", "expected", expected={"measurement": m})
        for i, m in enumerate(
            [bytes(48), MEASUREMENT[:-1] + b"\x00", b"\xff" * 48, MEASUREMENT[::-1]]
        )
    },
    # debug
    **{
        f"debug-{p:#x}": Case("debug policy", "allows debugging", spec={"policy": p})
        for p in [1 << 19, 0x30000 | 1 << 19, (2**64 - 1) & ~(1 << 18), 0xB0000]
    },
    # VMPL
    **{
        f"vmpl-{v}": Case("VMPL", f"report is for VMPL {v}, expected 0", spec={"vmpl": v})
        for v in (1, 2, 3, 7)
    },
    "vmpl-expected-2": Case("VMPL", "report is for VMPL 0, expected 2", expected={"vmpl": 2}),
    # the report signature
    **{
        f"signed-other-bytes-{at:#x}": Case(
            "report signature", "does not verify", signed_over=flip(at)
        )
        for at in (0x04, 0x50, 0x90, 0x140, 0x1A0, 0x29F)
    },
    "signed-whole-report": Case(
        "report signature", "does not verify", signed_over=lambda raw: raw + bytes(0x4A0 - 0x2A0)
    ),
    "signed-by-other-key": Case(
        "report signature",
        "does not verify",
        chain=lambda s: replace(s, vcek_key=kit.ec_key("other")),
    ),
    **{
        f"sig-algo-{a}": Case(
            "report signature", f"signature algorithm {a} is not 1", spec={"signature_algo": a}
        )
        for a in (0, 2, 0xFFFF)
    },
    "signed-with-vlek": Case(
        "report signature",
        "says its VLEK signed it, but the certificate given is SEV-VCEK",
        spec={"key_info": 1 << 2},
    ),
    "unsigned": Case("report signature", "signed with none", spec={"key_info": 7 << 2}),
    "reserved-signing-key": Case(
        "report signature", "signed with reserved(3)", spec={"key_info": 3 << 2}
    ),
    "mask-chip-key": Case("report signature", "MASK_CHIP_KEY", spec={"key_info": 1 << 1}),
    # the chain
    "vcek-by-rogue": Case(
        "VCEK", "SEV-VCEK is not signed by SEV-Genoa", chain=vcek(signer="rogue")
    ),
    "vcek-by-ark": Case("VCEK", "does not verify", chain=vcek(signer="ark")),
    "ask-by-rogue": Case(
        "ASK",
        "SEV-Genoa is not signed by ARK-Genoa",
        chain=lambda s: s.with_(ask=kit.make_ask(signer="rogue")),
    ),
    "ask-self-signed": Case(
        "ASK", "does not verify", chain=lambda s: s.with_(ask=kit.make_ask(signer="ask"))
    ),
    "untrusted-root": Case("ARK", "is not one of AMD's pinned roots", trusted=False),
    "impostor-amd-root": Case("ARK", "ARK-Milan (SHA-256", product="Milan", trusted=False),
    # what the VCEK certifies
    **{
        f"hwid-{i}": Case("VCEK hwID", "VCEK is for chip", chain=vcek(hwid=h))
        for i, h in enumerate(
            [
                bytes(64),
                kit.CHIP_ID[:-1] + b"\x00",
                kit.CHIP_ID[::-1],
                kit.CHIP_ID[:8] + bytes(56),
            ]
        )
    },
    **{
        f"hwid-{len(h)}-bytes": Case("VCEK hwID", f"hwID is {len(h)} bytes", chain=vcek(hwid=h))
        for h in (kit.CHIP_ID[:63], kit.CHIP_ID[:8], kit.CHIP_ID + b"\0", b"")
    },
    # The DER-wrapped form KDS never issues is not unwrapped.
    "hwid-wrapped": Case(
        "VCEK hwID", "hwID is 66 bytes", chain=vcek(hwid=b"\x04\x40" + kit.CHIP_ID)
    ),
    "hwid-turin-64-bytes": Case(
        "VCEK hwID",
        "hwID is 64 bytes; a Turin chip's is 8",
        product="Turin",
        chain=vcek(product="Turin", hwid=kit.TURIN_CHIP_ID),
    ),
    "hwid-turin-other-chip": Case(
        "VCEK hwID",
        "VCEK is for chip",
        product="Turin",
        chain=vcek(product="Turin", hwid=bytes.fromhex("0123456789abcdee")),
    ),
    "hwid-missing": Case("VCEK hwID", "has no hwID extension", chain=without_extension(".1.4")),
    "chip-id-turin-tail": Case(
        "VCEK hwID",
        "VCEK is for chip",
        product="Turin",
        spec={"chip_id": kit.TURIN_CHIP_ID[:8] + b"\1" + bytes(55)},
    ),
    **{
        f"tcb-{name}": Case("VCEK TCB", f"{name}: VCEK", chain=vcek(tcb=tcb))
        for name, tcb in [
            ("blSPL", Tcb(bl=4)),
            ("teeSPL", Tcb(tee=1)),
            ("snpSPL", Tcb(snp=22)),
            ("ucodeSPL", Tcb(ucode=212)),
        ]
    },
    "tcb-fmcSPL": Case(
        "VCEK TCB",
        "fmcSPL: VCEK 3, report 2",
        product="Turin",
        chain=vcek(product="Turin", tcb=replace(kit.TURIN_TCB, fmc=3)),
    ),
    "tcb-turin-snp": Case(
        "VCEK TCB",
        "snpSPL: VCEK 5, report 4",
        product="Turin",
        chain=vcek(product="Turin", tcb=replace(kit.TURIN_TCB, snp=5)),
    ),
    **{
        f"tcb-missing-{s}": Case("VCEK TCB", "the VCEK has no", chain=without_extension(s))
        for s in (".3.1", ".3.2", ".3.3", ".3.8")
    },
    "tcb-turin-missing-fmc": Case(
        "VCEK TCB", "no fmcSPL", product="Turin", chain=without_extension(".3.9", "Turin")
    ),
    "tcb-turin-vcek-for-genoa-report": Case(
        "VCEK TCB",
        "a Turin VCEK",
        chain=vcek(product="Turin", chip=kit.CHIP_ID, tcb=Tcb(), hwid=kit.CHIP_ID),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_each_defect_fails_its_check_and_only_that_one(case: Case) -> None:
    synth = kit.make_chain(case.product)
    if case.chain is not None:
        synth = case.chain(synth)
    data = kit.pack_report(spec_for(case.product, 5, **case.spec))
    over = case.signed_over(bytes(data[:0x2A0])) if case.signed_over else None
    raw = kit.sign(data, synth.vcek_key, over)
    trusted = synth if case.trusted else None
    result = verify(raw, as_chain(synth), expected_for(trusted, **case.expected))
    problems = failing(result)
    assert list(problems) == [case.check], problems
    assert case.reason in problems[case.check]
    assert verdicts(result)[case.check] is Verdict.FAIL and not result.passed


def test_the_ark_case_really_uses_a_root_that_is_not_self_signed() -> None:
    # A root whose self-signature was made by another key.
    forged = kit.certificate(
        kit.amd_name("ARK-Genoa"),
        kit.amd_name("ARK-Genoa"),
        kit.rsa_key("ark").public_key(),
        kit.rsa_key("rogue"),
        ca=True,
    )
    synth = kit.make_chain().with_(ark=forged)
    result = verify(kit.signed_report(), as_chain(synth), expected_for(synth))
    assert list(failing(result)) == ["ARK"] and "not self-signed" in failing(result)["ARK"]


@pytest.mark.parametrize("size", [0, 100, 0x2A0, 1183, 1185, 2048])
def test_a_report_of_the_wrong_size_fails_structure_and_nothing_else_runs(size: int) -> None:
    synth = kit.make_chain()
    raw = (kit.signed_report() * 2)[:size]
    result = verify(raw, as_chain(synth), expected_for(synth))
    assert (
        verdicts(result)["report structure"] is Verdict.FAIL
        and f"{size} bytes" in failing(result)["report structure"]
    )
    assert {v for n, v in verdicts(result).items() if n != "report structure"} == {Verdict.SKIP}
    assert result.as_dict()["verified"] is False and result.report is None


@pytest.mark.parametrize("version", [0, 1, 6, 99, 2**32 - 1])
def test_a_report_of_an_unknown_version_fails_structure(version: int) -> None:
    synth = kit.make_chain()
    data = kit.pack_report(ReportSpec())
    data[0:4] = version.to_bytes(4, "little")
    result = verify(kit.sign(data, synth.vcek_key), as_chain(synth), expected_for(synth))
    assert f"report version {version}" in failing(result)["report structure"] and not result.passed


@pytest.mark.parametrize(
    ("given", "skipped"),
    [({"nonce": None}, "request data"), ({"measurement": None}, "measurement")],
)
def test_a_check_without_an_expectation_is_skipped_and_not_a_pass(
    given: dict[str, object], skipped: str
) -> None:
    synth = kit.make_chain()
    result = verify(kit.signed_report(), as_chain(synth), expected_for(synth, **given))
    assert (
        failing(result) == {skipped: failing(result)[skipped]}
        and verdicts(result)[skipped] is Verdict.SKIP
    )
    assert not result.passed


@pytest.mark.parametrize("length", [0, 1, 16, 32, 48, 63, 64])
def test_a_short_nonce_is_zero_padded(length: int) -> None:
    nonce = bytes(range(100, 100 + length))
    synth = kit.make_chain()
    raw = kit.signed_report(ReportSpec(report_data=pad_nonce(nonce)))
    assert pad_nonce(nonce) == nonce + bytes(64 - length)
    assert verify(raw, as_chain(synth), expected_for(synth, nonce=nonce)).passed


@pytest.mark.parametrize("length", [65, 100, 128])
def test_a_nonce_longer_than_the_request_data_is_refused(length: int) -> None:
    with pytest.raises(
        ValueError, match=f"{length} bytes; the report's request data holds at most 64"
    ):
        pad_nonce(bytes(length))


# Real AMD roots -----------------------------------------------------------------------------


@pytest.mark.parametrize("product", list(Product))
def test_a_vcek_claiming_amds_real_ask_fails_at_the_vcek_and_passes_the_pinned_root(
    product: Product, tmp_path: Path
) -> None:
    # Only the VCEK is given: the folder loader completes the chain with AMD's real ASK and ARK.
    fake = kit.make_chain(product.value)
    kit.write_folder(tmp_path, fake, "vcek-only")
    chain = load_folder(tmp_path)
    pinned = roots.for_product(product)
    assert (chain.ask, chain.ark) == (pinned.ask, pinned.ark)
    spec = spec_for(product.value)
    result = verify(kit.signed_report(spec), chain, expected_for(None))
    problems = failing(result)
    assert (
        list(problems) == ["VCEK"] and f"is not signed by SEV-{product.value}" in problems["VCEK"]
    )
    reasons = {c.name: c.reason for c in result.checks}
    assert reasons["ARK"] == f"AMD's pinned {product.value} root ARK-{product.value}, self-signed"
    assert reasons["ASK"] == f"SEV-{product.value} signed by ARK-{product.value}"


def test_trusting_one_root_does_not_trust_another() -> None:
    synth = kit.make_chain()
    other = kit.make_ark(key="rogue")
    result = verify(kit.signed_report(), as_chain(synth), Expected(NONCE, MEASUREMENT, 0, (other,)))
    assert list(failing(result)) == ["ARK"]


# Certificate folders ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["pem", "der", "kds"])
def test_certificate_folders_in_every_layout_verify(layout: str, tmp_path: Path) -> None:
    synth = kit.make_chain()
    chain = load_folder(kit.write_folder(tmp_path, synth, layout))
    assert (chain.vcek, chain.ask, chain.ark) == (synth.vcek, synth.ask, synth.ark)
    assert verify(kit.signed_report(), chain, expected_for(synth)).passed


def test_a_kds_chain_in_the_other_order_is_understood(tmp_path: Path) -> None:
    synth = kit.make_chain()
    (tmp_path / "cert_chain.pem").write_bytes(kit.pem(synth.ark) + kit.pem(synth.ask))
    (tmp_path / "vcek.pem").write_bytes(kit.pem(synth.vcek))
    chain = load_folder(tmp_path)
    assert (chain.ask, chain.ark) == (synth.ask, synth.ark)


@pytest.mark.parametrize(
    "files",
    [
        {"vcek.pem": ("vcek", "ask", "ark")},  # the whole chain in one file, as clouds hand it out
        {"vcek.pem": ("ark", "vcek", "ask")},
        {"cert_chain.pem": ("vcek", "ask", "ark")},
        {"vcek.pem": ("vcek", "ask"), "ark.pem": ("ark",)},
        {"vcek.der": ("vcek",), "cert_chain.pem": ("ask",), "ark.pem": ("ark",)},
        {"vcek.crt": ("vcek",), "cert_chain.pem": ("ask", "ask", "ark")},
    ],
)
def test_certificates_are_sorted_by_what_they_are(
    files: dict[str, tuple[str, ...]], tmp_path: Path
) -> None:
    synth = kit.make_chain()
    for name, kinds in files.items():
        encode = kit.der if name.endswith((".der", ".crt")) else kit.pem
        (tmp_path / name).write_bytes(b"".join(encode(getattr(synth, k)) for k in kinds))
    chain = load_folder(tmp_path)
    assert (chain.vcek, chain.ask, chain.ark) == (synth.vcek, synth.ask, synth.ark)


def test_of_two_intermediates_the_one_that_issued_the_key_is_taken(tmp_path: Path) -> None:
    synth = kit.make_chain()
    (tmp_path / "vcek.pem").write_bytes(kit.pem(synth.vcek))
    (tmp_path / "asvk.pem").write_bytes(kit.pem(kit.make_asvk()))
    (tmp_path / "cert_chain.pem").write_bytes(kit.pem(synth.ask) + kit.pem(synth.ark))
    chain = load_folder(tmp_path)
    assert chain.ask == synth.ask and chain.intermediate == "ASK"


def test_a_wrong_intermediate_in_the_folder_is_used_and_fails(tmp_path: Path) -> None:
    # Another product's ASK and ARK: not silently replaced by the VCEK's pinned ones.
    synth = kit.make_chain()
    other = roots.for_product(Product.MILAN)
    (tmp_path / "vcek.pem").write_bytes(kit.pem(synth.vcek))
    (tmp_path / "cert_chain.pem").write_bytes(kit.pem(other.ask) + kit.pem(other.ark))
    chain = load_folder(tmp_path)
    assert (chain.ask, chain.ark) == (other.ask, other.ark)
    assert "VCEK" in failing(verify(kit.signed_report(), chain, expected_for(None)))


def _folder_defects(synth: SynthChain) -> dict[str, tuple[dict[str, bytes], str]]:
    pem, der = kit.pem, kit.der
    return {
        "empty": ({}, "no vcek.pem or vcek.der"),
        "only-chain": (
            {"cert_chain.pem": pem(synth.ask) + pem(synth.ark)},
            "no vcek.pem or vcek.der",
        ),
        "garbage-vcek": ({"vcek.pem": b"hello\n"}, "vcek.pem: not an X.509 certificate"),
        "empty-vcek": ({"vcek.der": b""}, "vcek.der: not an X.509 certificate"),
        "truncated-der": (
            {"vcek.der": der(synth.vcek)[:200]},
            "vcek.der: not an X.509 certificate",
        ),
        "broken-pem": (
            {"vcek.pem": pem(synth.vcek).replace(b"M", b"!", 3)},
            "vcek.pem: not an X.509 certificate",
        ),
        "two-vceks": (
            {"vcek.pem": pem(synth.vcek), "vcek.der": der(kit.make_vcek(chip_id=bytes(64)))},
            "vcek.der are different VCEK",
        ),
        "two-asks": (
            {
                "vcek.der": der(synth.vcek),
                "cert_chain.pem": pem(synth.ask)
                + pem(kit.make_ask(signer="rogue"))
                + pem(synth.ark),
            },
            "are different ASK",
        ),
        "two-arks": (
            {
                "vcek.der": der(synth.vcek),
                "ask.pem": pem(synth.ask),
                "ark.pem": pem(synth.ark),
                "ark.der": der(kit.make_ark(key="rogue")),
            },
            "are different ARK certificates",
        ),
        "unknown-issuer": (
            {"vcek.pem": pem(kit.make_vcek("Venice"))},
            "is none of AMD's pinned ASKs",
        ),
        "unknown-ark": (
            {"vcek.pem": pem(synth.vcek), "ask.pem": pem(kit.make_ask(ark_cn="ARK-Lab"))},
            "is none of AMD's pinned ARKs",
        ),
    }


@pytest.mark.parametrize(
    "name",
    [
        "empty",
        "only-chain",
        "garbage-vcek",
        "empty-vcek",
        "truncated-der",
        "broken-pem",
        "two-vceks",
        "two-asks",
        "two-arks",
        "unknown-issuer",
        "unknown-ark",
    ],
)
def test_a_bad_certificate_folder_fails_the_certificates_check(name: str, tmp_path: Path) -> None:
    synth = kit.make_chain()
    files, reason = _folder_defects(synth)[name]
    for file, data in files.items():
        (tmp_path / file).write_bytes(data)
    with pytest.raises(CertError, match=reason):
        load_folder(tmp_path)
    result = verify(kit.signed_report(), lambda _: load_folder(tmp_path), expected_for(synth))
    assert reason in failing(result)["certificates"]
    assert {verdicts(result)[n] for n in CHAIN_CHECKS} == {Verdict.SKIP} and not result.passed


@pytest.mark.parametrize("what", ["missing", "file", "fifo"])
def test_a_folder_that_is_not_one_is_a_clean_error(what: str, tmp_path: Path) -> None:
    import os

    target = tmp_path / "certs"
    if what == "file":
        target.write_text("x")
    elif what == "fifo":
        target.mkdir()
        os.mkfifo(target / "vcek.pem")
    with pytest.raises(CertError, match=str(target)):
        load_folder(target)


# Fuzz --------------------------------------------------------------------------------------


@settings(max_examples=examples(200), deadline=None)
@given(st.binary(max_size=1300), st.integers(min_value=0, max_value=0x49F), st.integers(0, 255))
def test_no_input_makes_the_verifier_raise_or_pass(data: bytes, at: int, value: int) -> None:
    synth = kit.make_chain()
    genuine = bytearray(kit.signed_report())
    if genuine[at] != value:
        genuine[at] = value
        for raw in (bytes(genuine), data):
            result = verify(raw, as_chain(synth), expected_for(synth))
            assert not result.passed or at >= 0x330  # the signature's reserved tail is not signed
            assert len(result.checks) == len(CHECK_NAMES)


@pytest.mark.parametrize("error", [ValueError("bad name"), ValueError(), UnsupportedAlgorithm("x")])
def test_a_certificate_cryptography_cannot_read_fails_the_certificates_check(
    error: Exception,
) -> None:
    def source(_: object) -> Chain:
        raise error

    result = verify(kit.signed_report(), source, expected_for(None))
    assert verdicts(result)["certificates"] is Verdict.FAIL and not result.passed
    assert {verdicts(result)[n] for n in CHAIN_CHECKS} == {Verdict.SKIP}
