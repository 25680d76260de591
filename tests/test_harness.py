"""The host's certification harness on this machine (no SNP): fake roots, fake qemu/snphost.

The failure path runs exactly as in a host image without SEV-SNP; the pass
path uses a synthetic AMD chain (tests/certkit.py) served by a fake KDS on
127.0.0.1, a guest answer whose report is signed over the harness's own
nonce, and an injected measurement (the measure helper's module computes the
real one, tested on its own).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sevimg_cert import framing, harness, hostinfo, markdown, outputs, result
from sevimg_cert.harness import Config
from tests import certkit, harnesskit
from tests.conftest import REPO, CliFn
from tests.fakekds import FakeKds, serve
from tests.harnesskit import FIRMWARE, GUEST, FakeHost, fake_host, path_with

SCHEMA = json.loads((REPO / "schema/cert-result.schema.json").read_text())
MEASUREMENT = certkit.MEASUREMENT
PREREQ_STEPS = ["sev_snp", "sev_firmware", "kernel", "qemu", "ovmf", "snphost_ok", "guest_image"]


def validate(doc: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)


@dataclass(frozen=True)
class Answer:
    """What sevimg_cert.channel.request returns (contracts.md §1), as far as the harness reads it."""

    nonce: bytes
    report: bytes | None
    error: str | None = None
    image: str = "guest-debian-forky"
    os_id: str = "debian"
    os_version: str = "forky"
    kernel: str = "6.12.0-guest"
    sev: str = "snp"
    sev_guest_device: str = "yes"
    configfs: str = "yes"
    tsm_provider: str = "sev_guest"
    modules: dict[str, str] = field(default_factory=lambda: {"sev-guest": "loaded"})


def steps(doc: dict[str, Any], test: str) -> dict[str, dict[str, Any]]:
    tests = {t["name"]: t for t in doc["levels"][0]["tests"]}
    return {s["name"]: s for s in tests[test]["steps"]}


def run_harness(host: FakeHost, **changes: Any) -> tuple[result.CertResult, dict[str, Any], str]:
    config = Config(
        root=host.root,
        kernel_release=changes.pop("kernel_release", "6.12.38-amd64"),
        path=path_with(host.bin),
        guest_timeout=60,  # generous: a loaded CI machine starts the fake QEMU slowly
        **changes,
    )
    lines: list[str] = []
    outcome, log = harness.run(config, lines.append)
    written = outputs.write_results(config.state, outcome, log)
    doc = json.loads((config.state / "result.json").read_text())
    assert doc == result.to_dict(written)
    validate(doc)
    return written, doc, (config.state / "result.md").read_text()


def test_without_snp_every_prerequisite_fails_and_a_fail_result_is_written(tmp_path: Path) -> None:
    host = fake_host(
        tmp_path,
        kvm_amd=False,
        firmware=False,
        guest=False,
        qemu_version="8.2.2",
        snphost=None,
    )
    outcome, doc, md = run_harness(host, kernel_release="6.8.0-51-generic")
    assert doc["result"] == "fail" and doc["certified_level"] is None and doc["milestone"] is None
    assert doc["title"] == "debian forky SEV version 3.0"
    assert doc["labels"] == ["certificate", "os-debian-forky", "proc-9004"]
    found = steps(doc, "host_prerequisites")
    assert list(found) == PREREQ_STEPS
    assert all(s["result"] == "fail" for s in found.values()), found
    assert "kvm_amd is not loaded" in found["sev_snp"]["detail"]
    assert "6.8.0-51-generic is older than 6.11" in found["kernel"]["detail"]
    assert "8.2.2 (fake) is older than 9.1: no SEV-SNP support" in found["qemu"]["detail"]
    assert found["snphost_ok"]["detail"] == "snphost is not installed"
    # The measurement needs only the firmware and the guest, both missing here.
    assert steps(doc, "expected_measurement")["measure"] == {
        "name": "measure",
        "result": "skip",
        "detail": "prerequisite failed: sev_firmware, guest_image",
    }
    for later in ("guest_launch", "attestation"):
        for step in steps(doc, later).values():
            assert step["result"] == "skip"
            assert step["detail"].startswith("prerequisite failed: sev_snp, sev_firmware, kernel")
    assert md.startswith("# Failed to Achieve a Certification Level\n")
    assert "**First failure:** host_prerequisites / sev_snp: SEV-SNP is not available" in md
    assert "c3.0.0-0" not in md.replace("3.0.0-0", "")  # no milestone anywhere
    assert "<details>" in md and "## Environment" in md and "## Harness log" in md
    assert "SEVIMG-CERT-STEP host_prerequisites/sev_snp fail" in md
    assert markdown.dispatch_payload(outcome).keys() == {"title", "body", "labels"}


def test_snp_disabled_is_named(tmp_path: Path) -> None:
    host = fake_host(tmp_path, sev_snp="N", snphost="fail")
    _, doc, _ = run_harness(host)
    found = steps(doc, "host_prerequisites")
    assert found["sev_snp"]["result"] == "fail"
    assert "is 'N', not Y" in found["sev_snp"]["detail"]
    assert found["snphost_ok"]["result"] == "fail"
    assert "RMP table not initialized" in found["snphost_ok"]["detail"]
    assert "[ FAIL ] - SNP" in found["snphost_ok"]["output"]
    # The rest of the machine is fine: only those two are named.
    assert {n for n, s in found.items() if s["result"] != "pass"} == {"sev_snp", "snphost_ok"}
    assert "2025.02-8" in found["ovmf"]["detail"]


@pytest.fixture
def kds() -> Any:
    chain = certkit.make_chain("Genoa")
    state = FakeKds(chain, "Genoa", certkit.CHIP_ID.hex())
    with serve(state) as running:
        yield running


def signing_guest(host: FakeHost, seen: list[list[str]]) -> Any:
    """A guest answer over the harness's nonce, once the (fake) QEMU has been started with the channel."""

    def ask(socket: Path, nonce: bytes, timeout: float) -> Answer:
        deadline = time.monotonic() + timeout
        while not host.qemu_argv.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen.append(json.loads(host.qemu_argv.read_text()))
        seen.append([str(socket)])
        spec = certkit.ReportSpec(report_data=nonce, measurement=MEASUREMENT)
        return Answer(nonce=nonce, report=certkit.signed_report(spec))

    return ask


