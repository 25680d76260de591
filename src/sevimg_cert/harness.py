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
fake root; programs come from /etc/sevimg/image.env or PATH.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sevimg_cert import prereqs, result
from sevimg_cert.result import CertResult, Environment, Evidence, Identity, Outcome, Step, Test

if TYPE_CHECKING:
    from cryptography import x509

STATE_DIR = "/run/sevimg"
LAUNCH_FILE = "/etc/sevimg/launch.json"
ATTESTATION = "The guest's report verified against AMD's chain"
VCPU_TYPE = "EPYC-v4"
VCPUS = 1
GUEST_TIMEOUT = 600.0
QEMU_GRACE = 5.0
NONCE_SIZE = 64
MEASUREMENT_SIZE = 48


def now_utc() -> str:
    """The time as the result format writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Log:
    """The harness log: each line timestamped, kept for harness.log and printed as it happens."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.lines: list[str] = []
        self.echo = echo

    def __call__(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self.lines.append(f"{now_utc()} {line}")
            if self.echo:
                self.echo(line)

    def text(self) -> str:
        """The whole log."""
        return "\n".join(self.lines) + ("\n" if self.lines else "")


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

    @property
    def state(self) -> Path:
        """Where the result files go."""
        return self.state_dir or self.root / STATE_DIR.lstrip("/")


def _module_function(module: str, name: str) -> Callable[..., Any]:
    """A function of a sibling module that another part of the project ships; ImportError when absent."""
    found = getattr(importlib.import_module(module), name, None)
    if not callable(found):
        raise ImportError(f"{module} has no {name}()")
    return found  # type: ignore[no-any-return]


def expected_measurement(config: Config, ovmf: Path, kernel: Path) -> bytes:
    """The expected launch measurement via sevimg_cert.measure.expected (48 bytes)."""
    measure = config.measure or _module_function("sevimg_cert.measure", "expected")
    value = measure(ovmf, kernel, vcpus=VCPUS, vcpu_type=VCPU_TYPE)
    if isinstance(value, str):
        value = bytes.fromhex(value)
    if not isinstance(value, bytes | bytearray) or len(value) != MEASUREMENT_SIZE:
        raise ValueError(f"the measurement is not {MEASUREMENT_SIZE} bytes: {value!r}")
    return bytes(value)


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


def launch_argv(host: prereqs.Host, cbitpos: int, socket: Path, console: Path) -> list[str]:
    """The SNP launch and the guest channel from /etc/sevimg/launch.json (rendered from sevimg.render.launch)."""
    path = host.file(LAUNCH_FILE)
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise LaunchError(f"{LAUNCH_FILE}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise LaunchError(f"{LAUNCH_FILE}: not JSON: {exc}") from None
    argv = doc.get("argv") if isinstance(doc, dict) else None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise LaunchError(f'{LAUNCH_FILE}: no "argv" list of strings')
    channel = doc.get("channel")
    if not isinstance(channel, list) or not channel or not all(isinstance(a, str) for a in channel):
        raise LaunchError(f'{LAUNCH_FILE}: no "channel" list of strings')
    qemu = host.which(prereqs.qemu_program(host)) or prereqs.qemu_program(host)
    values = {
        "qemu": qemu,
        "firmware": str(host.file(prereqs.sev_firmware_path(host))),
        "kernel": str(host.file(host.env.get("SEVIMG_GUEST_EFI", ""))),
        "memory_mb": str(doc.get("memory_mb", 2048)),
        "cbitpos": str(cbitpos),
        "socket": str(socket),
    }
    filled = []
    for template in [*argv, *channel]:
        arg = template
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", value)
        filled.append(arg)
    return [*filled, "-serial", f"file:{console}"]


class LaunchError(RuntimeError):
    """The guest could not be launched; the message says why."""


def _stop(child: subprocess.Popen[bytes]) -> None:
    """Stop QEMU and whatever it started: SIGTERM to its group, SIGKILL after a grace."""
    if child.poll() is not None:
        return
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=QEMU_GRACE)
    except (OSError, subprocess.TimeoutExpired):
        with contextlib.suppress(OSError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _steps_skipped(names: Sequence[str], why: str) -> tuple[Step, ...]:
    return tuple(Step(n, Outcome.SKIP, why) for n in names)


def _slug(name: str) -> str:
    return "_".join(name.lower().replace("-", " ").split())


def _guest_field(answer: object, name: str) -> Any:
    return getattr(answer, name, None)


@dataclass
class _Run:
    """The run's mutable state while it goes; turned into a CertResult at the end."""

    config: Config
    log: Log
    host: prereqs.Host
    tests: list[Test] = field(default_factory=list)
    environment: Environment = field(default_factory=Environment)
    evidence: Evidence = field(default_factory=Evidence)

    def test(
        self, name: str, description: str, scope: str, started: str, steps: Sequence[Step]
    ) -> Test:
        done = Test(name, description, scope, started, now_utc(), tuple(steps))
        self.tests.append(done)
        for step in steps:
            self.log(result.step_line(name, step))
        return done


def _run_checks(state: _Run) -> None:
    config, host, log = state.config, state.host, state.log
    root = config.root
    release = prereqs.os_release(root)
    cpu = prereqs.cpu(root)
    state.environment = replace(
        state.environment,
        kernel_version=host.kernel_release,
        host_os_id=release.get("ID"),
        host_os_name=release.get("NAME"),
        host_os_release=release.get("VERSION_ID") or release.get("VERSION_CODENAME"),
        host_os_pretty_name=release.get("PRETTY_NAME"),
        image=host.env.get("SEVIMG_IMAGE_ID"),
        guest_image=host.env.get("SEVIMG_GUEST_IMAGE_ID"),
        qemu_binary=host.which(prereqs.qemu_program(host)) or prereqs.qemu_program(host),
        ovmf_path=prereqs.sev_firmware_path(host) or None,
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
    if found.failed:
        why = "prerequisite failed: " + ", ".join(s.name for s in found.failed)
        at = now_utc()
        state.test(
            "expected_measurement",
            "Launch measurement of the embedded guest",
            "host",
            at,
            _steps_skipped(["measure"], why),
        )
        state.test(
            "guest_launch",
            "The guest launched with SEV-SNP answers a nonce",
            "guest",
            at,
            _steps_skipped(["launch", "answer", "sev_snp_active", "report"], why),
        )
        state.test(
            "attestation",
            ATTESTATION,
            "guest",
            at,
            _steps_skipped(["verify"], why),
        )
        return

    # 2. expected measurement
    started = now_utc()
    ovmf = host.file(prereqs.sev_firmware_path(host))
    kernel = host.file(host.env.get("SEVIMG_GUEST_EFI", ""))
    measurement: bytes | None = None
    try:
        measurement = expected_measurement(config, ovmf, kernel)
        step = Step(
            "measure",
            Outcome.PASS,
            f"{measurement.hex()} ({VCPU_TYPE}, {VCPUS} vCPU, kernel hashes)",
        )
    except ImportError as exc:
        step = Step("measure", Outcome.FAIL, f"sev-snp-measure is not in this image: {exc}")
    except (OSError, ValueError) as exc:
        step = Step("measure", Outcome.FAIL, f"cannot compute the measurement: {exc}")
    state.test(
        "expected_measurement", "Launch measurement of the embedded guest", "host", started, [step]
    )
    state.evidence = replace(state.evidence, expected_measurement=measurement)

    # 3. launch and ask
    started = now_utc()
    nonce = config.nonce()
    state.evidence = replace(state.evidence, nonce=nonce)
    answer, launch_steps = _launch_and_ask(state, nonce)
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
            guest_os_id=_guest_field(answer, "os_id"),
            guest_os_release=_guest_field(answer, "os_version"),
            guest_kernel_version=_guest_field(answer, "kernel"),
        )

    # 4. verify
    started = now_utc()
    report = _guest_field(answer, "report") if answer is not None else None
    if not report:
        why = "no attestation report from the guest"
        state.test(
            "attestation",
            ATTESTATION,
            "guest",
            started,
            _steps_skipped(["verify"], why),
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
    )
    state.evidence = replace(state.evidence, vcek_pem=verified.vcek_pem, product=verified.product)
    checks = verified.result.checks
    steps = [Step(_slug(c.name), Outcome(c.verdict.value), c.reason) for c in checks]
    state.test("attestation", ATTESTATION, "guest", started, steps)


def _launch_and_ask(state: _Run, nonce: bytes) -> tuple[object | None, list[Step]]:
    """Launch the guest and ask it; the channel's socket lives in a private temporary folder.

    The folder is under the system's temporary directory, not the state
    folder: a unix socket's path must stay under 108 bytes.
    """
    state.config.state.mkdir(parents=True, exist_ok=True)  # QEMU writes the guest console there
    workdir = Path(tempfile.mkdtemp(prefix="sevimg-"))
    try:
        return _launch_and_ask_in(state, nonce, workdir / "attest.sock")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _launch_and_ask_in(state: _Run, nonce: bytes, socket: Path) -> tuple[object | None, list[Step]]:
    config, host, log = state.config, state.host, state.log
    names = ["launch", "answer", "sev_snp_active", "report"]
    position, origin = prereqs.cbit_position(config.root)
    console = config.state / "guest-console.log"
    try:
        argv = launch_argv(host, position, socket, console)
    except LaunchError as exc:
        return None, [
            Step("launch", Outcome.FAIL, str(exc)),
            *_steps_skipped(names[1:], "the guest was not launched"),
        ]
    try:
        ask = config.ask_guest or _module_function("sevimg_cert.channel", "request")
    except ImportError as exc:
        return None, [
            Step(
                "launch",
                Outcome.FAIL,
                f"the host side of the guest channel is not in this image: {exc}",
            ),
            *_steps_skipped(names[1:], "no channel"),
        ]
    log(
        f"launching {host.env.get('SEVIMG_GUEST_IMAGE_ID', 'the guest')} with SEV-SNP (cbitpos {position}: {origin})"
    )
    log("  " + " ".join(argv))
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return None, [
            Step("launch", Outcome.FAIL, f"cannot run {argv[0]}: {exc.strerror or exc}"),
            *_steps_skipped(names[1:], "the guest was not launched"),
        ]
    steps = [
        Step(
            "launch", Outcome.PASS, f"QEMU started (pid {child.pid}), cbitpos {position} ({origin})"
        )
    ]
    started = time.monotonic()
    try:
        answer = ask(socket, nonce, config.guest_timeout)
    except Exception as exc:
        _stop(child)
        output = child.stdout.read().decode(errors="replace") if child.stdout else ""
        tail = _tail(console)
        detail = f"no answer from the guest: {exc}"
        if child.returncode not in (None, 0) and output.strip():
            detail += f" (QEMU: {output.strip().splitlines()[-1]})"
        return None, [
            *steps,
            Step("answer", Outcome.FAIL, detail, output=(output + tail)[-4000:]),
            *_steps_skipped(names[2:], "no answer from the guest"),
        ]
    finally:
        _stop(child)
    seconds = time.monotonic() - started
    echoed = _guest_field(answer, "nonce")
    if echoed != nonce:
        steps.append(
            Step(
                "answer",
                Outcome.FAIL,
                f"the guest echoed another nonce ({bytes(echoed or b'').hex()[:16]}…)",
            )
        )
    else:
        steps.append(
            Step(
                "answer",
                Outcome.PASS,
                f"answered after {seconds:.1f} s with the nonce echoed (image {_guest_field(answer, 'image')})",
            )
        )
    sev = _guest_field(answer, "sev")
    modules = _guest_field(answer, "modules") or {}
    facts = f"sev={sev}, sev-guest device {_guest_field(answer, 'sev_guest_device')}, configfs {_guest_field(answer, 'configfs')}, tsm provider {_guest_field(answer, 'tsm_provider')}"
    if modules:
        facts += ", modules " + " ".join(f"{k}={v}" for k, v in sorted(dict(modules).items()))
    steps.append(Step("sev_snp_active", Outcome.PASS if sev == "snp" else Outcome.FAIL, facts))
    report = _guest_field(answer, "report")
    if report:
        steps.append(Step("report", Outcome.PASS, f"{len(report)} bytes"))
    else:
        steps.append(
            Step(
                "report",
                Outcome.FAIL,
                f"no report: {_guest_field(answer, 'error') or 'the guest gave no reason'}",
            )
        )
    return answer, steps


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def run(config: Config, echo: Callable[[str], None] | None = None) -> tuple[CertResult, Log]:
    """The whole run; never raises for what it finds (an unexpected exception is an `error` result)."""
    log = Log(echo)
    started = now_utc()
    env = prereqs.image_env(config.root)
    host = prereqs.Host(config.root, env, config.kernel_release, config.path)
    state = _Run(config, log, host)
    error = None
    try:
        _run_checks(state)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        log(f"harness error: {error}")
        log(traceback.format_exc().rstrip())
    release = prereqs.os_release(config.root)
    cpu = None
    with contextlib.suppress(Exception):  # an identity without a processor is still a result
        cpu = prereqs.cpu(config.root)
    identity = Identity(
        release.get("ID"),
        release.get("VERSION_ID") or release.get("VERSION_CODENAME"),
        cpu.series if cpu else None,
    )
    outcome = CertResult(
        started, now_utc(), tuple(state.tests), state.environment, identity, state.evidence, error
    )
    return outcome, log


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, so no reader sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise


def write_results(state_dir: Path, outcome: CertResult, log: Log) -> CertResult:
    """result.json, result.md and harness.log in `state_dir`; the result with its log attached."""
    complete = replace(outcome, log=log.text())
    write_atomic(state_dir / "harness.log", complete.log.encode())
    write_atomic(state_dir / "result.json", result.to_json(complete))
    write_atomic(state_dir / "result.md", result.to_markdown(complete).encode())
    return complete


def summary(outcome: CertResult) -> list[str]:
    """The human summary printed on the console before the frame."""
    lines = [
        "=" * 72,
        f"sevimg certification: {outcome.result.value.upper()}"
        + (
            f" - level {outcome.certified_level} achieved"
            if outcome.certified_level
            else " - no level achieved"
        ),
        f"title:     {result.title(outcome.identity)}",
        f"labels:    {', '.join(result.labels(outcome.identity))}",
        f"milestone: {result.milestone(outcome) or '(none: a record, not a certificate)'}",
    ]
    for test in outcome.tests:
        lines.append(f"  {test.result.value:5} {test.name}")
    for test, step in outcome.failed_steps()[:5]:
        lines.append(f"  failed: {test.name}/{step.name}: {step.detail}")
    if outcome.error:
        lines.append(f"  harness error: {outcome.error}")
    lines.append("=" * 72)
    return lines


class Dispatch:
    """The hook for the dispatch reporter (sevimg_cert.dispatch, contracts.md §3), guarded.

    `booted` before the checks, `report` after the result is written. A
    missing module or a failing server is logged, never fatal: the result
    files and the console frame are there whatever dispatch does.
    """

    def __init__(self, root: Path, log: Log, enabled: bool) -> None:
        self.root = root
        self.log = log
        self.module: Any = None
        self.servers: Any = []
        if not enabled:
            return
        try:
            self.module = importlib.import_module("sevimg_cert.dispatch")
            self.servers = self.module.find_servers(root)
        except ImportError:
            log("dispatch: the reporter is not in this image; not reporting")
            self.module = None
        except Exception as exc:
            log(f"dispatch: cannot find a server: {exc}")
            self.module = None

    def booted(self) -> None:
        """Tell dispatch the image booted."""
        if self.module is not None and self.servers:
            try:
                self.module.booted(self.servers)
            except Exception as exc:
                self.log(f"dispatch: booted failed: {exc}")

    def report(self, outcome: CertResult) -> bool:
        """Send the result; whether a server took it."""
        if self.module is not None and self.servers:
            try:
                took = self.module.report(self.servers, result.dispatch_payload(outcome))
            except Exception as exc:
                self.log(f"dispatch: report failed: {exc}")
                return False
            return took is not None
        return False

    def after(self, reported: bool) -> None:
        """Reboot, power off or stay up, as `sevimg.after=` says (stay when nothing took the report)."""
        if self.module is not None:
            try:
                self.module.after_report(root=self.root, reported=reported)
            except Exception as exc:
                self.log(f"dispatch: after the report: {exc}")


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
    sys.stdout.write(result.frame(data))
    sys.stdout.flush()
    reporter.after(reporter.report(outcome))
    return {Outcome.PASS: 0, Outcome.FAIL: 1}.get(outcome.result, 2)


if __name__ == "__main__":
    sys.exit(main())
