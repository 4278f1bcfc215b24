"""The emulator's certificate authority (shared by the IoT certificate fixes).

Real AWS IoT signs the device certificates it issues (CreateKeysAndCertificate,
CreateCertificateFromCsr) with an Amazon CA key.  The emulator stands in with
an RSA-2048 CA key generated once per process; the CA certificate carries the
same issuer name AWS uses, so a certificate from the emulator looks like one
from AWS (issuer, 2049-12-31 expiry, SHA-256/RSA signature), but it chains
only to this per-process CA.
"""

from __future__ import annotations

import datetime
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

# The issuer name found on certificates that AWS IoT issues.
AWS_IOT_ISSUER = x509.Name(
    [
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Amazon Web Services"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon.com Inc."),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Seattle"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Washington"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
    ]
)

# AWS IoT-issued device certificates are valid until the end of 2049.
AWS_IOT_NOT_AFTER = datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)

_lock = threading.Lock()
_ca: tuple[rsa.RSAPrivateKey, x509.Certificate] | None = None


def ca() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """The (key, certificate) of this process's CA, created on first use."""
    global _ca
    with _lock:
        if _ca is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            now = datetime.datetime.now(datetime.timezone.utc)
            cert = (
                x509.CertificateBuilder()
                .subject_name(AWS_IOT_ISSUER)
                .issuer_name(AWS_IOT_ISSUER)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(AWS_IOT_NOT_AFTER)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                    critical=False,
                )
                .sign(key, hashes.SHA256())
            )
            _ca = (key, cert)
        return _ca


def ca_certificate_pem() -> str:
    return ca()[1].public_bytes(serialization.Encoding.PEM).decode("ascii")


def issue(subject: x509.Name, public_key) -> str:
    """Issue a device certificate for ``public_key`` and return it as PEM."""
    ca_key, ca_cert = ca()
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(AWS_IOT_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
