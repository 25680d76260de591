"""The embedded guest's part of the host's run: its expected measurement, its launch, its answer.

The launch comes from /etc/sevimg/launch.json (rendered from
sevimg.render.launch: QEMU's SNP arguments and the guest channel, with
placeholders filled in here). QEMU runs in its own process group and is
stopped, with whatever it started, once the guest has answered (or not)
over the channel (sevimg_cert.channel.request).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sevimg_cert import hostinfo
from sevimg_cert.result import Outcome, Step, skipped

LAUNCH_FILE = "/etc/sevimg/launch.json"
VCPU_TYPE = "EPYC-v4"
VCPUS = 1
QEMU_GRACE = 5.0
MEASUREMENT_SIZE = 48


def _module_function(module: str, name: str) -> Callable[..., Any]:
    """A function of a sibling module that another part of the project ships; ImportError when absent."""
    found = getattr(importlib.import_module(module), name, None)
    if not callable(found):
        raise ImportError(f"{module} has no {name}()")
    return found  # type: ignore[no-any-return]


def answer_field(answer: object, name: str) -> Any:
    """A field of the guest's answer, None when it has no such field."""
    return getattr(answer, name, None)


def expected_measurement(measure: Callable[..., Any] | None, ovmf: Path, kernel: Path) -> bytes:
    """The expected launch measurement via `measure`, default sevimg_cert.measure.expected (48 bytes)."""
    measure = measure or _module_function("sevimg_cert.measure", "expected")
    value = measure(ovmf, kernel, vcpus=VCPUS, vcpu_type=VCPU_TYPE)
    if isinstance(value, str):
        value = bytes.fromhex(value)
    if not isinstance(value, bytes | bytearray) or len(value) != MEASUREMENT_SIZE:
        raise ValueError(f"the measurement is not {MEASUREMENT_SIZE} bytes: {value!r}")
    return bytes(value)


def launch_argv(host: hostinfo.Host, cbitpos: int, socket: Path, console: Path) -> list[str]:
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
    qemu = host.which(hostinfo.qemu_program(host)) or hostinfo.qemu_program(host)
    values = {
        "qemu": qemu,
        "firmware": str(host.file(hostinfo.sev_firmware_path(host))),
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


def stop(child: subprocess.Popen[bytes]) -> None:
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


def launch_and_ask(
    host: hostinfo.Host,
    nonce: bytes,
    console: Path,
    ask: Callable[..., Any] | None,
    timeout: float,
    log: Callable[[str], None],
) -> tuple[object | None, list[Step]]:
    """Launch the guest, ask it over the channel (`ask`, default channel.request) and stop it.

    The guest's answer (None when there is none) and the steps launch,
    answer, sev_snp_active and report. QEMU writes the guest's console to
    `console`. The channel's socket lives in a private temporary folder
    under the system's temporary directory, not the state folder: a unix
    socket's path must stay under 108 bytes.
    """
    console.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="sevimg-"))
    try:
        return _launch_and_ask_in(host, nonce, console, ask, timeout, log, workdir / "attest.sock")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _launch_and_ask_in(
    host: hostinfo.Host,
    nonce: bytes,
    console: Path,
    ask: Callable[..., Any] | None,
    timeout: float,
    log: Callable[[str], None],
    socket: Path,
) -> tuple[object | None, list[Step]]:
    names = ["launch", "answer", "sev_snp_active", "report"]
    position, origin = hostinfo.cbit_position(host.root)
    try:
        argv = launch_argv(host, position, socket, console)
    except LaunchError as exc:
        return None, [
            Step("launch", Outcome.FAIL, str(exc)),
            *skipped(names[1:], "the guest was not launched"),
        ]
    try:
        ask = ask or _module_function("sevimg_cert.channel", "request")
    except ImportError as exc:
        return None, [
            Step(
                "launch",
                Outcome.FAIL,
                f"the host side of the guest channel is not in this image: {exc}",
            ),
            *skipped(names[1:], "no channel"),
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
            *skipped(names[1:], "the guest was not launched"),
        ]
    steps = [
        Step(
            "launch", Outcome.PASS, f"QEMU started (pid {child.pid}), cbitpos {position} ({origin})"
        )
    ]
    started = time.monotonic()
    try:
        answer = ask(socket, nonce, timeout)
    except Exception as exc:
        stop(child)
        output = child.stdout.read().decode(errors="replace") if child.stdout else ""
        tail = _tail(console)
        detail = f"no answer from the guest: {exc}"
        if child.returncode not in (None, 0) and output.strip():
            detail += f" (QEMU: {output.strip().splitlines()[-1]})"
        return None, [
            *steps,
            Step("answer", Outcome.FAIL, detail, output=(output + tail)[-4000:]),
            *skipped(names[2:], "no answer from the guest"),
        ]
    finally:
        stop(child)
        if child.stdout is not None:
            child.stdout.close()  # QEMU's output pipe: read above when it matters
    seconds = time.monotonic() - started
    echoed = answer_field(answer, "nonce")
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
                f"answered after {seconds:.1f} s with the nonce echoed (image {answer_field(answer, 'image')})",
            )
        )
    sev = answer_field(answer, "sev")
    modules = answer_field(answer, "modules") or {}
    facts = f"sev={sev}, sev-guest device {answer_field(answer, 'sev_guest_device')}, configfs {answer_field(answer, 'configfs')}, tsm provider {answer_field(answer, 'tsm_provider')}"
    if modules:
        facts += ", modules " + " ".join(f"{k}={v}" for k, v in sorted(dict(modules).items()))
    steps.append(Step("sev_snp_active", Outcome.PASS if sev == "snp" else Outcome.FAIL, facts))
    report = answer_field(answer, "report")
    if report:
        steps.append(Step("report", Outcome.PASS, f"{len(report)} bytes"))
    else:
        steps.append(
            Step(
                "report",
                Outcome.FAIL,
                f"no report: {answer_field(answer, 'error') or 'the guest gave no reason'}",
            )
        )
    return answer, steps


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
