"""The `cryptography` versions pyproject.toml allows read AMD's certificates.

AMD's certificates encode RSA-PSS parameters with an explicit default
trailer field, which cryptography 41 and 42 refuse to parse (EncodedDefault),
and every VCEK has serial number 0, which cryptography warns about and says
a future release will refuse. So the range is pinned, and these tests
install its lowest and highest versions (and the one just below it) from
PyPI into a fresh virtual environment and verify the real evidence of
tests/data/evidence there, with warnings as errors.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROGRAM = """
import json, sys, warnings
from pathlib import Path
warnings.simplefilter("error")
from datetime import datetime
import cryptography
from sevimg_cert import certs, crl, verify
from sevimg_cert.report import Product
out = {"version": cryptography.__version__, "sets": {}}
for folder in sorted(Path(sys.argv[1]).iterdir()):
    if not (folder / "report.bin").is_file():
        continue
    expect = json.loads((folder / "expect.json").read_text())
    raw = (folder / "report.bin").read_bytes()
    given = Product.parse(expect["product"]) if expect["version"] == 2 else None
    amd = folder / "crl.der"  # AMD's CRL, read and checked at a time it is current
    crls = (crl.parse_crl(amd.read_bytes(), str(amd)),) if amd.is_file() else ()
    at = datetime.fromisoformat(expect.get("crl_current_at", "2026-07-01T00:00:00Z"))
    expected = verify.Expected(
        raw[0x50:0x90], raw[0x90:0xC0], expect["vmpl"], crls=crls, now=lambda: at
    )
    result = verify.verify(raw, lambda _, f=folder: certs.load_folder(f), expected, product=given)
    out["sets"][folder.name] = {
        c.name: c.reason for c in result.checks
        if c.verdict != "pass" and c.required and not (c.name == "debug policy" and expect["debug"])
    }
    if crls and result.checks[-1].verdict != "pass":
        out["sets"][folder.name]["revocation"] = result.checks[-1].reason
print(json.dumps(out))
"""


def _range() -> tuple[str, str]:
    """(lowest allowed, exclusive top) from pyproject's cryptography requirement."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if d.startswith("cryptography"))
    found = re.fullmatch(r"cryptography>=([\d.]+),<([\d.]+)", spec)
    assert found, f"pyproject pins cryptography as {spec!r}, not >=LOW,<TOP"
    return found[1], found[2]


def _run_with(requirement: str, tmp: Path) -> dict[str, object]:
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", "--only-binary=:all:", requirement],
        capture_output=True,
        text=True,
        check=False,
    )
    if install.returncode:
        pytest.fail(f"pip cannot install {requirement} (needs PyPI): {install.stderr[-2000:]}")
    run = subprocess.run(
        [str(venv / "bin/python"), "-c", PROGRAM, str(REPO / "tests/data/evidence")],
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result: dict[str, object] = json.loads(run.stdout)
    return result


@pytest.mark.network
@pytest.mark.parametrize("end", ["lowest", "highest"])
def test_the_ends_of_the_allowed_range_verify_every_real_report(end: str, tmp_path: Path) -> None:
    low, top = _range()
    requirement = f"cryptography=={low}" if end == "lowest" else f"cryptography>={low},<{top}"
    result = _run_with(requirement, tmp_path)
    if end == "lowest":
        assert str(result["version"]).split(".")[:2] == [*low.split("."), "0"][:2]
    sets = result["sets"]
    assert isinstance(sets, dict) and len(sets) >= 10
    assert {name: problems for name, problems in sets.items() if problems} == {}


@pytest.mark.network
def test_the_version_below_the_range_is_refused_with_a_reason(tmp_path: Path) -> None:
    """What the in-image verifier says on a distribution whose python3-cryptography is older."""
    low, _ = _range()
    major = int(low.split(".")[0])
    result = _run_with(f"cryptography<{major}", tmp_path)
    sets = result["sets"]
    assert isinstance(sets, dict)
    refused = [
        name
        for name, problems in sets.items()
        if "cannot read AMD's certificates" in problems.get("certificates", "")
    ]
    assert sorted(refused) == sorted(sets), sets
