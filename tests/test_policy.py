"""SEV policy: floors, required packages, firmware location, guest modules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sevimg.catalog import payload
from sevimg.catalog.index import load_catalog
from sevimg.catalog.pipeline import check_entry
from sevimg.catalog.policy import check_spec, floor_verdicts
from sevimg.catalog.resolve import resolve
from sevimg.catalog.spec import KernelModules
from sevimg.catalog.versions import HOST_FLOORS, Verdict, compare, parse
from sevimg.workspace import Workspace


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6.12.117", (6, 12, 117)),
        ("1:10.0.13+ds-0+deb13u1", (10, 0, 13)),
        ("2025.02-8+deb13u1", (2025, 2)),
        ("20241117", (2024, 11, 17)),
        ("7.0", (7, 0)),
    ],
)
def test_parse(text: str, expected: tuple[int, ...]) -> None:
    assert parse(text) == expected


def test_compare() -> None:
    assert compare("6.12", "6.11") == 1
    assert compare("6.11", "6.11.0") == 0
    assert compare("6.8", "6.11") == -1  # numeric, not lexical
    assert compare("20241117", "2024.11") == 1
    assert compare("2024.02", "2024.11") == -1
    with pytest.raises(ValueError, match="not a version"):
        parse("latest")


def test_floors() -> None:
    kernel, qemu, ovmf = HOST_FLOORS
    assert kernel.check("6.10") is Verdict.FAIL and kernel.check("6.11") is Verdict.OK
    assert qemu.check("9.0.2") is Verdict.FAIL
    assert qemu.check("9.1.3") is Verdict.WARN
    assert qemu.check("9.2") is Verdict.OK
    assert ovmf.check("2021.11") is Verdict.FAIL and ovmf.check("20241117") is Verdict.OK
    assert ovmf.check("2022.02") is Verdict.WARN and ovmf.check("2024.08") is Verdict.WARN
    assert ovmf.check(None) is Verdict.UNKNOWN


def test_catalog_verdicts(catalog) -> None:  # type: ignore[no-untyped-def]
    assert floor_verdicts(catalog.entries["fedora-41"])["qemu"] is Verdict.WARN
    assert set(floor_verdicts(catalog.entries["debian-13"]).values()) == {Verdict.OK}
    assert floor_verdicts(catalog.entries["fedora-rawhide"])["kernel"] is Verdict.UNKNOWN


def problems_after(
    workspace: Path, name: str, append: str = "", replace: tuple[str, str] | None = None
) -> list[str]:
    path = workspace / "images" / f"{name}.yaml"
    text = path.read_text()
    if replace:
        text = text.replace(*replace)
    path.write_text(text + append)
    catalog = load_catalog(Workspace(workspace))
    return [str(p) for p in check_entry(catalog, catalog.entries[name]).problems]


def test_host_below_floor_is_an_error(workspace: Path) -> None:
    found = problems_after(workspace, "ubuntu-24.04", replace=("roles: [guest]\n", ""))
    errors = [p for p in found if ": error: " in p]
    assert any(
        "versions.kernel: kernel 6.8 is below the SEV-SNP host floor 6.11" in p for p in errors
    )
    assert any("versions.qemu: qemu 8.2.2 is below the SEV-SNP host floor 9.1" in p for p in errors)
    # OVMF has SEV-SNP since edk2-stable202202: 2024.02 is below the guide's floor, a warning
    assert not any("versions.ovmf" in p for p in errors)
    assert any(
        ": warning: versions.ovmf: ovmf 2024.02 meets the hard floor 2022.02" in p for p in found
    )


def test_guest_only_release_skips_host_floors(catalog) -> None:  # type: ignore[no-untyped-def]
    assert check_entry(catalog, catalog.entries["ubuntu-24.04"]).problems == ()


def test_qemu_9_1_warns(catalog) -> None:  # type: ignore[no-untyped-def]
    problems = check_entry(catalog, catalog.entries["fedora-41"]).problems
    assert [str(p) for p in problems] == [
        "images/fedora-41.yaml:8:9: warning: versions.qemu: qemu 9.1.3 meets the hard floor 9.1 "
        "(the sev-snp-guest object landed in QEMU 9.1.0) but not the guide's 9.2 "
        "(the guide's floor is QEMU 9.2)"
    ]


def test_removing_a_component_is_caught(workspace: Path) -> None:
    found = problems_after(workspace, "debian-13", "host:\n  remove_packages: [qemu-system-x86]\n")
    assert any("host: the host image needs its qemu package 'qemu-system-x86'" in p for p in found)


def test_removing_a_payload_need_is_caught(workspace: Path) -> None:
    found = problems_after(workspace, "debian-13", "host:\n  remove_packages: [jq]\n")
    assert any("the host payload needs jq (package 'jq')" in p for p in found)


def test_unknown_firmware_path_warns(workspace: Path) -> None:
    found = problems_after(workspace, "debian-13", "host:\n  sev_firmware: /opt/ovmf/sev.fd\n")
    assert any(
        ": warning: host.sev_firmware: /opt/ovmf/sev.fd is not one of the known SEV firmware locations"
        in p
        for p in found
    )


@pytest.mark.parametrize(
    ("exclude", "lost"),
    [
        ("virtio_net", "virtio_net"),
        ("net/vmw_vsock/", "vsock"),
        ("drivers/virtio/", "virtio_pci"),
        ("sev-guest", "sev-guest"),
    ],
)
def test_user_excludes_cannot_drop_required_modules(
    workspace: Path, exclude: str, lost: str
) -> None:
    # sevimg's own includes win over excludes, so a YAML exclude cannot do
    # what `KernelModulesExclude=.*` once did to a hand-written guest.
    found = problems_after(
        workspace, "debian-13", f"guest:\n  kernel_modules:\n    exclude: ['{exclude}']\n"
    )
    assert not any("would lose" in p for p in found)
    catalog = load_catalog(Workspace(workspace))
    spec = resolve(catalog.entries["debian-13"], "guest")
    assert exclude in spec.kernel_modules.exclude
    assert payload.module_kept(spec.kernel_modules, payload.GUEST_REQUIRED_MODULES[lost])


def test_policy_flags_a_guest_without_its_modules(catalog) -> None:  # type: ignore[no-untyped-def]
    entry = catalog.entries["debian-13"]
    spec = resolve(entry, "guest")
    stripped = dataclasses.replace(
        spec, kernel_modules=KernelModules(False, ("msr", "sev-guest"), ())
    )
    lost = sorted(
        p.message.split(" module")[0].split("lose the ")[1] for p in check_spec(stripped, entry)
    )
    # ... and the TSM report module, by either of its names (configfs-tsm reports).
    assert lost == sorted({*payload.GUEST_REQUIRED_MODULES, "TSM report"} - {"msr", "sev-guest"})


def test_module_rules() -> None:
    guest = payload.GUEST_MODULES
    for path in (
        *payload.GUEST_REQUIRED_MODULES.values(),
        *payload.GUEST_TSM_REPORT_MODULES.values(),
    ):
        assert payload.module_kept(guest, path), path
    assert not payload.module_kept(guest, "drivers/gpu/drm/amd/amdgpu/amdgpu")
    host = payload.HOST_MODULES
    assert payload.module_kept(host, "drivers/net/ethernet/intel/ice/ice")
    assert payload.module_kept(host, "drivers/nvme/host/nvme")
    assert not payload.module_kept(host, "drivers/gpu/drm/amd/amdgpu/amdgpu")
    assert not payload.module_kept(host, "sound/core/snd")
    # folders anchor at the top of the tree: net/wireless/ does not hit drivers/net/wireless/...
    assert payload.module_kept(
        KernelModules(True, (), ("net/wireless/",)), "drivers/net/wireless/x"
    )
    # ...and without keep_all only includes survive
    assert not payload.module_kept(KernelModules(False, ("msr",), ()), "drivers/net/virtio_net")