def test_pass_path_gives_the_milestone(tmp_path: Path, kds: FakeKds) -> None:
    host = fake_host(tmp_path, sev_snp="Y", cmdline=f"console=ttyS0 sevimg.kds={kds.url}")
    seen: list[list[str]] = []
    outcome, doc, md = run_harness(
        host,
        trusted_arks=(kds.chain.ark,),
        measure=lambda ovmf, kernel, vcpus, vcpu_type: MEASUREMENT,
        ask_guest=signing_guest(host, seen),
    )
    assert doc["result"] == "pass", json.dumps(doc["levels"], indent=1)
    assert doc["certified_level"] == "3.0.0-0" and doc["milestone"] == "c3.0.0-0"
    assert markdown.dispatch_payload(outcome)["milestone"] == "c3.0.0-0"
    assert md.startswith("# Achieved Certification Level 3.0.0-0\n")
    assert kds.seen("vcek") == 1 and kds.seen("chain") == 1
    argv, (socket,) = seen
    assert len(socket.encode()) < 108  # a unix socket's path limit
    assert not Path(socket).parent.exists()  # the private folder is gone after the run
    assert f"path={socket}," in " ".join(argv)
    assert "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on" in argv
    assert argv[argv.index("-bios") + 1] == str(host.root / FIRMWARE.lstrip("/"))
    assert argv[argv.index("-kernel") + 1] == str(host.root / GUEST.lstrip("/"))
    chardev = argv[argv.index("-chardev") + 1]
    assert chardev.startswith("socket,id=sevimg-attest,path=") and chardev.endswith(
        ",server=on,wait=off"
    )
    assert "virtio-serial-pci,id=sevimg-serial,iommu_platform=on,disable-legacy=on" in argv
    attestation = steps(doc, "attestation")
    # The fake KDS serves the ARK's CRL (revoking nothing): revocation is checked, and passes.
    revocation = attestation.pop("revocation")
    assert revocation["result"] == "pass" and "not revoked" in revocation["detail"]
    assert all(s["result"] == "pass" and "optional" not in s for s in attestation.values())
    assert doc["evidence"]["revocation"].startswith("checked"), doc["evidence"]["revocation"]
    assert doc["evidence"]["reported_tcb"]["snp"] == 23
    assert doc["evidence"]["nonce"] == outcome.evidence.nonce.hex()  # type: ignore[union-attr]
    assert doc["evidence"]["expected_measurement"] == MEASUREMENT.hex()
    assert doc["evidence"]["vcek"].startswith("-----BEGIN CERTIFICATE-----")
    assert doc["environment"]["guest_os_id"] == "debian"
    # The evidence block of the Markdown gives the same evidence back.
    assert markdown.evidence_from_text(md) == doc["evidence"]
    assert markdown.evidence_from_text(json.dumps(doc)) == doc["evidence"]


