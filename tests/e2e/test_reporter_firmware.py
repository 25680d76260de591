"""The reporter against the Boot#### variables real OVMF writes when it HTTP-boots.

QEMU (TCG) runs the ordinary OVMF with a copy of its variable store as
pflash and QEMU's user network handing out
`http://10.0.2.2:PORT/dispatch` by DHCP; a recording server on 127.0.0.1
answers the firmware's request with 404, so nothing boots. The firmware
has then written its boot options into the variable store; they are copied
into a fake efivars folder, as efivarfs shows them, and read by
`sevimg_cert.efi` and `find_servers`. It shows that the parser takes the
real bytes, and why LoaderDeviceURL is needed: an HTTP option whose URL came
from DHCP has an empty URI node. One to two minutes (OVMF tries PXE first).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from sevimg_cert import dispatch, efi
from tests.dispatchkit import GLOBAL, FakeRoot, mini_dispatch, ovmf_variables

pytestmark = [pytest.mark.e2e, pytest.mark.qemu]

CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def test_ovmf_http_boot_options_parse_and_have_an_empty_uri(tmp_path: Path) -> None:
    for firmware in (CODE, VARS):
        if not firmware.is_file():
            pytest.fail(f"{firmware} is missing: tools/setup installs ovmf", pytrace=False)
    store = tmp_path / "vars.fd"
    shutil.copy(VARS, store)
    with mini_dispatch(*[404] * 50) as server:
        port = server.url.split(":")[2].split("/")[0]
        argv = [
            "qemu-system-x86_64", "-machine", "q35", "-m", "512", "-display", "none",
            "-no-reboot", "-monitor", "none", "-serial", f"file:{tmp_path / 'serial.log'}",
            "-drive", f"if=pflash,format=raw,readonly=on,file={CODE}",
            "-drive", f"if=pflash,format=raw,file={store}",
            "-netdev", f"user,id=n0,bootfile=http://10.0.2.2:{port}/dispatch",
            # romfile= leaves out QEMU's iPXE ROM: OVMF's own HTTP boot runs, as on a server.
            "-device", "virtio-net-pci,netdev=n0,romfile=",
        ]  # fmt: skip
        qemu = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started = time.monotonic()
        try:
            while not server.requests and time.monotonic() - started < 240:
                assert qemu.poll() is None, qemu.communicate()[1].decode(errors="replace")
                time.sleep(0.5)
            time.sleep(2)  # let the firmware finish writing its variables
        finally:
            qemu.terminate()
            qemu.communicate(timeout=30)  # reaps it and closes its stderr pipe
    assert server.requests, "OVMF never asked the server for its boot file"
    print(f"firmware's first request after {time.monotonic() - started:.0f} s")
    assert server.requests[0].path == "/dispatch"
    assert server.requests[0].method in ("HEAD", "GET")

    root = FakeRoot(tmp_path / "root")
    variables = ovmf_variables(store.read_bytes())
    for (name, guid), (attributes, data) in variables.items():
        if guid == GLOBAL and (name.startswith("Boot")):
            root.var(name, struct.pack("<I", attributes) + data)
    options = {}
    for path in sorted(root.efivars.glob("Boot0*")):
        option = efi.parse_load_option(efi.variable_data(path.read_bytes()))
        options[option.description] = option
    [http] = [o for d, o in options.items() if d.startswith("UEFI HTTPv4")]
    [nodes] = http.paths
    assert [(n.type, n.subtype) for n in nodes][-3:] == [(3, 11), (3, 12), (3, 24)]
    assert nodes[-1].data == b""  # the URL came from DHCP: the URI node is empty
    assert efi.uri_of(nodes) is None
    assert efi.boot_urls(root.efivars) == ([], [])
    lines: list[str] = []
    assert dispatch.find_servers(root.path, mdns_timeout=0, say=lines.append) == []
    assert lines == [dispatch.NO_SERVER]
