"""`sevimg run`: launch a built guest UKI, with SEV-SNP or as a plain smoke boot.

The SNP command line is the one AMD's SEV getting-started guide gives (see
:mod:`sevimg.render.launch`, shared with the host image's own check). `--no-sev`
boots the same UKI under ordinary QEMU and OVMF, watches the serial console
for the guest's readiness marker, and reports how long it took.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import math
import os
import shutil
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sevimg import interrupt, proc
from sevimg.atomic import scratch_folder
from sevimg.catalog.index import machine_families
from sevimg.catalog.spec import FamilyFacts
from sevimg.problems import SevimgError
from sevimg.render.launch import (
    DEFAULT_CBITPOS,
    MIN_MEMORY_MB,
    READY_MARKER,
    Launch,
    channel_args,
    snp_command,
)
from sevimg.workspace import Workspace
from sevimg_cert import channel


@dataclass(frozen=True)
class SearchPaths:
    """Where to look for QEMU and firmware: every family's paths, in catalog order.

    The family files (images/families/*.yaml: qemu_binaries, firmware) say
    where each distribution puts them; `run` looks through all of them, so
    it finds the machine's own without knowing which distribution it is.
    """

    qemu: tuple[str, ...]
    plain_ovmf: tuple[str, ...]
    sev_firmware: tuple[str, ...]


def search_paths(families: Iterable[FamilyFacts]) -> SearchPaths:
    """The union of the families' search paths, first occurrence first."""
    chosen = list(families)

    def union(paths: Iterable[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(paths))

    return SearchPaths(
        # QEMU on PATH first, whatever its folder; then the families' own paths.
        qemu=union(
            [PurePosixPath(q).name for f in chosen for q in f.qemu_binaries if "/bin/" in q]
            + [q for f in chosen for q in f.qemu_binaries]
        ),
        plain_ovmf=union(p for f in chosen for p in f.plain_ovmf),
        sev_firmware=union(p for f in chosen for p in f.sev_firmware),
    )


def family_search_paths(ws: Workspace | None) -> SearchPaths:
    """QEMU and firmware search paths from the family files (the workspace's, else sevimg's)."""
    paths = search_paths(machine_families(ws))
    if not (paths.qemu and paths.plain_ovmf and paths.sev_firmware):
        raise SevimgError("no family files (images/families/*.yaml) name QEMU and firmware paths")
    return paths


# What QEMU prints when KVM cannot run the firmware (seen with nested KVM).
KVM_FAILURES = (
    "KVM internal error",
    "emulation failure",
    "failed to initialize kvm",
    "Could not access KVM",
)
CPUID_SEV_LEAF = 0x8000001F
QEMU_GRACE = 3.0  # seconds QEMU gets after SIGTERM before SIGKILL
MAX_MEMORY_MB = 1024 * 1024  # 1 TiB: more is a typo, not a guest
MAX_TIMEOUT = 24 * 3600.0  # seconds; a smoke boot that needs a day has failed
GUEST_TIMEOUT = 600.0  # seconds `run --no-sev` waits for a guest's readiness marker by default
# After the readiness marker, how long the attestation responder gets to answer
# (it starts when the port appears, before the marker; TCG is slow).
ATTEST_TIMEOUT = 120.0


def check_memory(memory_mb: int, what: str = "an SNP guest") -> None:
    """A SevimgError unless `memory_mb` is a whole number of MB QEMU can be given."""
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int):
        raise SevimgError(f"--memory {memory_mb!r} is not a whole number of MB")
    if memory_mb < MIN_MEMORY_MB:
        raise SevimgError(
            f"--memory {memory_mb} is too small: {what} needs at least {MIN_MEMORY_MB} MB"
        )
    if memory_mb > MAX_MEMORY_MB:
        raise SevimgError(f"--memory {memory_mb} is more than {MAX_MEMORY_MB} MB")


def check_timeout(timeout: float) -> None:
    """A SevimgError unless `timeout` is a finite number of seconds, above 0 and at most a day."""
    if not (isinstance(timeout, int | float) and math.isfinite(timeout)):
        raise SevimgError(f"--timeout {timeout!r} is not a finite number of seconds")
    if not 0 < timeout <= MAX_TIMEOUT:
        raise SevimgError(f"--timeout {timeout} is not between 0 and {MAX_TIMEOUT:.0f} seconds")


def find_qemu(explicit: str | None, candidates: Sequence[str]) -> str:
    """The QEMU binary: `explicit`, else the first of `candidates` found (names on PATH or paths)."""
    if explicit:
        if shutil.which(explicit) is None:
            raise SevimgError(f"QEMU binary {explicit} not found or not executable")
        return explicit
    for name in candidates:
        if found := shutil.which(name):
            return found
    raise SevimgError(
        f"QEMU not found (looked for {', '.join(candidates) or 'nothing: no family files'})",
        hint="install your distribution's QEMU package for x86-64, or pass --qemu",
    )


def find_firmware(candidates: Sequence[str], explicit: str | None, what: str) -> str:
    """The first firmware file that exists."""
    if explicit:
        if not Path(explicit).is_file():
            raise SevimgError(f"{what} {explicit} does not exist")
        return explicit
    for path in candidates:
        if Path(path).is_file():
            return path
    raise SevimgError(
        f"no {what} found (looked at {', '.join(candidates)})", hint="pass --firmware PATH"
    )


def cbit_position(cpuid_device: Path = Path("/dev/cpu/0/cpuid")) -> tuple[int, str]:
    """The C-bit position from CPUID 0x8000001F EBX[5:0], with where it came from."""
    try:
        fd = os.open(cpuid_device, os.O_RDONLY)
    except OSError as exc:
        return (
            DEFAULT_CBITPOS,
            f"default ({cpuid_device}: {exc.strerror}; modprobe cpuid as root to read it)",
        )
    try:
        _, ebx, _, _ = struct.unpack("<4I", os.pread(fd, 16, CPUID_SEV_LEAF))
    except OSError as exc:
        return DEFAULT_CBITPOS, f"default (CPUID 0x8000001F unreadable: {exc.strerror})"
    finally:
        os.close(fd)
    position = ebx & 0x3F
    if position == 0:
        return DEFAULT_CBITPOS, "default (this CPU reports no SEV C-bit)"
    return position, "CPUID 0x8000001F"


def snp_argv(
    kernel: Path,
    *,
    memory_mb: int,
    qemu: str,
    firmware: str,
    cbitpos: int,
    extra: Sequence[str] = (),
) -> list[str]:
    """The SEV-SNP launch command for `kernel`, checked; `extra` (e.g. the channel) appended."""
    check_memory(memory_mb)
    return [
        *snp_command(Launch(qemu=qemu, firmware=firmware, kernel=str(kernel), memory_mb=str(memory_mb), cbitpos=str(cbitpos))),
        "-serial", "stdio",
        *extra,
    ]  # fmt: skip


def plain_argv(
    kernel: Path,
    *,
    memory_mb: int,
    qemu: str,
    firmware: str,
    kvm: bool,
    console: Path,
    extra: Sequence[str] = (),
    network: bool = False,
) -> list[str]:
    """A plain (no SEV) boot of the same UKI, its serial console written to `console`.

    `network` gives it QEMU's user network on virtio-net (a host image waits
    for network-online.target before its harness runs).
    """
    accel = ["-accel", "kvm", "-cpu", "host"] if kvm else ["-accel", "tcg", "-cpu", "max"]
    nic = ["-nic", "user,model=virtio-net-pci"] if network else ["-nic", "none"]
    return [
        qemu,
        "-machine", "q35",
        *accel,
        "-m", str(memory_mb),
        "-nodefaults",
        "-display", "none",
        "-monitor", "none",
        *nic,
        "-serial", f"file:{console}",
        "-bios", firmware,
        "-kernel", str(kernel),
        *extra,
    ]  # fmt: skip


@dataclass(frozen=True)
class BootResult:
    """How a smoke boot went."""

    ready: bool
    seconds: float
    accel: str
    marker_line: str
    console_tail: tuple[str, ...]
    reason: str = ""
    nonce: bytes = b""  # with attest: the nonce sent over the channel
    answer: channel.GuestAnswer | None = None  # with attest: the guest's answer
    console: str = ""  # the whole serial console up to the marker


def smoke_boot(
    kernel: Path,
    *,
    qemu: str,
    firmware: str,
    memory_mb: int,
    timeout: float,
    accel: str = "auto",
    on_line: Callable[[str], None] | None = None,
    extra: Sequence[str] = (),
    attest: bool = False,
    marker: str = READY_MARKER,
    network: bool = False,
    min_memory_mb: int = MIN_MEMORY_MB,
) -> BootResult:
    """Boot without SEV until `marker` appears on the console; KVM when it works, else TCG.

    `extra` QEMU arguments are appended. With `attest`, the guest also gets
    the attestation channel, and once it is ready it is asked for a report
    over a fresh random nonce (the result carries the nonce and the answer;
    a channel failure is the result's reason).
    """
    check_memory(memory_mb, "the guest")
    if memory_mb < min_memory_mb:
        raise SevimgError(
            f"--memory {memory_mb} is too small: this image needs at least {min_memory_mb} MB"
        )
    check_timeout(timeout)
    kvm_usable = os.access("/dev/kvm", os.R_OK | os.W_OK)
    attempts = {"kvm": [True], "tcg": [False], "auto": [True, False] if kvm_usable else [False]}[
        accel
    ]
    if accel == "kvm" and not kvm_usable:
        raise SevimgError("--accel kvm, but /dev/kvm is not usable here")
    result: BootResult | None = None
    for kvm in attempts:
        result = _boot_once(
            kernel, qemu, firmware, memory_mb, timeout, kvm, on_line, extra, attest, marker, network
        )
        if result.ready or not result.reason.startswith("kvm:"):
            return result
    assert result is not None
    return result


def _boot_once(
    kernel: Path,
    qemu: str,
    firmware: str,
    memory_mb: int,
    timeout: float,
    kvm: bool,
    on_line: Callable[[str], None] | None,
    extra: Sequence[str],
    attest: bool,
    marker: str = READY_MARKER,
    network: bool = False,
) -> BootResult:
    label = "kvm" if kvm else "tcg"
    with scratch_folder("sevimg-run-") as tmp:
        console = tmp / "console.log"
        console.touch()
        socket_path = tmp / "attest.sock"
        if attest:
            if len(os.fsencode(socket_path)) >= 108:  # sun_path's size
                raise SevimgError(
                    f"the channel's socket path {socket_path} is too long for a unix socket",
                    hint="set TMPDIR to a shorter folder",
                )
            extra = [*extra, *channel_args(str(socket_path))]
        argv = plain_argv(
            kernel,
            memory_mb=memory_mb,
            qemu=qemu,
            firmware=firmware,
            kvm=kvm,
            console=console,
            extra=extra,
            network=network,
        )
        started = time.monotonic()
        try:
            child = proc.start(argv, grace=QEMU_GRACE)
        except OSError as exc:
            raise SevimgError(f"cannot run {qemu}: {exc.strerror or exc}") from None
        with child:  # QEMU's process group is stopped however this ends (marker, timeout, signal)
            qemu_output: deque[str] = deque(maxlen=50)

            def drain() -> None:
                with contextlib.suppress(OSError, ValueError):  # closed once QEMU is stopped
                    qemu_output.extend(child.stdout)

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            seen = 0
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            tail: deque[str] = deque(maxlen=30)
            everything: list[str] = []
            partial = ""

            def result(found: str = "", reason: str = "") -> BootResult:
                seconds = min(time.monotonic() - started, timeout)
                return BootResult(
                    bool(found),
                    seconds,
                    label,
                    found,
                    tuple(tail),
                    reason,
                    console="\n".join(everything),
                )

            while True:
                interrupt.check()
                with console.open("rb") as handle:
                    handle.seek(seen)
                    raw = handle.read()
                seen += len(raw)
                lines = (partial + decoder.decode(raw)).split("\n")
                partial = lines.pop()
                for line in lines:
                    clean = line.rstrip("\r")
                    tail.append(clean)
                    everything.append(clean)
                    if on_line:
                        on_line(clean)
                    if marker in clean:
                        found = result(found=clean[clean.index(marker) :])
                        return _attest(socket_path, found) if attest else found
                qemu_text = "".join(qemu_output).strip()
                if kvm and any(f in qemu_text for f in KVM_FAILURES):
                    return result(reason=f"kvm: {qemu_text.splitlines()[0]}")
                if child.exited():
                    code = child.wait()
                    prefix = "kvm: " if kvm else ""
                    return result(
                        reason=f"{prefix}QEMU exited with status {code}: {qemu_text[-500:]}"
                    )
                if time.monotonic() - started > timeout:
                    return result(reason=f"no {marker} within {timeout:.0f} s")
                time.sleep(0.5)


def _attest(socket_path: Path, ready: BootResult) -> BootResult:
    """Ask the ready guest for an attestation over a fresh nonce; the answer or why not."""
    nonce = os.urandom(channel.NONCE_BYTES)
    try:
        answer = channel.request(socket_path, nonce, timeout=ATTEST_TIMEOUT)
    except channel.ChannelError as exc:
        return dataclasses.replace(ready, nonce=nonce, reason=f"attestation channel: {exc}")
    return dataclasses.replace(ready, nonce=nonce, answer=answer)