def test_a_report_over_another_nonce_fails_attestation(tmp_path: Path, kds: FakeKds) -> None:
    host = fake_host(tmp_path, sev_snp="Y", cmdline=f"sevimg.kds={kds.url}")

    def replay(socket: Path, nonce: bytes, timeout: float) -> Answer:
        return Answer(nonce=nonce, report=certkit.signed_report(certkit.ReportSpec()))

    _, doc, _ = run_harness(
        host,
        trusted_arks=(kds.chain.ark,),
        measure=lambda *a, **k: MEASUREMENT,
        ask_guest=replay,
    )
    assert doc["result"] == "fail" and doc["milestone"] is None
    assert steps(doc, "attestation")["request_data"]["result"] == "fail"
    assert "not the nonce" in steps(doc, "attestation")["request_data"]["detail"]


def test_an_untrusted_root_fails_even_when_consistent(tmp_path: Path, kds: FakeKds) -> None:
    host = fake_host(tmp_path, sev_snp="Y", cmdline=f"sevimg.kds={kds.url}")
    seen: list[list[str]] = []
    _, doc, _ = run_harness(
        host, measure=lambda *a, **k: MEASUREMENT, ask_guest=signing_guest(host, seen)
    )
    assert doc["result"] == "fail"
    assert "not one of AMD's pinned roots" in steps(doc, "attestation")["ark"]["detail"]


def test_guest_without_snp_names_it(tmp_path: Path) -> None:
    host = fake_host(tmp_path, sev_snp="Y")

    def plain(socket: Path, nonce: bytes, timeout: float) -> Answer:
        return Answer(
            nonce=nonce,
            report=None,
            error="SNP not active: no configfs-tsm provider",
            sev="none",
            tsm_provider="none",
        )

    _, doc, _ = run_harness(host, measure=lambda *a, **k: MEASUREMENT, ask_guest=plain)
    launch = steps(doc, "guest_launch")
    assert launch["answer"]["result"] == "pass"
    assert launch["sev_snp_active"]["result"] == "fail"
    assert launch["report"]["detail"] == "no report: SNP not active: no configfs-tsm provider"
    assert all(s["result"] == "skip" for s in steps(doc, "attestation").values())


