"""Stand-ins for the long-running tools, as real executables: a fake mkosi and a fake QEMU.

They are shell scripts that `sevimg build` / `sevimg run` start as real child
processes (SEVIMG_MKOSI, --qemu). Each records its pid, and can start a
grandchild in its own process group, so tests can check from the process
table that nothing outlives sevimg. In `build` mode the fake mkosi writes a
real (tiny) UKI — a PE file with .linux, .initrd, .uname sections whose
initrd satisfies the guest post-build checks — so a whole build runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

KVER = "6.12.119+deb13-amd64"

FAKE_MKOSI = r"""#!/bin/bash
# A fake mkosi for sevimg's tests. FAKE_MODE: build | sleep | ignore-term | fail
if [ "$1" = "--version" ]; then echo "mkosi 25.3"; exit 0; fi
out="" tree=""
while [ $# -gt 0 ]; do
  case "$1" in
    --output-directory=*) out="${1#--output-directory=}" ;;
    -C) shift; tree="$1" ;;
  esac
  shift
done
id="$(basename "$tree")"
here="${id:-tools}"
echo "‣ Building ${id:-tools tree}"
mode="${FAKE_MODE:-build}"
# FAKE_HANG_AT: misbehave only for this image id (or "tools"), build the rest
if [ -n "${FAKE_HANG_AT:-}" ] && [ "$FAKE_HANG_AT" != "$here" ]; then mode=build; fi
case "$mode" in
  sleep|ignore-term)
    [ "$mode" = ignore-term ] && trap '' TERM
    sleep 1000 >/dev/null 2>&1 &
    echo "$!" > "$FAKE_PIDS/grandchild-$here.pid"
    # ignore-term: survive SIGTERM, but say it came (the grandchild above ignores it silently)
    [ "$mode" = ignore-term ] && trap 'echo TERM >> "$FAKE_PIDS/term-$here"' TERM
    echo "$$" > "$FAKE_PIDS/mkosi-$here.pid"
    while :; do sleep 1; done ;;
  fail) echo "something broke"; exit 3 ;;
esac
if [ -z "$tree" ]; then mkdir -p "$out/tree"; exit 0; fi
cp "$FAKE_UKIS/$id.efi" "$out/$id.efi"
cp "$FAKE_UKIS/$id.manifest" "$out/$id.manifest"
"""

FAKE_QEMU = r"""#!/bin/bash
# A fake QEMU that never boots: records its pid and a grandchild's, then waits.
[ "${FAKE_MODE:-}" = ignore-term ] && trap '' TERM
sleep 1000 >/dev/null 2>&1 &
echo "$!" > "$FAKE_PIDS/grandchild-qemu.pid"
echo "$$" > "$FAKE_PIDS/qemu.pid"
echo "fake qemu: waiting"
while :; do sleep 1; done
"""


def install(folder: Path, name: str, text: str) -> Path:
    """Write an executable script; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)
    return path


# --- a UKI that passes the guest checks ------------------------------------------------------

FILE, EXE, LINK, DIR = 0o100644, 0o100755, 0o120777, 0o040755


