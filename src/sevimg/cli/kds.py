"""`sevimg kds fetch`: fill `sevimg serve`'s KDS cache ahead of time, for a lab with no internet."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sevimg.cli.base import handle_errors, out
from sevimg.cli.group import Context, main, pass_ctx
from sevimg.problems import SevimgError, error

if TYPE_CHECKING:
    from sevimg.serve.kdspaths import Key

SIGNERS = ("vcek", "vlek")


def default_cache(ctx: Context) -> Path:
    """<workspace cache>/kds, or $SEVIMG_CACHE/kds (./.cache/kds) outside a workspace."""
    try:
        return ctx.ws.cache_dir / "kds"
    except SevimgError:
        return Path(os.environ.get("SEVIMG_CACHE") or ".cache") / "kds"


def kds_cache_option(func: click.decorators.FC) -> click.decorators.FC:
    """`--kds-cache DIR`, shared by `serve` and `kds fetch`."""
    return click.option(
        "--kds-cache",
        "kds_cache",
        metavar="DIR",
        type=click.Path(file_okay=False, path_type=Path),
        help="The KDS cache folder (default: .cache/kds of the workspace, or $SEVIMG_CACHE/kds).",
    )(func)


@main.group("kds")
def kds_group() -> None:
    """Fill the KDS cache that `sevimg serve` answers hosts from (AMD certificates, CRLs)."""


@kds_group.command("fetch")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--product",
    "products",
    multiple=True,
    metavar="NAME",
    help="Fetch this product's chains and CRLs (VCEK and VLEK): Milan, Genoa or Turin. Repeatable.",
)
@click.option(
    "--vcek",
    "vceks",
    multiple=True,
    metavar="PRODUCT/HWID?SPLS",
    help="A VCEK by its KDS path, e.g. 'Genoa/<128 hex digits>?blSPL=7&teeSPL=0&snpSPL=14&ucodeSPL=72'. Repeatable.",
)
@click.option(
    "--kds",
    "kds_url",
    default=None,
    metavar="URL",
    help="Where to fetch from (default: AMD's KDS, https://kdsintf.amd.com).",
)
@kds_cache_option
@pass_ctx
@handle_errors
def kds_fetch(
    ctx: Context,
    files: Sequence[Path],
    products: Sequence[str],
    vceks: Sequence[str],
    kds_url: str | None,
    kds_cache: Path | None,
) -> None:
    """Fetch certificates and CRLs from KDS into the cache, so `serve --kds-offline` can answer.

    \b
    FILES are results of certification runs (result.json or result.md)
    or bare attestation reports: each gives a chip's VCEK (its hardware
    ID and reported TCB) and its product, whose chains and CRLs are
    fetched too. Entries already in the cache are not fetched again.
    Run it on a machine that reaches KDS, then copy the folder to the
    lab machine's --kds-cache.
    """
    from sevimg.serve.kds import KdsCache, KdsFetchError  # noqa: PLC0415 - cryptography, httpx

    folder = kds_cache or default_cache(ctx)
    keys = _keys(files, products, vceks)
    if not keys:
        raise SevimgError(
            "nothing to fetch: give result files or reports, --product NAME or --vcek PATH",
            hint="e.g. `sevimg kds fetch --product Genoa` for Genoa's chains and CRLs",
        )
    try:
        cache = KdsCache(folder, kds_url) if kds_url else KdsCache(folder)
    except ValueError as exc:
        raise SevimgError(f"--kds: {exc}") from None
    failed = []
    for key in keys:
        had = cache.read(key) is not None
        try:
            data = cache.get(key)
        except KdsFetchError as exc:
            failed.append(f"{key.path}: {exc.why}")
            out.print(f"failed  {key.path}: {exc.why}", markup=False, highlight=False)
            continue
        how = "cached " if had else "fetched"
        out.print(f"{how} {key.path} ({len(data)} bytes)", markup=False, highlight=False)
    out.print(f"KDS cache: {folder}", markup=False, highlight=False)
    if failed:
        raise SevimgError(
            f"{len(failed)} of {len(keys)} could not be fetched into {folder}",
            [error(str(folder), line) for line in failed],
        )


def _keys(files: Sequence[Path], products: Sequence[str], vceks: Sequence[str]) -> list[Key]:
    from sevimg.serve import kdspaths  # noqa: PLC0415 - cryptography

    keys: list[Key] = []
    wanted: list[str] = []
    for name in products:
        match = [p for p in kdspaths.PRODUCTS if p.lower() == name.strip().lower()]
        if not match:
            raise SevimgError(f"--product {name!r}: KDS knows {', '.join(kdspaths.PRODUCTS)}")
        wanted.append(match[0])
    for text in vceks:
        path, _, query = text.partition("?")
        product, _, hwid = path.strip("/").partition("/")
        try:
            key = kdspaths.vcek_key(product, hwid, query)
        except ValueError as exc:
            raise SevimgError(f"--vcek {text[:200]!r}: {exc}") from None
        keys.append(key)
        wanted.append(key.product)
    for file in files:
        found = _from_file(file)
        keys.append(found)
        wanted.append(found.product)
    for product in dict.fromkeys(wanted):
        for signer in SIGNERS:
            keys += [kdspaths.chain_key(product, signer), kdspaths.crl_key(product, signer)]
    return list(dict.fromkeys(keys))


def _from_file(path: Path) -> Key:
    """The VCEK key of the report in a result file or a bare report."""
    from sevimg.machine.evidence import read_evidence, read_report  # noqa: PLC0415
    from sevimg.serve import kdspaths  # noqa: PLC0415
    from sevimg_cert.kds import Kds, KdsError  # noqa: PLC0415
    from sevimg_cert.report import ReportError, parse_report  # noqa: PLC0415

    raw = read_evidence(path).report if path.suffix in (".json", ".md") else read_report(path)
    try:
        report = parse_report(raw)
    except ReportError as exc:
        raise SevimgError(f"{path}: not an attestation report: {exc}") from None
    if report.product is None:
        raise SevimgError(
            f"{path}: the report does not say which processor made it; use --vcek PRODUCT/HWID?…"
        )
    try:
        url = Kds("http://kds.invalid").vcek_url(report, report.product)
    except KdsError as exc:
        raise SevimgError(f"{path}: {exc}") from None
    tail = url.removeprefix("http://kds.invalid/vcek/v1/")
    where, _, query = tail.partition("?")
    product, _, hwid = where.partition("/")
    return kdspaths.vcek_key(product, hwid, query)