def test_without_snp_the_measurement_is_still_computed(tmp_path: Path) -> None:
    """Only SNP is missing: the measurement (files only) is in the result and its evidence."""
    host = fake_host(tmp_path, sev_snp="N")
    _, doc, md = run_harness(host, measure=lambda *a, **k: MEASUREMENT)
    assert doc["result"] == "fail"
    assert steps(doc, "expected_measurement")["measure"]["result"] == "pass"
    assert MEASUREMENT.hex() in md  # in the evidence block, for `sevimg verify` later
    assert doc["evidence"]["expected_measurement"] == MEASUREMENT.hex()
    assert steps(doc, "guest_launch")["launch"]["detail"].startswith("prerequisite failed: sev_snp")

    def exploding(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("no SEV metadata")

    _, doc, _ = run_harness(fake_host(tmp_path / "again", sev_snp="N"), measure=exploding)
    step = steps(doc, "expected_measurement")["measure"]
    assert step["result"] == "fail" and "no SEV metadata" in step["detail"]
    assert doc["result"] == "fail" and doc["error"] is None


def test_missing_parts_fail_their_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No sev-snp-measure, no channel module in the image: named failed steps, still a result."""
    monkeypatch.setitem(sys.modules, "sevimg_cert.measure", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "sevimg_cert.channel", None)
    host = fake_host(tmp_path, sev_snp="Y")
    _, doc, _ = run_harness(host)
    measure = steps(doc, "expected_measurement")["measure"]
    assert measure["result"] == "fail"
    assert "sev-snp-measure is not in this image" in measure["detail"]
    launch = steps(doc, "guest_launch")
    assert launch["launch"]["result"] == "fail"
    assert "channel is not in this image" in launch["launch"]["detail"]
    assert launch["answer"]["result"] == "skip"
    assert doc["result"] == "fail"
    assert not host.qemu_argv.exists()  # nothing launched without a way to talk to it


def test_guest_silence_times_out_and_stops_qemu(tmp_path: Path) -> None:
    host = fake_host(tmp_path, sev_snp="Y")

    def silent(socket: Path, nonce: bytes, timeout: float) -> Answer:
        deadline = time.monotonic() + timeout
        while not host.qemu_argv.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        raise TimeoutError(f"no SEVIMG-ATTEST-END within {timeout:.0f} s")

    before = {t.ident for t in threading.enumerate()}
    _, doc, _ = run_harness(host, measure=lambda *a, **k: MEASUREMENT, ask_guest=silent)
    answer = steps(doc, "guest_launch")["answer"]
    assert answer["result"] == "fail" and "no SEVIMG-ATTEST-END within 60 s" in answer["detail"]
    assert before >= {t.ident for t in threading.enumerate()}
    leftovers = subprocess.run(
        ["pgrep", "-f", str(host.bin / "qemu-system-x86_64")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert leftovers.stdout.strip() == ""


def test_an_unexpected_exception_is_an_error_result(tmp_path: Path) -> None:
    host = fake_host(tmp_path, sev_snp="Y")

    def broken() -> bytes:
        raise RuntimeError("no randomness")

    outcome, doc, md = run_harness(host, measure=lambda *a, **k: MEASUREMENT, nonce=broken)
    assert doc["result"] == "error" and doc["error"] == "RuntimeError: no randomness"
    assert doc["milestone"] is None
    assert "**Harness error:** RuntimeError: no randomness" in md
    assert "Traceback" in outcome.log  # the log keeps it for whoever debugs; the result says why


def test_main_prints_steps_summary_and_frame(tmp_path: Path) -> None:
    host = fake_host(tmp_path, sev_snp="N")
    done = harnesskit.run_harness(host)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    out = done.stdout
    assert "SEVIMG-CERT-STEP host_prerequisites/sev_snp fail SEV-SNP is not enabled" in out
    assert "sevimg certification: FAIL - no level achieved" in out
    data = framing.unframe(out)
    assert data == (host.root / "run/sevimg/result.json").read_bytes()
    doc = json.loads(data)
    validate(doc)
    assert doc["result"] == "fail"
    for name in ("result.json", "result.md", "harness.log"):
        assert (host.root / "run/sevimg" / name).stat().st_size > 0
    assert not [p for p in (host.root / "run/sevimg").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("family", "model", "brand", "series"),
    [
        (0x17, 0x01, "AMD EPYC 7601", "7001"),
        (0x17, 0x31, "AMD EPYC 7702", "7002"),
        (0x19, 0x01, "AMD EPYC 7763", "7003"),
        (0x19, 0x11, "AMD EPYC 9654", "9004"),
        (0x19, 0xA0, "AMD EPYC 9754 128-Core", "9004"),
        (0x19, 0xA0, "AMD EPYC 8534P", "8004"),
        (0x19, 0xA0, "", None),
        (0x1A, 0x02, "AMD EPYC 9755", "9005"),
        (0x1A, 0x11, "AMD EPYC 9965", "9005"),
        (0x06, 0x55, "Intel Xeon", None),
        (0x19, 0x21, "AMD Ryzen 9 5950X", None),
    ],
)
def test_series(family: int, model: int, brand: str, series: str | None) -> None:
    assert hostinfo.series(family, model, brand) == series


def test_cpuid_device_is_read(tmp_path: Path) -> None:
    """The family/model from leaf 0x80000001's EAX and the C-bit from 0x8000001F's EBX."""
    device = tmp_path / "dev/cpu/0/cpuid"
    device.parent.mkdir(parents=True)
    genoa_eax = (0xA << 20) | (0x1 << 16) | (0xF << 8) | (0x1 << 4) | 0x1  # family 0x19, model 0x11
    with device.open("wb") as handle:  # a sparse file: pread at the leaf gives the registers
        handle.seek(hostinfo.CPUID_FEATURES)
        handle.write(genoa_eax.to_bytes(4, "little") + bytes(12))
        handle.seek(hostinfo.CPUID_SEV)
        handle.write(bytes(4) + (0x1000 | 51).to_bytes(4, "little") + bytes(8))
    cpu = hostinfo.cpu(tmp_path)
    assert cpu is not None and (cpu.family, cpu.model, cpu.series) == (0x19, 0x11, "9004")
    assert hostinfo.cbit_position(tmp_path) == (51, "CPUID 0x8000001F")


def test_unknown_processor_gets_no_proc_label() -> None:
    identity = result.Identity("debian", "forky", None)
    assert result.labels(identity) == ["certificate", "os-debian-forky"]
    odd = result.Identity("opensuse-leap", "15.6", "9005")
    assert result.labels(odd) == ["certificate", "os-opensuseleap-15.6", "proc-9005"]
    assert result.title(result.Identity("fedora", "42", None)) == "fedora 42 SEV version 3.0"


def test_sevimg_verify_checks_a_result_again(tmp_path: Path, kds: FakeKds, cli: CliFn) -> None:
    """The evidence in result.md/.json is enough for `sevimg verify` later; tampering is caught."""
    host = fake_host(tmp_path, sev_snp="Y", cmdline=f"sevimg.kds={kds.url}")
    run_harness(
        host,
        trusted_arks=(kds.chain.ark,),
        measure=lambda *a, **k: MEASUREMENT,
        ask_guest=signing_guest(host, []),
    )
    state = host.root / "run/sevimg"
    folder = certkit.write_folder(tmp_path / "certs", kds.chain)
    ark = folder / "ark.pem"
    for name in ("result.md", "result.json"):
        again = cli("verify", str(state / name), "--certs", str(folder), "--trusted-ark", str(ark))
        assert again.code == 0, again.output
        assert "request data" in again.stdout and "equals the nonce" in again.stdout
    doc = json.loads((state / "result.json").read_text())
    doc["evidence"]["expected_measurement"] = "00" * 48
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    bad = cli("verify", str(tampered), "--certs", str(folder), "--trusted-ark", str(ark))
    assert bad.code == 1 and "measurement: is " in bad.stderr
    # Without a folder, the evidence's own VCEK is used, completed only with AMD's pinned
    # ASK and ARK: a synthetic VCEK is refused.
    pinned_only = cli("verify", str(state / "result.md"))
    assert pinned_only.code == 3 and "SEV-VCEK is not signed by SEV-Genoa" in pinned_only.stderr
    empty = tmp_path / "empty.md"
    empty.write_text("# Failed to Achieve a Certification Level\n")
    refused = cli("verify", str(empty))
    assert refused.code == 2 and "neither a result JSON" in refused.stderr
    assert "Traceback" not in refused.output


def test_without_cryptography_the_harness_still_writes_a_result(tmp_path: Path) -> None:
    """An image without python3-cryptography: prerequisites run, the verify step says what is missing."""
    host = fake_host(tmp_path, sev_snp="N")
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "cryptography.py").write_text("raise ImportError('No module named cryptography')\n")
    done = harnesskit.run_harness(host, pythonpath=str(blocker))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    doc = json.loads(framing.unframe(done.stdout))
    assert doc["result"] == "fail"
    assert steps(doc, "host_prerequisites")["sev_snp"]["result"] == "fail"


def test_a_qemu_below_the_guides_floor_certifies_with_a_warning(
    tmp_path: Path, kds: FakeKds
) -> None:
    # fedora-41's QEMU 9.1.3 launches SEV-SNP guests (sev-snp-guest is in 9.1.0), below
    # the guide's 9.2: the run passes and the result records the warning.
    host = fake_host(
        tmp_path, sev_snp="Y", qemu_version="9.1.3", cmdline=f"console=ttyS0 sevimg.kds={kds.url}"
    )
    _, doc, md = run_harness(
        host,
        trusted_arks=(kds.chain.ark,),
        measure=lambda ovmf, kernel, vcpus, vcpu_type: MEASUREMENT,
        ask_guest=signing_guest(host, []),
    )
    validate(doc)
    assert md.startswith("# Achieved Certification Level 3.0.0-0\n")
    assert "**Warning:** host_prerequisites / qemu: QEMU emulator version 9.1.3" in md
    assert "below the guide's floor 9.2" in md
    assert doc["result"] == "pass" and doc["certified_level"] == "3.0.0-0"
    qemu = steps(doc, "host_prerequisites")["qemu"]
    assert qemu["result"] == "pass"
    assert qemu["warning"].startswith("below the guide's floor 9.2")
    assert [n for n, s in steps(doc, "host_prerequisites").items() if "warning" in s] == ["qemu"]
