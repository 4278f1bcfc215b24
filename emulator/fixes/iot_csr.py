"""Fix: IoT CreateCertificateFromCsr certifies the CSR's own public key.

AWS behaviour restored
    CreateCertificateFromCsr returns a certificate whose subject public key is
    the public key in the CSR (the device keeps its private key; AWS never
    sees it), issued by the AWS IoT CA, with the CSR's subject, and with
    status ACTIVE only when setAsActive=true (INACTIVE otherwise).  A CSR that
    does not parse or whose self-signature is wrong is refused with
    InvalidRequestException.

What moto 5.2.1 does instead
    ``IoTBackend.create_certificate_from_csr`` calls
    ``_generate_certificate_pem`` without a key, which makes a fresh RSA key
    and certifies *that* key: the device's private key does not match the
    certificate.  It also receives ``setAsActive`` as the raw query-string
    text, so ``setAsActive=false`` ("false" is a non-empty string) yields an
    ACTIVE certificate.  An unparseable CSR gives HTTP 500.

The certificate goes through moto's ``register_certificate`` so the id, ARN,
PEM, ListCertificates and DescribeCertificate all describe the same object
(the id is the SHA-256 of the DER certificate, see iot_certificate_id).
"""

from __future__ import annotations

from cryptography import x509

from . import _ca
from ._util import patch, truthy


def _create_certificate_from_csr(self, csr: str, set_as_active):
    from moto.iot.exceptions import InvalidRequestException

    try:
        request = x509.load_pem_x509_csr((csr or "").encode("utf-8"))
    except ValueError:
        raise InvalidRequestException("The certificate signing request is not valid.")
    if not request.is_signature_valid:
        raise InvalidRequestException(
            "The certificate signing request signature is not valid."
        )
    pem = _ca.issue(request.subject, request.public_key())
    return self.register_certificate(
        pem,
        ca_certificate_pem=None,
        set_as_active=truthy(set_as_active),
        status="INACTIVE",
    )


def apply() -> None:
    from moto.iot.models import IoTBackend

    patch(IoTBackend, "create_certificate_from_csr", _create_certificate_from_csr)
