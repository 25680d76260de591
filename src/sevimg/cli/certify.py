"""Certification commands: verify (an attestation report, with sevimg_cert's verifier)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from sevimg.cli.base import handle_errors
from sevimg.cli.group import main
from sevimg.cli.params import Number
from sevimg.cli.verdict import (
    EXIT_HELP,
    JsonAwareCommand,
    Source,
    cannot_start,
    json_on_crash,
    show,
)
from sevimg.machine import verify_policy
from sevimg.machine.evidence import expected_from, parse_hex, read_evidence, read_report
from sevimg.problems import SevimgError
from sevimg_cert import attest, certs, crl, kds
from sevimg_cert.report import PRODUCT_NAMES, AttestationReport, Product
from sevimg_cert.verify import Expected, pad_nonce, utc_now, verify

RESULT_SUFFIXES = (".json", ".md")


@main.command("verify", cls=JsonAwareCommand, epilog=EXIT_HELP)
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
    help="Fetch the VCEK, ASK and ARK from this KDS (default: AMD's, "
    f"{kds.DEFAULT_URL}), and the product's CRL (/vcek/v1/<product>/crl, /vlek/v1/... "
    "for VLEK-signed reports). With --certs, only the CRL is fetched. A sevimg serve "
    "KDS cache works: give its /kds URL.",
)
@click.option(
    "--kds-attempts",
    type=Number(1, 20, "tries", integer=True),
    default=kds.Kds.attempts,
    show_default=True,
    help="Tries per KDS request; waits 2, 4, 8 ... s between them (or what Retry-After says).",
)
@click.option(
    "--crl",
    "crl_files",
    metavar="FILE",
    multiple=True,
    type=click.Path(path_type=Path),
    help="AMD's certificate revocation list (DER or PEM; repeatable). It counts only when "
    "the chain's ARK signed it and it is current; a CRL of another product is ignored.",
)
@click.option(
    "--at",
    "at_time",
    metavar="TIME",
    help="Judge whether a CRL is current at this UTC time (ISO 8601, e.g. "
    "2026-11-10T12:00:00Z; default now): to verify old evidence with the CRL of its day.",
)
@click.option(
    "--nonce",
    metavar="HEX",
    help="The request data the report must carry (at most 64 bytes; shorter is zero-padded).",
)
@click.option("--measurement", metavar="HEX", help="The expected launch measurement (48 bytes).")
@click.option(
    "--expect-from",
    metavar="FILE",
    type=click.Path(path_type=Path),
    help="Take the expected measurement from an image's <image>.manifest.json, or from a "
    "measurements.json entry (name it with --expect-image).",
)
@click.option("--expect-image", metavar="IMAGE", help="The image's entry in --expect-from.")
@click.option(
    "--policy",
    "policy_file",
    metavar="FILE",
    type=click.Path(path_type=Path),
    help="A policy YAML (schema/verify-policy.schema.json): minimum TCB, guest policy "
    "bits, minimum report version, VMPL, required revocation. Flags override it.",
)
@click.option(
    "--min-tcb",
    metavar="COMPONENT=N",
    multiple=True,
    help="Lowest accepted reported-TCB version of a component: bootloader, tee, snp, "
    "microcode or fmc (Turin); repeatable.",
)
@click.option(
    "--refuse-smt", is_flag=True, default=None, help="Refuse a guest policy allowing SMT."
)
@click.option(
    "--allow-migration-agent",
    is_flag=True,
    default=None,
    help="Accept a guest policy allowing a migration agent (refused by default).",
)
@click.option(
    "--require-single-socket",
    is_flag=True,
    default=None,
    help="Require the single-socket bit of the guest policy.",
)
@click.option("--min-abi", metavar="MAJOR.MINOR", help="Lowest ABI the guest policy may name.")
@click.option(
    "--min-report-version",
    type=Number(2, 5, "", integer=True),
    help="Lowest report version accepted (default 2).",
)
@click.option(
    "--require-crl",
    is_flag=True,
    default=None,
    help="Fail unless a CRL was checked (by default, revocation without a CRL is listed "
    "as not checked).",
)
@click.option(
    "--vmpl",
    type=Number(0, 3, "", integer=True),
    help="The VMPL the report must be for (default 0).",
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
    help="The processor, when the report does not say (version 2: otherwise its chain's root "
    "says, or KDS is asked under Milan, then Genoa) or to override it; Siena and Bergamo are "
    "Genoa-class (Genoa's roots).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@handle_errors
def verify_command(report: Path, as_json: bool, **options: Any) -> None:
    """Verify an SEV-SNP attestation report (the 1184-byte binary, or its base64).

    REPORT may also be a certification run's result.json or result.md: its
    evidence gives the report, and the nonce, expected measurement and VCEK
    unless --nonce, --measurement, --certs or --kds say otherwise. Values taken
    from the evidence itself are said to be: they prove only that a genuine
    chip signed some guest.

    Checks the structure, the request data against --nonce, the measurement,
    that debugging is off, the guest policy, minimum TCB and report version
    (--policy and the flags), the VMPL, the chain VCEK -> ASK -> ARK (or, for
    a report a cloud provider's VLEK signed, VLEK -> ASVK -> ARK) up to AMD's
    pinned root of the report's processor, that the VCEK certifies the
    report's chip ID and the key the reported TCB, the report's signature,
    and revocation (--crl, or KDS's CRL). Versions 3 and later name their
    processor; for a version 2 report KDS is asked under Milan, then Genoa
    (--product names it outright).
    Every required check must pass; a check that could not run is not a pass.
    Revocation without a CRL is optional unless --require-crl.
    """
    with json_on_crash(str(report), as_json):
        try:
            setup = _prepare(report, **options)
        except SevimgError as exc:
            cannot_start(exc, str(report), as_json)
        result = verify(setup.raw, setup.source, setup.expected, product=setup.product)
        show(str(report), result, setup.sources, as_json, setup.expected.policy.as_dict())


@dataclass(frozen=True)
class _Setup:
    raw: bytes
    source: Callable[[AttestationReport], certs.Chain]
    expected: Expected
    sources: dict[str, Source]
    product: Product | None


def _prepare(
    report: Path,
    *,
    certs_dir: Path | None,
    kds_url: str | None,
    kds_attempts: int,
    crl_files: tuple[Path, ...],
    at_time: str | None,
    nonce: str | None,
    measurement: str | None,
    expect_from: Path | None,
    expect_image: str | None,
    policy_file: Path | None,
    min_tcb: tuple[str, ...],
    refuse_smt: bool | None,
    allow_migration_agent: bool | None,
    require_single_socket: bool | None,
    min_abi: str | None,
    min_report_version: int | None,
    require_crl: bool | None,
    vmpl: int | None,
    trusted_arks: tuple[Path, ...],
    product: str | None,
) -> _Setup:
    """Everything verification needs, read and checked; SevimgError when it cannot start."""
    if measurement is not None and expect_from is not None:
        raise SevimgError("give --measurement HEX or --expect-from FILE, not both")
    if expect_image is not None and expect_from is None:
        raise SevimgError("--expect-image names an entry of --expect-from FILE; give that too")
    evidence = read_evidence(report) if report.suffix in RESULT_SUFFIXES else None
    raw = evidence.report if evidence is not None else read_report(report)
    flags = verify_policy.Overrides(
        min_tcb,
        refuse_smt,
        allow_migration_agent,
        require_single_socket,
        min_abi,
        min_report_version,
        vmpl,
        require_crl,
    )
    policy, expected_vmpl = verify_policy.resolve(policy_file, flags)
    nonce_src = Source(None, "")
    if nonce is not None:
        nonce_src = Source(pad_nonce(parse_hex("--nonce", nonce, size=64, exact=False)), "--nonce")
    elif evidence is not None and evidence.nonce is not None:
        nonce_src = Source(evidence.nonce, "evidence")
    measurement_src = Source(None, "")
    if measurement is not None:
        measurement_src = Source(
            parse_hex("--measurement", measurement, size=48, exact=True), "--measurement"
        )
    elif expect_from is not None:
        value, where = expected_from(expect_from, expect_image)
        measurement_src = Source(value, f"--expect-from {where}")
    elif evidence is not None and evidence.measurement is not None:
        measurement_src = Source(evidence.measurement, "evidence")
    trusted = []
    for path in trusted_arks:
        try:
            trusted.append(certs.load_cert_file(path))
        except certs.CertError as exc:
            raise SevimgError(f"--trusted-ark: {exc}") from None
    crls = []
    for path in crl_files:
        try:
            crls.append(crl.parse_crl(certs.read_bytes(path), str(path)))
        except (certs.CertError, crl.CrlError) as exc:
            raise SevimgError(f"--crl: {exc}") from None
    now = utc_now
    if at_time is not None:
        when = _parse_time(at_time)
        now = lambda: when  # noqa: E731  (a fixed clock)
    chosen = Product.parse(product) if product else None
    client = None
    if kds_url is not None or (certs_dir is None and (evidence is None or evidence.vcek is None)):
        try:
            client = kds.Kds(kds.DEFAULT_URL if kds_url is None else kds_url, attempts=kds_attempts)
        except ValueError as exc:
            raise SevimgError(f"--kds: {exc}") from None
    source: Callable[[AttestationReport], certs.Chain]
    if certs_dir is not None:
        if not certs_dir.is_dir():
            raise SevimgError(
                f"--certs: {certs_dir}: {'not a folder' if certs_dir.exists() else 'no such folder'}"
            )
        folder = certs_dir

        def source(parsed: AttestationReport) -> certs.Chain:
            return certs.load_folder(folder)
    elif kds_url is None and evidence is not None and evidence.vcek is not None:
        vcek = evidence.vcek

        def source(parsed: AttestationReport) -> certs.Chain:
            return certs.complete((f"{report} (evidence)", vcek), None, None)
    else:
        assert client is not None
        fetcher = client

        def source(parsed: AttestationReport) -> certs.Chain:
            return fetcher.fetch(parsed, chosen)

    fetch_crl = None
    if client is not None:
        crl_client = replace(client, budget=attest.CRL_DEADLINE)
        fetch_crl = attest.crl_fetcher(crl_client, chosen)
    expected = Expected(
        nonce_src.value,
        measurement_src.value,
        expected_vmpl,
        tuple(trusted),
        policy=policy,
        crls=tuple(crls),
        fetch_crl=fetch_crl,
        now=now,
    )
    return _Setup(
        raw, source, expected, {"nonce": nonce_src, "measurement": measurement_src}, chosen
    )


def _parse_time(text: str) -> datetime:
    """An aware UTC time from ISO 8601 text (Z or an offset; none means UTC)."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise SevimgError(
            f"--at: {text!r} is not an ISO 8601 time (e.g. 2026-11-10T12:00:00Z)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
