"""`sevimg measure`: the expected SEV-SNP launch measurement of a built guest."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sevimg import settings
from sevimg.artifacts import checksums, names
from sevimg.catalog.index import machine_families
from sevimg.cli.base import artifact_folder_option, handle_errors, out
from sevimg.cli.group import Context, main, pass_ctx
from sevimg.cli.params import ImageName, Number
from sevimg.imaging import measurement, pins
from sevimg.machine import run
from sevimg.problems import SevimgError
from sevimg_cert import measure as cert_measure

RESULT_SUFFIXES = (".json", ".md")


@main.command("measure")
@click.argument("image", type=ImageName(role_prefix=True, efi_path=True))
@artifact_folder_option("from_dir")
@click.option(
    "--ovmf",
    metavar="FILE",
    type=click.Path(path_type=Path),
    help="The AMD SEV OVMF build to measure with (default: the host's own, taken out of "
    "the built host UKI in DIR).",
)
@click.option(
    "--vcpus",
    type=Number(1, 512, "vCPUs", integer=True),
    default=1,
    show_default=True,
    help="Guest vCPUs.",
)
@click.option(
    "--vcpu-type",
    default=cert_measure.DEFAULT_VCPU_TYPE,
    show_default=True,
    help="QEMU's -cpu model of the guest.",
)
@click.option(
    "--tools-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Take the pinned sev-snp-measure wheel from this folder (offline).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
@handle_errors
def measure_command(
    ctx: Context,
    image: str,
    from_dir: Path | None,
    ovmf: Path | None,
    vcpus: int,
    vcpu_type: str,
    tools_dir: Path | None,
    as_json: bool,
) -> None:
    """Print the expected SEV-SNP launch measurement of the built guest of IMAGE.

    IMAGE is a release (debian-forky), its guest or host id, or a guest .efi
    (then give --ovmf). The measurement is for SNP with kernel hashes, the
    UKI as the kernel (no initrd, no command line), the way the host
    launches it; computed with the sev-snp-measure pinned in sevimg.yaml,
    the same files the host carries. `sevimg build` writes the same value
    into the guest's and the host's manifests.
    """
    ws = ctx.ws
    folder = (from_dir or ws.out_dir).resolve()
    if image.endswith(names.ARTIFACT_SUFFIX):
        guest = Path(image)
        host = None
        if ovmf is None:
            raise SevimgError(f"{image}: a guest given as a file needs --ovmf FILE")
    else:
        base = image.partition("-")[2] if image.startswith(("guest-", "host-")) else image
        guest = folder / names.artifact_name(f"guest-{base}")
        host = folder / names.artifact_name(f"host-{base}")
    if not guest.is_file():
        hint = "" if host is None else f"build it first: sevimg build {base} -o {folder}"
        raise SevimgError(f"{guest}: no such guest image", hint=hint)
    if ovmf is not None:
        if not ovmf.is_file():
            raise SevimgError(
                f"--ovmf: {ovmf}: {'not a regular file' if ovmf.exists() else 'no such file'}"
            )
        try:
            # Size and shape first: a huge file is refused before it is read.
            if (problem := cert_measure.ovmf_problem(ovmf.stat().st_size)) is not None:
                raise SevimgError(f"--ovmf: {ovmf} {problem}")
            firmware = ovmf.read_bytes()
        except OSError as exc:
            raise SevimgError(f"--ovmf: {ovmf}: cannot read: {exc.strerror or exc}") from None
        firmware_name = shown = str(ovmf)
    else:
        assert host is not None  # a .efi guest needs --ovmf, checked above
        if not host.is_file():
            raise SevimgError(
                f"{host}: no such host image, whose OVMF is the default",
                hint=f"build it (sevimg build {base} -o {folder}), or give --ovmf FILE",
            )
        firmware_name, firmware = measurement.find_host_firmware(
            host, run.search_paths(machine_families(ws)).sev_firmware
        )
        shown = f"{host}:{firmware_name}"
    local = settings.load_local(ws)
    libraries = pins.python_libraries(
        settings.load_tool_pins(ws),
        (local.cache_dir or ws.cache_dir / "build").resolve(),
        tools_dir or local.tools_dir,
        local.proxy,
    )
    if libraries is None:
        raise SevimgError(
            "sev-snp-measure is not pinned in sevimg.yaml (tools: ... format: wheel)",
            hint="sevimg's own sevimg.yaml pins it; copy that entry",
        )
    measured = measurement.compute(guest, firmware, firmware_name, libraries, vcpus, vcpu_type)
    result = {
        "guest": str(guest),
        "guest_sha256": checksums.sha256_file(guest),
        "ovmf": shown,
        "ovmf_sha256": measured.ovmf_sha256,
        "vcpus": vcpus,
        "vcpu_type": vcpu_type,
        "sev_snp_measure": measured.tool_version,
        "measurement": measured.measurement.hex(),
    }
    if as_json:
        out.print_json(json.dumps(result))
        return
    for key, value in result.items():
        if key != "measurement":
            out.print(f"{key}: {value}", markup=False, highlight=False)
    out.print(measured.measurement.hex(), markup=False, highlight=False)
