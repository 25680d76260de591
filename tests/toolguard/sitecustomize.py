"""The fast run's guard: a test without the `mkosi`, `qemu` or `network` marker may not use them.

tests/conftest.py arms it in the test process; for the Python processes a test
starts (`python -m sevimg ...`) this folder is put first on PYTHONPATH, so
Python imports this file as `sitecustomize` at start-up and arms it from the
environment. A Python audit hook sees every program started (subprocess,
posix_spawn, the `sh` library's exec) and every socket connect: starting a
forbidden program (but a `--version` probe of mkosi or QEMU, which sevimg
runs to choose templates and doctor to report) or connecting beyond loopback is written to the log named by
SEVIMG_TEST_GUARD_LOG (the test then fails) and refused on the spot, so an
unmarked test fails fast instead of building for minutes.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

FORBID_ENV = "SEVIMG_TEST_FORBID"  # os.pathsep-separated real paths of forbidden programs
PROBES_ENV = "SEVIMG_TEST_PROBES"  # of those, the ones whose `--version` is allowed
NETWORK_ENV = "SEVIMG_TEST_NO_NETWORK"  # "1": only loopback and Unix sockets
LOG_ENV = "SEVIMG_TEST_GUARD_LOG"

_EXEC_EVENTS = frozenset({"subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn"})
_state: dict[str, object] = {
    "forbid": frozenset(),
    "probes": frozenset(),
    "network": False,
    "log": None,
}
_installed: list[bool] = []  # one audit hook per process: hooks cannot be removed


def arm(forbid: frozenset[str], probes: frozenset[str], no_network: bool, log: str | None) -> None:
    """Forbid these programs (real paths; `probes` may answer --version) and, when `no_network`,
    connections off this machine."""
    _state.update(forbid=forbid, probes=probes, network=no_network, log=log)
    if not _installed:
        sys.addaudithook(_hook)
        _installed.append(True)


def disarm() -> None:
    """Allow everything again (the hook stays installed; it is a no-op then)."""
    _state.update(forbid=frozenset(), probes=frozenset(), network=False, log=None)


def _argv(event: str, args: tuple[object, ...]) -> list[str]:
    argv = args[2] if event == "os.spawn" else args[1]
    if isinstance(argv, str | bytes):
        return [os.fsdecode(argv)]
    try:
        return [os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in argv]  # type: ignore[attr-defined]
    except TypeError:
        return []


def _program(event: str, args: tuple[object, ...]) -> str | None:
    if event == "subprocess.Popen":
        executable, argv, _cwd, env = args
        prog = executable
        if prog is None:
            prog = argv if isinstance(argv, str | bytes) else next(iter(argv), None)  # type: ignore[call-overload]
        environ = env if env is not None else os.environ
        path_var = environ.get("PATH") if hasattr(environ, "get") else None
    else:
        prog = args[0] if event != "os.spawn" else args[1]
        path_var = os.environ.get("PATH")
    if isinstance(prog, bytes):
        prog = os.fsdecode(prog)
    if not isinstance(prog, str | os.PathLike):
        return None
    prog = os.fspath(prog)
    if os.sep not in prog:
        prog = shutil.which(prog, path=path_var) or prog
    return os.path.realpath(prog)


def _off_machine(address: object) -> bool:
    if not isinstance(address, tuple) or not address or not isinstance(address[0], str):
        return False  # a Unix socket
    host = address[0]
    if host == "localhost":
        return False
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return True
    return not (ip.is_loopback or ip.is_unspecified)


def _record(what: str) -> None:
    log = _state["log"]
    if isinstance(log, str):
        with Path(log).open("a", encoding="utf-8") as f:
            f.write(what + "\n")


def _hook(event: str, args: tuple[object, ...]) -> None:
    if event in _EXEC_EVENTS:
        forbid = _state["forbid"]
        if not forbid:
            return
        prog = _program(event, args)
        if prog is not None and prog in forbid:  # type: ignore[operator]
            if prog in _state["probes"] and _argv(event, args)[1:] == ["--version"]:  # type: ignore[operator]
                return  # a version probe (sevimg picks templates by mkosi's): quick, allowed
            _record(f"ran {prog}")
            raise PermissionError(f"sevimg test guard: this test has no marker for {prog}")
    elif event == "socket.connect" and _state["network"]:
        sock, address = args
        inet = isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6)
        if inet and _off_machine(address):
            _record(f"connected to {address!r}")
            raise PermissionError(f"sevimg test guard: no network marker ({address!r})")


def _arm_from_environment() -> None:
    forbid = os.environ.get(FORBID_ENV)
    log = os.environ.get(LOG_ENV)
    if forbid is None and NETWORK_ENV not in os.environ:
        return
    paths: Sequence[str] = [p for p in (forbid or "").split(os.pathsep) if p]
    probes = [p for p in os.environ.get(PROBES_ENV, "").split(os.pathsep) if p]
    arm(frozenset(paths), frozenset(probes), os.environ.get(NETWORK_ENV) == "1", log)


_arm_from_environment()
