"""Certification commands: verify (an attestation report, with sevimg_cert's verifier), measure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.table import Table

from sevimg.build import measurement, pins, settings
from sevimg.catalog.index import machine_families
from sevimg.cli.base import artifact_folder_option, err, handle_errors, out, styled
from sevimg.cli.group import Context, main, pass_ctx
from sevimg.cli.params import ImageName, Number
from sevimg.machine import run
from sevimg.machine.evidence import parse_hex, read_evidence, read_report
from sevimg.problems import SevimgError
from sevimg.release import checksums, names
from sevimg_cert import certs, kds
from sevimg_cert import measure as cert_measure
from sevimg_cert.report import PRODUCT_NAMES, AttestationReport, Product
from sevimg_cert.verify import Expected, Verdict, pad_nonce, verify

_STYLE = {Verdict.PASS: "green", Verdict.FAIL: "bold red", Verdict.SKIP: "yellow"}
RESULT_SUFFIXES = (".json", ".md")


@main.command("verify")
@click.argument("report", metavar="REPORT", type=click.Path(path_type=Path))
@click.option(
    "--certs",
    "certs_dir",
    metavar="DIR",
    type=click.Path(path_type=Path),
    help="Certificates from this folder: ark, ask (or asvk) and vcek (or vlek) as .pem or "
    ".der, or KDS's cert_chain.pem with vcek.der/vcek.pem; a file holding several is sorted "
    "by what each is. A missing ASK, ASVK or ARK is AMD's pinned one.",
)
@click.option(
    "--kds",
    "kds_url",
    metavar="URL",
    help=f"Fetch the VCEK, ASK and ARK from this KDS (default: AMD's, {kds.DEFAULT_URL}).",
)
@click.option(
    "--kds-attempts",
    type=Number(1, 20, "tries", integer=True),
    default=kds.Kds.attempts,
    show_default=True,
    help="Tries per KDS request; waits 2, 4, 8 ... s between them (or what Retry-After says).",
)
@click.option(
    "--nonce",
    metavar="HEX",
    help="The request data the report must carry (at most 64 bytes; shorter is zero-padded).",
)
@click.option("--measurement", metavar="HEX", help="The expected launch measurement (48 bytes).")
@click.option(
    "--vmpl",
    type=Number(0, 3, "", integer=True),
    default=0,
    show_default=True,
    help="The VMPL the report must be for.",
)
@click.option(
    "--trusted-ark",
    "trusted_arks",
    metavar="FILE",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Also accept a chain ending in this root (PEM or DER; repeatable). AMD's Milan, "
    "Genoa and Turin roots are always trusted, any other root only when named here.",
)
@click.option(
    "--product",
    type=click.Choice(PRODUCT_NAMES, case_sensitive=False),
    help="The processor, when the report does not say (version 2) or to override it; "
    "Siena and Bergamo are Genoa-class (Genoa's roots).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def verify_command(
    report: Path,
    certs_dir: Path | None,
    kds_url: str | None,
    kds_attempts: int,
    nonce: str | None,
    measurement: str | None,
    vmpl: int,
    trusted_arks: tuple[Path, ...],
    product: str | None,
    as_json: bool,
) -> None:
    """Verify an SEV-SNP attestation report (the 1184-byte binary, or its base64).

    REPORT may also be a certification run's result.json or result.md: its
    evidence gives the report, and the nonce, expected measurement and VCEK
    unless --nonce, --measurement, --certs or --kds say otherwise.

    Checks the structure, the request data against --nonce, the measurement
    against --measurement, that debugging is off, the VMPL, the chain VCEK ->
    ASK -> ARK (or, for a report a cloud provider's VLEK signed, VLEK -> ASVK
    -> ARK) up to AMD's pinned root of the report's processor, that the VCEK
    certifies the report's chip ID, that the key certifies the reported TCB,
    and the report's signature. --product is needed only for a version 2
    report fetched from KDS: later versions name their processor. Exit status 0 only
    when every check passes; a check that could not run (no --nonce, say)
    is not a pass.
    """
    if certs_dir is not None and kds_url is not None:
        raise SevimgError("give --certs DIR or --kds URL, not both")
    evidence = read_evidence(report) if report.suffix in RESULT_SUFFIXES else None
    nonce_bytes = (
        None if nonce is None else pad_nonce(parse_hex("--nonce", nonce, size=64, exact=False))
    )
    expected_measurement = (
        None
        if measurement is None
        else parse_hex("--measurement", measurement, size=48, exact=True)
    )
    trusted = []
    for path in trusted_arks:
        try:
            trusted.append(certs.load_cert_file(path))
        except certs.CertError as exc:
            raise SevimgError(f"--trusted-ark: {exc}") from None
    chosen = Product.parse(product) if product else None
    if evidence is not None:
        nonce_bytes = evidence.nonce if nonce is None else nonce_bytes
        expected_measurement = evidence.measurement if measurement is None else expected_measurement
    if evidence is not None and evidence.vcek is not None and certs_dir is None and kds_url is None:
        vcek = evidence.vcek

        def source(parsed: AttestationReport) -> certs.Chain:
            return certs.complete((f"{report} (evidence)", vcek), None, None)
    elif certs_dir is not None:
        if not certs_dir.is_dir():
            raise SevimgError(
                f"--certs: {certs_dir}: {'not a folder' if certs_dir.exists() else 'no such folder'}"
            )
        folder = certs_dir

        def source(parsed: AttestationReport) -> certs.Chain:
            return certs.load_folder(folder)
    else:
        try:
            client = kds.Kds(kds.DEFAULT_URL if kds_url is None else kds_url, attempts=kds_attempts)
        except ValueError as exc:
            raise SevimgError(f"--kds: {exc}") from None

        def source(parsed: AttestationReport) -> certs.Chain:
            return client.fetch(parsed, chosen)

    raw = evidence.report if evidence is not None else read_report(report)
    expected = Expected(nonce_bytes, expected_measurement, vmpl, tuple(trusted))
    result = verify(raw, source, expected, product=chosen)

    if as_json:
        out.print_json(json.dumps({"report_file": str(report), **result.as_dict()}))
    else:
        table = Table(title=styled(f"sevimg verify {report}"))
        for column in ("check", "verdict", "reason"):
            table.add_column(column, overflow="fold")
        for check in result.checks:
            style = _STYLE[check.verdict]
            table.add_row(
                styled(check.name), styled(check.verdict.value, style), styled(check.reason)
            )
        out.print(table)
    if result.passed:
        if not as_json:
            key = result.report.signing_key if result.report else "?"
            out.print(f"verified: every check passed (signed by the {key})", style="bold green")
        sys.exit(0)
    failed = [c for c in result.checks if c.verdict is Verdict.FAIL]
    skipped = [c for c in result.checks if c.verdict is Verdict.SKIP]
    summary = "; ".join(f"{c.name}: {c.reason}" for c in failed) or "no check failed"
    err.print(f"sevimg: error: {report}: not verified: {summary}", style="bold red", markup=False)
    if skipped:
        names = ", ".join(c.name for c in skipped)
        err.print(f"not checked (not a pass): {names}", markup=False)
    sys.exit(1)


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
