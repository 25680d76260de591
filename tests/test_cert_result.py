"""The certification result: schema, golden JSON and Markdown, framing on a noisy console."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sevimg_cert import framing, markdown, result
from sevimg_cert.framing import FrameError
from sevimg_cert.result import (
    CertResult,
    Environment,
    Evidence,
    Identity,
    Outcome,
    Step,
    Test,
)
from tests.conftest import REPO, examples

SCHEMA = json.loads((REPO / "schema/cert-result.schema.json").read_text())
GOLDEN = REPO / "tests/golden-results"
T0, T1 = "2026-11-26T10:00:00Z", "2026-11-26T10:04:12Z"
ENV = Environment(
    qemu_version="QEMU emulator version 10.0.2",
    qemu_binary="/usr/bin/qemu-system-x86_64",
    kernel_version="6.16.3+deb14-amd64",
    ovmf_version="ovmf 2025.02-8",
    ovmf_path="/usr/share/ovmf/OVMF.amdsev.fd",
    host_os_id="debian",
    host_os_name="Debian GNU/Linux",
    host_os_release="forky",
    host_os_pretty_name="Debian GNU/Linux forky/sid",
    image="host-debian-forky",
    guest_image="guest-debian-forky",
    processor="9004 (Genoa), family 0x19 model 0x11, AMD EPYC 9654",
)
PREREQS = (
    Step("sev_snp", Outcome.PASS, "kvm_amd reports SEV-SNP enabled"),
    Step("sev_firmware", Outcome.PASS, "/usr/share/ovmf/OVMF.amdsev.fd (4194304 bytes)"),
    Step("kernel", Outcome.PASS, "kernel 6.16.3+deb14-amd64 (>= 6.11)"),
    Step("qemu", Outcome.PASS, "QEMU emulator version 10.0.2 (>= 9.2)"),
    Step("ovmf", Outcome.PASS, "OVMF ovmf 2025.02-8 (>= 2024.11)"),
    Step("snphost_ok", Outcome.PASS, "snphost ok: every check passed"),
    Step("guest_image", Outcome.PASS, "/usr/lib/sevimg/guest/guest.efi"),
)


def passing() -> CertResult:
    tests = (
        Test("host_prerequisites", "prerequisites", "host", T0, T0, PREREQS),
        Test(
            "expected_measurement",
            "measurement",
            "host",
            T0,
            T0,
            (Step("measure", Outcome.PASS, "5a" * 48),),
        ),
        Test(
            "guest_launch",
            "launch",
            "guest",
            T0,
            T1,
            (
                Step("launch", Outcome.PASS, "QEMU started"),
                Step("answer", Outcome.PASS, "answered"),
                Step("sev_snp_active", Outcome.PASS, "sev=snp"),
                Step("report", Outcome.PASS, "1184 bytes"),
            ),
        ),
        Test(
            "attestation",
            "verified",
            "guest",
            T1,
            T1,
            (Step("report_signature", Outcome.PASS, "ECDSA P-384 SHA-384 | by VCEK"),),
        ),
    )
    evidence = Evidence(
        report=bytes(range(256)) * 4 + bytes(160),
        nonce=bytes(range(64)),
        expected_measurement=bytes.fromhex("5a" * 48),
        vcek_pem="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        product="Genoa",
    )
    return CertResult(
        T0,
        T1,
        tests,
        ENV,
        Identity("debian", "forky", "9004"),
        evidence,
        log="2026-11-26T10:00:00Z host-debian-forky\n```inside the log```\n",
    )


def failing() -> CertResult:
    prereqs = (
        Step("sev_snp", Outcome.FAIL, "SEV-SNP is not available: kvm_amd is not loaded"),
        *PREREQS[1:5],
        Step(
            "snphost_ok", Outcome.FAIL, "snphost ok exited with status 1", output="[ FAIL ] - SNP\n"
        ),
        PREREQS[6],
    )
    why = "prerequisite failed: sev_snp, snphost_ok"
    tests = (
        Test("host_prerequisites", "prerequisites", "host", T0, T0, prereqs),
        Test("expected_measurement", "m", "host", T0, T0, (Step("measure", Outcome.SKIP, why),)),
    )
    return CertResult(T0, T1, tests, ENV, Identity("debian", "forky", None), log="x\n")


CASES = {"pass": passing, "fail": failing}


def validate(doc: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)


def test_schema_is_valid_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str, request: pytest.FixtureRequest) -> None:
    made = CASES[name]()
    files = {
        f"{name}.json": result.to_json(made),
        f"{name}.md": markdown.to_markdown(made).encode(),
    }
    validate(json.loads(files[f"{name}.json"]))
    if request.config.getoption("--update-golden"):
        GOLDEN.mkdir(exist_ok=True)
        for file, data in files.items():
            (GOLDEN / file).write_bytes(data)
    for file, data in files.items():
        assert (GOLDEN / file).read_bytes() == data, f"{file} differs: --update-golden and review"


def test_pass_and_fail_shapes() -> None:
    good, bad = result.to_dict(passing()), result.to_dict(failing())
    assert good["result"] == "pass" and good["certified_level"] == "3.0.0-0"
    assert good["milestone"] == "c3.0.0-0"
    assert good["labels"] == ["certificate", "os-debian-forky", "proc-9004"]
    assert bad["result"] == "fail" and bad["certified_level"] is None and bad["milestone"] is None
    assert bad["labels"] == ["certificate", "os-debian-forky"]
    assert bad["max_certification_level"] == "3.0.0-0"
    md = markdown.to_markdown(failing())
    assert md.startswith("# Failed to Achieve a Certification Level\n")
    assert "<summary>host_prerequisites (fail)</summary>" in md
    assert "**First failure:** host_prerequisites / sev_snp" in md
    good_md = markdown.to_markdown(passing())
    assert good_md.startswith("# Achieved Certification Level 3.0.0-0\n")
    assert "| Test | Description | Result |" in good_md
    assert "ECDSA P-384 SHA-384 \\| by VCEK" not in good_md  # passing steps stay in JSON only
    assert "````" in good_md  # the log's ``` cannot close its block early


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(result="pass"),  # a pass without the level
        lambda d: d.update(milestone="c3.0.0-0"),
        lambda d: d.update(labels=["certificate", "os-debian-forky", "proc-x"]),
        lambda d: d.update(labels=["os-debian-forky"]),
        lambda d: d.update(title="debian SEV"),
        lambda d: d.update(schema_version="2.0"),
        lambda d: d["evidence"].update(nonce="00"),
        lambda d: d.pop("environment"),
        lambda d: d["levels"][0]["tests"][0]["steps"][0].update(result="ok"),
    ],
)
def test_schema_rejects(change: Any) -> None:
    doc = result.to_dict(failing())
    change(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


def test_dispatch_payload() -> None:
    payload = markdown.dispatch_payload(passing())
    assert payload["title"] == "debian forky SEV version 3.0"
    assert payload["milestone"] == "c3.0.0-0"
    assert payload["body"] == markdown.to_markdown(passing())
    assert "milestone" not in markdown.dispatch_payload(failing())
    version_id = Identity("ubuntu", "24.04", "9005")
    assert result.title(version_id) == "ubuntu 24.04 SEV version 3.0"
    assert result.labels(version_id) == ["certificate", "os-ubuntu-24.04", "proc-9005"]


def test_evidence_round_trip() -> None:
    made = passing()
    md = markdown.to_markdown(made)
    assert markdown.evidence_from_text(md) == made.evidence.as_dict()
    with pytest.raises(ValueError, match="neither a result JSON"):
        markdown.evidence_from_text("# nothing here\n")


# --- framing ------------------------------------------------------------------

NOISE = st.sampled_from(
    [
        "[   12.345678] virtio_net virtio0 enp0s2: renamed from eth0",
        "[  OK  ] Finished sevimg-host-check.service",
        "",
        "\x1b[0;32m  OK  \x1b[0m",
        "random words here",
    ]
)


@settings(max_examples=examples(200), deadline=None)
@given(
    data=st.binary(max_size=3000),
    noise=st.lists(st.tuples(st.integers(min_value=0, max_value=400), NOISE), max_size=8),
    inside=st.lists(st.tuples(st.integers(min_value=0, max_value=400), NOISE), max_size=6),
    before=st.text(max_size=200),
    crlf=st.booleans(),
)
def test_frame_round_trip_through_a_noisy_console(
    data: bytes,
    noise: list[tuple[int, str]],
    inside: list[tuple[int, str]],
    before: str,
    crlf: bool,
) -> None:
    payload = json.dumps({"result": "fail", "blob": base64.b64encode(data).decode()}).encode()
    framed = framing.frame(payload)
    lines = framed.splitlines()
    assert lines[0].startswith("SEVIMG-CERT-RESULT-BEGIN result=fail ")
    assert lines[-1] == "SEVIMG-CERT-RESULT-END" and lines.count("SEVIMG-CERT-RESULT-NEXT") == 1
    half = lines.index("SEVIMG-CERT-RESULT-NEXT") + 1
    assert lines[:half][:-1] == lines[half:][:-1]  # two copies of the same lines
    # Kernel messages landing inside data lines of the FIRST copy only: the second has them.
    for position, message in inside:
        at = 1 + position % max(1, half - 2)
        if lines[at].startswith("SEVIMG-CERT-DATA"):
            cut = position % len(lines[at])
            lines[at] = lines[at][:cut] + message.replace("SEVIMG", "") + lines[at][cut:]
    for position, line in noise:  # and between the lines, anywhere
        lines.insert(1 + position % max(1, len(lines) - 1), line)
    text = before.replace("SEVIMG", "") + "\n" + "\n".join(lines) + "\n"
    if crlf:
        text = text.replace("\n", "\r\n")
    assert framing.unframe(text) == payload


def test_unframe_refuses_damage_in_every_copy_and_repairs_one() -> None:
    payload = b'{"result": "pass", "x": "' + b"y" * 500 + b'"}'
    lines = framing.frame(payload).splitlines()
    half = lines.index("SEVIMG-CERT-RESULT-NEXT") + 1
    first, second = lines[:half], lines[half:]
    with pytest.raises(FrameError, match="no SEVIMG-CERT-RESULT-BEGIN"):
        framing.unframe("just a console\n")
    # A line lost in one copy comes from the other.
    assert framing.unframe("\n".join([*first[:2], *first[3:], *second])) == payload
    assert framing.unframe("\n".join([*first, *second[:4], *second[5:]])) == payload
    # Lost in both: refused, and the message says which.
    with pytest.raises(
        FrameError, match=r"lines lost or garbled in every copy: 1 of \d+ \(first: 1\)"
    ):
        framing.unframe("\n".join([*first[:2], *first[3:], *second[:2], *second[3:]]))
    # A changed character breaks the line's CRC: that line does not count.
    changed = first[1][:-1] + ("A" if first[1][-1] != "A" else "B")
    assert framing.unframe("\n".join([first[0], changed, *first[2:], *second])) == payload
    with pytest.raises(FrameError, match="in every copy"):
        framing.unframe("\n".join([first[0], changed, *first[2:], second[0], changed, *second[2:]]))
    # The first copy alone is enough (the console was cut before the second ended).
    assert framing.unframe("\n".join(first)) == payload
    with pytest.raises(FrameError, match="cut off"):
        framing.unframe("\n".join(first[:3]))
    # The last result wins; a later one cut off does not hide an earlier whole one.
    other = json.dumps({"result": "fail"}).encode()
    assert framing.unframe("\n".join([*framing.frame(other).splitlines(), *lines])) == payload
    assert framing.unframe("\n".join([*lines, *framing.frame(other).splitlines()[:1]])) == payload
    digest = hashlib.sha256(payload).hexdigest()
    assert re.search(rf"bytes={len(payload)} sha256={digest} lines=\d+$", lines[0])


@pytest.mark.parametrize("name", sorted(CASES))
def test_from_dict_round_trip(name: str) -> None:
    made = CASES[name]()
    back = result.from_dict(json.loads(result.to_json(made)))
    assert result.to_json(back) == result.to_json(made)
    assert markdown.to_markdown(back) == markdown.to_markdown(made)


def test_unframe_a_real_host_console() -> None:
    """The console of the debian-forky host booted under TCG (QEMU 11 in it, no SNP).

    Recorded from a real boot (`sevimg run --role host --no-sev` keeps it as
    console.log): journal+console gives every line a kernel timestamp and the
    `host-check[PID]: ` tag, with kernel and systemd lines in between.
    """
    text = (REPO / "tests/consoles/host-debian-forky-tcg.log").read_text(errors="replace")
    doc = json.loads(framing.unframe(text))
    validate(doc)
    assert doc["result"] == "fail" and doc["milestone"] is None
    assert doc["title"] == "debian forky SEV version 3.0"
    assert doc["labels"] == ["certificate", "os-debian-forky"]  # TCG's CPU: no series
    steps = {s["name"]: s for s in doc["levels"][0]["tests"][0]["steps"]}
    assert steps["sev_snp"]["detail"] == (
        "SEV-SNP is not enabled: /sys/module/kvm_amd/parameters/sev_snp is 'N', not Y"
    )
    # The image's own measurement is the one the build machine wrote into the manifest then.
    measured = {s["name"]: s for s in doc["levels"][0]["tests"][1]["steps"]}["measure"]
    assert measured["result"] == "pass"
    assert doc["evidence"]["expected_measurement"] == (
        "044009d1eecd97f6183a1652363494d4d96904b3ee469ed1ed0c11cf4e4ff9d2"
        "b9b98381fd6a44254c189cec22002624"
    )
    # A kernel message inside a data line of the first copy: the second copy has that line.
    lines = text.splitlines()
    data = [i for i, line in enumerate(lines) if "SEVIMG-CERT-DATA" in line]
    assert len(data) % 2 == 0 and len(data) >= 20
    at = data[3]
    lines[at] = lines[at][:50] + "[  155.6] rcu: INFO: rcu_preempt detected stalls" + lines[at][50:]
    assert framing.unframe("\n".join(lines)) == framing.unframe(text)
    lines[data[len(data) // 2 + 3]] = "[  156.0] systemd[1]: garbled"  # the same line in both
    with pytest.raises(FrameError, match="in every copy"):
        framing.unframe("\n".join(lines))
