"""`sevimg doctor`: can this machine build the catalog's images?

Each check reads the machine through a `Machine` whose root folder and user
id can be pointed elsewhere, so the tests can simulate an Ubuntu host with
AppArmor's user-namespace restriction, a full disk or no /dev/kvm on any
machine.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from sevimg.catalog.spec import FamilyFacts
from sevimg.imaging import mkosi
from sevimg.mkosi_versions import MIN_MKOSI, OLDEST_MKOSI
from sevimg.problems import SevimgError
from sevimg.redact import redact_text
from sevimg_cert import hostinfo, prereqs

GIB = 1024**3
DISK_OK = 12 * GIB  # a tools tree (~2 GB), the package cache and a host build (~5 GB) with room
DISK_MIN = 6 * GIB
NETWORK_TIMEOUT = 5.0


class Status(StrEnum):
    """Outcome of one check."""

    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Result:
    """One line of the doctor's table."""

    check: str
    status: Status
    detail: str
    fix: str = ""

    def __post_init__(self) -> None:
        # Details quote URLs and errors about them; a password in one is never shown.
        object.__setattr__(self, "detail", redact_text(self.detail))
        object.__setattr__(self, "fix", redact_text(self.fix))

    def as_dict(self) -> dict[str, str]:
        """JSON form."""
        return {
            "check": self.check,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.fix,
        }


def _disk_usage(path: Path) -> tuple[int, int, int]:
    usage = shutil.disk_usage(path)
    return usage.total, usage.used, usage.free


@dataclass(frozen=True)
class Machine:
    """The machine as the checks see it; every path is read below `root`."""

    root: Path = Path("/")
    uid: int = field(default_factory=os.geteuid)
    disk_usage: Callable[[Path], tuple[int, int, int]] = field(default=_disk_usage)

    def path(self, absolute: str) -> Path:
        """`absolute` below the machine's root."""
        return self.root / absolute.lstrip("/")

    def read(self, absolute: str) -> str | None:
        """Contents of a file below the root, stripped; None when it does not exist or cannot be read."""
        try:
            return self.path(absolute).read_text().strip()
        except OSError:
            return None

    def os_release(self) -> dict[str, str]:
        """/etc/os-release as a dict."""
        text = self.read("/etc/os-release") or self.read("/usr/lib/os-release") or ""
        pairs = (
            line.split("=", 1)
            for line in text.splitlines()
            if "=" in line and not line.startswith("#")
        )
        return {k: v.strip().strip('"') for k, v in pairs}


def check_mkosi(cache_dir: Path) -> Result:
    """mkosi found, and new enough."""
    try:
        found = mkosi.find(cache_dir)
    except (SevimgError, ValueError) as exc:  # ValueError: it printed no version at all
        return Result(
            "mkosi",
            Status.FAIL,
            exc.message if isinstance(exc, SevimgError) else str(exc),
            "unset SEVIMG_MKOSI or point it at a working mkosi",
        )
    if found is None:
        return Result(
            "mkosi",
            Status.FAIL,
            "not found (SEVIMG_MKOSI, PATH, .cache/mkosi)",
            f"tools/install-mkosi {OLDEST_MKOSI}",
        )
    minimum = ".".join(map(str, MIN_MKOSI))
    if found.version_tuple < MIN_MKOSI:
        return Result(
            "mkosi",
            Status.FAIL,
            f"{found.version} at {found.path} is older than {minimum}",
            f"tools/install-mkosi {OLDEST_MKOSI}",
        )
    return Result("mkosi", Status.OK, f"{found.version} at {found.path} (from {found.origin})")


def check_privileges(machine: Machine) -> Result:
    """Root, or unprivileged user namespaces that mkosi can use."""
    if machine.uid == 0:
        return Result("privileges", Status.OK, "running as root")
    clone = machine.read("/proc/sys/kernel/unprivileged_userns_clone")
    if clone is not None and clone != "1":
        return Result(
            "privileges",
            Status.FAIL,
            "not root, and kernel.unprivileged_userns_clone is 0: mkosi cannot create its sandbox",
            "run as root, or: sudo sysctl -w kernel.unprivileged_userns_clone=1",
        )
    limit = machine.read("/proc/sys/user/max_user_namespaces")
    if limit is not None and limit.isdigit() and int(limit) == 0:
        return Result(
            "privileges",
            Status.FAIL,
            "not root, and user.max_user_namespaces is 0",
            "run as root, or: sudo sysctl -w user.max_user_namespaces=15000",
        )
    return Result("privileges", Status.OK, "unprivileged user namespaces are allowed")


