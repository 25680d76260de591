"""Output folders: symlinks planted there are replaced, never written through; one server per results folder.

An out/ folder may be shared or left by someone else: `logs/x.log ->
/etc/shadow` must not make a build (run as root, as image builds are)
overwrite the link's target. Every file sevimg writes there, under its
final or its temporary name, is tried with a link to a victim file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.artifactkit import make_folder
from tests.conftest import CliFn

PLANTED = [
    "logs/guest-debian-13.log",
    "logs/tools-tree.log",
    ".guest-debian-13.efi.partial",
    "guest-debian-13.efi",
    "guest-debian-13.manifest.json",
    "SHA256SUMS",
]


@pytest.mark.parametrize("dangling", [False, True], ids=["to a file", "dangling"])
@pytest.mark.parametrize("planted", PLANTED)
def test_a_planted_symlink_is_replaced_not_followed(
    cli: CliFn, tmp_path: Path, fake_mkosi: Path, planted: str, dangling: bool
) -> None:
    victim = tmp_path / "victim" / "shadow"
    victim.parent.mkdir()
    if not dangling:
        victim.write_text("precious\n")
    out = tmp_path / "out"
    link = out / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim)
    run = cli("build", "debian-13", "--role", "guest", "-o", str(out), "--without-tools")
    assert run.code == 0, run.output
    if dangling:
        assert not victim.exists()
    else:
        assert victim.read_text() == "precious\n"
    assert not link.is_symlink()
    assert (out / "guest-debian-13.efi").is_file()
    assert not (out / ".guest-debian-13.efi.partial").exists()
    assert sorted(p.name for p in victim.parent.iterdir()) == ([] if dangling else ["shadow"])


@pytest.mark.parametrize(
    "command",
    [
        ["serve", "--bind", "127.0.0.1:0"],
        # Fails on the lock before QEMU starts (QEMU and OVMF are only looked up).
        ["run", "debian-13", "--role", "host", "--no-sev"],
    ],
    ids=["serve", "run-host"],
)
def test_two_runs_never_share_a_results_folder(
    cli: CliFn, tmp_path: Path, command: list[str]
) -> None:
    """A second run on the same --results fails naming the first, and leaves its files alone."""
    folder = make_folder(tmp_path / "out", ["debian-13"])
    results = tmp_path / "results"
    results.mkdir()
    (results / "results.json").write_text("{}\n")
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(results)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert first.stdout is not None and first.stdout.readline() == "held\n"
        run = cli(*command, "--from", str(folder), "--results", str(results))
    finally:
        first.terminate()
        first.wait(timeout=10)
    assert run.code == 1, run.output
    assert f"the results folder {results} is in use by another sevimg run (pid {first.pid}" in (
        run.stderr
    )
    assert "(--results DIR)" in run.stderr
    assert sorted(p.name for p in results.iterdir()) == ["results.json"]
    assert (results / "results.json").read_text() == "{}\n"


# Holds the folder's lock the way a running sevimg does (sevimg.lock).
HOLD = """
import sys, time
import subprocess
import sys
from pathlib import Path
from sevimg import lock
with lock.hold(Path(sys.argv[1]), "the results folder"):
    print("held", flush=True)
    time.sleep(60)
"""
