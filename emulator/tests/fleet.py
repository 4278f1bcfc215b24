"""Devices for the gateway's concurrency tests and for bench/device_ceiling.py.

``create_fleet(iot, directory, count)`` registers ``count`` devices the way
``iotreg up`` does for a fleet: per device a thing, CreateKeysAndCertificate
(ACTIVE; ``<dir>/<thing>-certificate.pem.crt`` and ``<thing>-private.pem.key``
written), the certificate attached to the thing, and one shared policy
(``templates/device-policy.json`` rendered for aws / us-east-1 / 123456789012)
attached to every certificate.  Client id = thing name.

As a script, against a running emulator (writes ``<dir>/things.txt``, the
thing names one a line, as device_ceiling.py --things wants them)::

    python emulator/tests/fleet.py --endpoint-url http://127.0.0.1:PORT --count 1000 DIR
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

TEMPLATE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "templates", "device-policy.json"
)


def device_policy(partition: str = "aws", region: str = "us-east-1", account: str = "123456789012") -> str:
    with open(TEMPLATE) as handle:
        text = handle.read()
    return text.replace("{{partition}}", partition).replace("{{region}}", region).replace("{{account}}", account)


def _certificate_from_csr(iot, thing: str) -> dict:
    """CreateCertificateFromCsr for a fresh EC P-256 key: the answer, plus ``keyPair.PrivateKey``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, thing)]))
        .sign(key, hashes.SHA256())
    )
    created = iot.create_certificate_from_csr(
        certificateSigningRequest=request.public_bytes(serialization.Encoding.PEM).decode(), setAsActive=True
    )
    created["keyPair"] = {"PrivateKey": key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()}
    return created


def create_fleet(iot, directory: str, count: int, prefix: str | None = None, workers: int = 8,
                 csr: bool = False, policy_document: str | None = None) -> list[str]:
    """Register ``count`` devices (see the module docstring); their thing names.

    ``policy_document``: the policy to attach instead of the rendered template.

    ``csr``: CreateCertificateFromCsr with an EC key made here instead of
    CreateKeysAndCertificate (whose RSA-2048 key generation, serialized under
    the IoT backend's lock, costs most of the ~90 ms per device)."""
    prefix = prefix or f"fleet{uuid.uuid4().hex[:8]}-"
    os.makedirs(directory, exist_ok=True)
    policy = f"{prefix}policy"
    iot.create_policy(policyName=policy, policyDocument=policy_document or device_policy())

    def one(index: int) -> str:
        thing = f"{prefix}{index:05d}"
        iot.create_thing(thingName=thing)
        created = _certificate_from_csr(iot, thing) if csr else iot.create_keys_and_certificate(setAsActive=True)
        with open(os.path.join(directory, f"{thing}-certificate.pem.crt"), "w") as handle:
            handle.write(created["certificatePem"])
        key = os.path.join(directory, f"{thing}-private.pem.key")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            handle.write(created["keyPair"]["PrivateKey"])
        iot.attach_policy(policyName=policy, target=created["certificateArn"])
        iot.attach_thing_principal(thingName=thing, principal=created["certificateArn"])
        return thing

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, range(count)))


def main() -> int:
    import boto3
    from botocore.config import Config

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("directory")
    args = parser.parse_args()
    host = args.endpoint_url.split("//", 1)[-1].split(":")[0]
    if host not in ("127.0.0.1", "localhost"):
        parser.error("only a local emulator endpoint is allowed")
    iot = boto3.client(
        "iot", endpoint_url=args.endpoint_url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(max_pool_connections=16, retries={"total_max_attempts": 1}),
    )
    things = create_fleet(iot, args.directory, args.count)
    with open(os.path.join(args.directory, "things.txt"), "w") as handle:
        handle.write("".join(f"{thing}\n" for thing in things))
    print(json.dumps({"devices": len(things), "things": os.path.join(args.directory, "things.txt")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
