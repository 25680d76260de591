"""The host's certification run (level 3.0.0-0): `python3 -m sevimg_cert.harness`.

Steps, each named with its evidence: the prerequisites (sevimg_cert.prereqs),
the expected launch measurement of the embedded guest, the guest launched
with SEV-SNP and a channel, a fresh 64-byte nonce answered with an
attestation report, and the report verified (sevimg_cert.verify) against
AMD's chain from KDS (`sevimg.kds=URL` on the kernel command line) or a
local certificate folder (/etc/sevimg/certs). A failed prerequisite skips
the later steps with the reason; an unexpected exception gives an `error`
result. Every run writes a result: /run/sevimg/result.json, result.md and
harness.log, and prints the steps, a summary and the framed JSON on stdout
(the unit sends it to the journal and the console).

Files are read below `--root` (default /) so tests can run this against a
fake root; programs come from /etc/sevimg/image.env or PATH. This module is
the run's flow; the guest's launch is sevimg_cert.guestrun's, the machine
sevimg_cert.hostinfo's, and the files, summary and dispatch report
sevimg_cert.outputs'.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sevimg_cert import framing, guestrun, hostinfo, prereqs, result
from sevimg_cert.outputs import Dispatch, Log, now_utc, summary, write_results
from sevimg_cert.result import (
    CertResult,
    Environment,
    Evidence,
    Identity,
    Outcome,
    Step,
    Test,
    skipped,
)

if TYPE_CHECKING:
    from cryptography import x509

STATE_DIR = "/run/sevimg"
ATTESTATION = "The guest's report verified against AMD's chain"
GUEST_TIMEOUT = 600.0
NONCE_SIZE = 64


@dataclass(frozen=True)
class Config:
    """How to run: where the files are, and the parts tests replace."""

    root: Path = Path("/")
    state_dir: Path | None = None  # default: <root>/run/sevimg
    kernel_release: str = field(default_factory=lambda: os.uname().release)
    path: str | None = None
    guest_timeout: float = GUEST_TIMEOUT
    kds_attempts: int = 6
    trusted_arks: tuple[x509.Certificate, ...] = ()  # for tests and labs with their own roots
    nonce: Callable[[], bytes] = field(default=lambda: os.urandom(NONCE_SIZE))
    measure: Callable[..., Any] | None = None  # default: sevimg_cert.measure.expected
    ask_guest: Callable[..., Any] | None = None  # default: sevimg_cert.channel.request
    dispatch: bool = True
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))  # judges a CRL's dates

    @property
    def state(self) -> Path:
        """Where the result files go."""
        return self.state_dir or self.root / STATE_DIR.lstrip("/")


def kernel_cmdline_setting(root: Path, key: str) -> str | None:
    """`key=value` from /proc/cmdline below `root`, the last one winning."""
    try:
        words = (root / "proc/cmdline").read_text(errors="replace").split()
    except OSError:
        return None
    found = None
    for word in words:
        if word.startswith(f"{key}="):
            found = word.split("=", 1)[1]
    return found


def _slug(name: str) -> str:
    return "_".join(name.lower().replace("-", " ").split())


@dataclass
class _Run:
    """The run's mutable state while it goes; turned into a CertResult at the end."""

    config: Config
    log: Log
    host: hostinfo.Host
    tests: list[Test] = field(default_factory=list)
    environment: Environment = field(default_factory=Environment)
    evidence: Evidence = field(default_factory=Evidence)

    def test(
        self, name: str, description: str, scope: str, started: str, steps: Sequence[Step]
    ) -> Test:
        done = Test(name, description, scope, started, now_utc(), tuple(steps))
        self.tests.append(done)
        for step in steps:
            self.log(framing.step_line(name, step))
        return done


