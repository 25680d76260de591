"""The harness's verification of the guest's report: where the certificates come from, and the verdict.

Separate from sevimg_cert.harness so that the harness itself needs only the
standard library: without python3-cryptography it still runs its
prerequisites and writes a result whose attestation step says what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sevimg_cert import certs, crl, kds, verify
from sevimg_cert.peerhttp import Deadline
from sevimg_cert.redact import redact
from sevimg_cert.report import AttestationReport, Product

CERTS_DIR = "etc/sevimg/certs"  # below the root: a lab's own certificate folder
# The series whose VCEKs KDS serves, by the name KDS spells them with.
PRODUCTS = {"7003": "milan", "9004": "genoa", "8004": "genoa", "9005": "turin"}


CRL_DEADLINE = 60.0  # seconds for the CRL, all attempts together: revocation is optional


def crl_fetcher(
    client: kds.Kds, product: Product | None = None
) -> Callable[[AttestationReport, certs.Chain], crl.Crl]:
    """A function fetching the CRL for a report's chain from `client`'s KDS (or a KDS cache).

    VLEK-signed reports take the `vlek` CRL, the others the `vcek` one, of
    the report's product (or `product` when given). Errors are KdsError,
    crl.CrlError or ValueError: the revocation check reports them.
    """

    def fetch(report: AttestationReport, chain: certs.Chain) -> crl.Crl:
        chosen = product or report.product
        if chosen is None:
            raise ValueError(
                f"the report does not say which processor made it ({report.product_source}), "
                "so its CRL cannot be named"
            )
        key = "VLEK" if report.signing_key == "VLEK" else "VCEK"
        source, data = client.fetch_crl(chosen, key)
        return crl.parse_crl(data, source)

    return fetch


def _first_answer(
    fetchers: list[Callable[[AttestationReport, certs.Chain], crl.Crl]],
) -> Callable[[AttestationReport, certs.Chain], crl.Crl]:
    """Ask each in turn (a lab's cache, then AMD's KDS); the first CRL wins, else every error."""

    def fetch(report: AttestationReport, chain: certs.Chain) -> crl.Crl:
        problems = []
        for one in fetchers:
            try:
                return one(report, chain)
            except (kds.KdsError, crl.CrlError, ValueError) as exc:
                problems.append(str(exc))
        raise kds.KdsError("; ".join(problems))

    return fetch


@dataclass(frozen=True)
class Verified:
    """The verifier's result, and the evidence it adds."""

    result: verify.Result
    vcek_pem: str | None
    product: str | None

    @property
    def revocation(self) -> str | None:
        """What the result records about the CRL: checked, revoked, or why it was not."""
        check = next((c for c in self.result.checks if c.name == verify.REVOCATION), None)
        if check is None:
            return None
        if check.verdict is verify.Verdict.PASS:
            return f"checked: {check.reason}"
        if check.failure is verify.Failure.REVOKED and check.verdict is verify.Verdict.FAIL:
            return f"revoked: {check.reason}"
        if check.verdict is verify.Verdict.SKIP:
            return f"not checked: {check.reason}"
        return check.reason  # "CRL refused: why", "required, not checked: why"


def folder_crls(folder: Path) -> tuple[crl.Crl, ...]:
    """The CRLs a lab put in its certificate folder (crl.der, crl.pem, *.crl); CrlError when unreadable."""
    found = []
    for path in sorted({*folder.glob("crl.der"), *folder.glob("crl.pem"), *folder.glob("*.crl")}):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise crl.CrlError(f"{path}: cannot read: {exc.strerror or exc}") from None
        found.append(crl.parse_crl(data, str(path)))
    return tuple(found)


