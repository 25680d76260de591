"""Synthetic certificate revocation lists shaped like AMD's: issued by an ARK, RSA-PSS SHA-384.

Independent of sevimg_cert, like tests.certkit (whose keys and names it uses).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.certkit import PSS, amd_name, rsa_key

THIS_UPDATE = datetime(2026, 11, 1, tzinfo=UTC)
NEXT_UPDATE = THIS_UPDATE + timedelta(days=30)
NOW = THIS_UPDATE + timedelta(days=10)  # the injected clock: inside [THIS_UPDATE, NEXT_UPDATE]


def make_crl(
    revoked: tuple[int, ...] = (),
    *,
    signer: str = "ark",
    issuer_cn: str = "ARK-Genoa",
    this_update: datetime = THIS_UPDATE,
    next_update: datetime | None = NEXT_UPDATE,
) -> x509.CertificateRevocationList:
    """A CRL revoking the serials `revoked`, signed by the key named `signer`."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(amd_name(issuer_cn))
        .last_update(this_update)
    )
    if next_update is not None:
        builder = builder.next_update(next_update)
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(this_update - timedelta(days=1))
            .build()
        )
    return builder.sign(rsa_key(signer), hashes.SHA384(), rsa_padding=PSS)


def der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)