def check_apparmor(machine: Machine) -> Result:
    """Ubuntu's AppArmor restriction on unprivileged user namespaces, which breaks mkosi."""
    restrict = machine.read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    unconfined = machine.read("/proc/sys/kernel/apparmor_restrict_unprivileged_unconfined")
    if restrict is None:
        return Result(
            "apparmor userns", Status.OK, "no AppArmor user-namespace restriction on this kernel"
        )
    if restrict != "1" and unconfined != "1":
        return Result(
            "apparmor userns", Status.OK, "AppArmor does not restrict unprivileged user namespaces"
        )
    which = ", ".join(
        name
        for name, value in (
            ("kernel.apparmor_restrict_unprivileged_userns", restrict),
            ("kernel.apparmor_restrict_unprivileged_unconfined", unconfined),
        )
        if value == "1"
    )
    fix = "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or install an AppArmor profile for mkosi)"
    if machine.uid == 0:
        return Result(
            "apparmor userns",
            Status.WARN,
            f"{which} = 1; root is not affected, unprivileged builds fail",
            fix,
        )
    return Result(
        "apparmor userns", Status.FAIL, f"{which} = 1: mkosi's unprivileged sandbox is refused", fix
    )


def check_disk(machine: Machine, where: Path) -> Result:
    """Free space where trees, tools tree, caches and images go."""
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        _, _, free = machine.disk_usage(probe)
    except OSError as exc:
        return Result("disk", Status.WARN, f"cannot measure free space at {where}: {exc.strerror}")
    text = f"{free / GIB:.1f} GiB free at {probe}"
    if free < DISK_MIN:
        return Result(
            "disk",
            Status.FAIL,
            f"{text}; a tools tree and one image need about {DISK_MIN // GIB} GiB",
            "free space, or build elsewhere with --root",
        )
    if free < DISK_OK:
        return Result(
            "disk",
            Status.WARN,
            f"{text}; {DISK_OK // GIB} GiB recommended for tools tree, caches and a host image",
            "free some space",
        )
    return Result("disk", Status.OK, text)


def check_kvm(machine: Machine) -> Result:
    """/dev/kvm for faster test boots (TCG works without it, slowly)."""
    kvm = machine.path("/dev/kvm")
    if not kvm.exists():
        return Result(
            "kvm",
            Status.WARN,
            "/dev/kvm missing: test boots fall back to TCG (slow)",
            "enable virtualization (or nested virtualization) for this machine",
        )
    if not os.access(kvm, os.R_OK | os.W_OK):
        return Result(
            "kvm",
            Status.WARN,
            "/dev/kvm not accessible to this user: test boots use TCG",
            "add the user to the kvm group",
        )
    return Result("kvm", Status.OK, "/dev/kvm is usable")


def check_package_manager(machine: Machine) -> Result:
    """mkosi builds its default tools tree with the host's package manager."""
    for tool, family in (
        ("apt-get", "Debian/Ubuntu"),
        ("dnf", "Fedora/EL"),
        ("dnf5", "Fedora"),
        ("zypper", "openSUSE"),
        ("pacman", "Arch"),
    ):
        for folder in ("/usr/bin", "/bin", "/usr/sbin"):
            if machine.path(f"{folder}/{tool}").exists():
                return Result(
                    "package manager",
                    Status.OK,
                    f"{tool} ({family}) can bootstrap mkosi's tools tree",
                )
    return Result(
        "package manager",
        Status.FAIL,
        "no apt-get, dnf, zypper or pacman: mkosi cannot build its tools tree",
        "build on a Debian, Ubuntu or Fedora machine, or pass a prebuilt --tools-tree",
    )


def check_checkers() -> Result:
    """The tools that check generated scripts and units."""
    missing = [
        tool for tool in ("shellcheck", "systemd-analyze", "bash") if shutil.which(tool) is None
    ]
    if missing:
        return Result(
            "checkers",
            Status.WARN,
            f"missing: {', '.join(missing)} (generated scripts/units go unchecked)",
            "apt-get install shellcheck systemd",
        )
    return Result("checkers", Status.OK, "shellcheck, systemd-analyze and bash found")


def probe_url(url: str, timeout: float = NETWORK_TIMEOUT) -> str | None:
    """None when `url` answers (any HTTP status below 500), else why not."""
    try:
        response = httpx.head(url, timeout=timeout, follow_redirects=True)
        if response.status_code == 405:
            response = httpx.get(url, timeout=timeout, follow_redirects=True)
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, ImportError) as exc:
        # ValueError, InvalidURL, ImportError: an unusable *_PROXY variable.
        return type(exc).__name__.replace("Error", " error").replace("Exception", "").strip() + (
            f": {redact_text(str(exc))}" if str(exc) else ""
        )
    if response.status_code >= 500:
        return f"HTTP {response.status_code}"
    return None


