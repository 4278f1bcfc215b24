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
import hashlib
import ipaddress
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
# serial number -> certificate id (hex SHA-256 of the DER) of every device
# certificate this CA issued; the device gateway revokes (CRL) those that are
# not registered and ACTIVE, see gateway/tls.py.
_issued: dict[int, str] = {}


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
    with _lock:
        _issued[cert.serial_number] = hashlib.sha256(
            cert.public_bytes(serialization.Encoding.DER)
        ).hexdigest()
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def issued() -> dict[int, str]:
    """serial number -> certificate id of every device certificate issued so far."""
    with _lock:
        return dict(_issued)


def issue_server(dns_names: list[str], ip_addresses: list[str]) -> tuple[str, str]:
    """A TLS server certificate (key PEM, certificate PEM) for the device gateway.

    RSA-2048, signed by this CA, subject CN = the first DNS name, SANs = the
    given DNS names and IP addresses, serverAuth, valid to 2049-12-31.
    """
    ca_key, ca_cert = ca()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    sans = [x509.DNSName(name) for name in dns_names] + [
        x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(AWS_IOT_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode("ascii")
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def crl_pem(revoked_serials) -> str:
    """A CRL signed by this CA listing ``revoked_serials`` (valid one day)."""
    ca_key, ca_cert = ca()
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=1))
    )
    for serial in sorted(revoked_serials):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - datetime.timedelta(minutes=5))
            .build()
        )
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode("ascii")
