"""The host's certification run (level 3.0.0-0): `python3 -m sevimg_cert.harness`.

Steps, each named with its evidence: the prerequisites (sevimg_cert.prereqs),
the expected launch measurement of the embedded guest, the guest launched
with SEV-SNP and a channel, a fresh 64-byte nonce answered with an
attestation report, and the report verified (sevimg_cert.verify) against
AMD's chain from a local certificate folder (/etc/sevimg/certs), else from
KDS: `sevimg.kds=URL` on the kernel command line when given, else the KDS
cache of each dispatch server found (`sevimg serve` keeps one at /kds, so a
lab's hosts reach nothing but the lab machine), then AMD's KDS. A failed prerequisite skips
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
import importlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sevimg_cert import framing, guard, guestrun, hostinfo, prereqs
from sevimg_cert.outputs import Dispatch, Log, now_utc
from sevimg_cert.peerhttp import Deadline
from sevimg_cert.result import (
    CertResult,
    Environment,
    Evidence,
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
    kds_mirrors: tuple[str, ...] = ()  # the dispatch servers' KDS caches, tried before AMD's
    trusted_arks: tuple[x509.Certificate, ...] = ()  # for tests and labs with their own roots
    nonce: Callable[[], bytes] = field(default=lambda: os.urandom(NONCE_SIZE))
    measure: Callable[..., Any] | None = None  # default: sevimg_cert.measure.expected
    ask_guest: Callable[..., Any] | None = None  # default: sevimg_cert.channel.request
    dispatch: bool = True
    deadline: float = guard.DEADLINE  # the whole run, the report included
    mdns_timeout: float = 2.0  # 0: no mDNS browse for dispatch
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))  # judges a CRL's dates

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
    deadline: Deadline = field(default_factory=lambda: Deadline(guard.DEADLINE))
    current: str = "the host's facts"  # what runs now, for a deadline's message

    def test(
        self, name: str, description: str, scope: str, started: str, steps: Sequence[Step]
    ) -> Test:
        done = Test(name, description, scope, started, now_utc(), tuple(steps))
        self.tests.append(done)
        self.current = f"what follows {name}"
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
    # The guest gets what is left of the run's deadline at most.
    guest_timeout = max(1.0, min(config.guest_timeout, state.deadline.remaining()))
    answer, launch_steps = guestrun.launch_and_ask(
        host, nonce, config.state / "guest-console.log", config.ask_guest, guest_timeout, log
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
        kds_mirrors=config.kds_mirrors,
        # KDS gives up a little before the run does, so its failure is the step's detail.
        deadline=state.deadline.within(state.deadline.remaining() * 0.9),
        now=config.now,
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


def run(
    config: Config,
    echo: Callable[[str], None] | None = None,
    *,
    log: Log | None = None,
    deadline: Deadline | None = None,
) -> tuple[CertResult, Log]:
    """The whole run; never raises for what it finds (an unexpected exception is an `error` result).

    The checks run in a thread the run waits for until `deadline` (default:
    `config.deadline` from now); past it the result is an `error` naming
    the deadline, with the tests finished so far. Terminated (SIGTERM,
    sevimg_cert.guard) likewise ends it with an `error` result.
    """
    log = log or Log(echo)
    started = now_utc()
    deadline = deadline or Deadline(config.deadline, config.clock)
    env = hostinfo.image_env(config.root)
    host = hostinfo.Host(config.root, env, config.kernel_release, config.path)
    state = _Run(config, log, host, deadline=deadline)
    failure: list[str] = []

    def checks() -> None:
        try:
            _run_checks(state)
        except Exception as exc:
            failure.append(f"{type(exc).__name__}: {exc}")
            log(f"harness error: {failure[0]}")
            log(traceback.format_exc().rstrip())

    worker = threading.Thread(target=checks, name="sevimg-checks", daemon=True)
    error = None
    try:
        worker.start()
        # Short waits: the deadline may run on an injected clock, and SIGTERM lands here.
        while worker.is_alive() and not deadline.expired():
            worker.join(min(max(deadline.remaining(), 0.0), 0.5))
        if worker.is_alive():
            error = (
                f"the run's deadline ({deadline.seconds:.0f} s) passed during {state.current}; "
                "the tests finished by then are in this result"
            )
            log(f"harness error: {error}")
    except guard.Terminated:
        error = f"stopped by SIGTERM during {state.current}"
        log(f"harness error: {error}")
    error = error or (failure[0] if failure else None)
    outcome = CertResult(
        started,
        now_utc(),
        tuple(state.tests),
        state.environment,
        hostinfo.identity(config.root),
        state.evidence,
        error,
    )
    return outcome, log


# The exit status of each result. The unit (sevimg-host-check.service) counts the
# non-zero ones as success: a FAIL or ERROR result is a run that worked.
EXIT_STATUS = {Outcome.PASS: 0, Outcome.FAIL: 1, Outcome.ERROR: 2}


def main(argv: Sequence[str] | None = None) -> int:
    """Run, write, print; exit 0 for pass, 1 for fail, 2 for error.

    A result is on disk before anything talks to a peer, and the final one
    is written and framed whatever happens: a deadline, SIGTERM, a result
    that cannot be rendered (sevimg_cert.guard).
    """
    parser = argparse.ArgumentParser(prog="sevimg-host-check", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/"), help="read files below this folder")
    parser.add_argument("--state-dir", type=Path, help=f"write results here (default {STATE_DIR})")
    parser.add_argument(
        "--timeout", type=float, default=GUEST_TIMEOUT, help="seconds to wait for the guest"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=guard.DEADLINE,
        help=f"seconds for the whole run, the report included (default {guard.DEADLINE:g})",
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
        deadline=args.deadline,
    )
    return certify(config, echo)


def certify(config: Config, echo: Callable[[str], None]) -> int:
    """main() once its arguments are read: the run from start to report; the exit code."""
    started = now_utc()
    deadline = Deadline(config.deadline, config.clock)
    log = Log(echo)
    with guard.sigterm_ends_run() as stop:
        outcome: CertResult | None = None
        reporter: Dispatch | None = None
        try:
            guard.provisional(config.state, started, hostinfo.identity(config.root), log)
            reporter = Dispatch(config.root, log, config.dispatch, config.mdns_timeout)
            config = replace(config, kds_mirrors=reporter.kds_mirrors())
            reporter.booted(deadline.within(guard.boot_budget(config.deadline)))
            reserve = guard.report_budget(config.deadline)
            checks = deadline.within(max(deadline.remaining() - reserve, 0.0))
            outcome, _ = run(config, echo, log=log, deadline=checks)
        except guard.Terminated:
            log("harness error: stopped by SIGTERM")
        except Exception as exc:  # the reporter's set-up, say: still a result
            log(f"harness error: {type(exc).__name__}: {exc}")
        if outcome is None:
            why = "stopped by SIGTERM" if stop.came.is_set() else "the run failed to start"
            outcome = guard.bare(started, why, hostinfo.identity(config.root))
        stop.armed = False  # the result is written and framed whatever comes now
        outcome, _ = guard.finish(config.state, outcome, log, echo, _frame)
        stop.armed = not stop.came.is_set()
        if reporter is None:
            return 2
        try:
            if stop.came.is_set():
                reporter.report(outcome, Deadline(guard.STOPPED_REPORT_BUDGET, config.clock))
                return 2
            reporter.after(reporter.report(outcome, deadline))
        except guard.Terminated:
            log("stopped by SIGTERM while reporting: the result is written and framed above")
            return 2
    return EXIT_STATUS.get(outcome.result, EXIT_STATUS[Outcome.ERROR])


def _frame(data: bytes) -> None:
    """The framed result on the console: the copy people see."""
    sys.stdout.write(framing.frame(data))
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
