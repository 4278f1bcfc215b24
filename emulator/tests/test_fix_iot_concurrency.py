"""IoT under concurrency: a fleet torn down from 16 threads never gets a 500."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import types

import pytest
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import start_emulator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fixes  # noqa: E402
from fixes import iot_concurrency as fix  # noqa: E402

ACCOUNT = "123456789012"
DEVICES = 400  # ~120 never raced in 7 runs; 300 in 6 of 7; 400 in every run
WORKERS = 16
KEYS_EVERY = 10  # every 10th device gets CreateKeysAndCertificate, the rest a CSR
POLICY_DOCUMENT = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}],
    }
)


@pytest.fixture(scope="module")
def server():
    """An emulator of its own: the test checks that it ends up empty."""
    emulator = start_emulator()
    try:
        yield emulator
    finally:
        emulator.stop()


def no_retry_client(server):
    """An IoT client that never retries, so a 500 reaches the test (the shared client makes
    one attempt per call: botocore's ``total_max_attempts``)."""
    iot = server.client("iot")
    assert iot.meta.config.retries["total_max_attempts"] == 1
    return iot


def describe(error: Exception) -> str:
    if isinstance(error, ClientError):
        meta = error.response.get("ResponseMetadata", {})
        err = error.response.get("Error", {})
        message = " ".join(str(err.get("Message", "")).split())[:120]
        return f"{meta.get('HTTPStatusCode')} {err.get('Code')}: {message}"
    return f"{type(error).__name__}: {error}"


def status_of(error: Exception) -> int | None:
    if isinstance(error, ClientError):
        return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def run_workers(clients, names, step) -> list[str]:
    """Run step(iot, name) for every name on len(clients) threads (one client each)."""
    errors: list[str] = []
    chunks = [names[i :: len(clients)] for i in range(len(clients))]

    def work(iot, chunk):
        for item in chunk:
            try:
                step(iot, item)
            except Exception as error:  # noqa: BLE001 - every failure is reported
                errors.append(f"{item}: {describe(error)}")

    threads = [
        threading.Thread(target=work, args=(iot, chunk))
        for iot, chunk in zip(clients, chunks)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return errors


def csr_pem(key, thing: str) -> str:
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, thing)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM).decode()


def all_certificates(iot) -> list[dict]:
    out, kwargs = [], {"pageSize": 250}
    while True:
        page = iot.list_certificates(**kwargs)
        out.extend(page["certificates"])
        if not page.get("nextMarker"):
            return out
        kwargs["marker"] = page["nextMarker"]


def all_things(iot) -> list[dict]:
    out, kwargs = [], {}
    while True:
        page = iot.list_things(**kwargs)
        out.extend(page["things"])
        if not page.get("nextToken"):
            return out
        kwargs["nextToken"] = page["nextToken"]


def all_targets(iot, policy: str) -> list[str]:
    out, kwargs = [], {"policyName": policy, "pageSize": 250}
    while True:
        page = iot.list_targets_for_policy(**kwargs)
        out.extend(page["targets"])
        if not page.get("nextMarker"):
            return out
        kwargs["marker"] = page["nextMarker"]


def test_fleet_teardown_from_16_threads_has_no_errors(server):
    clients = [no_retry_client(server) for _ in range(WORKERS)]
    iot = clients[0]
    policy = "fleet-policy"
    iot.create_policy(policyName=policy, policyDocument=POLICY_DOCUMENT)
    things = [f"fleet-{i:03d}" for i in range(DEVICES)]
    key = ec.generate_private_key(ec.SECP256R1())
    certificates: dict[str, tuple[str, str]] = {}  # thing -> (id, arn)

    def create(iot, thing):
        iot.create_thing(thingName=thing)
        if int(thing[-3:]) % KEYS_EVERY:
            out = iot.create_certificate_from_csr(
                certificateSigningRequest=csr_pem(key, thing), setAsActive=True
            )
        else:  # a fresh RSA key each (~40 ms): only some of these
            out = iot.create_keys_and_certificate(setAsActive=True)
        certificates[thing] = (out["certificateId"], out["certificateArn"])
        iot.attach_thing_principal(thingName=thing, principal=out["certificateArn"])
        iot.attach_policy(policyName=policy, target=out["certificateArn"])

    assert run_workers(clients, things, create) == []
    assert len({cert_id for cert_id, _ in certificates.values()}) == DEVICES
    assert len(all_targets(iot, policy)) == DEVICES

    def teardown(iot, thing):
        cert_id, cert_arn = certificates[thing]
        iot.detach_thing_principal(thingName=thing, principal=cert_arn)
        iot.detach_policy(policyName=policy, target=cert_arn)
        iot.update_certificate(certificateId=cert_id, newStatus="INACTIVE")
        iot.delete_certificate(certificateId=cert_id)
        iot.delete_thing(thingName=thing)

    # Readers iterate the same maps while the fleet goes away; a 4xx (a thing
    # or certificate already gone) is a fair answer, a 5xx is not.
    done = threading.Event()
    reader_errors: list[str] = []
    reads = [0]

    def reader(iot, offset):
        i = offset
        while not done.is_set():
            thing = things[i % DEVICES]
            cert_arn = certificates[thing][1]
            calls = (
                lambda: iot.list_targets_for_policy(policyName=policy),
                lambda: iot.list_thing_principals(thingName=thing),
                lambda: iot.list_principal_things(principal=cert_arn),
                lambda: iot.list_attached_policies(target=cert_arn),
                lambda: all_certificates(iot),
                lambda: all_things(iot),
            )
            try:
                calls[i % len(calls)]()
            except Exception as error:  # noqa: BLE001
                if status_of(error) is None or status_of(error) >= 500:
                    reader_errors.append(describe(error))
            reads[0] += 1
            i += 7

    readers = [
        threading.Thread(target=reader, args=(no_retry_client(server), n)) for n in range(2)
    ]
    for thread in readers:
        thread.start()
    started = time.monotonic()
    try:
        errors = run_workers(clients, things, teardown)
    finally:
        done.set()
        for thread in readers:
            thread.join(timeout=60)
    elapsed = time.monotonic() - started

    assert errors == [], f"{len(errors)} of {DEVICES} teardowns failed: {errors[:5]}"
    assert reader_errors == [], f"{len(reader_errors)} failed reads: {reader_errors[:5]}"
    assert reads[0] > 0
    assert all_certificates(iot) == []
    assert all_things(iot) == []
    assert all_targets(iot, policy) == []
    iot.delete_policy(policyName=policy)
    assert elapsed < 60
    assert "Traceback" not in server.log()


