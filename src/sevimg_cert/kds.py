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
connection errors, honouring Retry-After. Only the standard library's
urllib is used: this runs inside the host image.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509

from sevimg_cert.certs import CertError, Chain, complete, parse_cert, parse_certs
from sevimg_cert.report import VERSION_2_PRODUCTS, AttestationReport, Product

DEFAULT_URL = "https://kdsintf.amd.com"
MAX_RESPONSE = 1 << 20
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class KdsError(RuntimeError):
    """KDS could not serve a certificate; the message says why and what to do instead."""


class KdsRefused(KdsError):
    """KDS answered, and the answer is no (HTTP 4xx but 429): no retry changes it."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def redact(url: str) -> str:
    """`url` without any user:password part, for messages."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """The URL without user:password, and the headers to send (Basic auth when it had them).

    Requests never carry the credentials in the URL, so no error text can echo them.
    """
    headers = {"User-Agent": "sevimg-cert"}
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None or parts.password is not None:
        user = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return redact(url), headers


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
    timeout: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    deadline: float | None = None  # seconds for all attempts of one request together
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", check_base_url(self.base_url))

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

        With a `deadline`, no attempt starts, and no wait runs, past it.
        """
        wait = self.backoff
        last = ""
        target, headers = _split_credentials(url)
        end = None if self.deadline is None else self.clock() + self.deadline
        for attempt in range(1, self.attempts + 1):
            delay: float | None = None
            timeout = self.timeout
            if end is not None:
                timeout = min(timeout, end - self.clock())
                if timeout <= 0:
                    raise KdsError(
                        f"{redact(url)}: no answer within {self.deadline:g} s "
                        f"({attempt - 1} attempts{': ' + last if last else ''})"
                    )
            try:
                request = urllib.request.Request(target, headers=headers)  # noqa: S310
                with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
                    body: bytes = answer.read(MAX_RESPONSE + 1)
                if len(body) > MAX_RESPONSE:
                    raise KdsError(f"{redact(url)}: the answer is larger than {MAX_RESPONSE} bytes")
                return body
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code not in RETRY_STATUSES:
                    hint = " (KDS knows no such chip, product or TCB)" if exc.code == 404 else ""
                    message = f"{redact(url)}: HTTP {exc.code} {exc.reason}{hint}"
                    if 400 <= exc.code < 500:
                        raise KdsRefused(message, exc.code) from None
                    raise KdsError(message) from None
                last = f"HTTP {exc.code} {exc.reason}"
                delay = retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            except urllib.error.URLError as exc:
                last = str(exc.reason)
            except ValueError as exc:  # e.g. a host name IDNA cannot encode: no use retrying
                raise KdsError(f"{redact(url)}: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, TLS errors
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if attempt < self.attempts:
                pause = min(self.max_wait, wait if delay is None else delay)
                if end is not None:
                    pause = min(pause, max(0.0, end - self.clock()))
                self.sleep(pause)
                wait *= 2
        raise KdsError(
            f"AMD KDS at {redact(self.base_url)} could not be reached after {self.attempts} "
            f"attempts ({redact(url)}): {last}"
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
