"""The sessions' selections: `nox -s full` reruns exactly the hypothesis tests, by marker."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def _collected(*args: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {line.split("::")[1].split("[")[0] for line in proc.stdout.splitlines() if "::" in line}


def test_hypothesis_tests_and_only_they_are_marked_property() -> None:
    properties = _collected("-m", "property", "tests/test_channel.py", "tests/test_properties.py")
    others = _collected("-m", "not property", "tests/test_channel.py", "tests/test_properties.py")
    assert "test_any_bytes_as_a_release_file" in properties  # @given
    assert "test_no_socket" in others  # a plain test
    assert "test_no_socket" not in properties and not properties & others
