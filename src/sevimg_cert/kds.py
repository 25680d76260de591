"""AMD's Key Distribution Service (KDS): a chip's VCEK and its product's ASK/ARK.

URLs (AMD's "Versioned Chip Endorsement Key (VCEK) Certificate and KDS
Interface Specification", document 57230):

    {base}/vcek/v1/{Milan|Genoa|Turin}/{hwid}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..
    {base}/vcek/v1/{product}/cert_chain        (PEM: the ASK, then the ARK)
    {base}/vlek/v1/{product}/cert_chain        (PEM: the ASVK, then the ARK)
    {base}/vcek/v1/{product}/crl               (DER: the ARK's CRL; /vlek/v1/... for VLEKs)

`hwid` is the report's chip ID in hex (Turin: its first 8 bytes, and the URL
also carries fmcSPL); the SPLs are the report's reported TCB. The VCEK comes
as DER. KDS serves no VLEK by chip (AMD hands VLEKs to cloud providers,
whose hosts give them to guests in the extended report's certificate
table), so a VLEK-signed report needs its VLEK in a folder. KDS
rate-limits with 429, so requests are retried with backoff on 429, 5xx and
connection errors, honouring Retry-After, all within one deadline
(sevimg_cert.peerhttp: a KDS that drips its answer cannot hold the caller).
Only the standard library is used: this runs inside the host image.
"""

from __future__ import annotations

import email.utils
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509

from sevimg_cert import peerhttp
from sevimg_cert.certs import CertError, Chain, complete, parse_cert, parse_certs
from sevimg_cert.peerhttp import Deadline, PeerError, PeerRefused, PeerTimeout
from sevimg_cert.redact import redact
from sevimg_cert.report import VERSION_2_PRODUCTS, AttestationReport, Product
from sevimg_cert.retry import Retry

DEFAULT_URL = "https://kdsintf.amd.com"
MAX_RESPONSE = 1 << 20
MAX_REDIRECTS = 5
# One certificate's whole fetch, retries and waits included: well within the
# harness's deadline (sevimg_cert.harness), which also bounds it.
BUDGET = 180.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class KdsError(RuntimeError):
    """KDS could not serve a certificate; the message says why and what to do instead."""