def newc(entries: Iterable[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, data)."""
    out = bytearray()

    def add(name: str, mode: int, data: bytes, ino: int) -> None:
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out.extend(b"070701" + b"".join(f"{f:08X}".encode() for f in fields) + encoded)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate(entries, 1):
        add(name, mode, data, ino)
    add("TRAILER!!!", 0, b"", 0)
    return bytes(out)


def pe(sections: Sequence[tuple[str, bytes]]) -> bytes:
    """A minimal PE32+ image holding `sections` (enough for pefile, which is what sevimg reads)."""
    file_align, section_align = 0x200, 0x1000
    header_size = 0x400
    pe_offset = 0x40
    dos = b"MZ" + b"\0" * 58 + struct.pack("<I", pe_offset)
    coff = struct.pack("<HHIIIHH", 0x8664, len(sections), 0, 0, 0, 240, 0x0022)
    raw_parts: list[bytes] = []
    table = b""
    raw_at, virtual_at = header_size, section_align
    for name, data in sections:
        size = len(data)
        raw_size = -(-size // file_align) * file_align
        table += struct.pack(
            "<8sIIIIIIHHI",
            name.encode(),
            size,
            virtual_at,
            raw_size,
            raw_at,
            0,
            0,
            0,
            0,
            0x40000040,  # initialized data, readable
        )
        raw_parts.append(data + b"\0" * (raw_size - size))
        raw_at += raw_size
        virtual_at += -(-max(size, 1) // section_align) * section_align
    optional = struct.pack(
        "<HBBIIIIIQIIHHHHHHIIIIHHQQQQII",
        0x20B,  # PE32+
        0,
        0,
        0,
        0,
        0,
        section_align,  # AddressOfEntryPoint (unused)
        section_align,  # BaseOfCode
        0,  # ImageBase
        section_align,
        file_align,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        virtual_at,  # SizeOfImage
        header_size,
        0,  # CheckSum
        10,  # Subsystem: EFI application
        0,
        0x100000,
        0x1000,
        0x100000,
        0x1000,
        0,
        16,  # NumberOfRvaAndSizes
    ) + b"\0" * (16 * 8)
    headers = dos + b"PE\0\0" + coff + optional + table
    assert len(optional) == 240 and len(headers) <= header_size
    return headers + b"\0" * (header_size - len(headers)) + b"".join(raw_parts)


def guest_initrd() -> bytes:
    """An initrd with what the guest checks look for: modules, the payload, the enabled unit, no password."""
    modules = (
        "arch/x86/kernel/msr",
        "drivers/virt/coco/sev-guest/sev-guest",
        "drivers/net/virtio_net",
        "net/vmw_vsock/vsock",
        "net/vmw_vsock/vmw_vsock_virtio_transport",
        "drivers/virt/coco/tsm",  # configfs-tsm reports (6.12's name)
        "fs/configfs/configfs",
    )
    files = [
        ("usr", DIR, b""),
        (
            f"usr/lib/modules/{KVER}/modules.builtin",
            FILE,
            b"kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/char/virtio_console.ko\n",
        ),
        ("etc/passwd", FILE, b"root:*:0:0:root:/root:/bin/bash\n"),
        (
            "etc/systemd/system/multi-user.target.wants/sevimg-guest-check.service",
            LINK,
            b"/usr/lib/systemd/system/sevimg-guest-check.service",
        ),
        ("usr/libexec/sevimg/guest-check", EXE, b"#!/bin/bash\n"),
        ("usr/libexec/sevimg/attest-responder", EXE, b"#!/bin/bash\n"),
        ("usr/lib/udev/rules.d/90-sevimg-attest.rules", FILE, b"# the port starts the responder\n"),
    ]
    files += [(f"usr/lib/modules/{KVER}/kernel/{m}.ko.xz", FILE, b"x") for m in modules]
    return newc(files)


def write_guest_build(folder: Path, image_id: str = "guest-debian-13") -> Path:
    """What the fake mkosi copies out for `image_id`: <id>.efi and mkosi's JSON <id>.manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    uki = pe(
        [
            (".osrel", b"ID=debian\n"),
            (".cmdline", b"console=ttyS0\n"),
            (".uname", KVER.encode()),
            (".linux", b"fake kernel " * 64),
            (".initrd", guest_initrd()),
        ]
    )
    (folder / f"{image_id}.efi").write_bytes(uki)
    packages = {"linux-image-amd64": "6.12.119-1", "systemd-boot-efi": "257.9-1"}
    (folder / f"{image_id}.manifest").write_text(
        json.dumps({"packages": [{"name": n, "version": v} for n, v in packages.items()]})
    )
    return folder


# --- the process table -----------------------------------------------------------------------


def use_fake_mkosi(tmp_path: Path, setenv: Callable[[str, str], None]) -> Path:
    """Point sevimg at FAKE_MKOSI (which writes a real, tiny guest UKI) and a private build cache."""
    tools = tmp_path / "fake-tools"
    install(tools, "mkosi", FAKE_MKOSI)
    setenv("SEVIMG_MKOSI", str(tools / "mkosi"))
    setenv("FAKE_UKIS", str(write_guest_build(tmp_path / "ukis")))
    setenv("FAKE_PIDS", str(tmp_path))
    setenv("SEVIMG_CACHE", str(tmp_path / "cache"))
    return tools / "mkosi"


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


# inotify(7), through libc: a test wakes when a file is written in a folder, instead of
# polling with sleeps. The constants are <sys/inotify.h>'s.
_IN_CLOSE_WRITE, _IN_MOVED_TO, _IN_CREATE = 0x8, 0x80, 0x100
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def watching(folder: Path) -> Iterator[Callable[[float], bool]]:
    """A `wake(timeout)` that returns True when a file in `folder` was created, written and
    closed, or moved in, and False when `timeout` seconds went by with none (the safety net)."""
    fd = _libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    try:
        mask = _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE
        if _libc.inotify_add_watch(fd, os.fsencode(folder), mask) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")

        def wake(timeout: float) -> bool:
            ready, _, _ = select.select([fd], [], [], timeout)
            if ready:
                os.read(fd, 65536)  # the events themselves do not matter: the caller looks
            return bool(ready)

        yield wake
    finally:
        os.close(fd)


def wait_until(folder: Path, done: Callable[[], bool], timeout: float = 60) -> None:
    """Return once `done()` holds, looking again whenever a file in `folder` changes."""
    folder.mkdir(parents=True, exist_ok=True)
    with watching(folder) as wake:
        while not done():
            if not wake(timeout):
                raise AssertionError(f"nothing happened in {folder} for {timeout} s")


def wait_for_text(path: Path, timeout: float = 60) -> str:
    """What a fake wrote to `path`, once it appears (the fake's readiness signal)."""
    found: list[str] = []

    def written() -> bool:
        with contextlib.suppress(FileNotFoundError):
            found.append(path.read_text().strip())
        return bool(found and found[-1])

    try:
        wait_until(path.parent, written, timeout)
    except AssertionError:
        raise AssertionError(f"{path} did not appear within {timeout} s") from None
    return found[-1]


def wait_for_file(path: Path, timeout: float = 60) -> int:
    """The pid written to `path` once it appears."""
    return int(wait_for_text(path, timeout))


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, from the process table."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def reap_leftovers(pids: Iterable[int]) -> None:
    """Kill what a failed test left running, so it does not pile up."""
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
