#!/usr/bin/env python3
"""S3 side of bench/s3_state.sh: bucket set-up, checks, request counts, PUT costs.

    s3_state.py setup    --endpoint-url URL --bucket B
    s3_state.py check    --endpoint-url URL --bucket B --key K --expect present|empty [--save FILE]
    s3_state.py requests --log FILE --from-byte OFFSET --bucket B --key K
    s3_state.py segments --endpoint-url URL --bucket B --key K [--save-median FILE]
    s3_state.py putcost  --endpoint-url URL --bucket B --item LABEL,MODE,FRACTION,FILE [--item …]
                         [--reps R]

setup: creates bucket B with versioning enabled (an existing bucket is kept; versioning is set
either way).

check present: the state object K exists, its lock object K.lock does not (the run released it);
prints its size. --save FILE writes its bytes to FILE. check empty: list_objects_v2 of the whole
bucket finds no object (current version) at all. Both print `CHECK ... ok` or `CHECK ... FAILED:
why`; --versions adds the bucket's version count (versioning keeps noncurrent versions and delete
markers: they are what makes a bad write undoable, and are not "left" objects). Listing versions
is slow in moto 5.2.1 and grows the emulator a lot (5,000 versions: ~8 s, +1.4 GB), so the
benchmark does it only after the timed runs of an emulator.

requests: reads the emulator's request log (emulator/request_log.py, one JSON line per request)
from byte OFFSET on, and prints one line

    REQ s3=… put_state=… put_lock=… put_segment=… get_state=… list=… delete_objects=… delete=… \
        s3_other=… aws=… s3_status_ge_400=…

(put_segment: PutObject under K.journal/; aws: every non-S3 request; s3_status_ge_400 counts the
expected 404s of first reads and the like, for information.)

segments: every version (current or not) under K.journal/ — bucket versioning keeps the segments a
full write folded in and deleted, so their sizes are still there after `up` and even `down` — and of K itself:

    SEGMENTS count=… median_bytes=… mean_bytes=… total_bytes=… state_versions=… state_max_bytes=…

plus, from a sample of SAMPLE segment bodies (default 200), the mean journal lines and distinct
devices per segment (more than one device: a group commit shared that PUT). --save-median FILE
writes the body of a median-sized segment version to FILE.

putcost: times PutObject with plain boto3 (one client, warm connection) of each item's body — the
first FRACTION (0–1] of FILE's bytes — REPS times (default 20), the items interleaved (item 1,
item 2, …, item 1, …) so that a slow moment of the machine hits them alike, one untimed round
first. Conditional as iotreg's writes are: MODE `overwrite` = the same scratch key each time with
If-Match on the previous ETag (a state write), `new` = a new key each time with If-None-Match: *
(a journal segment). The scratch keys (`bench-putcost/…`) and all their versions are deleted
afterwards, so the bucket is left as it was. Prints per item

    PUTCOST label=… bytes=… reps=… median_ms=… p90_ms=… min_ms=…

Talks only to http://127.0.0.1:PORT with fake credentials (refuses anything else).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from urllib.parse import urlparse

from local_aws import isolate  # noqa: E402

isolate()

SCRATCH = "bench-putcost/"


def client(endpoint: str):
    u = urlparse(endpoint)
    if u.scheme != "http" or u.hostname != "127.0.0.1" or not u.port:
        sys.exit(f"s3_state.py: refusing {endpoint!r}: only http://127.0.0.1:PORT (the local emulator)")
    import boto3
    from botocore.config import Config

    return boto3.session.Session(region_name="us-east-1").client(
        "s3",
        endpoint_url=endpoint,
        config=Config(retries={"mode": "standard", "max_attempts": 3}, s3={"addressing_style": "path"}),
    )


def versions(s3, bucket: str, prefix: str = ""):
    """Every version and delete marker under prefix: (versions, markers)."""
    vs, ms = [], []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        vs += page.get("Versions", [])
        ms += page.get("DeleteMarkers", [])
    return vs, ms


def cmd_setup(a) -> int:
    s3 = client(a.endpoint_url)
    try:
        s3.create_bucket(Bucket=a.bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    s3.put_bucket_versioning(Bucket=a.bucket, VersioningConfiguration={"Status": "Enabled"})
    status = s3.get_bucket_versioning(Bucket=a.bucket).get("Status")
    print(f"SETUP bucket={a.bucket} versioning={status}")
    return 0 if status == "Enabled" else 1


def cmd_check(a) -> int:
    s3 = client(a.endpoint_url)
    problems = []
    info = ""
    if a.expect == "present":
        try:
            head = s3.head_object(Bucket=a.bucket, Key=a.key)
            info = f" size={head['ContentLength']}"
            if a.save:
                body = s3.get_object(Bucket=a.bucket, Key=a.key)["Body"].read()
                with open(a.save, "wb") as f:
                    f.write(body)
        except s3.exceptions.ClientError as e:
            problems.append(f"s3://{a.bucket}/{a.key} missing ({e.response['Error'].get('Code')})")
        try:
            s3.head_object(Bucket=a.bucket, Key=a.key + ".lock")
            problems.append(f"lock s3://{a.bucket}/{a.key}.lock still there")
        except s3.exceptions.ClientError:
            pass
    else:
        left = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=a.bucket):
            left += [o["Key"] for o in page.get("Contents", [])]
        if left:
            problems.append(f"{len(left)} object(s) left: {', '.join(left[:5])}")
        info = " objects=0" if not left else f" objects={len(left)}"
    if a.versions:
        vs, ms = versions(s3, a.bucket)
        info += f" (bucket versions={len(vs)} delete_markers={len(ms)})"
    verdict = "ok" if not problems else "FAILED: " + "; ".join(problems)
    print(f"CHECK {a.expect} s3://{a.bucket}/{a.key} {verdict}{info}")
    return 0 if not problems else 1


def cmd_requests(a) -> int:
    state = f"/{a.bucket}/{a.key}"
    c = dict.fromkeys(
        "s3 put_state put_lock put_segment get_state list delete_objects delete s3_other aws s3_status_ge_400".split(), 0
    )
    with open(a.log, "rb") as f:
        f.seek(a.from_byte)
        for raw in f:
            try:
                r = json.loads(raw)
            except ValueError:
                continue
            if r.get("service") != "s3":
                c["aws"] += 1
                continue
            c["s3"] += 1
            op, path = r.get("operation"), r.get("path") or ""
            if (r.get("status") or 0) >= 400:
                c["s3_status_ge_400"] += 1
            if op == "PutObject" and path == state:
                c["put_state"] += 1
            elif op == "PutObject" and path == state + ".lock":
                c["put_lock"] += 1
            elif op == "PutObject" and path.startswith(state + ".journal/"):
                c["put_segment"] += 1
            elif op == "GetObject" and path == state:
                c["get_state"] += 1
            elif op == "ListObjectsV2":
                c["list"] += 1
            elif op == "DeleteObjects":
                c["delete_objects"] += 1
            elif op == "DeleteObject":
                c["delete"] += 1
            else:
                c["s3_other"] += 1
    print("REQ " + " ".join(f"{k}={v}" for k, v in c.items()))
    return 0


def cmd_segments(a) -> int:
    s3 = client(a.endpoint_url)
    segs, _ = versions(s3, a.bucket, a.key + ".journal/")
    states = [v for v in versions(s3, a.bucket, a.key)[0] if v["Key"] == a.key]
    sizes = sorted(v["Size"] for v in segs)
    if sizes:
        med = statistics.median(sizes)
        line = (
            f"SEGMENTS count={len(sizes)} median_bytes={med:.0f} mean_bytes={statistics.mean(sizes):.0f} "
            f"min_bytes={sizes[0]} max_bytes={sizes[-1]} total_bytes={sum(sizes)}"
        )
        if a.save_median:
            pick = min(segs, key=lambda v: abs(v["Size"] - med))
            body = s3.get_object(Bucket=a.bucket, Key=pick["Key"], VersionId=pick["VersionId"])["Body"].read()
            with open(a.save_median, "wb") as f:
                f.write(body)
    else:
        line = "SEGMENTS count=0 median_bytes=nan mean_bytes=nan min_bytes=nan max_bytes=nan total_bytes=0"
    # A sample of the segments' bodies: how many journal lines, and of how many devices, one
    # segment carries (more than one device = a group commit shared the PUT).
    if segs:
        step = max(1, len(segs) // a.sample)
        lines = devices = 0
        sample = segs[::step]
        for v in sample:
            body = s3.get_object(Bucket=a.bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
            rows = [json.loads(x) for x in body.splitlines() if x.strip()]
            lines += len(rows)
            devices += len({r.get("device") for r in rows})
        line += (
            f" sampled={len(sample)} lines_per_segment={lines / len(sample):.2f}"
            f" devices_per_segment={devices / len(sample):.2f}"
        )
    line += f" state_versions={len(states)} state_max_bytes={max((v['Size'] for v in states), default=0)}"
    print(line)
    return 0


def cmd_putcost(a) -> int:
    s3 = client(a.endpoint_url)
    items = []
    for spec in a.item:
        try:
            label, mode, fraction, path = spec.split(",", 3)
            fraction = float(fraction)
            if mode not in ("overwrite", "new") or not 0 < fraction <= 1:
                raise ValueError
        except ValueError:
            sys.exit(f"s3_state.py: --item LABEL,overwrite|new,FRACTION,FILE (got {spec!r})")
        with open(path, "rb") as f:
            body = f.read()
        body = body[: max(1, int(len(body) * fraction))]
        items.append({"label": label, "mode": mode, "body": body, "etag": None, "times": []})
    run = uuid.uuid4().hex[:8]
    try:
        # Interleaved, so that a slow phase of the machine hits every item alike; round 0
        # untimed (connection, first key).
        for i in range(a.reps + 1):
            for n, it in enumerate(items):
                if it["mode"] == "overwrite":
                    key = f"{SCRATCH}{run}/{n}/state.json"
                    kw = {"IfMatch": it["etag"]} if it["etag"] else {"IfNoneMatch": "*"}
                else:
                    key = f"{SCRATCH}{run}/{n}/journal/{i:010d}"
                    kw = {"IfNoneMatch": "*"}
                t0 = time.perf_counter()
                out = s3.put_object(Bucket=a.bucket, Key=key, Body=it["body"], ContentType="application/json", **kw)
                dt = time.perf_counter() - t0
                it["etag"] = out["ETag"]
                if i:
                    it["times"].append(dt * 1000)
    finally:
        vs, ms = versions(s3, a.bucket, f"{SCRATCH}{run}/")
        for v in vs + ms:
            s3.delete_object(Bucket=a.bucket, Key=v["Key"], VersionId=v["VersionId"])
    for it in items:
        times = sorted(it["times"])
        p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
        print(
            f"PUTCOST label={it['label']} bytes={len(it['body'])} reps={len(times)} mode={it['mode']} "
            f"median_ms={statistics.median(times):.2f} p90_ms={p90:.2f} min_ms={times[0]:.2f}"
        )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("setup")
    p.add_argument("--endpoint-url", required=True)
    p.add_argument("--bucket", required=True)
    p = sub.add_parser("check")
    p.add_argument("--endpoint-url", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--expect", choices=("present", "empty"), required=True)
    p.add_argument("--save")
    p.add_argument("--versions", action="store_true", help="also count the bucket's versions (slow in moto)")
    p = sub.add_parser("requests")
    p.add_argument("--log", required=True)
    p.add_argument("--from-byte", type=int, default=0)
    p.add_argument("--bucket", required=True)
    p.add_argument("--key", required=True)
    p = sub.add_parser("segments")
    p.add_argument("--endpoint-url", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--save-median")
    p.add_argument("--sample", type=int, default=200, help="segment bodies read for lines/devices per segment")
    p = sub.add_parser("putcost")
    p.add_argument("--endpoint-url", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--item", action="append", required=True, help="LABEL,overwrite|new,FRACTION,FILE")
    p.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    return {
        "setup": cmd_setup,
        "check": cmd_check,
        "requests": cmd_requests,
        "segments": cmd_segments,
        "putcost": cmd_putcost,
    }[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
