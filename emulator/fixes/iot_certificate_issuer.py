"""Fix: IoT-issued certificates look like AWS's and DescribeCertificate agrees.

AWS behaviour restored
    * CreateKeysAndCertificate returns a certificate issued by the AWS IoT CA
      (subject CN=AWS IoT Certificate, valid until 2049-12-31), not a
      self-signed one.  Here it is issued by the emulator's CA (fixes/_ca.py).
    * DescribeCertificate's ``validity.notBefore`` / ``validity.notAfter`` are
      the validity dates written in the certificate itself.

What moto 5.2.1 does instead
    ``_generate_certificate_pem`` self-signs with the subject key (issuer
    "Moto", one year), and ``FakeCertificate`` reports a validity of
    now-1 day .. now+1 day whatever the PEM says.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from . import _ca
from ._util import patch


def _generate_certificate_pem(self, domain_name, subject, key=None):  # noqa: ARG001
    """Issue the certificate from the emulator CA instead of self-signing."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _ca.issue(subject, key.public_key())


def _validity_from_pem(original_init):
    def __init__(self, certificate_pem, *args, **kwargs):
        original_init(self, certificate_pem, *args, **kwargs)
        try:
            cert = x509.load_pem_x509_certificate(certificate_pem.encode("utf-8"))
        except (ValueError, AttributeError):
            return
        self.validity_not_before = cert.not_valid_before_utc
        self.validity_not_after = cert.not_valid_after_utc

    return __init__


def apply() -> None:
    from moto.iot.models import FakeCertificate, IoTBackend

    patch(IoTBackend, "_generate_certificate_pem", _generate_certificate_pem)
    original = getattr(FakeCertificate, "_emulator_orig___init__", FakeCertificate.__init__)
    patch(FakeCertificate, "__init__", _validity_from_pem(original))
