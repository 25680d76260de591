"""The console of a host run: nothing that looks like a failure that is not one, the
summary last.

A FAIL or ERROR result is a run that worked: the unit counts the harness's
exit status for them as success (systemd would otherwise print "FAILED Failed
to start sevimg-host-check" in the middle of the framed result), checked with
the real systemd-analyze; the harness's own output ends with the verdict.
"""

from __future__ import annotations

from pathlib import Path

from sevimg.imaging import judge
from sevimg_cert import framing
from sevimg_cert.harness import EXIT_STATUS
from sevimg_cert.result import Outcome
from tests import harnesskit
from tests.conftest import CliFn
from tests.harnesskit import fake_host

UNIT = "extra/usr/lib/systemd/system/sevimg-host-check.service"


def test_the_unit_counts_designed_outcomes_as_success(cli: CliFn, workspace: Path) -> None:
    assert cli("render", "debian-13", "--mkosi-version", "25.3").code == 0
    tree = workspace / "build/host-debian-13"
    lines = (tree / UNIT).read_text().splitlines()
    (success,) = [line for line in lines if line.startswith("SuccessExitStatus=")]
    designed = {str(EXIT_STATUS[o]) for o in (Outcome.FAIL, Outcome.ERROR)}
    assert set(success.split("=", 1)[1].split()) == designed
    assert str(EXIT_STATUS[Outcome.PASS]) == "0"
    # The real systemd-analyze accepts the unit (and the tree's other units).
    assert judge.unit_problems(tree) == []


def test_the_console_ends_with_the_summary(tmp_path: Path) -> None:
    host = fake_host(tmp_path, sev_snp="N")
    done = harnesskit.run_harness(host)
    assert done.returncode == EXIT_STATUS[Outcome.FAIL], done.stderr
    tail = done.stdout.split(framing.END_MARK)[-1].splitlines()
    # After the frame's last mark: only the summary, framed by rules, and nothing else.
    assert tail[0] == "" or framing.END_MARK not in tail[0]
    body = [line for line in tail[1:] if line.strip()]
    assert body[0] == body[-1] == "=" * 72, body
    assert body[1] == "sevimg certification: FAIL - no level achieved"
    assert any(line.startswith("  failed: host_prerequisites/sev_snp") for line in body)
    assert done.stdout.rstrip().endswith("=" * 72)
    # The frame itself is intact and is the written result.
    assert framing.unframe(done.stdout) == (host.root / "run/sevimg/result.json").read_bytes()
