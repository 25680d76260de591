"""`sevimg doctor`: the truth about this machine, and about simulated ones."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sevimg.catalog.index import load_catalog
from sevimg.catalog.spec import FamilyFacts
from sevimg.machine import doctor
from sevimg.machine.doctor import GIB, Machine, Status
from sevimg.workspace import Workspace
from tests import harnesskit
from tests.conftest import REPO, CliFn


def fake_root(
    tmp_path: Path, files: dict[str, str], kvm: bool = True, tools: tuple[str, ...] = ("apt-get",)
) -> Path:
    root = tmp_path / "sysroot"
    for name, content in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content + "\n")
    (root / "dev").mkdir(parents=True, exist_ok=True)
    if kvm:
        (root / "dev" / "kvm").write_text("")
    for tool in tools:
        (root / "usr" / "bin").mkdir(parents=True, exist_ok=True)
        (root / "usr" / "bin" / tool).write_text("")
    return root


UBUNTU_RESTRICTED = {
    "/etc/os-release": 'ID=ubuntu\nVERSION_ID="24.04"',
    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1",
    "/proc/sys/kernel/apparmor_restrict_unprivileged_unconfined": "0",
    "/proc/sys/user/max_user_namespaces": "63704",
}


def test_apparmor_restriction_fails_unprivileged_builds(tmp_path: Path) -> None:
    root = fake_root(tmp_path, UBUNTU_RESTRICTED)
    user = doctor.check_apparmor(Machine(root=root, uid=1000))
    assert user.status is Status.FAIL
    assert "kernel.apparmor_restrict_unprivileged_userns = 1" in user.detail
    assert "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0" in user.fix
    assert doctor.check_apparmor(Machine(root=root, uid=0)).status is Status.WARN


def test_no_apparmor_knobs_is_fine(tmp_path: Path) -> None:
    root = fake_root(tmp_path, {})
    assert doctor.check_apparmor(Machine(root=root, uid=1000)).status is Status.OK
    relaxed = fake_root(
        tmp_path / "b", {"/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "0"}
    )
    assert doctor.check_apparmor(Machine(root=relaxed, uid=1000)).status is Status.OK


@pytest.mark.parametrize(
    ("files", "uid", "status"),
    [
        ({}, 0, Status.OK),
        ({"/proc/sys/kernel/unprivileged_userns_clone": "1"}, 1000, Status.OK),
        ({"/proc/sys/kernel/unprivileged_userns_clone": "0"}, 1000, Status.FAIL),
        ({"/proc/sys/user/max_user_namespaces": "0"}, 1000, Status.FAIL),
        ({"/proc/sys/user/max_user_namespaces": "0"}, 0, Status.OK),
    ],
)
def test_privileges(tmp_path: Path, files: dict[str, str], uid: int, status: Status) -> None:
    assert (
        doctor.check_privileges(Machine(root=fake_root(tmp_path, files), uid=uid)).status is status
    )


@pytest.mark.parametrize(
    ("free_gib", "status"), [(100, Status.OK), (8, Status.WARN), (2, Status.FAIL)]
)
def test_disk(tmp_path: Path, free_gib: int, status: Status) -> None:
    machine = Machine(root=tmp_path, disk_usage=lambda _p: (500 * GIB, 0, free_gib * GIB))
    result = doctor.check_disk(machine, tmp_path / "not" / "yet" / "made")
    assert result.status is status
    assert f"{free_gib:.1f} GiB free at {tmp_path}" in result.detail


def test_kvm_and_package_manager(tmp_path: Path) -> None:
    assert (
        doctor.check_kvm(Machine(root=fake_root(tmp_path / "a", {}, kvm=False))).status
        is Status.WARN
    )
    assert (
        doctor.check_package_manager(Machine(root=fake_root(tmp_path / "b", {}, tools=()))).status
        is Status.FAIL
    )
    assert (
        "dnf"
        in doctor.check_package_manager(
            Machine(root=fake_root(tmp_path / "c", {}, tools=("dnf",)))
        ).detail
    )


def test_mkosi_missing_and_too_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("SEVIMG_MKOSI", raising=False)
    missing = doctor.check_mkosi(tmp_path / "no-cache")
    assert missing.status is Status.FAIL and missing.fix == "tools/install-mkosi 25.3"
    old = tmp_path / "mkosi"
    old.write_text("#!/bin/sh\necho 'mkosi 24'\n")
    old.chmod(0o755)
    monkeypatch.setenv("SEVIMG_MKOSI", str(old))
    result = doctor.check_mkosi(tmp_path / "no-cache")
    assert result.status is Status.FAIL and "older than 25.3" in result.detail


@pytest.fixture
def http_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/debian"
    server.shutdown()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/ubuntu"


def test_mirrors(http_server: str) -> None:
    results = doctor.check_mirrors(
        [("debian", http_server), ("ubuntu", closed_port_url())], timeout=2
    )
    by_name = {r.check: r for r in results}
    assert by_name["mirror debian"].status is Status.OK
    assert by_name["mirror ubuntu"].status is Status.WARN
    assert "ubuntu images cannot be built here" in by_name["mirror ubuntu"].detail
    nothing = doctor.check_mirrors([("ubuntu", closed_port_url())], timeout=2)
    assert [r.status for r in nothing] == [Status.FAIL]


def test_doctor_on_a_simulated_ubuntu_as_json(cli: CliFn, tmp_path: Path) -> None:
    root = fake_root(tmp_path, UBUNTU_RESTRICTED, kvm=False)
    run = cli("doctor", "--json", "--no-network", "--sysroot", str(root))
    data = json.loads(run.stdout)
    checks = {c["check"]: c for c in data["checks"]}
    assert checks["kvm"]["status"] == "WARN"
    # running as root here: the restriction is a warning, not a failure
    assert checks["apparmor userns"]["status"] == "WARN"
    assert run.code == (0 if data["ok"] else 1)


@pytest.mark.network  # asks Debian's archive (and the other mirrors) over the network
def test_doctor_tells_the_truth_here(cli: CliFn) -> None:
    run = cli("doctor", "--json", "--timeout", "5")
    checks = {c["check"]: c for c in json.loads(run.stdout)["checks"]}
    assert checks["mkosi"]["status"] == "OK"  # nox -s tests installs mkosi first
    assert checks["package manager"]["status"] == "OK"
    assert checks["kvm"]["status"] == ("OK" if Path("/dev/kvm").exists() else "WARN")
    assert checks["mirror debian"]["status"] == "OK", checks[
        "mirror debian"
    ]  # Debian's archive is reachable here
    assert {
        "mirror fedora",
        "mirror centos",
        "mirror rocky",
        "mirror alma",
        "mirror ubuntu",
    } <= set(checks)
    assert run.code == 0, run.output
    table = cli("doctor", "--no-network")
    assert "sevimg doctor" in table.stdout and "privileges" in table.stdout


def test_doctor_outside_a_workspace(sevimg_process: CliFn) -> None:
    run = sevimg_process("doctor", "--no-network", "--json", cwd=REPO / "tests" / "golden")
    assert json.loads(run.stdout)["checks"][0]["check"] == "mkosi"


@pytest.fixture
def refusing_server() -> Iterator[str]:
    """Answers 400, as this environment's mirror does for debian-debug."""

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(400)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/debian-debug/dists/trixie-debug/InRelease"
    server.shutdown()


