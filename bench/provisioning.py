#!/usr/bin/env python3
"""Helpers of bench/provisioning.sh: time-stamp the emulator's request log, say which quota
bounds a run, and check that the devices are really there.

    provisioning.py watch LOG TIMELINE            # until TIMELINE.stop exists (or SIGTERM)
    provisioning.py report TIMELINE --devices N [--rates src/ratelimit.rs] [--json FILE]
    provisioning.py check --endpoint-url http://127.0.0.1:PORT --manifest devices.csv \\
        --group NAME --attach certificate|group [--sample 200] [--threads 8]
    provisioning.py check-empty --endpoint-url http://127.0.0.1:PORT --manifest devices.csv --group NAME

`watch`: the emulator's `--request-log` writes one JSON line per request (service, operation,
method, path, status) but no time; `watch` reads the log every 0.2 s and writes each new line
as `SECONDS_SINCE_START SERVICE OPERATION STATUS` to TIMELINE, so a request's time is known to
within 0.2 s plus however late the emulator wrote its line (it writes before sending the
answer). Enough for rates averaged over seconds, not for latencies.

`report`: from a TIMELINE of one `up`, per operation: the calls made, calls per device (the
operation count divided by N), non-2xx answers, the rate it went at while the fleet ran (calls
over the operation's own first-to-last span, and the median of its per-second counts in the
middle 80 % of that span, which leaves out the ramp-up and the tail), and iotreg's built-in
client-side limit for it, read from `DEFAULT_RATES` in src/ratelimit.rs (the table that
mirrors AWS IoT Core's default per-account API quotas). The operation whose limit divided by
its calls per device is smallest bounds the fleet: `limit / calls_per_device` devices a second
at most. Prints a table and `BOUND op=... limit=... calls_per_device=... max_devices_per_s=...`.

`check`: independent of iotreg's own `verify` (plain boto3 on the emulator), that the `up`
left what was asked for: every manifest thing is a member of the group (ListThingsInThingGroup)
and nothing else is; N certificates, all ACTIVE; the device policy's targets are the N
certificates (`--attach certificate`) or exactly the group (`--attach group`); and for a
sample of devices (`--sample`, spread evenly over the manifest, first and last included): the
thing with the manifest's attributes, exactly one certificate principal, that certificate's
attached policies (the device policy, or none with the group), and a shadow with desired and
reported state. `check-empty`: no manifest thing, no certificate, no group and no
`device-policy-*` policy left. Prints `CHECK ... ok` or the problems; exit 1 on a problem.

    provisioning.py bulk-task --endpoint-url http://127.0.0.1:PORT [--json FILE]
    provisioning.py check-claim --endpoint-url http://127.0.0.1:PORT --expect N [--sample 50]

`bulk-task`: the account's bulk registration tasks as the emulator recorded them
(ListThingRegistrationTasks, DescribeThingRegistrationTask): status, success and failure counts,
`creationDate` and `lastModifiedDate`, whose difference is how long the task ran on the server
side. Prints `TASK id=... status=... success=... failure=... server_s=...` per task.

`check-claim`: after `device simulate --claim`, the things the template made (ListThings with
the attribute `provisioned_by`, which the template sets) number exactly `--expect`; for a
sample of them: exactly one certificate principal, ACTIVE, and the `SerialNumber` attribute set.

Every AWS call goes to `http://127.0.0.1:PORT` only (anything else is refused, exit 2), with
fake credentials (bench/local_aws.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import statistics
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import local_aws  # noqa: E402

POLL_S = 0.2


# ----------------------------------------------------------------------------- watch
def watch(log: str, timeline: str) -> int:
    stop_file = timeline + ".stop"
    stopping = False

    def on_term(_sig, _frm):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    t0 = time.monotonic()
    pos = 0
    partial = b""
    with open(timeline, "w", encoding="utf-8") as out:
        while True:
            last_round = stopping or os.path.exists(stop_file)
            try:
                with open(log, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                pos += len(chunk)
                data = partial + chunk
                lines = data.split(b"\n")
                partial = lines.pop()  # an unfinished last line waits for the next read
                t = time.monotonic() - t0
                for raw in lines:
                    if not raw.strip():
                        continue
                    try:
                        rec = json.loads(raw)
                    except ValueError:
                        continue
                    out.write(f"{t:.2f} {rec.get('service') or '-'} {rec.get('operation') or '-'} {rec.get('status')}\n")
                out.flush()
            if last_round:
                return 0
            time.sleep(POLL_S)


# ---------------------------------------------------------------------------- report
RATE_RE = re.compile(r'^\s*\("([A-Za-z]+)",\s*([0-9.]+)\),')


def default_rates(path: str) -> dict[str, float]:
    """DEFAULT_RATES from src/ratelimit.rs: operation -> calls a second."""
    rates: dict[str, float] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                m = RATE_RE.match(line)
                if m:
                    rates[m.group(1)] = float(m.group(2))
    except FileNotFoundError:
        pass
    return rates


def read_timeline(path: str) -> list[tuple[float, str, str, int]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) != 4:
                continue
            try:
                rows.append((float(parts[0]), parts[1], parts[2], int(parts[3])))
            except ValueError:
                rows.append((float(parts[0]), parts[1], parts[2], 0))
    return rows


def steady_rate(times: list[float]) -> float:
    """Median calls/s over the whole seconds in the middle 80 % of the span of `times`."""
    if len(times) < 2:
        return float("nan")
    a, b = times[0], times[-1]
    lo, hi = a + 0.1 * (b - a), a + 0.9 * (b - a)
    per_s = Counter(int(t) for t in times if lo <= t < hi)
    secs = range(int(lo) + 1, int(hi))  # whole seconds only, no partial edges
    counts = [per_s.get(s, 0) for s in secs]
    return statistics.median(counts) if counts else float("nan")


def report(timeline: str, n: int, rates_path: str, json_out: str | None) -> int:
    rows = read_timeline(timeline)
    if not rows:
        print("REPORT: empty timeline (no request logged)", file=sys.stderr)
        return 1
    rates = default_rates(rates_path)
    by_op: dict[tuple[str, str], list[float]] = defaultdict(list)
    status: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for t, svc, op, st in rows:
        by_op[(svc, op)].append(t)
        status[(svc, op)][st] += 1
    per_device, once = [], []
    for key, ts in by_op.items():
        (per_device if len(ts) >= n / 2 else once).append(key)
    per_device.sort(key=lambda k: by_op[k][0])
    once.sort(key=lambda k: by_op[k][0])

    print(f"requests: {len(rows)} in all, {len(rows) / n:.2f} per device (N={n})")
    print(f"{'service':9} {'operation':28} {'calls':>7} {'/device':>8} {'non-2xx':>8} {'span s':>7} "
          f"{'mean/s':>7} {'steady/s':>8} {'limit/s':>7} {'max dev/s':>9}")
    result = {"devices": n, "requests": len(rows), "operations": []}
    bound = None
    for key in per_device:
        svc, op = key
        ts = by_op[key]
        calls = len(ts)
        per_dev = calls / n
        bad = sum(c for s, c in status[key].items() if not 200 <= s < 300)
        span = ts[-1] - ts[0]
        mean = calls / span if span > 0 else float("nan")
        steady = steady_rate(ts)
        limit = rates.get(op)
        max_dev = limit / per_dev if limit else float("inf")
        if limit and (bound is None or max_dev < bound[1]):
            bound = (op, max_dev, limit, per_dev)
        print(f"{svc:9} {op:28} {calls:7d} {per_dev:8.2f} {bad:8d} {span:7.1f} {mean:7.1f} {steady:8.1f} "
              f"{(f'{limit:g}' if limit else '-'):>7} {(f'{max_dev:.1f}' if limit else '-'):>9}")
        result["operations"].append({
            "service": svc, "operation": op, "calls": calls, "per_device": round(per_dev, 3),
            "non_2xx": bad, "statuses": {str(s): c for s, c in sorted(status[key].items())},
            "span_s": round(span, 2), "mean_per_s": round(mean, 2), "steady_per_s": steady,
            "limit_per_s": limit,
        })
    if once:
        print("once per run (fewer than N/2 calls): " + ", ".join(
            f"{op} {len(by_op[(svc, op)])}" + (f" ({sum(c for s, c in status[(svc, op)].items() if not 200 <= s < 300)} non-2xx)"
                                               if any(not 200 <= s < 300 for s in status[(svc, op)]) else "")
            for svc, op in once))
    result["once"] = {f"{svc}:{op}": len(by_op[(svc, op)]) for svc, op in once}
    # Bulk registration: when the task was started, last polled, and its reports read (seconds
    # from the start of the run, to within the watcher's 0.2 s).
    if ("iot", "StartThingRegistrationTask") in by_op:
        first = lambda op: by_op[("iot", op)][0] if ("iot", op) in by_op else float("nan")
        last = lambda op: by_op[("iot", op)][-1] if ("iot", op) in by_op else float("nan")
        marks = {
            "start_at": first("StartThingRegistrationTask"),
            "last_poll_at": last("DescribeThingRegistrationTask"),
            "polls": len(by_op.get(("iot", "DescribeThingRegistrationTask"), [])),
            "reports_at": first("ListThingRegistrationTaskReports"),
            "end_at": rows[-1][0],
        }
        print("BULK " + " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in marks.items()))
        result["bulk"] = marks
    throttled = sum(c for k in status for s, c in status[k].items() if s == 429)
    print(f"throttling answers (429): {throttled}")
    if bound:
        # Every operation at the lowest ceiling bounds the run (certificate mode has two: the
        # certificate and its policy attachment, both 15/s).
        ties = [o for o in result["operations"] if o["limit_per_s"]
                and abs(o["limit_per_s"] / (o["calls"] / n) - bound[1]) < 1e-6]
        ops = "+".join(o["operation"] for o in ties)
        op, max_dev, limit, per_dev = bound
        print(f"BOUND op={ops} limit={limit:g} calls_per_device={per_dev:.2f} max_devices_per_s={max_dev:.1f}")
        # Did the run go at that bound, or did something else (the machine, latency x concurrency)
        # hold it below? The bounding operation's steady rate says how fast devices went.
        pace = min(o["steady_per_s"] / (o["calls"] / n) for o in ties)
        verdict = "at the quota" if pace >= 0.9 * max_dev else "BELOW the quota: something else held it back"
        print(f"PACE steady_devices_per_s={pace:.1f} of max {max_dev:.1f} ({verdict})")
        result["bound"] = {"operations": [o["operation"] for o in ties], "limit_per_s": limit,
                           "per_device": round(per_dev, 3), "max_devices_per_s": round(max_dev, 2),
                           "steady_devices_per_s": pace}
    if json_out:
        with open(json_out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


# ----------------------------------------------------------------------------- check
def read_manifest(path: str) -> list[tuple[str, dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [(r.pop("thing_name"), {k: v for k, v in r.items() if v and k != "csr"}) for r in rows]


def paged(fn, key: str, token_in: str, token_out: str, **kw) -> list:
    out, token = [], None
    while True:
        page = fn(**kw, **({token_in: token} if token else {}))
        out.extend(page.get(key, []))
        token = page.get(token_out)
        if not token:
            return out


def clients(endpoint: str):
    u = urlparse(endpoint)
    if u.scheme != "http" or u.hostname != "127.0.0.1" or not u.port:
        print(f"refusing endpoint {endpoint!r}: only http://127.0.0.1:PORT (the local emulator)", file=sys.stderr)
        sys.exit(2)
    local_aws.isolate()
    import boto3
    from botocore.config import Config

    cfg = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32)
    s = boto3.session.Session()
    return (s.client("iot", endpoint_url=endpoint, config=cfg),
            s.client("iot-data", endpoint_url=endpoint, config=cfg))


def device_policy(iot) -> str | None:
    pols = [p["policyName"] for p in paged(iot.list_policies, "policies", "marker", "nextMarker", pageSize=250)
            if p["policyName"].startswith("device-policy-")]
    return pols[0] if len(pols) == 1 else None


def sample_of(devices: list, k: int) -> list:
    if k >= len(devices):
        return list(devices)
    if k <= 1:
        return [devices[0]]
    step = (len(devices) - 1) / (k - 1)
    return [devices[round(i * step)] for i in range(k)]


def check_up(iot, iotdata, devices, group: str, attach: str, sample: int, threads: int) -> list[str]:
    bad: list[str] = []
    names = {n for n, _ in devices}
    # Membership: the group holds exactly the manifest's things.
    try:
        members = set(paged(iot.list_things_in_thing_group, "things", "nextToken", "nextToken",
                            thingGroupName=group, maxResults=250))
    except iot.exceptions.ResourceNotFoundException:
        return [f"no thing group {group}"]
    if members != names:
        bad.append(f"group {group}: {len(members)} members, {len(names - members)} manifest things missing "
                   f"(e.g. {sorted(names - members)[:1]}), {len(members - names)} others")
    certs = paged(iot.list_certificates, "certificates", "marker", "nextMarker", pageSize=250)
    active = [c for c in certs if c["status"] == "ACTIVE"]
    if len(certs) != len(devices) or len(active) != len(devices):
        bad.append(f"{len(certs)} certificates ({len(active)} ACTIVE) for {len(devices)} devices")
    policy = device_policy(iot)
    if policy is None:
        return bad + ["not exactly one device-policy-* policy"]
    targets = paged(iot.list_targets_for_policy, "targets", "marker", "nextMarker", policyName=policy, pageSize=250)
    group_arn = iot.describe_thing_group(thingGroupName=group)["thingGroupArn"]
    if attach == "group":
        if targets != [group_arn]:
            bad.append(f"policy {policy}: targets {targets[:3]}{'…' if len(targets) > 3 else ''} "
                       f"({len(targets)}), expected only the group")
    else:
        cert_arns = {c["certificateArn"] for c in certs}
        if set(targets) != cert_arns or len(targets) != len(devices):
            bad.append(f"policy {policy}: {len(targets)} targets, {len(set(targets) & cert_arns)} of them "
                       f"the {len(cert_arns)} certificates, group among them: {group_arn in targets}")

    want_cert_policies = [] if attach == "group" else [policy]

    def one(item) -> list[str]:
        name, attrs = item
        out = []
        try:
            t = iot.describe_thing(thingName=name)
        except iot.exceptions.ResourceNotFoundException:
            return [f"{name}: no thing"]
        got = t.get("attributes", {})
        if any(got.get(k) != v for k, v in attrs.items()):
            out.append(f"{name}: attributes {got} (manifest {attrs})")
        arns = [p for p in iot.list_thing_principals(thingName=name)["principals"] if ":cert/" in p]
        if len(arns) != 1:
            return out + [f"{name}: {len(arns)} certificate principals"]
        pols = [p["policyName"] for p in iot.list_attached_policies(target=arns[0])["policies"]]
        if pols != want_cert_policies:
            out.append(f"{name}: certificate policies {pols}, expected {want_cert_policies}")
        try:
            doc = json.loads(iotdata.get_thing_shadow(thingName=name)["payload"].read())
            if not {"desired", "reported"} <= set(doc.get("state", {})):
                out.append(f"{name}: shadow state has {sorted(doc.get('state', {}))}")
        except iotdata.exceptions.ResourceNotFoundException:
            out.append(f"{name}: no shadow")
        return out

    with ThreadPoolExecutor(max_workers=threads) as pool:
        bad += [p for probs in pool.map(one, sample_of(devices, sample)) for p in probs]
    return bad


def check_empty(iot, devices, group: str) -> list[str]:
    bad = []
    names = {n for n, _ in devices}
    things = paged(iot.list_things, "things", "nextToken", "nextToken", maxResults=250)
    left = [t["thingName"] for t in things if t["thingName"] in names]
    if left:
        bad.append(f"{len(left)} manifest things left (e.g. {left[0]})")
    certs = paged(iot.list_certificates, "certificates", "marker", "nextMarker", pageSize=250)
    if certs:
        bad.append(f"{len(certs)} certificates left")
    groups = [g["groupName"] for g in paged(iot.list_thing_groups, "thingGroups", "nextToken", "nextToken",
                                             maxResults=250)]
    if group in groups:
        bad.append(f"thing group {group} left")
    pols = [p["policyName"] for p in paged(iot.list_policies, "policies", "marker", "nextMarker", pageSize=250)]
    if any(p.startswith("device-policy-") for p in pols):
        bad.append(f"policies left: {[p for p in pols if p.startswith('device-policy-')]}")
    return bad


def bulk_tasks(iot) -> list[dict]:
    ids = paged(iot.list_thing_registration_tasks, "taskIds", "nextToken", "nextToken", maxResults=250)
    out = []
    for tid in ids:
        t = iot.describe_thing_registration_task(taskId=tid)
        created, modified = t.get("creationDate"), t.get("lastModifiedDate")
        server_s = (modified - created).total_seconds() if created and modified else float("nan")
        out.append({"id": tid, "status": t.get("status"), "success": t.get("successCount"),
                    "failure": t.get("failureCount"), "server_s": round(server_s, 2)})
    return out


def check_claim(iot, expect: int, sample: int) -> list[str]:
    # Filtered here: ListThings filters on a name and value together, and the value is the
    # template's name.
    things = [t for t in paged(iot.list_things, "things", "nextToken", "nextToken", maxResults=250)
              if "provisioned_by" in t.get("attributes", {})]
    bad = []
    if len(things) != expect:
        bad.append(f"{len(things)} things provisioned by the template, expected {expect}")
    names = sorted(t["thingName"] for t in things)
    for t in (sample_of([(n, None) for n in names], sample) if names else []):
        name = t[0]
        attrs = iot.describe_thing(thingName=name).get("attributes", {})
        if not attrs.get("SerialNumber"):
            bad.append(f"{name}: no SerialNumber attribute ({attrs})")
        arns = [p for p in iot.list_thing_principals(thingName=name)["principals"] if ":cert/" in p]
        if len(arns) != 1:
            bad.append(f"{name}: {len(arns)} certificate principals")
            continue
        st = iot.describe_certificate(certificateId=arns[0].rsplit("/", 1)[1])["certificateDescription"]["status"]
        if st != "ACTIVE":
            bad.append(f"{name}: certificate {st}")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("watch")
    w.add_argument("log")
    w.add_argument("timeline")
    r = sub.add_parser("report")
    r.add_argument("timeline")
    r.add_argument("--devices", type=int, required=True)
    r.add_argument("--rates", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src",
                                                   "ratelimit.rs"))
    r.add_argument("--json")
    for name in ("check", "check-empty"):
        c = sub.add_parser(name)
        c.add_argument("--endpoint-url", required=True)
        c.add_argument("--manifest", required=True)
        c.add_argument("--group", required=True)
        if name == "check":
            c.add_argument("--attach", choices=("certificate", "group"), required=True)
            c.add_argument("--sample", type=int, default=200)
            c.add_argument("--threads", type=int, default=8)
    b = sub.add_parser("bulk-task")
    b.add_argument("--endpoint-url", required=True)
    b.add_argument("--json")
    cc = sub.add_parser("check-claim")
    cc.add_argument("--endpoint-url", required=True)
    cc.add_argument("--expect", type=int, required=True)
    cc.add_argument("--sample", type=int, default=50)
    a = ap.parse_args()
    if a.cmd == "watch":
        return watch(a.log, a.timeline)
    if a.cmd == "report":
        if a.devices < 1:
            ap.error("--devices must be at least 1")
        return report(a.timeline, a.devices, a.rates, a.json)
    iot, iotdata = clients(a.endpoint_url)
    if a.cmd == "bulk-task":
        tasks = bulk_tasks(iot)
        for t in tasks:
            print("TASK " + " ".join(f"{k}={v}" for k, v in t.items()))
        if a.json:
            with open(a.json, "w", encoding="utf-8") as f:
                json.dump(tasks, f, indent=1)
        return 0 if tasks and all(t["status"] == "Completed" for t in tasks) else 1
    if a.cmd == "check-claim":
        t0 = time.monotonic()
        problems = check_claim(iot, a.expect, a.sample)
        for p in problems[:10]:
            print(f"CHECK claim: {p}", file=sys.stderr)
        print(f"CHECK claim {'FAILED' if problems else 'ok'}: {a.expect} devices expected "
              f"({time.monotonic() - t0:.1f} s)")
        return 1 if problems else 0
    devices = read_manifest(a.manifest)
    t0 = time.monotonic()
    if a.cmd == "check":
        problems = check_up(iot, iotdata, devices, a.group, a.attach, a.sample, a.threads)
        what = f"up ({a.attach}, {min(a.sample, len(devices))} sampled in depth)"
    else:
        problems = check_empty(iot, devices, a.group)
        what = "empty"
    for p in problems[:10]:
        print(f"CHECK {what}: {p}", file=sys.stderr)
    if len(problems) > 10:
        print(f"CHECK {what}: ... and {len(problems) - 10} more problems", file=sys.stderr)
    print(f"CHECK {what} {'FAILED' if problems else 'ok'}: {len(devices)} manifest devices "
          f"({time.monotonic() - t0:.1f} s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