def test_apply_twice_keeps_one_lock_layer():
    from moto.iot.models import IoTBackend
    from moto.iot.responses import IoTResponse

    from fixes import iot_list_certificates, iot_things, iot_update_certificate

    fixes.apply_all()
    fix.apply()
    fixes.apply_all()  # iot_things puts its own DeleteThing back; locked again
    fix.apply()

    names = fix.handler_names(IoTResponse)
    assert {
        "delete_certificate",
        "create_certificate_from_csr",
        "create_keys_and_certificate",
        "attach_thing_principal",
        "detach_thing_principal",
        "attach_policy",
        "detach_policy",
        "attach_principal_policy",
        "detach_principal_policy",
        "delete_thing",
        "list_thing_principals",
        "list_targets_for_policy",
        "list_principal_things",
        "update_certificate",
        "list_certificates",
        "list_tags_for_resource",
    } <= set(names)
    for name in names:
        handler = getattr(IoTResponse, name)
        assert fix.is_locked(handler), name
        assert not fix.is_locked(handler.__wrapped__), name
    # The lock wraps the other fixes' handlers, not moto's originals under them.
    assert IoTResponse.delete_thing.__wrapped__ is iot_things._delete_thing
    assert IoTResponse.list_certificates.__wrapped__ is iot_list_certificates._list_certificates
    assert IoTBackend.update_certificate is iot_update_certificate._update_certificate
    assert IoTBackend._validation_delete is fix._validation_delete
    assert IoTBackend._emulator_orig__validation_delete.__qualname__ == (
        "IoTBackend._validation_delete"
    )


def test_lock_is_per_backend_reentrant_and_serializes():
    from moto.iot.models import iot_backends

    backend = iot_backends[ACCOUNT]["eu-west-3"]
    other = iot_backends[ACCOUNT]["eu-west-2"]
    lock = fix.lock_for(backend)
    assert fix.lock_for(backend) is lock
    assert fix.lock_for(other) is not lock

    ran: list[str] = []
    handler = fix._locked(lambda self: ran.append("ran"))
    response = types.SimpleNamespace(iot_backend=backend)
    with lock:
        with lock:  # re-entrant: a handler may call another locked callable
            handler(response)  # same thread: runs at once
        assert ran == ["ran"]
        thread = threading.Thread(target=handler, args=(response,))
        thread.start()
        time.sleep(0.2)
        assert ran == ["ran"]  # another thread waits for the lock
        fix._locked(lambda self: ran.append("other"))(types.SimpleNamespace(iot_backend=other))
        assert ran == ["ran", "other"]  # another backend does not
    thread.join(timeout=5)
    assert ran == ["ran", "other", "ran"]


def test_validation_delete_answers_as_moto_did():
    """Same exceptions and messages as moto's quadratic version, in every case."""
    from moto.iot.models import IoTBackend, iot_backends

    fixes.apply_all()
    backend = iot_backends[ACCOUNT]["eu-west-3"]
    backend.reset()
    original = IoTBackend._emulator_orig__validation_delete

    def outcome(check, cert, force):
        try:
            check(backend, cert, force)
        except Exception as error:  # noqa: BLE001
            return type(error).__name__, str(error)
        return None

    def compare(cert, force=False):
        expected = outcome(original, cert, force)
        assert outcome(fix._validation_delete, cert, force) == expected
        return expected

    def new_cert(active=False):
        return backend.create_keys_and_certificate(set_as_active=active)[0]

    backend.create_policy("p", {"Version": "2012-10-17", "Statement": []})
    backend.create_thing("thing", None, None)
    certs = [new_cert() for _ in range(4)]
    backend.attach_thing_principal("thing", certs[0].arn)
    backend.attach_policy("p", certs[0].arn)
    backend.attach_policy("p", certs[1].arn)

    active = new_cert(active=True)
    assert compare(active)[0] == "CertificateStateException"
    assert compare(certs[0])[0] == "DeleteConflictException"  # things first
    assert "Things must be detached" in compare(certs[0], force=True)[1]
    assert "policies must be detached" in compare(certs[1])[1]
    assert compare(certs[1], force=True) is None
    assert compare(certs[2]) is None

    # forceDelete leaves moto's policy attachment behind; moto then answers
    # ResourceNotFound for every other certificate's delete: still so.
    backend.delete_certificate(certs[1].certificate_id, force_delete=True)
    assert compare(certs[2])[0] == "ResourceNotFoundException"
    backend.reset()