def _host(url: str) -> str:
    """host[:port] of `url`: never the user or password in front of it."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def check_mirrors(
    targets: Sequence[tuple[str, str]], timeout: float = NETWORK_TIMEOUT
) -> list[Result]:
    """One result per (what, url): reachable within `timeout` seconds or not."""

    def run(target: tuple[str, str]) -> Result:
        what, url = target
        host = _host(url)
        reason = probe_url(url, timeout)
        if reason is None:
            return Result(f"mirror {what}", Status.OK, f"{host} reachable")
        return Result(
            f"mirror {what}",
            Status.WARN,
            f"{host} unreachable ({reason}): {what} images cannot be built here",
            "check the proxy, or set mirrors in sevimg.local.yaml",
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, targets))
    if results and all(r.status is not Status.OK for r in results):
        return [Result(r.check, Status.FAIL, r.detail, r.fix) for r in results]
    return results


def mirror_targets(
    probes: Iterable[tuple[str, str]], extra_urls: Iterable[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """What to probe: each distribution's default mirror (`mirror_probe` in its
    distribution or family file), and the catalog's own URLs."""
    return sorted({*probes, *extra_urls})


def family_probes(families: Iterable[FamilyFacts]) -> list[tuple[str, str]]:
    """(family, URL) for the families that name a mirror to probe (outside a workspace)."""
    return sorted((f.name, f.mirror_probe) for f in families if f.mirror_probe)


def check_debug_sources(
    family: FamilyFacts,
    has_local_mirror: bool,
    timeout: float = NETWORK_TIMEOUT,
    origin: str = "sevimg.local.yaml",
) -> Result:
    """mkosi's default sources of some apt families (apt.debug_probe) include a debug
    archive that some mirrors and proxies refuse; not when sevimg writes the sources
    (a mirror from `origin`: sevimg.local.yaml or the distribution file)."""
    name, pretty, url = family.name, family.pretty_name, family.apt_debug_probe or ""
    check = f"{name} sources"
    if has_local_mirror:
        return Result(
            check,
            Status.OK,
            f"{origin} gives the {pretty} mirror: sevimg writes the apt sources (no debug suites)",
        )
    # The debug archive's name is the probe's first folder (debian-debug).
    archive = urlsplit(url).path.strip("/").split("/")[0] or "a debug archive"
    try:
        status = httpx.head(url, timeout=timeout, follow_redirects=True).status_code
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, ImportError) as exc:
        reason = f"{type(exc).__name__}: {redact_text(str(exc))}"
    else:
        if status == 200:
            return Result(
                check,
                Status.OK,
                f"mkosi's default {pretty} sources (with {archive}) answer",
            )
        reason = f"HTTP {status}"
    return Result(
        check,
        Status.WARN,
        f"{archive}, which mkosi adds to {pretty} images by default, does not answer here ({reason}): {pretty} builds will fail",
        f"copy sevimg.local.yaml.example to sevimg.local.yaml (mirrors.{name}: sevimg then writes the sources without debug suites)",
    )


def has_failures(results: Iterable[Result]) -> bool:
    """True when any check failed."""
    return any(r.status is Status.FAIL for r in results)


_SEV_STATUS = {"pass": Status.OK, "skip": Status.WARN, "fail": Status.FAIL, "error": Status.FAIL}


def check_sev_host(
    machine: Machine, families: Iterable[FamilyFacts], kernel_release: str | None = None
) -> list[Result]:
    """The host harness's prerequisites (sevimg_cert.prereqs) on this machine, each with its fix.

    The SEV firmware and QEMU are looked for where the catalog's families put
    them (below the machine's root for files; QEMU on PATH or at the families'
    paths). `snphost ok` runs only when snphost is installed; without it that
    check warns rather than fails, since it is an extra tool on a user's own host.
    """
    chosen = list(families)
    firmware = next(
        (p for f in chosen for p in f.sev_firmware if machine.path(p).is_file()),
        next((p for f in chosen for p in f.sev_firmware), ""),
    )
    qemu_names = [q for f in chosen for q in f.qemu_binaries]
    qemu = next((q for q in qemu_names if shutil.which(q)), "qemu-system-x86_64")
    env = {"SEVIMG_SEV_FIRMWARE": firmware, "SEVIMG_QEMU": shutil.which(qemu) or qemu}
    host = hostinfo.Host(
        root=machine.root,
        env=env,
        kernel_release=kernel_release or os.uname().release,
    )
    found = prereqs.check_all(host, guest=False)
    results = []
    for step in found.steps:
        status = _SEV_STATUS[step.result.value]
        if step.name == prereqs.SNPHOST and host.which("snphost") is None:
            status = Status.WARN
        detail = step.detail
        if step.warning:  # below the guide's floor: SEV-SNP works, the run would pass
            status, detail = Status.WARN, f"{step.detail}; {step.warning}"
        fix = prereqs.FIXES.get(step.name, "") if status is not Status.OK else ""
        results.append(Result(f"SEV host: {step.name}", status, detail, fix))
    return results
