"""The SEV-SNP floors have one home (sevimg_cert.floors) and one rule everywhere.

Without SEV-SNP support at all a version fails; below the guide's floor it is
a warning, never a failure: in `validate`, `archive`, `doctor --sev-host`, the
post-build check and the in-image harness alike.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sevimg.catalog.versions import HOST_FLOORS, Verdict
from sevimg_cert import floors, hostinfo, prereqs
from sevimg_cert.result import Outcome, Step
from tests import harnesskit
from tests.conftest import REPO, CliFn

# (component, no SEV-SNP at all, below the guide's floor, at the guide's floor)
CASES = [
    ("kernel", "6.10", None, "6.11"),
    ("qemu", "9.0.2", "9.1.3", "9.2.0"),
    ("ovmf", "2021.11", "2024.08", "2024.11"),
]


@pytest.mark.parametrize(("component", "fails", "warns", "passes"), CASES)
def test_the_catalog_and_the_harness_judge_alike(
    component: str, fails: str, warns: str | None, passes: str
) -> None:
    catalog = next(f for f in HOST_FLOORS if f.component == component)
    harness = next(f for f in floors.HOST_FLOORS if f.component == component)
    numbers = {v: tuple(int(x) for x in v.split(".")[:2]) for v in (fails, warns, passes) if v}
    assert catalog.check(fails) is Verdict.FAIL
    assert harness.judge(numbers[fails]) is floors.Verdict.FAIL
    if warns is not None:
        assert catalog.check(warns) is Verdict.WARN
        assert harness.judge(numbers[warns]) is floors.Verdict.WARN
    assert catalog.check(passes) is Verdict.OK
    assert harness.judge(numbers[passes]) is floors.Verdict.OK


def test_the_floors_are_written_down_once() -> None:
    # No other module may hold a copy of a floor's numbers, as (9, 2) or "9.2".
    copies = re.compile(r"\((?:6, 11|9, [12]|2024, 11|2022, 2)\)|\"(?:6\.11|9\.[12]|2024\.11)\"")
    found = [
        f"{p.relative_to(REPO)}: {m.group(0)}"
        for p in sorted((REPO / "src").rglob("*.py"))
        if p.name != "floors.py"
        for m in copies.finditer(p.read_text())
    ]
    assert found == []


def qemu_step(tmp_path: Path, version: str) -> tuple[Step, str | None]:
    host = harnesskit.fake_host(tmp_path, qemu_version=version)
    return prereqs.check_qemu(hostinfo.Host(host.root, hostinfo.image_env(host.root)))


def test_the_harness_fails_only_without_snp_support(tmp_path: Path) -> None:
    old, _ = qemu_step(tmp_path / "old", "8.2.2")
    assert old.result is Outcome.FAIL and "no SEV-SNP support" in old.detail
    below, _ = qemu_step(tmp_path / "below", "9.1.3")
    assert below.result is Outcome.PASS and "guide's floor 9.2" in below.warning
    fine, _ = qemu_step(tmp_path / "fine", "9.2.0")
    assert fine.result is Outcome.PASS and fine.warning == "" and "warning" not in fine.as_dict()


@pytest.mark.parametrize(("version", "status"), [("9.1.3", "WARN"), ("8.2.2", "FAIL")])
def test_doctor_sev_host_follows_the_same_rule(
    cli: CliFn, workspace: Path, tmp_path: Path, version: str, status: str
) -> None:
    host = harnesskit.fake_host(tmp_path, sev_snp="Y", snphost=None, qemu_version=version)
    for family in (workspace / "images/families").glob("*.yaml"):  # the fake QEMU, everywhere
        text = re.sub(
            r"(?m)^qemu_binaries: .*$",
            f"qemu_binaries: [{tmp_path}/bin/qemu-system-x86_64]",
            family.read_text(),
        )
        family.write_text(text)
    ran = cli("doctor", "--sev-host", "--json", "--sysroot", str(host.root))
    checks = {c["check"]: c for c in json.loads(ran.stdout)["checks"]}
    assert checks["SEV host: qemu"]["status"] == status, checks["SEV host: qemu"]
    assert checks["SEV host: kernel"]["status"] in ("OK", "FAIL")  # this machine's own kernel
    if status == "WARN":
        assert "guide's floor 9.2" in checks["SEV host: qemu"]["detail"]


def test_fedora_41_validates_with_a_warning(cli: CliFn, workspace: Path) -> None:
    ran = cli("validate", "fedora-41")
    assert ran.code == 0, ran.output
    assert "warning: versions.qemu: qemu 9.1.3 meets the hard floor 9.1" in ran.output
