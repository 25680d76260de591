"""Parsers of peer data (result files, evidence blocks, certificates) on hostile input:
located errors only, never an internal error, and linear in their input (sizes: tests/bench.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st

from sevimg.machine import evidence
from sevimg.problems import SevimgError
from sevimg_cert import certs, efi, framing, markdown, mdns, report, verify
from tests import certkit

BLOCK = '```sevimg-evidence\n{"report": "AAAA"}\n```\n'


def test_the_first_closed_block_is_found_after_many_unclosed_ones() -> None:
    text = "````sevimg-evidence\n" * 20000 + "x\n" + BLOCK
    line, body = markdown.evidence_block(text) or (0, "")
    # The first opener (four backticks) never closes; the three-backtick one does.
    assert body == '{"report": "AAAA"}' and line == 20003


def test_a_longer_fence_holds_shorter_ones() -> None:
    text = "`````sevimg-evidence\none\n```\ntwo\n`````\n"
    assert markdown.evidence_block(text) == (2, "one\n```\ntwo")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("```sevimg-evidence\n" * 50000, "neither a result JSON"),
        (
            "intro\n```sevimg-evidence\n{\n  nope\n```\n",
            r"line 4: the sevimg-evidence block is not JSON",
        ),
        ("```sevimg-evidence\n" + "[" * 100000 + "\n```\n", "line 2: .*nested too deeply"),
        ("```sevimg-evidence\n[1]\n```\n", "line 2: .*not a JSON object"),
        ('{"evidence": ' * 100000, "neither a result JSON"),
    ],
    ids=["unclosed-fences", "bad-json", "deep-json", "not-an-object", "deep-result-json"],
)
def test_bad_evidence_is_a_located_error(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        markdown.evidence_from_text(text)


def test_verify_names_the_file_for_deep_json(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text('{"evidence": ' * 200000 + "{}" + "}" * 200000)
    with pytest.raises(SevimgError, match=rf"{path}: neither a result JSON"):
        evidence.read_evidence(path)


def test_a_certificate_whose_name_cannot_be_decoded_is_a_located_error(tmp_path: Path) -> None:
    der = certkit.make_chain("Genoa").vcek.public_bytes(Encoding.DER)
    at = der.index(b"SEV-VCEK")
    broken = der[:at] + b"\xff\xfe" + der[at + 2 :]
    with pytest.raises(certs.CertError, match="vcek.der: a name or extension cannot be decoded"):
        certs.parse_cert(broken, "vcek.der")
    (tmp_path / "vcek.der").write_bytes(broken)
    with pytest.raises(certs.CertError, match="vcek.der"):
        certs.load_cert_file(tmp_path / "vcek.der")


@given(st.binary(max_size=2000))
def test_any_bytes_are_a_certificate_or_a_cert_error(data: bytes) -> None:
    try:
        found = certs.parse_certs(data, "peer.pem")
    except certs.CertError as error:
        assert str(error).startswith("peer.pem")
    else:
        assert found


@given(st.binary(max_size=400), st.integers(0, 1500))
def test_a_damaged_certificate_is_a_certificate_or_a_cert_error(noise: bytes, at: int) -> None:
    der = CHAIN_DER
    data = der[:at] + noise + der[at + len(noise) :]
    try:
        certs.parse_cert(data, "peer.der")
    except certs.CertError as error:
        assert str(error).startswith("peer.der")


SYNTH = certkit.make_chain("Genoa")
CHAIN_DER = SYNTH.vcek.public_bytes(Encoding.DER)
CHAIN = certs.Chain(SYNTH.vcek, SYNTH.ask, SYNTH.ark, dict.fromkeys(("vcek", "ask", "ark"), "test"))

FENCE_LINES = st.sampled_from(
    [
        "```sevimg-evidence",
        "````sevimg-evidence",
        "```",
        "````",
        "{",
        "}",
        '"report": "AA"',
        "",
        "x",
    ]
)


@given(st.lists(FENCE_LINES, max_size=40))
def test_any_markdown_is_evidence_or_a_value_error(lines: list[str]) -> None:
    try:
        found = markdown.evidence_from_text("\n".join(lines))
    except ValueError as error:
        assert str(error)
    else:
        assert isinstance(found, dict)


@given(st.text(max_size=2000))
def test_any_result_file_is_evidence_or_a_located_error(text: str) -> None:
    try:
        found = markdown.evidence_from_text(text)
    except ValueError as error:
        assert str(error)
    else:
        assert isinstance(found, dict)


@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=3), c),
        max_leaves=20,
    )
)
def test_any_json_result_is_read_or_refused_with_the_file_named(doc: object) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "result.json"
        path.write_text(json.dumps({"evidence": doc}))
        try:
            evidence.read_evidence(path)
        except SevimgError as error:
            assert str(error).startswith(str(path))


REPORT = certkit.signed_report()


@given(st.binary(max_size=64), st.integers(0, 1184))
def test_any_damaged_report_is_parsed_or_a_report_error(noise: bytes, at: int) -> None:
    data = REPORT[:at] + noise + REPORT[at + len(noise) :]
    try:
        report.parse_report(data)
    except report.ReportError as error:
        assert str(error)


@given(st.binary(max_size=64), st.integers(0, 1184))
def test_verify_never_raises_for_a_damaged_report(noise: bytes, at: int) -> None:
    data = REPORT[:at] + noise + REPORT[at + len(noise) :]
    outcome = verify.verify(data, CHAIN, verify.Expected(None, None, 0, (CHAIN.ark,)))
    assert outcome.checks


@given(st.binary(max_size=300))
def test_any_load_option_is_parsed_or_an_efi_error(data: bytes) -> None:
    try:
        option = efi.parse_load_option(data)
    except efi.EfiError as error:
        assert str(error)
    else:
        for path in option.paths:
            url = efi.uri_of(path)
            assert url is None or isinstance(url, str)


@given(st.binary(max_size=300))
def test_any_efivars_file_is_read_or_an_efi_error(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        efivars = Path(folder)
        (efivars / f"LoaderDeviceURL-{efi.LOADER_GUID}").write_bytes(data)
        (efivars / f"Boot0001-{efi.GLOBAL_GUID}").write_bytes(data)
        (efivars / f"BootOrder-{efi.GLOBAL_GUID}").write_bytes(b"\7\0\0\0\1\0")
        try:
            efi.loader_device_url(efivars)
        except efi.EfiError as error:
            assert str(error)
        urls, problems = efi.boot_urls(efivars)
        assert all(isinstance(name, str) and isinstance(url, str) for name, url in urls)
        assert all(isinstance(p, str) for p in problems)


@given(st.text(max_size=3000))
def test_any_console_text_is_a_result_or_a_frame_error(text: str) -> None:
    try:
        framing.unframe(text)
    except framing.FrameError as error:
        assert str(error)


@given(st.binary(max_size=600))
def test_any_mdns_answer_is_records_or_a_dns_error(data: bytes) -> None:
    try:
        records = mdns.parse(data)
    except mdns.DnsError as error:
        assert str(error)
    else:
        # What the browse then does with them: found URLs are URLs, nothing raises.
        seen = mdns.Seen()
        mdns._absorb(seen, records)
        for _, url in mdns.urls(seen):
            assert url.startswith("http://")
