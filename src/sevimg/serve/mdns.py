"""`--mdns`: advertise the server as dispatch does, `_dispatch._tcp` with TXT `path=…`, through Avahi.

dispatch advertises its service so that beacon (and the reporter in our host
images) can find it when the firmware left no URL behind. We do not speak
mDNS ourselves: `avahi-publish` (avahi-utils) registers the service with
the machine's avahi-daemon for as long as it runs, and is stopped with the
server.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import time

from sevimg import __version__, proc
from sevimg.problems import SevimgError

SERVICE = "_dispatch._tcp"
_SETTLE = 1.0  # avahi-publish fails within this when no daemon runs


def publisher(host: str) -> str:
    """avahi-publish's path, checked before anything is served; SevimgError when --mdns cannot work."""
    if ipaddress.ip_address(host).is_loopback:
        raise SevimgError(
            f"--mdns with --bind {host} would advertise a server no other machine can reach",
            hint="bind a lab address too, e.g. --bind 0.0.0.0:8080",
        )
    tool = shutil.which("avahi-publish")
    if tool is None:
        raise SevimgError(
            "--mdns needs avahi-publish and a running avahi-daemon",
            hint="install Avahi's command-line tools (the package with avahi-publish), "
            "or leave out --mdns and give the hosts the URL",
        )
    return tool


def advertise(tool: str, port: int, path: str) -> proc.Child:
    """Advertise http://<this machine>:`port``path` until the child is stopped; SevimgError if Avahi refuses."""
    argv = [
        tool, "-s", f"sevimg serve on port {port}", SERVICE, str(port),
        f"path={path}", f"version={__version__}", "description=sevimg serve",
    ]  # fmt: skip
    try:
        child = proc.start(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as exc:
        raise SevimgError(f"--mdns: cannot run {tool}: {exc.strerror or exc}") from None
    deadline = time.monotonic() + _SETTLE
    while time.monotonic() < deadline and not child.exited():
        time.sleep(0.05)
    if child.exited():
        code = child.stop()
        why = (child.popen.stderr.read() if child.popen.stderr else "").strip().splitlines()
        raise SevimgError(
            f"--mdns: avahi-publish ended at once (exit {code}): {why[-1] if why else 'no reason given'}",
            hint="is avahi-daemon running? (systemctl status avahi-daemon)",
        )
    return child
