"""Synthetic certificate revocation lists shaped like AMD's: issued by an ARK, RSA-PSS SHA-384.

Independent of sevimg_cert, like tests.certkit (whose keys and names it uses).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.certkit import PSS, _contents, _split, _tlv, amd_name, rsa_key

# A serial no real certificate of the tests has, standing in for 0 while the
# builder (which refuses 0) makes the CRL; then swapped for 0 in the DER.
_STAND_IN = 0x5E0

THIS_UPDATE = datetime(2026, 11, 1, tzinfo=UTC)
NEXT_UPDATE = THIS_UPDATE + timedelta(days=30)
NOW = THIS_UPDATE + timedelta(days=10)  # the injected clock: inside [THIS_UPDATE, NEXT_UPDATE]


def make_crl(
    revoked: tuple[int, ...] = (),
    *,
    signer: str = "ark",
    issuer_cn: str = "ARK-Genoa",
    issuer: x509.Name | None = None,
    this_update: datetime = THIS_UPDATE,
    next_update: datetime | None = NEXT_UPDATE,
) -> x509.CertificateRevocationList:
    """A CRL revoking the serials `revoked` (0 too), signed by the key named `signer`.

    Its issuer is AMD's name with `issuer_cn`, or `issuer` as given (a real ARK's subject).
    """
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer or amd_name(issuer_cn))
        .last_update(this_update)
    )
    if next_update is not None:
        builder = builder.next_update(next_update)
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial or _STAND_IN)
            .revocation_date(this_update - timedelta(days=1))
            .build()
        )
    made = builder.sign(rsa_key(signer), hashes.SHA384(), rsa_padding=PSS)
    return _serial_zero(made, rsa_key(signer)) if 0 in revoked else made


def _serial_zero(
    crl: x509.CertificateRevocationList, signer: rsa.RSAPrivateKey
) -> x509.CertificateRevocationList:
    """`crl` with the stand-in serial's entry naming serial 0 (as AMD's VCEKs have), re-signed.

    TBSCertList is version, signature, issuer, thisUpdate, nextUpdate,
    revokedCertificates (a SEQUENCE of SEQUENCEs starting with the serial
    INTEGER), extensions: the entry's INTEGER is swapped, the TBS signed again.
    """
    outer = _split(_contents(crl.public_bytes(serialization.Encoding.DER)))
    parts = _split(_contents(outer[0]))
    at = next(i for i, part in enumerate(parts) if i > 2 and part[0] == 0x30)
    stand_in = _tlv(0x02, _STAND_IN.to_bytes(2, "big"))
    entries = [
        _tlv(0x30, _tlv(0x02, b"\0") + _contents(e)[len(stand_in) :])
        if _contents(e).startswith(stand_in)
        else e
        for e in _split(_contents(parts[at]))
    ]
    parts[at] = _tlv(0x30, b"".join(entries))
    tbs = _tlv(0x30, b"".join(parts))
    signature = signer.sign(tbs, PSS, hashes.SHA384())
    return x509.load_der_x509_crl(_tlv(0x30, tbs + outer[1] + _tlv(0x03, b"\0" + signature)))


def der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)
