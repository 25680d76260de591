"""The harness's verification of the guest's report: where the certificates come from, and the verdict.

Separate from sevimg_cert.harness so that the harness itself needs only the
standard library: without python3-cryptography it still runs its
prerequisites and writes a result whose attestation step says what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sevimg_cert import certs, kds, verify
from sevimg_cert.peerhttp import Deadline
from sevimg_cert.redact import redact
from sevimg_cert.report import AttestationReport, Product

CERTS_DIR = "etc/sevimg/certs"  # below the root: a lab's own certificate folder
# The series whose VCEKs KDS serves, by the name KDS spells them with.
PRODUCTS = {"7003": "milan", "9004": "genoa", "8004": "genoa", "9005": "turin"}


@dataclass(frozen=True)
class Verified:
    """The verifier's result, and the evidence it adds."""

    result: verify.Result
    vcek_pem: str | None
    product: str | None


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
) -> Verified:
    """Verify `report`: certificates from <root>/etc/sevimg/certs when present, else KDS.

    KDS is `kds_url` (`sevimg.kds=`) alone when given; otherwise the KDS
    caches of the dispatch servers found (`kds_mirrors`, see
    :func:`sevimg_cert.dispatch.kds_cache_url`) in turn, then AMD's KDS.
    KDS is asked within `deadline` (each certificate within kds.BUDGET too).
    """
    folder = root / CERTS_DIR
    product = Product.parse(PRODUCTS[series]) if series in PRODUCTS else None
    source: Callable[[AttestationReport], certs.Chain]
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

    expected = verify.Expected(nonce, measurement, 0, trusted_arks)
    outcome = verify.verify(report, source, expected)
    vcek = outcome.chain.vcek.public_bytes(Encoding.PEM).decode() if outcome.chain else None
    made_by = outcome.report.product.value if outcome.report and outcome.report.product else None
    return Verified(outcome, vcek, made_by)