def _probing(url: str) -> FamilyFacts:
    """The catalog's Debian family, its debug archive probed at `url`."""
    family = load_catalog(Workspace(REPO)).families["debian"][1]
    assert family.apt_debug_probe  # the family file names the probe
    return dataclasses.replace(family, apt_debug_probe=url)


def test_debian_debug_refused(refusing_server: str, http_server: str) -> None:
    refused = doctor.check_debug_sources(_probing(refusing_server), False, timeout=2)
    assert (
        refused.status is Status.WARN
        and refused.check == "debian sources"
        and "HTTP 400" in refused.detail
        and refused.detail.startswith("debian-debug, which mkosi adds to Debian images")
        and "mirrors.debian" in refused.fix
    )
    assert doctor.check_debug_sources(_probing(http_server), False, timeout=2).status is Status.OK
    assert (
        doctor.check_debug_sources(_probing(refusing_server), True, timeout=2).status is Status.OK
    )


def test_doctor_reports_a_broken_local_file(cli: CliFn, workspace: Path) -> None:
    (workspace / "sevimg.local.yaml").write_text("schema_version: 1\nmirors: {}\n")
    run = cli("doctor", "--no-network", "--json")
    checks = {c["check"]: c for c in json.loads(run.stdout)["checks"]}
    assert (
        checks["local settings"]["status"] == "FAIL"
        and "unknown key 'mirors'" in checks["local settings"]["detail"]
    )
    assert run.code == 1


def test_sev_host_fails_cleanly_without_snp(cli: CliFn, tmp_path: Path) -> None:
    """This machine has no SEV-SNP: every missing piece is a FAIL with its fix, exit 1, no traceback."""
    host = harnesskit.fake_host(tmp_path, kvm_amd=False, firmware=False, snphost=None)
    ran = cli("doctor", "--sev-host", "--json", "--sysroot", str(host.root))
    assert ran.code == 1 and "Traceback" not in ran.output
    checks = {c["check"]: c for c in json.loads(ran.stdout)["checks"]}
    assert checks["SEV host: sev_snp"]["status"] == "FAIL"
    assert "kvm_amd is not loaded" in checks["SEV host: sev_snp"]["detail"]
    assert "BIOS" in checks["SEV host: sev_snp"]["fix"]
    assert checks["SEV host: sev_firmware"]["status"] == "FAIL"
    assert checks["SEV host: snphost_ok"]["status"] == "WARN"  # an extra tool on a user's host
    assert "SEV host: guest_image" not in checks  # there is no embedded guest on a user's host
    table = cli("doctor", "--sev-host", "--sysroot", str(host.root))
    assert table.code == 1 and "SEV host: sev_snp" in table.stdout and "FAIL" in table.stdout


def test_sev_host_reads_snp_and_firmware_below_the_root(cli: CliFn, tmp_path: Path) -> None:
    host = harnesskit.fake_host(tmp_path, sev_snp="Y", snphost=None)
    ran = cli("doctor", "--sev-host", "--json", "--sysroot", str(host.root))
    checks = {c["check"]: c for c in json.loads(ran.stdout)["checks"]}
    assert checks["SEV host: sev_snp"]["status"] == "OK"
    assert checks["SEV host: ovmf"]["status"] == "OK"
    assert "2025.02-8" in checks["SEV host: ovmf"]["detail"]
