"""Paging a large fleet through the local AWS: ListThings, ListCertificates,
ListTargetsForPolicy and SearchIndex, the calls iotreg makes to read a fleet's live state.

Builds the emulator's app in this process (emulator/server.py's ``build_app``: moto plus
the fixes), fills moto's IoT backend directly (``--count`` things of one thing type with
two attributes, one certificate each attached to one shared policy, a classic shadow for
every thing, every fourth thing connected in the connectivity store, plus 10% things of
another type), serves it on 127.0.0.1 (a free port, threaded werkzeug, as server.py), and
pages through each list with boto3 at its maximum page size, printing the number of
requests, the wall time, the first (cold: the sorted snapshot is built) and the slowest
later page.  Then it changes one thing and pages again (the snapshot is rebuilt once).
Figures are printed, never asserted (emulator/tests/test_fleet_index_bench.py runs it small
and checks the counts).

Certificates are made synthetically (copies of one real certificate with their own id,
ARN and creation date) and attached by writing moto's attachment dict: what is measured
is listing, and 10,000 real RSA keys would take minutes.

    .venv/bin/python bench/fleet_index.py --count 10000
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "emulator"))

import local_aws  # noqa: E402

local_aws.isolate()

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

ACCOUNT = "123456789012"
REGION = "us-east-1"
FLEET_TYPE = "bench-fleet"
OTHER_TYPE = "bench-other"
POLICY = "bench-device-policy"


def populate(count: int) -> None:
    """``count`` fleet things (and 10% others) with certificates, shadows and connectivity."""
    from fixes import iot_connectivity, iotdata_shadow
    from moto.iot.models import FakeCertificate, FakePolicy, iot_backends
    from moto.iotdata.models import iotdata_backends

    iot = iot_backends[ACCOUNT][REGION]
    data = iotdata_backends[ACCOUNT][REGION]
    iot.create_thing_type(FLEET_TYPE, {})
    iot.create_thing_type(OTHER_TYPE, {})
    iot.create_policy(POLICY, json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}))
    policy: FakePolicy = iot.policies[POLICY]
    template = iot.create_keys_and_certificate(set_as_active=True)[0]
    start = datetime.datetime(2026, 1, 1)
    for i in range(count):
        name = f"dev-{i:06d}"
        iot.create_thing(name, FLEET_TYPE, {"attributes": {"fw": f"1.{i % 4}", "site": f"s{i % 10}"}})
        cert: FakeCertificate = copy.copy(template)
        cert.certificate_id = hashlib.sha256(name.encode()).hexdigest()
        cert.arn = f"arn:aws:iot:{REGION}:{ACCOUNT}:cert/{cert.certificate_id}"
        cert.creation_date = start + datetime.timedelta(seconds=i)
        iot.certificates[cert.certificate_id] = cert
        iot.principal_policies[(cert.arn, POLICY)] = (cert.arn, policy)
        iot.principal_things[(cert.arn, name)] = (cert.arn, iot.things[f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/{name}"])
        iotdata_shadow.update_shadow(data, name, None, json.dumps(
            {"state": {"desired": {"interval": 60}, "reported": {"interval": 60 if i % 50 else 30}}}))
        if i % 4 == 0:
            iot_connectivity.connected(ACCOUNT, REGION, name)
    for i in range(count // 10):
        iot.create_thing(f"other-{i:06d}", OTHER_TYPE, {"attributes": {}})


def serve():
    from server import build_app
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs) -> None:
            pass

    server = make_server("127.0.0.1", 0, build_app(), threaded=True, request_handler=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def page_through(name: str, call, key: str, token_in: str, token_out: str, **kwargs) -> dict:
    pages, items, times, token = 0, 0, [], None
    started = time.perf_counter()
    while True:
        if token:
            kwargs[token_in] = token
        t0 = time.perf_counter()
        answer = call(**kwargs)
        times.append(time.perf_counter() - t0)
        pages += 1
        items += len(answer[key])
        token = answer.get(token_out)
        if not token:
            break
    wall = time.perf_counter() - started
    later = times[1:] or [0.0]
    row = {"call": name, "requests": pages, "items": items, "wall_s": wall,
           "first_ms": times[0] * 1000, "later_median_ms": sorted(later)[len(later) // 2] * 1000,
           "later_max_ms": max(later) * 1000}
    print(f"  {name:<46} {pages:>5} requests {items:>7} items {wall:7.2f} s   "
          f"first {row['first_ms']:7.1f} ms   later median {row['later_median_ms']:6.1f} ms   "
          f"max {row['later_max_ms']:6.1f} ms", flush=True)
    return row


def run(count: int) -> list[dict]:
    server, url = serve()
    try:
        t0 = time.perf_counter()
        populate(count)
        print(f"populated {count} fleet things (+{count // 10} others), certificates, shadows, "
              f"{(count + 3) // 4} connected in {time.perf_counter() - t0:.1f} s", flush=True)
        iot = boto3.client("iot", endpoint_url=url, region_name=REGION,
                           config=Config(retries={"total_max_attempts": 1}))
        iot.update_indexing_configuration(thingIndexingConfiguration={
            "thingIndexingMode": "REGISTRY_AND_SHADOW", "thingConnectivityIndexingMode": "STATUS"})
        rows = [
            page_through("ListThings thingTypeName (250/page)", iot.list_things, "things",
                         "nextToken", "nextToken", thingTypeName=FLEET_TYPE, maxResults=250),
            page_through("ListCertificates (250/page)", iot.list_certificates, "certificates",
                         "marker", "nextMarker", pageSize=250),
            page_through("ListTargetsForPolicy (250/page)", iot.list_targets_for_policy, "targets",
                         "marker", "nextMarker", policyName=POLICY, pageSize=250),
            page_through("SearchIndex thingTypeName (100/page)", iot.search_index, "things",
                         "nextToken", "nextToken", queryString=f"thingTypeName:{FLEET_TYPE}", maxResults=100),
            page_through("SearchIndex ... connectivity.connected:true", iot.search_index, "things",
                         "nextToken", "nextToken",
                         queryString=f"thingTypeName:{FLEET_TYPE} AND connectivity.connected:true", maxResults=100),
            page_through("SearchIndex ... shadow.hasDelta:true", iot.search_index, "things",
                         "nextToken", "nextToken",
                         queryString=f"thingTypeName:{FLEET_TYPE} AND shadow.hasDelta:true", maxResults=100),
        ]
        # One change: the snapshots are rebuilt once, on the next first page.
        iot.update_thing(thingName="dev-000001", attributePayload={"attributes": {"fw": "2.0"}})
        print("after one UpdateThing:", flush=True)
        rows.append(page_through("SearchIndex thingTypeName (100/page), again", iot.search_index, "things",
                                 "nextToken", "nextToken", queryString=f"thingTypeName:{FLEET_TYPE}",
                                 maxResults=100))
        rows.append(page_through("ListThings thingTypeName (250/page), again", iot.list_things, "things",
                                 "nextToken", "nextToken", thingTypeName=FLEET_TYPE, maxResults=250))
        return rows
    finally:
        server.shutdown()


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="fleet things (default 10000)")
    parser.add_argument("--json", action="store_true", help="also print the rows as one JSON line at the end")
    args = parser.parse_args(argv)
    rows = run(args.count)
    if args.json:
        print("RESULT " + json.dumps(rows), flush=True)
    return rows


if __name__ == "__main__":
    main()
