"""The verifier's policy (go-sev-guest's check options): its checks, its YAML file, its flags."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from sevimg.machine.verify_policy import Overrides, load_policy_file, resolve
from sevimg.problems import SevimgError
from sevimg_cert.checks import Failure, Verdict
from sevimg_cert.policy import (
    GUEST_POLICY,
    MINIMUM_TCB,
    REPORT_VERSION,
    MinimumTcb,
    Policy,
    check_all,
)
from sevimg_cert.report import parse_report
from tests import certkit as kit
from tests.certkit import ReportSpec
from tests.conftest import CliFn

SMT, MA, DEBUG, SINGLE = 1 << 16, 1 << 18, 1 << 19, 1 << 20


def judge(policy: Policy, spec: ReportSpec | None = None) -> dict[str, tuple[Verdict, str]]:
    report = parse_report(bytes(kit.pack_report(spec or ReportSpec())))
    return {c.name: (c.verdict, c.reason) for c in check_all(report, policy)}


def test_the_default_policy_accepts_what_a_sevimg_guest_launches_with() -> None:
    found = judge(Policy())
    assert {v for v, _ in found.values()} == {Verdict.PASS}
    assert "SMT allowed" in found[GUEST_POLICY][1]
    assert "bl=3 tee=0 snp=23 ucode=213 (the policy sets no minimum)" in found[MINIMUM_TCB][1]


@pytest.mark.parametrize(
    ("bits", "policy", "why"),
    [
        (0x30000 | MA, Policy(), "a migration agent is allowed (bit 18)"),
        (0x30000, Policy(allow_smt=False), "SMT is allowed (bit 16)"),
        (0x30000, Policy(require_single_socket=True), "single socket is not required"),
        (0x30000 | 0x0137, Policy(minimum_abi=(1, 56)), "ABI 1.55 is below the required 1.56"),
    ],
)
def test_each_guest_policy_bit_is_refused_when_the_policy_says(
    bits: int, policy: Policy, why: str
) -> None:
    verdict, reason = judge(policy, ReportSpec(policy=bits))[GUEST_POLICY]
    assert verdict is Verdict.FAIL and why in reason


@pytest.mark.parametrize(
    ("bits", "policy"),
    [
        (0x30000 | MA, Policy(allow_migration_agent=True)),
        (0x20000, Policy(allow_smt=False)),
        (0x30000 | SINGLE, Policy(require_single_socket=True)),
        (0x30000 | 0x0138, Policy(minimum_abi=(1, 56))),
    ],
)
def test_what_the_policy_allows_passes(bits: int, policy: Policy) -> None:
    assert judge(policy, ReportSpec(policy=bits))[GUEST_POLICY][0] is Verdict.PASS


@pytest.mark.parametrize("component", ["bootloader", "tee", "snp", "microcode"])
def test_each_tcb_component_has_its_minimum(component: str) -> None:
    reported = {"bootloader": 3, "tee": 0, "snp": 23, "microcode": 213}[component]
    at = judge(Policy(minimum_tcb=MinimumTcb(**{component: reported})))[MINIMUM_TCB]
    above = judge(Policy(minimum_tcb=MinimumTcb(**{component: reported + 1})))[MINIMUM_TCB]
    assert at[0] is Verdict.PASS
    assert above[0] is Verdict.FAIL and f"{component} {reported} < {reported + 1}" in above[1]


def test_fmc_counts_on_turin_and_fails_a_report_without_one() -> None:
    turin = kit.turin_spec()  # fmc 2
    assert judge(Policy(minimum_tcb=MinimumTcb(fmc=2)), turin)[MINIMUM_TCB][0] is Verdict.PASS
    low = judge(Policy(minimum_tcb=MinimumTcb(fmc=3)), turin)[MINIMUM_TCB]
    assert low[0] is Verdict.FAIL and "fmc 2 < 3" in low[1]
    genoa = judge(Policy(minimum_tcb=MinimumTcb(fmc=1)))[MINIMUM_TCB]
    assert genoa[0] is Verdict.FAIL and "fmc: the report has none" in genoa[1]


@pytest.mark.parametrize(("version", "minimum", "ok"), [(2, 3, False), (3, 3, True), (5, 5, True)])
def test_the_minimum_report_version(version: int, minimum: int, ok: bool) -> None:
    verdict, _ = judge(Policy(minimum_report_version=minimum), ReportSpec(version=version))[
        REPORT_VERSION
    ]
    assert (verdict is Verdict.PASS) is ok


# --- the file -------------------------------------------------------------------------

GOOD = """\
schema_version: 1
minimum_tcb: {bootloader: 3, snp: 22, microcode: 200}
guest_policy:
  allow_smt: false
  allow_migration_agent: false
  require_single_socket: true
  minimum_abi: "1.51"
