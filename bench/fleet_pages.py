"""Helpers for bench/fleet_pages.sh: drift made from outside, and the requests an iotreg run made.

    fleet_pages.py drift ENDPOINT STATE N       edit N devices from outside (attributes, a
                                               certificate INACTIVE, a shadow's desired state),
                                               print their names, one a line
    fleet_pages.py requests LOG FROM TO         the requests between two byte offsets of the
                                               emulator's request log: total, per operation, and
                                               how many name one device (per-device calls)

Local emulator only: ENDPOINT must be http://127.0.0.1:PORT; fake credentials.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys

import boto3

# Calls that read or write one device's resource (what a page saves).
PER_DEVICE = {
    "DescribeThing",
    "DescribeCertificate",
    "ListAttachedPolicies",
    "ListThingPrincipals",
    "ListThingGroupsForThing",
    "GetThingShadow",
    "UpdateThing",
    "UpdateCertificate",
    "UpdateThingShadow",
}
PAGES = {
    "ListThings",
    "ListCertificates",
    "ListTargetsForPolicy",
    "ListThingsInThingGroup",
    "SearchIndex",
    "GetIndexingConfiguration",
}


def client(service: str, endpoint: str):
    if not endpoint.startswith("http://127.0.0.1:"):
        sys.exit(f"refusing non-local endpoint {endpoint}")
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def drift(args) -> int:
    # The state's device rows are packed; only their names are read from it.
    state = json.load(open(args.state))
    names = sorted(state["devices"])
    rng = random.Random(args.seed)
    victims = rng.sample(names, args.n)
    iot, data = client("iot", args.endpoint), client("iot-data", args.endpoint)
    for i, name in enumerate(victims):
        kind = i % 3
        if kind == 0:
            iot.update_thing(
                thingName=name,
                attributePayload={"attributes": {"line": "Moved-Outside"}, "merge": True},
            )
        elif kind == 1:
            # The device's certificate: the one principal attached to its thing.
            arn = iot.list_thing_principals(thingName=name)["principals"][0]
            iot.update_certificate(certificateId=arn.rsplit("/", 1)[1], newStatus="INACTIVE")
        else:
            data.update_thing_shadow(
                thingName=name,
                payload=json.dumps({"state": {"desired": {"temperature_threshold": 99}}}),
            )
        print(name)
    return 0


def requests(args) -> int:
    with open(args.log, "rb") as f:
        f.seek(args.from_byte)
        data = f.read(max(0, args.to_byte - args.from_byte))
    ops: collections.Counter = collections.Counter()
    for raw in data.splitlines():
        try:
            r = json.loads(raw)
        except ValueError:
            continue
        ops[r.get("operation") or "?"] += 1
    pages = sum(v for k, v in ops.items() if k in PAGES)
    per_device = sum(v for k, v in ops.items() if k in PER_DEVICE)
    detail = " ".join(f"{k}={v}" for k, v in ops.most_common())
    print(f"REQ total={sum(ops.values())} pages={pages} per_device={per_device} {detail}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("drift")
    d.add_argument("endpoint")
    d.add_argument("state")
    d.add_argument("n", type=int)
    d.add_argument("--seed", type=int, default=17)
    r = sub.add_parser("requests")
    r.add_argument("log")
    r.add_argument("from_byte", type=int)
    r.add_argument("to_byte", type=int)
    args = ap.parse_args()
    return {"drift": drift, "requests": requests}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
