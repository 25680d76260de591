"""AMD's pinned ARK, ASK and ASVK certificates for Milan, Genoa and Turin.

The ASK signs the chips' VCEKs; the ASVK (AMD SEV VLEK key) signs the VLEKs
AMD issues to cloud providers. Both are signed by the product's ARK.

Where they come from and how to check them: README.md next to this file.
Each file is checked against its SHA-256 fingerprint when loaded, so an
edited file is refused rather than trusted.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sevimg_cert.report import Product

# SHA-256 of the DER encoding; the same values are in README.md.
FINGERPRINTS: dict[tuple[Product, str], str] = {
    (Product.MILAN, "ark"): "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    (Product.MILAN, "ask"): "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
    (Product.GENOA, "ark"): "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    (Product.GENOA, "ask"): "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
    (Product.TURIN, "ark"): "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
    (Product.TURIN, "ask"): "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
    (Product.MILAN, "asvk"): "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
    (Product.GENOA, "asvk"): "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
    (Product.TURIN, "asvk"): "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
}


# cryptography 41 and 42 refuse AMD's certificates (their RSA-PSS parameters
# spell out the default trailer field: "EncodedDefault"); older ones lack
# what the verifier uses. Inside a host image the distribution's
# python3-cryptography is what runs, so the verdict says so plainly.
MIN_CRYPTOGRAPHY = (43, 0)


def cryptography_too_old() -> str | None:
    """Why this `cryptography` cannot read AMD's certificates, or None when it can."""
    import cryptography  # noqa: PLC0415  (only its version is wanted)

    version = cryptography.__version__
    try:
        found = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return None  # a development build: let it try
    if found >= MIN_CRYPTOGRAPHY:
        return None
    floor = ".".join(map(str, MIN_CRYPTOGRAPHY))
    return (
        f"cryptography {version} cannot read AMD's certificates (it refuses their RSA-PSS "
        f"parameters); {floor} or later is needed"
    )


class PinnedRootError(RuntimeError):
    """A pinned certificate file is missing or not the one documented."""


@dataclass(frozen=True)
class Pinned:
    """One product's pinned root and intermediates."""

    product: Product
    ark: x509.Certificate
    ask: x509.Certificate
    asvk: x509.Certificate


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def _load(product: Product, kind: str) -> x509.Certificate:
    name = f"{product.value.lower()}/{kind}.pem"
    try:
        data = resources.files(__name__).joinpath(name).read_bytes()
        cert = x509.load_pem_x509_certificate(data)  # AMD roots have positive serials
    except (OSError, ValueError) as exc:
        hint = cryptography_too_old()
        raise PinnedRootError(f"pinned AMD certificate {name}: {hint or exc}") from exc
    if fingerprint(cert) != FINGERPRINTS[product, kind]:
        raise PinnedRootError(
            f"pinned AMD certificate {name} has SHA-256 {fingerprint(cert)}, "
            f"not the documented {FINGERPRINTS[product, kind]}"
        )
    return cert


@functools.cache
def pinned() -> tuple[Pinned, ...]:
    """Every product's pinned ARK, ASK and ASVK, checked against the fingerprints."""
    return tuple(Pinned(p, _load(p, "ark"), _load(p, "ask"), _load(p, "asvk")) for p in Product)


def for_product(product: Product) -> Pinned:
    """The pinned certificates of one product."""
    return next(p for p in pinned() if p.product is product)
