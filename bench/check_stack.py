#!/usr/bin/env python3
"""Count the recipe's resources in the local emulator (used by bench/up_down.sh).

    check_stack.py --endpoint-url http://127.0.0.1:PORT --expect empty
    check_stack.py --endpoint-url http://127.0.0.1:PORT --expect one

`empty`: no thing type, thing, certificate, IoT policy, topic rule, Lambda
function or (customer) IAM role is left. `one`: exactly one of each, i.e. one
complete stack is up. Exit 0 when the expectation holds, 1 otherwise (the
counts are printed either way). Device shadows cannot be listed and are not
checked. Talks only to the given local endpoint, with fake credentials.
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlparse

from local_aws import isolate  # noqa: E402

isolate()

import boto3  # noqa: E402


def counts(endpoint: str) -> dict[str, int]:
    def c(service):
        return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")

    iot, lam, iam = c("iot"), c("lambda"), c("iam")
    roles = [
        r
        for r in iam.list_roles(MaxItems=1000)["Roles"]
        if not r.get("Path", "/").startswith("/aws-service-role/")
    ]
    return {
        "thing types": len(iot.list_thing_types(maxResults=250)["thingTypes"]),
        "things": len(iot.list_things(maxResults=250)["things"]),
        "certificates": len(iot.list_certificates(pageSize=250)["certificates"]),
        "IoT policies": len(iot.list_policies(pageSize=250)["policies"]),
        "topic rules": len(iot.list_topic_rules(maxResults=250)["rules"]),
        "Lambda functions": len(lam.list_functions(MaxItems=50)["Functions"]),
        "IAM roles": len(roles),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint-url", required=True)
    ap.add_argument("--expect", choices=("empty", "one"), required=True)
    args = ap.parse_args()
    host = urlparse(args.endpoint_url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"check_stack.py: refusing non-local endpoint {args.endpoint_url}", file=sys.stderr)
        return 2
    got = counts(args.endpoint_url)
    want = 0 if args.expect == "empty" else 1
    bad = {k: v for k, v in got.items() if v != want}
    summary = ", ".join(f"{k}={v}" for k, v in got.items())
    if bad:
        print(f"check_stack: expected {args.expect}, got {summary}", file=sys.stderr)
        return 1
    print(f"check_stack: {args.expect} ok ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