def verify_report(
    root: Path,
    report: bytes,
    nonce: bytes,
    measurement: bytes | None,
    *,
    series: str | None,
    kds_url: str | None,
    kds_attempts: int,
    trusted_arks: tuple[x509.Certificate, ...],
    log: Callable[[str], None],
    kds_mirrors: tuple[str, ...] = (),
    deadline: Deadline | None = None,
    now: Callable[[], datetime] = verify.utc_now,
) -> Verified:
    """Verify `report`: certificates from <root>/etc/sevimg/certs when present, else KDS.

    KDS is `kds_url` (`sevimg.kds=`) alone when given; otherwise the KDS
    caches of the dispatch servers found (`kds_mirrors`, see
    :func:`sevimg_cert.dispatch.kds_cache_url`) in turn, then AMD's KDS.
    KDS is asked within `deadline` (each certificate within kds.BUDGET too).

    Revocation: the CRLs in the certificate folder, and the product's CRL from
    the KDS (`sevimg.kds=`, a lab's cache; AMD's when no folder is used).
    Without either the check is skipped, and recorded as not done.
    """
    folder = root / CERTS_DIR
    product = Product.parse(PRODUCTS[series]) if series in PRODUCTS else None
    source: Callable[[AttestationReport], certs.Chain]
    crls: tuple[crl.Crl, ...] = ()
    fetch_crl = None
    # The CRL from where the certificates come: sevimg.kds= alone when given, else the
    # lab's KDS caches, then (only without a certificate folder) AMD's KDS.
    mirrors = [*dict.fromkeys(kds_mirrors)]
    crl_urls = [kds_url] if kds_url else [*mirrors, *([] if folder.is_dir() else [kds.DEFAULT_URL])]
    fetchers = []
    for url in crl_urls:
        try:
            client = kds.Kds(
                url,
                attempts=min(kds_attempts, 3) if url in mirrors else kds_attempts,
                budget=CRL_DEADLINE,
                deadline=deadline,
            )
        except ValueError as exc:
            log(f"no CRL from sevimg.kds={redact(url)}: {exc}")
            continue
        fetchers.append(crl_fetcher(client, product))
    if fetchers:
        fetch_crl = _first_answer(fetchers)
    if folder.is_dir():
        try:
            crls = folder_crls(folder)
        except crl.CrlError as exc:
            bad = str(exc)

            def unreadable(parsed: AttestationReport, chain: certs.Chain) -> crl.Crl:
                raise crl.CrlError(bad)

            fetch_crl = unreadable  # the unreadable file is the check's reason, not a crash
    if folder.is_dir():
        log(f"certificates from /{CERTS_DIR}")

        def source(parsed: AttestationReport) -> certs.Chain:
            return certs.load_folder(folder)
    else:
        urls = [kds_url] if kds_url else [*dict.fromkeys(kds_mirrors), kds.DEFAULT_URL]
        log(f"certificates from KDS {', then '.join(redact(u) for u in urls)}")

        def source(parsed: AttestationReport) -> certs.Chain:
            problems = []
            for i, url in enumerate(urls):
                mirror = url not in (kds_url, kds.DEFAULT_URL)
                try:
                    # A dispatch server's cache is the lab machine: fewer attempts before AMD's.
                    client = kds.Kds(
                        url,
                        attempts=min(kds_attempts, 3) if mirror else kds_attempts,
                        deadline=deadline,
                    )
                except ValueError as exc:
                    problems.append(f"sevimg.kds={redact(url)}: {exc}")
                    continue
                try:
                    return client.fetch(parsed, product)
                except kds.KdsError as exc:
                    problems.append(str(exc))
                    if i + 1 < len(urls):
                        log(f"KDS {redact(url)}: {exc}; trying {redact(urls[i + 1])}")
            raise kds.KdsError("; ".join(problems))

    expected = verify.Expected(
        nonce, measurement, 0, trusted_arks, crls=crls, fetch_crl=fetch_crl, now=now
    )
    outcome = verify.verify(report, source, expected)
    vcek = outcome.chain.vcek.public_bytes(Encoding.PEM).decode() if outcome.chain else None
    made_by = outcome.report.product.value if outcome.report and outcome.report.product else None
    return Verified(outcome, vcek, made_by)
