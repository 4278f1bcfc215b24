#!/usr/bin/env python3
"""The local emulator's ceiling for fleet provisioning (used by bench/fleet.sh).

    fleet_ceiling.py --endpoint-url http://127.0.0.1:PORT --manifest devices.csv [--threads 16] [--probes]
    fleet_ceiling.py --endpoint-url http://127.0.0.1:PORT --manifest devices.csv --check up|empty

For every device of the manifest (CSV with a header; `thing_name` required,
every other column a thing attribute) it makes the calls `iotreg up --fleet`
makes per device, with plain boto3 from THREADS threads and nothing else (no
state file, no journal, no rate limits, no retries beyond botocore's
standard mode):

  1. iot CreateThing (attributes from the manifest, thingTypeName)
  2. an ECDSA P-256 key and a CSR (CN = thing name), made locally with
     `cryptography`; iot CreateCertificateFromCsr(setAsActive=True)
  3. iot AttachPolicy (the shared policy -> the certificate)
  4. iot AttachThingPrincipal (the certificate -> the thing)
  5. iot-data UpdateThingShadow (an initial desired + reported document,
     iotreg's templates/device-shadow.json)

`--probes` adds the two reads iotreg makes per new device before creating it
(seen in the emulator's request log): iot DescribeThing before CreateThing
and iot-data GetThingShadow before UpdateThingShadow (both answer 404 on a
fresh emulator), i.e. 7 calls per device instead of 5.

The shared thing type and IoT policy are created first, outside the timing.
Wall time runs from the first device's first call to the last device's last
call. Prints per-operation latencies, then one line

    RESULT devices=N ok=N errors=0 wall_s=12.345 devices_per_s=81.0 client_cpu_s=9.87

(client_cpu_s: this script's own CPU time, user + system, during the timed part.)

`--check up` provisions nothing: it checks (untimed, THREADS threads) that
every manifest device is fully provisioned, whoever did it (iotreg or this
script): the thing exists with thing type TemperatureSensor and the
manifest's attributes, exactly one certificate principal, ACTIVE, with
exactly one policy attached whose name starts with `device-policy-`, and a
shadow with desired and reported state. `--check empty`: no manifest thing,
no certificate, no `device-policy-*` policy, no TemperatureSensor thing type
and no manifest device's shadow is left. Prints `CHECK ... ok` or the first
problems.

Exit 0 when every device succeeded (or the check held), 1 otherwise, 2 on bad input (including
an endpoint that is not http://127.0.0.1:PORT: this never talks to real AWS;
fake credentials, ~/.aws is not read).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from urllib.parse import urlparse

from local_aws import isolate  # noqa: E402

isolate()

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

THING_TYPE = "TemperatureSensor"
POLICY_DOC = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["iot:Connect"],
            "Resource": ["arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"],
        },
        {
            "Effect": "Allow",
            "Action": ["iot:Publish"],
            "Resource": [
                "arn:aws:iot:us-east-1:123456789012:topic/sensor/temperature/${iot:Connection.Thing.ThingName}"
            ],
        },
        {
            "Effect": "Allow",
            "Action": ["iot:GetThingShadow", "iot:UpdateThingShadow"],
            "Resource": ["arn:aws:iot:us-east-1:123456789012:thing/${iot:Connection.Thing.ThingName}"],
        },
    ],
}
OPS = (
    "DescribeThing",
    "CreateThing",
    "KeyAndCsr",
    "CreateCertificateFromCsr",
    "AttachPolicy",
    "AttachThingPrincipal",
    "GetThingShadow",
    "UpdateThingShadow",
)


def read_manifest(path: str) -> list[tuple[str, dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "thing_name" not in reader.fieldnames:
            raise ValueError(f"{path}: the header has no thing_name column")
        return [
            (row["thing_name"], {k: v for k, v in row.items() if k != "thing_name"})
            for row in reader
        ]


def shadow_payload() -> bytes:
    doc = {
        "state": {
            "desired": {
                "temperature_threshold": 75,
                "reporting_interval": 60,
                "active": True,
                "alert_enabled": True,
            },
            "reported": {
                "temperature": 22.5,
                "battery_level": 95,
                "firmware_version": "1.0.0",
                "last_update": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        }
    }
    return json.dumps(doc).encode()


class Timings:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_op: dict[str, list[float]] = {op: [] for op in OPS}

    def add(self, op: str, seconds: float) -> None:
        with self.lock:
            self.by_op[op].append(seconds)


def provision(
    iot, iotdata, policy: str, name: str, attrs: dict[str, str], t: Timings, probes: bool
) -> None:
    def timed(op, fn, **kw):
        t0 = time.perf_counter()
        out = fn(**kw)
        t.add(op, time.perf_counter() - t0)
        return out

    def probe(op, fn, not_found, **kw):
        t0 = time.perf_counter()
        try:
            fn(**kw)
            raise RuntimeError(f"{op} {kw}: exists already (the emulator is not fresh)")
        except not_found:
            pass
        t.add(op, time.perf_counter() - t0)

    if probes:
        probe("DescribeThing", iot.describe_thing, iot.exceptions.ResourceNotFoundException, thingName=name)

    timed(
        "CreateThing",
        iot.create_thing,
        thingName=name,
        thingTypeName=THING_TYPE,
        attributePayload={"attributes": attrs},
    )
    t0 = time.perf_counter()
    key = ec.generate_private_key(ec.SECP256R1())
    key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    t.add("KeyAndCsr", time.perf_counter() - t0)
    cert = timed(
        "CreateCertificateFromCsr",
        iot.create_certificate_from_csr,
        certificateSigningRequest=csr,
        setAsActive=True,
    )
    arn = cert["certificateArn"]
    timed("AttachPolicy", iot.attach_policy, policyName=policy, target=arn)
    timed("AttachThingPrincipal", iot.attach_thing_principal, thingName=name, principal=arn)
    if probes:
        probe(
            "GetThingShadow",
            iotdata.get_thing_shadow,
            iotdata.exceptions.ResourceNotFoundException,
            thingName=name,
        )
    timed("UpdateThingShadow", iotdata.update_thing_shadow, thingName=name, payload=shadow_payload())


def _paged(fn, key: str, token_in: str, token_out: str, **kw) -> list:
    out, token = [], None
    while True:
        page = fn(**kw, **({token_in: token} if token else {}))
        out.extend(page.get(key, []))
        token = page.get(token_out)
        if not token:
            return out


def check_up(iot, iotdata, devices, threads: int) -> list[str]:
    def one(item) -> list[str]:
        name, attrs = item
        try:
            t = iot.describe_thing(thingName=name)
        except iot.exceptions.ResourceNotFoundException:
            return [f"{name}: no thing"]
        bad = []
        if t.get("thingTypeName") != THING_TYPE:
            bad.append(f"{name}: thing type {t.get('thingTypeName')!r}")
        got = t.get("attributes", {})
        if any(got.get(k) != v for k, v in attrs.items()):
            bad.append(f"{name}: attributes {got} (manifest {attrs})")
        principals = iot.list_thing_principals(thingName=name)["principals"]
        certs = [p for p in principals if ":cert/" in p]
        if len(certs) != 1:
            bad.append(f"{name}: {len(certs)} certificate principals")
        for arn in certs:
            cert_id = arn.rsplit("/", 1)[1]
            status = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"]
            if status != "ACTIVE":
                bad.append(f"{name}: certificate {cert_id} is {status}")
            pols = iot.list_attached_policies(target=arn)["policies"]
            if len(pols) != 1 or not pols[0]["policyName"].startswith("device-policy-"):
                bad.append(f"{name}: certificate policies {[p['policyName'] for p in pols]}")
        try:
            doc = json.loads(iotdata.get_thing_shadow(thingName=name)["payload"].read())
            state = doc.get("state", {})
            if "desired" not in state or "reported" not in state:
                bad.append(f"{name}: shadow state has {sorted(state)}")
        except iotdata.exceptions.ResourceNotFoundException:
            bad.append(f"{name}: no shadow")
        return bad

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [p for probs in pool.map(one, devices) for p in probs]


def check_empty(iot, iotdata, devices, threads: int) -> list[str]:
    names = {n for n, _ in devices}
    bad = []
    things = _paged(iot.list_things, "things", "nextToken", "nextToken", maxResults=250)
    left = [t["thingName"] for t in things if t["thingName"] in names]
    if left:
        bad.append(f"{len(left)} manifest things left (e.g. {left[0]})")
    certs = _paged(iot.list_certificates, "certificates", "marker", "nextMarker", pageSize=250)
    if certs:
        bad.append(f"{len(certs)} certificates left")
    pols = _paged(iot.list_policies, "policies", "marker", "nextMarker", pageSize=250)
    left = [p["policyName"] for p in pols if p["policyName"].startswith("device-policy-")]
    if left:
        bad.append(f"policies left: {left}")
    types = iot.list_thing_types(maxResults=250)["thingTypes"]
    if any(t["thingTypeName"] == THING_TYPE for t in types):
        bad.append(f"thing type {THING_TYPE} left")

    def shadow_left(name: str) -> bool:
        try:
            iotdata.get_thing_shadow(thingName=name)
            return True
        except iotdata.exceptions.ResourceNotFoundException:
            return False

    with ThreadPoolExecutor(max_workers=threads) as pool:
        left = [n for n, b in zip(sorted(names), pool.map(shadow_left, sorted(names))) if b]
    if left:
        bad.append(f"{len(left)} shadows left (e.g. {left[0]})")
    return bad


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoint-url", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--policy-name", default="device-policy-bench")
    ap.add_argument("--probes", action="store_true", help="also iotreg's 2 reads per device")
    ap.add_argument("--check", choices=("up", "empty"), help="check instead of provisioning")
    args = ap.parse_args()

    u = urlparse(args.endpoint_url)
    if u.scheme != "http" or u.hostname != "127.0.0.1" or not u.port:
        print(
            f"fleet_ceiling.py: refusing {args.endpoint_url!r}: only http://127.0.0.1:PORT "
            "(the local emulator) is allowed",
            file=sys.stderr,
        )
        return 2
    if not 1 <= args.threads <= 256:
        print("fleet_ceiling.py: --threads must be 1 to 256", file=sys.stderr)
        return 2
    try:
        devices = read_manifest(args.manifest)
    except (OSError, ValueError) as e:
        print(f"fleet_ceiling.py: {e}", file=sys.stderr)
        return 2

    cfg = Config(
        max_pool_connections=args.threads + 4,
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=5,
        read_timeout=60,
    )
    session = boto3.session.Session(region_name="us-east-1")
    iot = session.client("iot", endpoint_url=args.endpoint_url, config=cfg)
    iotdata = session.client("iot-data", endpoint_url=args.endpoint_url, config=cfg)

    if args.check:
        t0 = time.perf_counter()
        check = check_up if args.check == "up" else check_empty
        problems = check(iot, iotdata, devices, args.threads)
        took = time.perf_counter() - t0
        for p in problems[:10]:
            print(f"CHECK {args.check}: {p}", file=sys.stderr)
        if len(problems) > 10:
            print(f"CHECK {args.check}: ... and {len(problems) - 10} more problems", file=sys.stderr)
        verdict = "FAILED" if problems else "ok"
        print(f"CHECK {args.check} {verdict}: {len(devices)} manifest devices ({took:.1f} s)")
        return 1 if problems else 0

    # Shared resources, untimed.
    try:
        iot.create_thing_type(
            thingTypeName=THING_TYPE,
            thingTypeProperties={"thingTypeDescription": "fleet ceiling benchmark"},
        )
    except iot.exceptions.ResourceAlreadyExistsException:
        pass
    try:
        iot.create_policy(policyName=args.policy_name, policyDocument=json.dumps(POLICY_DOC))
    except iot.exceptions.ResourceAlreadyExistsException:
        pass

    timings = Timings()
    errors: list[str] = []
    err_lock = threading.Lock()

    def one(item):
        name, attrs = item
        try:
            provision(iot, iotdata, args.policy_name, name, attrs, timings, args.probes)
        except Exception as e:  # noqa: BLE001 - counted and reported
            with err_lock:
                errors.append(f"{name}: {type(e).__name__}: {e}")

    c0 = time.process_time()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        list(pool.map(one, devices))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0

    n = len(devices)
    ok = n - len(errors)
    calls = 7 if args.probes else 5
    print(
        f"fleet_ceiling: {n} devices, {calls} calls each, {args.threads} threads, "
        f"endpoint {args.endpoint_url}"
    )
    print(f"{'operation':26} {'calls':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for op in OPS:
        v = timings.by_op[op]
        if v:
            print(
                f"{op:26} {len(v):6d} {statistics.median(v) * 1e3:8.1f} "
                f"{pct(v, 95) * 1e3:8.1f} {max(v) * 1e3:8.1f}"
            )
    for e in errors[:10]:
        print(f"error: {e}", file=sys.stderr)
    if len(errors) > 10:
        print(f"error: ... and {len(errors) - 10} more", file=sys.stderr)
    rate = ok / wall if wall > 0 else float("nan")
    print(
        f"RESULT devices={n} ok={ok} errors={len(errors)} wall_s={wall:.3f} "
        f"devices_per_s={rate:.1f} client_cpu_s={cpu:.2f}"
    )
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
