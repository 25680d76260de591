"""Every numeric option refuses what is not a finite number in its range: exit 1, the option named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CliFn

# (command before the option, option, whole numbers only)
OPTIONS = [
    (("archive", "debian-13", "--offline"), "--timeout", False),
    (("doctor", "--no-network"), "--timeout", False),
    (("run", "guest.efi", "--dry-run"), "--timeout", False),
    (("run", "guest.efi", "--dry-run"), "--memory", True),
    (("measure", "debian-13"), "--vcpus", True),
    (("verify", "report.bin"), "--vmpl", True),
    (("verify", "report.bin"), "--kds-attempts", True),
]
BAD = [
    "nan",
    "NaN",
    "-nan",
    "inf",
    "-inf",
    "Infinity",
    "1e309",
    "-1e309",
    "-1",
    "-0.5",
    "yes",
    "true",
    "",
    " ",
    "1\n",
    "\n1",
    "1\x00",
    "0x10",
    "1e",
    "\u0661",  # ARABIC-INDIC DIGIT ONE
    "9" * 5000,
    "99999999999999999999",
]
BAD_INTEGER = ["1.5", "2.0", "1e3"]


@pytest.mark.parametrize(("before", "option", "integer"), OPTIONS, ids=str)
def test_numeric_options_refuse_odd_values(
    cli: CliFn, tmp_path: Path, before: tuple[str, ...], option: str, integer: bool
) -> None:
    (tmp_path / "guest.efi").write_bytes(b"MZ")
    (tmp_path / "report.bin").write_bytes(b"\0" * 1184)
    args = [str(tmp_path / a) if a in ("guest.efi", "report.bin") else a for a in before]
    for value in BAD + (BAD_INTEGER if integer else []):
        run = cli(*args, option, value)
        # verify's bad usage has its own documented exit code (2); the others exit 1.
        assert run.code == (2 if before[0] == "verify" else 1), (option, value, run.output)
        assert f"Invalid value for '{option}'" in run.stderr, (option, value, run.output)
        assert "internal error" not in run.output and "Traceback" not in run.output
