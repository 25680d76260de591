"""A fake host root for the certification harness, and fake qemu/snphost executables.

Real QEMU cannot launch an SNP guest here and there is no snphost, so the
harness runs against a folder laid out like the host image (image.env,
os-release, sysfs, the SEV firmware, the dpkg database, launch.json) with
small shell scripts in place of the programs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sevimg.render.trees import Renderer

FIRMWARE = "/usr/share/ovmf/OVMF.amdsev.fd"
GUEST = "/usr/lib/sevimg/guest/guest.efi"


@dataclass(frozen=True)
class FakeHost:
    root: Path
    bin: Path
    qemu_argv: Path  # where the fake QEMU writes the argv it was launched with


def write(path: Path, text: str | bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    path.chmod(mode)
    return path


def fake_host(
    tmp: Path,
    *,
    sev_snp: str | None = "N",
    kvm_amd: bool = True,
    firmware: bool = True,
    guest: bool = True,
    qemu_version: str = "9.2.0",
    ovmf_version: str = "2025.02-8",
    snphost: str | None = "pass",
    os_release: str = 'ID=debian\nVERSION_CODENAME=forky\nPRETTY_NAME="Debian GNU/Linux forky/sid"\n',
    cpu: tuple[int, int, str] | None = (0x19, 0x11, "AMD EPYC 9654 96-Core Processor"),
    cmdline: str = "console=ttyS0",
) -> FakeHost:
    """A root and a bin folder; `sev_snp` None: no sev_snp parameter."""
    root, bin_ = tmp / "root", tmp / "bin"
    bin_.mkdir(parents=True)
    argv_file = tmp / "qemu-argv.json"
    qemu = write(
        bin_ / "qemu-system-x86_64",
        "#!/bin/sh\n"
        f'if [ "$1" = --version ]; then echo "QEMU emulator version {qemu_version} (fake)"; exit 0; fi\n'
        # Written under another name, then renamed: a reader never sees it half-written.
        'python3 -c \'import json, os, sys; f = open(sys.argv[1] + ".new", "w"); '
        'json.dump(sys.argv[2:], f); f.close(); os.replace(sys.argv[1] + ".new", sys.argv[1])\' '
        f'{argv_file} "$@"\n'
        "exec sleep 300\n",
        0o755,
    )
    # The harness may reboot or power off after reporting: never this machine.
    write(
        bin_ / "systemctl",
        f'#!/bin/sh\necho "$@" >> {tmp / "systemctl.log"}\n',
        0o755,
    )
    if snphost is not None:
        status = 0 if snphost == "pass" else 1
        lines = (
            "[ PASS ] - AMD CPU\n[ PASS ] - SEV-SNP enabled\n"
            if status == 0
            else "[ PASS ] - AMD CPU\n[ \\033[38;5;1mFAIL\\033[0m ] - SNP: RMP table not initialized\n"
        )
        write(
            bin_ / "snphost",
            "#!/bin/sh\n"
            '[ "$1" = ok ] || { echo "this fake only knows ok" >&2; exit 99; }\n'
            f"printf '{lines}'\nexit {status}\n",
            0o755,
        )
    write(
        root / "etc/sevimg/image.env",
        "SEVIMG_IMAGE_ID=host-debian-forky\nSEVIMG_ROLE=host\n"
        f"SEVIMG_QEMU={qemu}\nSEVIMG_SEV_FIRMWARE={FIRMWARE}\n"
        f"SEVIMG_GUEST_EFI={GUEST}\nSEVIMG_GUEST_IMAGE_ID=guest-debian-forky\n",
    )
    # The file as the renderer writes it into every host.
    write(root / "etc/sevimg/launch.json", Renderer.host_launch_json("test"))
    write(root / "etc/os-release", os_release)
    write(root / "proc/cmdline", cmdline + "\n")
    if cpu is not None:
        family, model, brand = cpu
        write(
            root / "proc/cpuinfo",
            f"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: {family}\n"
            f"model\t\t: {model}\nmodel name\t: {brand}\n\n",
        )
    if kvm_amd:
        (root / "sys/module/kvm_amd/parameters").mkdir(parents=True)
        if sev_snp is not None:
            write(root / "sys/module/kvm_amd/parameters/sev_snp", sev_snp + "\n")
    if firmware:
        write(root / FIRMWARE.lstrip("/"), b"\0" * 4096)
        write(root / "var/lib/dpkg/info/ovmf.list", f"/.\n/usr\n{FIRMWARE}\n")
        write(
            root / "var/lib/dpkg/status",
            "Package: bash\nStatus: install ok installed\nVersion: 5.2\n\n"
            f"Package: ovmf\nStatus: install ok installed\nVersion: {ovmf_version}\n",
        )
    if guest:
        write(root / GUEST.lstrip("/"), b"MZ" + b"\0" * 1022)
    (root / "run").mkdir(parents=True, exist_ok=True)
    return FakeHost(root, bin_, argv_file)


def path_with(bin_: Path) -> str:
    """PATH with only the fake programs and the system's basics (sh, sleep, python3)."""
    return f"{bin_}{os.pathsep}/usr/bin{os.pathsep}/bin"


def run_harness(host: FakeHost, *, pythonpath: str = "") -> subprocess.CompletedProcess[str]:
    """The real `python3 -m sevimg_cert.harness --no-dispatch` on the fake host's root, with
    only its fake programs on PATH (and `pythonpath` before the package, to shadow a module)."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {
        **os.environ,
        "PATH": path_with(host.bin),
        "PYTHONPATH": os.pathsep.join(p for p in (pythonpath, src) if p),
    }
    return subprocess.run(
        [sys.executable, "-m", "sevimg_cert.harness", "--root", str(host.root), "--no-dispatch"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