def _measure(state: _Run) -> bytes | None:
    """The expected launch measurement of the embedded guest for this host's SEV OVMF."""
    config, host = state.config, state.host
    started = now_utc()
    ovmf = host.file(hostinfo.sev_firmware_path(host))
    kernel = host.file(host.env.get("SEVIMG_GUEST_EFI", ""))
    measurement: bytes | None = None
    try:
        measurement = guestrun.expected_measurement(config.measure, ovmf, kernel)
        step = Step(
            "measure",
            Outcome.PASS,
            f"{measurement.hex()} ({guestrun.VCPU_TYPE}, {guestrun.VCPUS} vCPU, kernel hashes)",
        )
    except ImportError as exc:
        step = Step("measure", Outcome.FAIL, f"sev-snp-measure is not in this image: {exc}")
    except Exception as exc:  # MeasureError, OSError, ValueError: a failed step, not a crash
        step = Step("measure", Outcome.FAIL, f"cannot compute the measurement: {exc}")
    state.test(
        "expected_measurement", "Launch measurement of the embedded guest", "host", started, [step]
    )
    state.evidence = replace(state.evidence, expected_measurement=measurement)
    return measurement


def _run_checks(state: _Run) -> None:
    config, host, log = state.config, state.host, state.log
    root = config.root
    release = hostinfo.os_release(root)
    cpu = hostinfo.cpu(root)
    state.environment = replace(
        state.environment,
        kernel_version=host.kernel_release,
        host_os_id=release.get("ID"),
        host_os_name=release.get("NAME"),
        host_os_release=release.get("VERSION_ID") or release.get("VERSION_CODENAME"),
        host_os_pretty_name=release.get("PRETTY_NAME"),
        image=host.env.get("SEVIMG_IMAGE_ID"),
        guest_image=host.env.get("SEVIMG_GUEST_IMAGE_ID"),
        qemu_binary=host.which(hostinfo.qemu_program(host)) or hostinfo.qemu_program(host),
        ovmf_path=hostinfo.sev_firmware_path(host) or None,
        processor=cpu.describe() if cpu else None,
    )
    log(
        f"host {host.env.get('SEVIMG_IMAGE_ID', '?')} on {release.get('PRETTY_NAME', '?')}, kernel {host.kernel_release}"
    )
    log(f"processor: {cpu.describe() if cpu else 'unknown (no CPUID, no /proc/cpuinfo)'}")

    # 1. prerequisites
    started = now_utc()
    found = prereqs.check_all(host)
    state.environment = replace(
        state.environment, qemu_version=found.qemu_version, ovmf_version=found.ovmf_version
    )
    state.test(
        "host_prerequisites",
        "SEV-SNP enabled, SEV firmware, kernel/QEMU/OVMF floors, snphost ok, embedded guest",
        "host",
        started,
        found.steps,
    )
    # 2. expected measurement: it needs only the two files, so it is computed even where
    #    SNP is missing: the evidence carries it, and it proves the image's sev-snp-measure.
    files_missing = [s.name for s in found.failed if s.name in ("sev_firmware", "guest_image")]
    measurement: bytes | None = None
    if files_missing:
        state.test(
            "expected_measurement",
            "Launch measurement of the embedded guest",
            "host",
            now_utc(),
            skipped(["measure"], "prerequisite failed: " + ", ".join(files_missing)),
        )
    else:
        measurement = _measure(state)
    if found.failed:
        why = "prerequisite failed: " + ", ".join(s.name for s in found.failed)
        at = now_utc()
        state.test(
            "guest_launch",
            "The guest launched with SEV-SNP answers a nonce",
            "guest",
            at,
            skipped(["launch", "answer", "sev_snp_active", "report"], why),
        )
        state.test("attestation", ATTESTATION, "guest", at, skipped(["verify"], why))
        return

    # 3. launch and ask
    started = now_utc()
    nonce = config.nonce()
    state.evidence = replace(state.evidence, nonce=nonce)
    answer, launch_steps = guestrun.launch_and_ask(
        host, nonce, config.state / "guest-console.log", config.ask_guest, config.guest_timeout, log
    )
    state.test(
        "guest_launch",
        "The guest launched with SEV-SNP answers a nonce",
        "guest",
        started,
        launch_steps,
    )
    if answer is not None:
        state.environment = replace(
            state.environment,
            guest_os_id=guestrun.answer_field(answer, "os_id"),
            guest_os_release=guestrun.answer_field(answer, "os_version"),
            guest_kernel_version=guestrun.answer_field(answer, "kernel"),
        )

    # 4. verify
    started = now_utc()
    report = guestrun.answer_field(answer, "report") if answer is not None else None
    if not report:
        why = "no attestation report from the guest"
        state.test(
            "attestation",
            ATTESTATION,
            "guest",
            started,
            skipped(["verify"], why),
        )
        return
    state.evidence = replace(state.evidence, report=bytes(report))
    try:
        attest = importlib.import_module("sevimg_cert.attest")
    except ImportError as exc:  # python3-cryptography missing from the image
        step = Step("verify", Outcome.FAIL, f"cannot verify the report here: {exc}")
        state.test("attestation", ATTESTATION, "guest", started, [step])
        return
    verified = attest.verify_report(
        config.root,
        bytes(report),
        nonce,
        measurement,
        series=cpu.series if cpu else None,
        kds_url=kernel_cmdline_setting(config.root, "sevimg.kds"),
        kds_attempts=config.kds_attempts,
        trusted_arks=config.trusted_arks,
        log=state.log,
        now=config.clock,
    )
    parsed = verified.result.report
    state.evidence = replace(
        state.evidence,
        vcek_pem=verified.vcek_pem,
        product=verified.product,
        reported_tcb=parsed.reported_tcb.as_dict() if parsed else None,
        revocation=verified.revocation,
    )
    if parsed:
        log(f"platform's reported TCB: {parsed.reported_tcb}")
    if verified.revocation:
        log(f"revocation: {verified.revocation}")
    # The verifier's rule, step for step: a required check that did not run fails the test.
    steps = [
        Step(_slug(c.name), Outcome(c.verdict.value), c.reason, optional=not c.required)
        for c in verified.result.checks
    ]
    state.test("attestation", ATTESTATION, "guest", started, steps)