minimum_report_version: 3
vmpl: 1
require_revocation_check: true
"""


def test_a_policy_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(GOOD)
    policy, vmpl = load_policy_file(tmp_path / "p.yaml")
    assert policy == Policy(
        minimum_tcb=MinimumTcb(bootloader=3, snp=22, microcode=200),
        allow_smt=False,
        require_single_socket=True,
        minimum_abi=(1, 51),
        minimum_report_version=3,
        require_revocation_check=True,
    )
    assert vmpl == 1


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("schema_version: 1\nminimum_tcb: {snp: 300}\n", "p.yaml:2:20: error: minimum_tcb.snp"),
        ("schema_version: 1\nminimum_tcb:\n  spn: 3\n", "p.yaml:3:3: error: minimum_tcb.spn: unknown key 'spn'; did you mean 'snp'?"),
        ("schema_version: 1\nguest_policy:\n  allow_debug: true\n", "p.yaml:3:16: error: guest_policy.allow_debug"),
        ("schema_version: 1\nguest_policy: {minimum_abi: 1.5}\n", "p.yaml:2:29: error: guest_policy.minimum_abi: expected a string"),
        ("schema_version: 1\nvmpl: 4\n", "p.yaml:2:7: error: vmpl"),
        ("minimum_report_version: 3\n", "missing required key 'schema_version'"),
        ("schema_version: 1\nminimum_report_version: [\n", "p.yaml:3:1: error: invalid YAML"),
    ],
)  # fmt: skip
def test_a_bad_policy_file_is_a_located_error(tmp_path: Path, text: str, where: str) -> None:
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(SevimgError) as caught:
        load_policy_file(tmp_path / "p.yaml")
    shown = str(caught.value) + "".join(f"\n{p}" for p in caught.value.problems)
    assert where in shown, shown


def test_flags_override_the_file_one_by_one(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(GOOD)
    flags = Overrides(minimum_tcb=("snp=0", "tee=1"), refuse_smt=False, vmpl=0, minimum_abi="2.0")
    policy, vmpl = resolve(tmp_path / "p.yaml", flags)
    assert policy.minimum_tcb == MinimumTcb(bootloader=3, tee=1, snp=0, microcode=200)
    assert policy.allow_smt is True and policy.require_single_socket is True
    assert policy.minimum_abi == (2, 0) and vmpl == 0


@pytest.mark.parametrize("value", ["snp", "snp=", "spn=3", "snp=256", "snp=-1", "snp=x"])
def test_a_bad_min_tcb_flag_is_refused(value: str) -> None:
    with pytest.raises(SevimgError, match="--min-tcb"):
        resolve(None, Overrides(minimum_tcb=(value,)))


# --- the command line -----------------------------------------------------------------


@pytest.fixture
def case(tmp_path: Path) -> Path:
    return kit.verify_case(tmp_path)


def args(case: Path, *more: str) -> list[str]:
    return kit.verify_args(case, *more)


def test_verify_applies_a_policy_file_and_flags_over_it(cli: CliFn, case: Path) -> None:
    (case / "p.yaml").write_text("schema_version: 1\nminimum_tcb: {snp: 24}\n")
    run = cli(*args(case, "--policy", str(case / "p.yaml"), "--json"))
    assert run.code == 1, run.output
    doc = json.loads(run.stdout)
    failed = [c for c in doc["checks"] if c["verdict"] == "fail"]
    assert [c["name"] for c in failed] == ["minimum TCB"] and "snp 23 < 24" in failed[0]["reason"]
    assert doc["policy"]["minimum_tcb"]["snp"] == 24 and doc["failure"] == Failure.EVIDENCE
    lowered = cli(*args(case, "--policy", str(case / "p.yaml"), "--min-tcb", "snp=23"))
    assert lowered.code == 0, lowered.output


@pytest.mark.parametrize(
    ("flags", "check"),
    [
        (["--refuse-smt"], "guest policy"),
        (["--require-single-socket"], "guest policy"),
        (["--min-report-version", "5"], None),
        (["--min-abi", "9.0"], "guest policy"),
        (["--min-tcb", "microcode=214"], "minimum TCB"),
    ],
)
def test_each_policy_flag(cli: CliFn, case: Path, flags: list[str], check: str | None) -> None:
    run = cli(*args(case, *flags, "--json"))
    doc = json.loads(run.stdout)
    failed = [c["name"] for c in doc["checks"] if c["verdict"] == "fail"]
    assert failed == ([check] if check else []) and run.code == (1 if check else 0)


def test_a_migration_agent_is_refused_unless_allowed(cli: CliFn, case: Path) -> None:
    (case / "report.bin").write_bytes(kit.signed_report(replace(ReportSpec(), policy=0x30000 | MA)))
    assert cli(*args(case)).code == 1
    assert cli(*args(case, "--allow-migration-agent")).code == 0


def test_a_bad_policy_file_exits_2_with_its_location_in_json(cli: CliFn, case: Path) -> None:
    (case / "p.yaml").write_text("schema_version: 1\nguest_policy:\n  allow_debug: true\n")
    run = cli(*args(case, "--policy", str(case / "p.yaml"), "--json"))
    assert run.code == 2
    doc = json.loads(run.stdout)
    assert doc["failure"] == "usage"
    (problem,) = doc["problems"]
    assert (problem["line"], problem["field"]) == (3, "guest_policy.allow_debug")
    plain = cli(*args(case, "--policy", str(case / "p.yaml")))
    assert plain.code == 2 and "p.yaml:3:16" in plain.stderr and plain.stdout == ""