class KdsRefused(KdsError):
    """KDS answered, and the answer is no (HTTP 4xx but 429): no retry changes it."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def check_base_url(url: str) -> str:
    """`url` without a trailing slash; ValueError unless it is an http(s) URL with a host."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        raise ValueError(f"{redact(url)!r} is not a URL") from None
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(f"{redact(url)!r} is not a URL: it holds spaces or control characters")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{redact(url)!r} is not an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError(f"{redact(url)!r}: give the service's base URL, without ? or #")
    return url.rstrip("/")


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds, or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class Kds:
    """A KDS client: base URL, attempts, and how long to wait between them."""

    base_url: str = DEFAULT_URL
    attempts: int = 6
    backoff: float = 2.0  # seconds before the second attempt, doubled after each
    max_wait: float = 60.0  # cap on any one wait, Retry-After included
    timeout: float = 30.0  # for one attempt
    budget: float = BUDGET  # for one certificate, every attempt and wait included
    deadline: Deadline | None = field(default=None, repr=False)  # overrides budget when given
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", check_base_url(self.base_url))

    @property
    def retry(self) -> Retry:
        """This client's settings as the package's one retry policy."""
        return Retry(self.attempts, self.backoff, 2.0, self.max_wait, self.timeout)

    def vcek_url(self, report: AttestationReport, product: Product) -> str:
        """The VCEK URL for the chip and reported TCB of `report`."""
        if report.chip_id_masked:
            raise KdsError(
                "the report's chip ID is masked (MASK_CHIP_ID), so KDS cannot name its VCEK; "
                "give the VCEK in a certificate folder instead"
            )
        tcb = report.reported_tcb
        spl = f"blSPL={tcb.bootloader:02d}&teeSPL={tcb.tee:02d}&snpSPL={tcb.snp:02d}&ucodeSPL={tcb.microcode:02d}"
        if product is Product.TURIN:
            hwid = report.chip_id[:8].hex()
            spl = f"fmcSPL={(tcb.fmc or 0):02d}&{spl}"
        else:
            hwid = report.chip_id.hex()
        return f"{self.base_url}/vcek/v1/{product.value}/{hwid}?{spl}"

    def chain_url(self, product: Product, key: str = "VCEK") -> str:
        """The URL of a product's ASK and ARK (`key` VLEK: its ASVK and ARK)."""
        return f"{self.base_url}/{key.lower()}/v1/{product.value}/cert_chain"

    def crl_url(self, product: Product, key: str = "VCEK") -> str:
        """The URL of a product's CRL for VCEK chains (`key` VLEK: for VLEK chains)."""
        return f"{self.base_url}/{key.lower()}/v1/{product.value}/crl"

    def fetch_crl(self, product: Product, key: str = "VCEK") -> tuple[str, bytes]:
        """The (redacted) URL and DER bytes of the product's CRL (`key` as in crl_url)."""
        url = self.crl_url(product, key)
        return redact(url), self.get(url)

    def get(self, url: str) -> bytes:
        """GET `url`, retrying what is worth retrying; KdsError when it cannot be had.

        Every attempt and every wait ends by the client's deadline (`budget`
        seconds from this call unless a `deadline` was given), however
        slowly KDS answers. Redirects: at most 5, http(s) only, never from
        https to http.
        """
        retry = self.retry
        last = ""
        if self.deadline is not None:
            deadline = self.deadline.within(self.budget)
        else:
            deadline = Deadline(self.budget, self.clock)
        attempt = 0
        while attempt < self.attempts:
            attempt += 1
            delay: float | None = None
            try:
                answer = peerhttp.exchange(
                    url,
                    deadline=deadline.within(self.timeout),
                    max_body=MAX_RESPONSE,
                    redirects=MAX_REDIRECTS,
                    read_timeout=self.timeout,
                )
            except PeerTimeout as exc:
                last = str(exc)
                if deadline.expired():
                    break
            except PeerRefused as exc:  # names the URL already
                raise KdsError(f"AMD KDS at {redact(self.base_url)}: {exc}") from None
            except PeerError as exc:
                last = str(exc)
            else:
                if answer.status == 200:
                    return answer.body
                if answer.status not in RETRY_STATUSES:
                    hint = (
                        " (KDS knows no such chip, product or TCB)" if answer.status == 404 else ""
                    )
                    message = f"{redact(url)}: HTTP {answer.status} {answer.reason}{hint}"
                    if 400 <= answer.status < 500:  # a no about the request: no retry changes it
                        raise KdsRefused(message, answer.status)
                    raise KdsError(message)
                last = f"HTTP {answer.status} {answer.reason}"
                delay = retry_after(answer.headers.get("retry-after"))
            if attempt < self.attempts:
                pause = retry.delay(attempt - 1, delay)
                if pause >= deadline.remaining():
                    last += f"; no time left to wait {pause:g} s and try again"
                    break
                self.sleep(pause)
        raise KdsError(
            f"AMD KDS at {redact(self.base_url)} could not be reached after {attempt} attempts "
            f"within {deadline.seconds:g} s ({redact(url)}): {last}"
        )

    def fetch_vcek(
        self, report: AttestationReport, product: Product
    ) -> tuple[str, x509.Certificate]:
        """The chip's VCEK, and the (redacted) URL it came from."""
        url = self.vcek_url(report, product)
        try:
            return redact(url), parse_cert(self.get(url), redact(url))
        except CertError as exc:
            raise KdsError(str(exc)) from None

    def fetch_chain(self, product: Product) -> tuple[x509.Certificate, x509.Certificate]:
        """The product's ASK and ARK, as KDS's cert_chain serves them."""
        url = self.chain_url(product)
        try:
            certs = parse_certs(self.get(url), redact(url))
        except CertError as exc:
            raise KdsError(str(exc)) from None
        if len(certs) != 2:
            raise KdsError(
                f"{redact(url)}: {len(certs)} certificates, expected the ASK and the ARK"
            )
        return certs[0], certs[1]

    def fetch(self, report: AttestationReport, product: Product | None = None) -> Chain:
        """VCEK, ASK and ARK for `report` (its own product unless `product` is given)."""
        if report.signing_key == "VLEK":
            raise KdsError(
                "the report was signed with a VLEK, which KDS does not serve by chip; give the "
                "VLEK (from the host's certificate table, e.g. `snpguest certificates`) as "
                "vlek.pem in a certificate folder"
            )
        product = product or report.product
        if product is None:
            product, vcek = self._fetch_unnamed(report)
        else:
            vcek = self.fetch_vcek(report, product)
        ask, ark = self.fetch_chain(product)
        chain_url = redact(self.chain_url(product))
        return complete(vcek, (f"{chain_url} (ASK)", ask), (f"{chain_url} (ARK)", ark))

    def _fetch_unnamed(
        self, report: AttestationReport
    ) -> tuple[Product, tuple[str, x509.Certificate]]:
        """The product and VCEK of a report that names no processor (version 2).

        KDS is asked for the chip under each product that writes such reports
        (VERSION_2_PRODUCTS); the one that knows it is the product. A chip ID
        is unique across products, so at most one answers; the chain check
        then confirms the product by its root.
        """
        refused = []
        for candidate in VERSION_2_PRODUCTS:
            try:
                return candidate, self.fetch_vcek(report, candidate)
            except KdsRefused as exc:
                if exc.status not in (400, 404):  # 401, 403 ...: not a no about the chip
                    raise
                refused.append(f"as {candidate.value}: HTTP {exc.status}")
        names = " or ".join(p.value for p in VERSION_2_PRODUCTS)
        raise KdsRefused(
            f"the report does not say which processor made it ({report.product_source}), and "
            f"KDS at {redact(self.base_url)} knows its chip under no product "
            f"({'; '.join(refused)}); name it with --product {names.lower()}, or give its "
            "certificates in a folder",
            404,
        )