def run(config: Config, echo: Callable[[str], None] | None = None) -> tuple[CertResult, Log]:
    """The whole run; never raises for what it finds (an unexpected exception is an `error` result)."""
    log = Log(echo)
    started = now_utc()
    env = hostinfo.image_env(config.root)
    host = hostinfo.Host(config.root, env, config.kernel_release, config.path)
    state = _Run(config, log, host)
    error = None
    try:
        _run_checks(state)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        log(f"harness error: {error}")
        log(traceback.format_exc().rstrip())
    release = hostinfo.os_release(config.root)
    cpu = None
    with contextlib.suppress(Exception):  # an identity without a processor is still a result
        cpu = hostinfo.cpu(config.root)
    identity = Identity(
        release.get("ID"),
        release.get("VERSION_ID") or release.get("VERSION_CODENAME"),
        cpu.series if cpu else None,
    )
    outcome = CertResult(
        started, now_utc(), tuple(state.tests), state.environment, identity, state.evidence, error
    )
    return outcome, log


def main(argv: Sequence[str] | None = None) -> int:
    """Run, write, print; exit 0 for pass, 1 for fail, 2 for error."""
    parser = argparse.ArgumentParser(prog="sevimg-host-check", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/"), help="read files below this folder")
    parser.add_argument("--state-dir", type=Path, help=f"write results here (default {STATE_DIR})")
    parser.add_argument(
        "--timeout", type=float, default=GUEST_TIMEOUT, help="seconds to wait for the guest"
    )
    parser.add_argument("--no-dispatch", action="store_true", help="do not report to dispatch")
    args = parser.parse_args(argv)

    def echo(line: str) -> None:
        print(line, flush=True)

    config = Config(
        root=args.root,
        state_dir=args.state_dir,
        guest_timeout=args.timeout,
        dispatch=not args.no_dispatch,
    )
    early = Log(echo)
    reporter = Dispatch(config.root, early, config.dispatch)
    reporter.booted()
    outcome, log = run(config, echo)
    log.lines[:0] = early.lines
    try:
        outcome = write_results(config.state, outcome, log)
    except OSError as exc:  # still frame it on the console: that is the copy people see
        log(f"cannot write the result files in {config.state}: {exc}")
        outcome = replace(outcome, log=log.text())
    data = result.to_json(outcome)
    for line in summary(outcome):
        echo(line)
    sys.stdout.write(framing.frame(data))
    sys.stdout.flush()
    reporter.after(reporter.report(outcome))
    return {Outcome.PASS: 0, Outcome.FAIL: 1}.get(outcome.result, 2)


if __name__ == "__main__":
    sys.exit(main())
