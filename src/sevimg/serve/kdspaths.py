"""AMD KDS's paths, parsed into cache keys, and what a valid answer to each looks like.

The layout is AMD's (the "VCEK Certificate and KDS Interface
Specification", document 57230), as go-sev-guest's kds package parses it:

    /vcek/v1/{product}/{hwid}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..   a chip's VCEK (DER)
    /vcek/v1/{product}/cert_chain                                         ASK, then ARK (PEM)
    /vcek/v1/{product}/crl                                                the ARK's CRL (DER)
    /vlek/v1/{product}/cert_chain                                         ASVK, then ARK (PEM)
    /vlek/v1/{product}/crl                                                the CRL (DER)

`product` is Milan, Genoa or Turin, spelled as KDS spells them. `hwid` is
the chip ID in lower-case hex: 64 bytes, or 8 on Turin, whose query also
carries fmcSPL first. Each SPL is a decimal 0-255. Anything else is not a
KDS path: :func:`parse_path` raises ValueError saying why. Pure functions
only; :mod:`sevimg.serve.kds` does the caching and fetching.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from cryptography import x509

from sevimg_cert.certs import load_der, load_pem_all

PRODUCTS = ("Milan", "Genoa", "Turin")
SPLS = ("blSPL", "teeSPL", "snpSPL", "ucodeSPL")
TURIN_SPLS = ("fmcSPL", *SPLS)
MAX_ANSWER = 1 << 20  # a chain is about 4 KiB, a CRL a few KiB, a VCEK about 1.4 KiB
CONTENT_TYPES = {
    "vcek": "application/x-x509-ca-cert",
    "cert_chain": "application/x-pem-file",
    "crl": "application/pkix-crl",
}
_HEX = re.compile(r"[0-9a-f]+")
_DECIMAL = re.compile(r"[0-9]{1,3}")


@dataclass(frozen=True)
class Key:
    """One cacheable KDS document: what it is, and where it lives (below the KDS base URL)."""

    kind: str  # vcek, cert_chain or crl
    signer: str  # vcek or vlek
    product: str
    hwid: str = ""
    spls: tuple[tuple[str, int], ...] = ()

    @property
    def path(self) -> str:
        """The KDS path, query included, in AMD's spelling (SPLs as two digits)."""
        base = f"/{self.signer}/v1/{self.product}/"
        if self.kind != "vcek":
            return base + self.kind
        query = "&".join(f"{name}={value:02d}" for name, value in self.spls)
        return f"{base}{self.hwid}?{query}"

    @property
    def file(self) -> str:
        """The entry's file below the cache folder (no query: SPLs become a file name)."""
        base = f"{self.signer}/v1/{self.product}/"
        if self.kind != "vcek":
            return base + self.kind
        return base + self.hwid + "/" + "-".join(f"{n}{v}" for n, v in self.spls)

    @property
    def content_type(self) -> str:
        """What the answer is sent as."""
        return CONTENT_TYPES[self.kind]


def chain_key(product: str, signer: str = "vcek") -> Key:
    """A product's certificate chain."""
    return Key("cert_chain", signer, _product(product))


def crl_key(product: str, signer: str = "vcek") -> Key:
    """A product's CRL."""
    return Key("crl", signer, _product(product))


def parse_path(path: str, query: str = "") -> Key:
    """The key of a KDS path (below the base URL, e.g. `/vcek/v1/Genoa/cert_chain`); ValueError otherwise."""
    parts = path.split("/")
    if len(parts) != 5 or parts[0] != "" or parts[2] != "v1" or parts[1] not in ("vcek", "vlek"):
        raise ValueError("not a KDS path (/vcek/v1/PRODUCT/… or /vlek/v1/PRODUCT/…)")
    signer, product, leaf = parts[1], _product(parts[3]), parts[4]
    if leaf in ("cert_chain", "crl"):
        if query:
            raise ValueError(f"{leaf} takes no query")
        return Key(leaf, signer, product)
    if signer == "vlek":
        raise ValueError("KDS serves no VLEK by chip ID (a VLEK comes from the cloud provider)")
    return vcek_key(product, leaf, query)


def vcek_key(product: str, hwid: str, query: str) -> Key:
    """The key of a chip's VCEK at a TCB; ValueError naming what is wrong."""
    product = _product(product)
    size = 8 if product == "Turin" else 64
    if len(hwid) != 2 * size or not _HEX.fullmatch(hwid):
        raise ValueError(f"the hardware ID must be {2 * size} lower-case hex digits on {product}")
    names = TURIN_SPLS if product == "Turin" else SPLS
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True, max_num_fields=8)
    except ValueError:
        raise ValueError(f"the query must be {'&'.join(n + '=N' for n in names)}") from None
    given = dict(pairs)
    if len(given) != len(pairs) or set(given) != set(names):
        raise ValueError(f"the query must be {'&'.join(n + '=N' for n in names)}, each once")
    spls = []
    for name in names:
        value = given[name]
        if not _DECIMAL.fullmatch(value) or int(value) > 255:
            raise ValueError(f"{name} must be a number from 0 to 255")
        spls.append((name, int(value)))
    return Key("vcek", "vcek", product, hwid, tuple(spls))


def _product(name: str) -> str:
    if name not in PRODUCTS:
        raise ValueError(f"unknown product {name[:40]!r} (KDS knows {', '.join(PRODUCTS)})")
    return name


def check_answer(key: Key, data: bytes) -> None:
    """ValueError unless `data` is what KDS serves for `key` (a DER certificate, two PEM ones, a CRL)."""
    if len(data) > MAX_ANSWER:
        raise ValueError(f"larger than {MAX_ANSWER} bytes")
    try:
        if key.kind == "vcek":
            load_der(data)  # a VCEK has serial 0: loaded without the library's warning
        elif key.kind == "cert_chain":
            certs = load_pem_all(data)
            if len(certs) != 2:
                raise ValueError(f"{len(certs)} certificates; a chain is two (ASK or ASVK, ARK)")
        elif data.lstrip().startswith(b"-----BEGIN"):
            x509.load_pem_x509_crl(data)
        else:
            x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise ValueError(f"not a valid {key.kind}: {str(exc)[:200]}") from None


def crl_next_update(data: bytes) -> float | None:
    """When a CRL says a newer one is due (POSIX seconds); None when it does not say."""
    try:
        crl = (
            x509.load_pem_x509_crl(data)
            if data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_crl(data)
        )
    except ValueError:
        return None
    when = crl.next_update_utc
    return None if when is None else when.timestamp()
