#!/usr/bin/env python3
"""Helpers of bench/jobs.sh: follow a job until every execution SUCCEEDED, count the requests a
command made from the emulator's request log, and check what `up` made and `down` left.

    jobs.py wait --endpoint-url http://127.0.0.1:PORT --job-id ID --expect N --t0 EPOCH \\
        [--interval 0.5] [--timeout 900]
    jobs.py requests LOG --from-byte A [--to-byte B]
    jobs.py check-up --endpoint-url http://127.0.0.1:PORT --expect N
    jobs.py check-empty --endpoint-url http://127.0.0.1:PORT

`wait`: DescribeJob every `--interval` seconds (one light call; the emulator answers it from the
job's counters); a line `t=SECONDS queued=… in_progress=… succeeded=… failed=…` each time a count
changes, SECONDS since `--t0` (an epoch time the caller took just before `iotreg job start`),
and at the end `ALL_SUCCEEDED t=SECONDS polls=P` once N executions are SUCCEEDED (exit 0), or
`NOT_SUCCEEDED …` when an execution ended otherwise, the job was cancelled or `--timeout` passed
(exit 1). The time is known to within one interval plus one DescribeJob.

`requests`: the lines of the emulator's `--request-log` between two byte offsets (taken before
and after one command), counted: `REQ total=N service:Operation=n …` (most frequent first).

`check-up`: N things in the account, N ACTIVE certificates, one job template, one thing group
with the N things, and the firmware object in S3 (its size printed). `check-empty`: after
`iotreg down`, no thing, certificate, thing group, IoT policy, job template, job (other than
deleted), thing type, topic rule, Lambda function, customer IAM role, S3 bucket, SNS topic,
CloudWatch alarm or dashboard is left. Both print `CHECK … ok` or the problems (exit 1).

Every AWS call goes to `http://127.0.0.1:PORT` only (anything else is refused, exit 2), with
fake credentials (bench/local_aws.py).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from urllib.parse import urlparse

from local_aws import isolate

isolate()

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

STATUSES = ("Queued", "InProgress", "Succeeded", "Failed", "Rejected", "TimedOut", "Canceled", "Removed")


def client(service: str, endpoint: str):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(retries={"max_attempts": 10, "mode": "standard"}, read_timeout=120))


def paged(call, key: str, token_in: str, token_out: str, **kw) -> list:
    out, token = [], None
    while True:
        page = call(**kw, **({token_in: token} if token else {}))
        out.extend(page.get(key, []))
        token = page.get(token_out)
        if not token:
            return out


def wait(args) -> int:
    iot = client("iot", args.endpoint_url)
    deadline = time.time() + args.timeout
    last, polls = None, 0
    while True:
        job = iot.describe_job(jobId=args.job_id)["job"]
        polls += 1
        now = time.time() - args.t0
        d = job.get("jobProcessDetails", {})
        counts = {s: d.get(f"numberOf{s}Things", 0) for s in STATUSES}
        line = " ".join(f"{s.lower()}={counts[s]}" for s in STATUSES if counts[s] or s in ("Queued", "Succeeded"))
        if line != last:
            print(f"t={now:.1f} status={job.get('status')} {line}", flush=True)
            last = line
        if counts["Succeeded"] >= args.expect:
            print(f"ALL_SUCCEEDED t={now:.2f} polls={polls}", flush=True)
            return 0
        ended = sum(counts[s] for s in ("Failed", "Rejected", "TimedOut", "Canceled", "Removed"))
        if ended or job.get("status") in ("CANCELED", "DELETION_IN_PROGRESS") or time.time() > deadline:
            print(f"NOT_SUCCEEDED t={now:.2f} status={job.get('status')} {line}", flush=True)
            return 1
        time.sleep(args.interval)


def requests(args) -> int:
    with open(args.log, "rb") as f:
        f.seek(args.from_byte)
        data = f.read() if args.to_byte is None else f.read(max(0, args.to_byte - args.from_byte))
    counts: collections.Counter = collections.Counter()
    for raw in data.splitlines():
        try:
            r = json.loads(raw)
        except ValueError:
            continue
        counts[f"{r.get('service')}:{r.get('operation')}"] += 1
    parts = " ".join(f"{k}={v}" for k, v in counts.most_common())
    print(f"REQ total={sum(counts.values())} {parts}".rstrip())
    return 0


def check_up(args) -> int:
    iot, s3 = client("iot", args.endpoint_url), client("s3", args.endpoint_url)
    bad = []
    things = paged(iot.list_things, "things", "nextToken", "nextToken", maxResults=250)
    if len(things) != args.expect:
        bad.append(f"{len(things)} things, expected {args.expect}")
    certs = paged(iot.list_certificates, "certificates", "marker", "nextMarker", pageSize=250)
    active = sum(1 for c in certs if c.get("status") == "ACTIVE")
    if active != args.expect:
        bad.append(f"{active} ACTIVE certificates, expected {args.expect}")
    templates = iot.list_job_templates().get("jobTemplates", [])
    if len(templates) != 1:
        bad.append(f"{len(templates)} job templates, expected 1")
    groups = paged(iot.list_thing_groups, "thingGroups", "nextToken", "nextToken", maxResults=250)
    if len(groups) != 1:
        bad.append(f"{len(groups)} thing groups, expected 1")
    else:
        members = paged(iot.list_things_in_thing_group, "things", "nextToken", "nextToken",
                        thingGroupName=groups[0]["groupName"], maxResults=250)
        if len(members) != args.expect:
            bad.append(f"{len(members)} things in group {groups[0]['groupName']}, expected {args.expect}")
    sizes = []
    for b in s3.list_buckets().get("Buckets", []):
        for o in paged(s3.list_objects_v2, "Contents", "ContinuationToken", "NextContinuationToken",
                       Bucket=b["Name"]):
            if "/firmware/" in o["Key"]:
                sizes.append(o["Size"])
    if len(sizes) != 1:
        bad.append(f"{len(sizes)} firmware objects in S3, expected 1")
    if bad:
        print("CHECK up FAILED: " + "; ".join(bad))
        return 1
    print(f"CHECK up ok: {len(things)} things in the group, {active} ACTIVE certificates, 1 job template, "
          f"firmware {sizes[0]} bytes in S3")
    return 0


def check_empty(args) -> int:
    e = args.endpoint_url
    iot, s3, lam, iam = client("iot", e), client("s3", e), client("lambda", e), client("iam", e)
    sns, cw = client("sns", e), client("cloudwatch", e)
    got = {
        "things": len(paged(iot.list_things, "things", "nextToken", "nextToken", maxResults=250)),
        "certificates": len(paged(iot.list_certificates, "certificates", "marker", "nextMarker", pageSize=250)),
        "thing groups": len(paged(iot.list_thing_groups, "thingGroups", "nextToken", "nextToken", maxResults=250)),
        "IoT policies": len(paged(iot.list_policies, "policies", "marker", "nextMarker", pageSize=250)),
        "job templates": len(iot.list_job_templates().get("jobTemplates", [])),
        "jobs": len([j for j in paged(iot.list_jobs, "jobs", "nextToken", "nextToken", maxResults=250)
                     if j.get("status") != "DELETION_IN_PROGRESS"]),
        "thing types": len(iot.list_thing_types(maxResults=250).get("thingTypes", [])),
        "topic rules": len(iot.list_topic_rules(maxResults=250).get("rules", [])),
        "Lambda functions": len(lam.list_functions(MaxItems=50).get("Functions", [])),
        "IAM roles": len([r for r in iam.list_roles(MaxItems=1000)["Roles"]
                          if not r.get("Path", "/").startswith("/aws-service-role/")]),
        "S3 buckets": len(s3.list_buckets().get("Buckets", [])),
        "SNS topics": len(sns.list_topics().get("Topics", [])),
        "alarms": len(cw.describe_alarms().get("MetricAlarms", [])),
        "dashboards": len(cw.list_dashboards().get("DashboardEntries", [])),
    }
    left = {k: v for k, v in got.items() if v}
    if left:
        print("CHECK empty FAILED: left " + ", ".join(f"{k}={v}" for k, v in left.items()))
        return 1
    print("CHECK empty ok: " + ", ".join(f"{k}=0" for k in got))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait")
    w.add_argument("--endpoint-url", required=True)
    w.add_argument("--job-id", required=True)
    w.add_argument("--expect", type=int, required=True)
    w.add_argument("--t0", type=float, required=True)
    w.add_argument("--interval", type=float, default=0.5)
    w.add_argument("--timeout", type=float, default=900)
    r = sub.add_parser("requests")
    r.add_argument("log")
    r.add_argument("--from-byte", type=int, default=0)
    r.add_argument("--to-byte", type=int, default=None)
    u = sub.add_parser("check-up")
    u.add_argument("--endpoint-url", required=True)
    u.add_argument("--expect", type=int, required=True)
    c = sub.add_parser("check-empty")
    c.add_argument("--endpoint-url", required=True)
    args = ap.parse_args()
    url = getattr(args, "endpoint_url", None)
    if url is not None and urlparse(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        print(f"jobs.py: refusing non-local endpoint {url}", file=sys.stderr)
        return 2
    return {"wait": wait, "requests": requests, "check-up": check_up, "check-empty": check_empty}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
