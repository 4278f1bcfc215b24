"""Fix 1: CreateCertificateFromCsr certifies the CSR's own (ECDSA P-256) key."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import error_code


def make_csr(common_name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iotreg tests"),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def spki(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_certificate_carries_the_csr_public_key(aws, name):
    key, csr = make_csr(name)
    out = aws("iot").create_certificate_from_csr(certificateSigningRequest=csr, setAsActive=True)
    cert = x509.load_pem_x509_certificate(out["certificatePem"].encode())
    assert spki(cert.public_key()) == spki(key.public_key())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
    # issued by the emulator CA, not self-signed by some other key
    assert cert.issuer != cert.subject
    assert "Amazon Web Services" in cert.issuer.rfc4514_string()


def test_id_arn_and_pem_are_consistent(aws, name):
    _, csr = make_csr(name)
    iot = aws("iot")
    out = iot.create_certificate_from_csr(certificateSigningRequest=csr, setAsActive=True)
    der = x509.load_pem_x509_certificate(out["certificatePem"].encode()).public_bytes(
        serialization.Encoding.DER
    )
    assert out["certificateId"] == hashlib.sha256(der).hexdigest()
    assert out["certificateArn"] == (
        f"arn:aws:iot:us-east-1:123456789012:cert/{out['certificateId']}"
    )
    described = iot.describe_certificate(certificateId=out["certificateId"])[
        "certificateDescription"
    ]
    assert described["certificatePem"] == out["certificatePem"]
    assert described["certificateArn"] == out["certificateArn"]
    assert described["status"] == "ACTIVE"
    listed = [c["certificateId"] for c in iot.list_certificates(pageSize=250)["certificates"]]
    assert out["certificateId"] in listed


@pytest.mark.parametrize(
    "kwargs, expected",
    [({"setAsActive": True}, "ACTIVE"), ({"setAsActive": False}, "INACTIVE"), ({}, "INACTIVE")],
)
def test_set_as_active_is_honoured(aws, name, kwargs, expected):
    _, csr = make_csr(name)
    iot = aws("iot")
    out = iot.create_certificate_from_csr(certificateSigningRequest=csr, **kwargs)
    status = iot.describe_certificate(certificateId=out["certificateId"])[
        "certificateDescription"
    ]["status"]
    assert status == expected


def test_validity_matches_the_pem(aws, name):
    _, csr = make_csr(name)
    iot = aws("iot")
    out = iot.create_certificate_from_csr(certificateSigningRequest=csr, setAsActive=False)
    cert = x509.load_pem_x509_certificate(out["certificatePem"].encode())
    validity = iot.describe_certificate(certificateId=out["certificateId"])[
        "certificateDescription"
    ]["validity"]
    assert validity["notBefore"] == cert.not_valid_before_utc
    assert validity["notAfter"] == cert.not_valid_after_utc
    assert cert.not_valid_after_utc.year == 2049


def test_garbage_csr_is_invalid_request(aws):
    iot = aws("iot")
    with pytest.raises(iot.exceptions.InvalidRequestException) as excinfo:
        iot.create_certificate_from_csr(certificateSigningRequest="not a csr", setAsActive=True)
    assert error_code(excinfo) == "InvalidRequestException"
