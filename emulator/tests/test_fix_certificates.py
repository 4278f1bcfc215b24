"""Certificate behaviours iotreg depends on (fixes and audited moto behaviour)."""

from __future__ import annotations

import datetime
import hashlib
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import http_status


def new_cert(iot, active=True):
    return iot.create_keys_and_certificate(setAsActive=active)


def all_certificates(iot, ascending=None, page_size=None):
    kwargs = {}
    if ascending is not None:
        kwargs["ascendingOrder"] = ascending
    if page_size is not None:
        kwargs["pageSize"] = page_size
    out, pages = [], 0
    while True:
        page = iot.list_certificates(**kwargs)
        pages += 1
        out.extend(page["certificates"])
        if not page.get("nextMarker"):
            return out, pages
        kwargs["marker"] = page["nextMarker"]


def test_keys_and_certificate_matches_key_and_is_ca_issued(aws):
    iot = aws("iot")
    out = new_cert(iot)
    cert = x509.load_pem_x509_certificate(out["certificatePem"].encode())
    key = serialization.load_pem_private_key(out["keyPair"]["PrivateKey"].encode(), None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(serialization.Encoding.DER, spki) == key.public_key(
    ).public_bytes(serialization.Encoding.DER, spki)
    assert cert.issuer != cert.subject
    der = cert.public_bytes(serialization.Encoding.DER)
    assert out["certificateId"] == hashlib.sha256(der).hexdigest()


def test_list_certificates_has_creation_date_newest_first(aws):
    iot = aws("iot")
    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
    first = new_cert(iot)["certificateId"]
    time.sleep(0.01)
    second = new_cert(iot)["certificateId"]
    certs, _ = all_certificates(iot)
    for cert in certs:
        assert isinstance(cert["creationDate"], datetime.datetime)
        assert {"certificateArn", "certificateId", "status"} <= set(cert)
    ids = [c["certificateId"] for c in certs]
    assert ids.index(second) < ids.index(first)  # default: newest first
    dates = [c["creationDate"] for c in certs]
    assert dates == sorted(dates, reverse=True)
    recent = [c for c in certs if c["creationDate"] >= before]
    assert {first, second} <= {c["certificateId"] for c in recent}


def test_list_certificates_ascending_and_paginated(aws):
    iot = aws("iot")
    for _ in range(3):
        new_cert(iot, active=False)
    everything, _ = all_certificates(iot)
    ascending, _ = all_certificates(iot, ascending=True)
    assert [c["certificateId"] for c in ascending] == [
        c["certificateId"] for c in reversed(everything)
    ]
    paged, pages = all_certificates(iot, page_size=2)
    assert pages >= 2
    assert [c["certificateId"] for c in paged] == [c["certificateId"] for c in everything]
    first_page = iot.list_certificates(pageSize=1)
    assert len(first_page["certificates"]) == 1 and first_page["nextMarker"]


def test_update_certificate_status(aws):
    iot = aws("iot")
    out = new_cert(iot, active=False)
    cid = out["certificateId"]
    before = iot.describe_certificate(certificateId=cid)["certificateDescription"]
    assert before["status"] == "INACTIVE"
    time.sleep(0.01)
    iot.update_certificate(certificateId=cid, newStatus="ACTIVE")
    after = iot.describe_certificate(certificateId=cid)["certificateDescription"]
    assert after["status"] == "ACTIVE"
    assert after["lastModifiedDate"] > before["lastModifiedDate"]
    iot.update_certificate(certificateId=cid, newStatus="INACTIVE")
    assert iot.describe_certificate(certificateId=cid)["certificateDescription"]["status"] == (
        "INACTIVE"
    )
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.update_certificate(certificateId=cid, newStatus="PENDING_TRANSFER")


def test_delete_active_certificate_is_refused(aws):
    iot = aws("iot")
    cid = new_cert(iot, active=True)["certificateId"]
    with pytest.raises(iot.exceptions.CertificateStateException) as excinfo:
        iot.delete_certificate(certificateId=cid)
    assert http_status(excinfo) == 406
    iot.update_certificate(certificateId=cid, newStatus="INACTIVE")
    iot.delete_certificate(certificateId=cid)


def test_delete_certificate_attached_to_thing_or_policy_is_refused(aws, name):
    iot = aws("iot")
    out = new_cert(iot, active=False)
    cid, arn = out["certificateId"], out["certificateArn"]
    iot.create_thing(thingName=name)
    iot.attach_thing_principal(thingName=name, principal=arn)
    with pytest.raises(iot.exceptions.DeleteConflictException):
        iot.delete_certificate(certificateId=cid)
    iot.detach_thing_principal(thingName=name, principal=arn)

    iot.create_policy(policyName=name, policyDocument='{"Version":"2012-10-17","Statement":[]}')
    iot.attach_policy(policyName=name, target=arn)
    with pytest.raises(iot.exceptions.DeleteConflictException):
        iot.delete_certificate(certificateId=cid)
    iot.detach_policy(policyName=name, target=arn)
    iot.delete_certificate(certificateId=cid)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_certificate(certificateId=cid)
