"""The telemetry analytics benchmark's measuring half (bench/analytics.sh runs it after `iotreg
up` with `[analytics] enabled = true`): seeded readings with injected anomalies, published by
iot-data Publish, followed through the second topic rule, the Kinesis stream, the event source
mapping and the anomaly detector, then scored.

    analytics.py ENDPOINT STATE MANIFEST READINGS [--seed N] [--publishers N] [--timeout S]
                 [--json FILE]

ENDPOINT  the local AWS (http://127.0.0.1:PORT only; fake credentials)
STATE     iotreg's state file: the deployment's stream, table, detector and mapping are read
          from its records (keys analytics_stream, detector_table, detector_function,
          analytics_mapping), not guessed
MANIFEST  the fleet manifest (thing_name column): the devices that publish

Readings: per device a baseline (uniform 18..26) plus Gaussian noise (sigma 0.2), 2 decimals.
1% of all readings start an injected anomaly, placed after the detector's history
(MIN_HISTORY, read from the function's environment) at index 40 or later, each wholly inside
the series, anomalies of one device at least 40 readings apart: 60% spikes (one reading 6 to
12 sigma off), 20% stuck runs (12 to 20 readings repeating the reading before), 20% ramps (10
to 16 readings climbing or falling 1.5 to 3.0 per reading, above MAX_RATE, then back). Each
device's readings are published in order; all devices' reading i before any reading i + 1
(the publisher threads meet at a barrier per round), on sensor/temperature/<thing> as
{"temperature", "humidity": 45, "timestamp" (when published, ISO-8601 ms UTC), "device",
"battery_level": 87}.

Figures:
  publish rate    readings / (first Publish sent -> last Publish answered)
  end to end      readings / (first Publish sent -> the end of the detector invocation that took
                  the last reading: the latest REPORT line's log timestamp). "Taken" is the
                  emulator's mapping counter recordsOk (GET /iotreg-test/event-source-mappings,
                  polled) reaching the readings published; cross-checked with the SUMMARY
                  lines (records - skipped, summed) and every device's item in the table
                  (last_seq present)
  detector        per invocation, the REPORT line's Duration (handler time) p50/p99, and the
                  records per invocation (SUMMARY)
  alert latency   per alert, the reading's `timestamp` -> the alert's `detected_at`
  precision/recall per rule and overall: alerts from the detector's `ANOMALY` log lines
                  (FilterLogEvents on the function's log group, every page), each placed at its
                  reading by (device, timestamp), scored by tests/handler/test_anomaly_detector.py
                  score_alerts (the pytest's own matching rule, grace = RATE_WINDOW)

Exit status: 0 when every reading reached the detector, 1 otherwise (or when the stack is not
what this expects), 2 bad input.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import random
import re
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone

import boto3
from botocore.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests", "handler", "test_anomaly_detector.py")

SIGMA = 0.2
RATE = 0.01
FIRST = 40  # no anomaly before this index: the detector's history (MIN_HISTORY) comes first
GAP = 40  # readings between two anomalies of one device, so an alert matches at most one
MIX = (("spike", 0.6), ("stuck", 0.2), ("ramp", 0.2))
LENGTH = {"spike": (1, 1), "stuck": (12, 20), "ramp": (10, 16)}

REPORT = re.compile(r"^REPORT RequestId: (\S+)\tDuration: ([0-9.]+) ms")


def client(service, endpoint, **config):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, **config),
    )


def load_scoring():
    # The pytest module imports pytest; the venv has it. Only score_alerts is used.
    spec = importlib.util.spec_from_file_location("detector_tests", TESTS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.score_alerts


def iso_ms(epoch_s):
    return (datetime.fromtimestamp(epoch_s, timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"))


def parse_iso(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def pct(values, p):
    """The p-th percentile, nearest rank (p99 of 100 values is the 99th smallest)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


# --- the readings ----------------------------------------------------------------------------

def make_readings(devices, readings, seed, min_history, max_rate):
    """({device: [values]}, [(device, kind, first, last)]) as the module docstring says."""
    if FIRST < min_history:
        raise SystemExit(f"the detector's MIN_HISTORY {min_history} is above {FIRST}: "
                         "anomalies would land in its history")
    r = random.Random(seed)
    n = round(len(devices) * readings * RATE)
    counts = [round(n * share) for _, share in MIX]
    counts[0] = n - sum(counts[1:])
    kinds = [k for (k, _), c in zip(MIX, counts) for _ in range(c)]
    r.shuffle(kinds)
    # Anomalies go round the devices in a shuffled order: n <= devices gives each at most one.
    order = list(devices)
    r.shuffle(order)
    mine = {d: [] for d in devices}
    for i, kind in enumerate(kinds):
        mine[order[i % len(order)]].append(kind)

    series, anomalies = {}, []
    for device in devices:
        base = r.uniform(18, 26)
        xs = [base + r.gauss(0, SIGMA) for _ in range(readings)]
        stuck = []
        k = len(mine[device])
        slot = (readings - FIRST) // k if k else 0
        for j, kind in enumerate(mine[device]):
            length = r.randint(*LENGTH[kind])
            lo = FIRST + j * slot
            # The last anomaly may end at the series' end; the others keep GAP to the next slot.
            hi = (readings - length) if j == k - 1 else (lo + slot - length - GAP)
            if hi < lo:
                raise SystemExit(f"{readings} readings per device leave no room for {k} "
                                 f"anomalies after index {FIRST}: use more readings")
            start = r.randint(lo, hi)
            if kind == "spike":
                xs[start] += r.choice((-1, 1)) * r.uniform(6, 12) * SIGMA
            elif kind == "ramp":
                slope = r.choice((-1, 1)) * r.uniform(1.5, 3.0)
                assert abs(slope) > max_rate
                for step in range(length):
                    xs[start + step] += slope * (step + 1)
            else:
                stuck.append((start, length))
            anomalies.append((device, kind, start, start + length - 1))
        xs = [round(x, 2) for x in xs]
        for start, length in stuck:
            xs[start:start + length] = [xs[start - 1]] * length
        series[device] = xs
    return series, anomalies


# --- publishing ------------------------------------------------------------------------------

def publish_all(endpoint, series, readings, publishers):
    """Publishes every reading; returns (t_first, t_last, {(device, timestamp): index})."""
    devices = list(series)
    publishers = max(1, min(publishers, len(devices)))
    barrier = threading.Barrier(publishers)
    where = {}
    stamps = {}  # device -> the last timestamp text used (kept strictly increasing)
    lock = threading.Lock()
    errors = []
    times = [None, None]
    ready = threading.Barrier(publishers + 1)

    def work(w):
        data = client("iot-data", endpoint, max_pool_connections=4)
        mine = devices[w::publishers]
        ready.wait()
        try:
            for i in range(readings):
                for device in mine:
                    now = time.time()
                    last = stamps.get(device)
                    if last is not None and now <= last + 0.001:
                        now = last + 0.001
                    stamps[device] = now
                    ts = iso_ms(now)
                    payload = {"temperature": series[device][i], "humidity": 45, "timestamp": ts,
                               "device": device, "battery_level": 87}
                    with lock:
                        where[(device, ts)] = i
                    data.publish(topic=f"sensor/temperature/{device}", qos=1,
                                 payload=json.dumps(payload).encode())
                barrier.wait()
        except Exception as e:  # noqa: BLE001 - reported, and the run fails
            errors.append(f"publisher {w}: {e!r}")
            barrier.abort()

    threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(publishers)]
    for t in threads:
        t.start()
    ready.wait()
    times[0] = time.time()
    for t in threads:
        t.join()
    times[1] = time.time()
    if errors:
        raise SystemExit("publishing failed: " + "; ".join(errors[:3]))
    return times[0], times[1], where


# --- following the detector ------------------------------------------------------------------

def mapping_counters(endpoint, uuid):
    with urllib.request.urlopen(f"{endpoint}/iotreg-test/event-source-mappings", timeout=10) as r:
        body = json.load(r)
    m = body["mappings"].get(uuid)
    if m is None:
        raise SystemExit(f"the emulator knows no event source mapping {uuid}")
    return m


def wait_taken(endpoint, uuid, total, timeout, progress):
    """Polls the mapping's counters until recordsOk reaches total (and nothing is in flight),
    the counters stop moving for `timeout` s, or records are given up. Returns the counters."""
    last_change, last_seen, shown = time.time(), None, 0.0
    while True:
        m = mapping_counters(endpoint, uuid)
        seen = (m["recordsOk"], m["recordsGivenUp"], m["invocations"])
        if seen != last_seen:
            last_seen, last_change = seen, time.time()
        if m["recordsOk"] + m["recordsGivenUp"] >= total and not m["inFlight"]:
            return m
        if time.time() - last_change > timeout:
            return m
        if progress and time.time() - shown > 10:
            shown = time.time()
            print(f"  … detector has taken {m['recordsOk']}/{total} readings "
                  f"({m['invocations']} invocations)", file=sys.stderr)
        time.sleep(0.2)


def log_events(logs, group):
    events, token = [], None
    while True:
        kwargs = {"logGroupName": group}
        if token:
            kwargs["nextToken"] = token
        page = logs.filter_log_events(**kwargs)
        events.extend(page.get("events", []))
        token = page.get("nextToken")
        if not token:
            return events


def count_streams(logs, group):
    """Log streams of a function's group: one per invocation on the local AWS."""
    n, token = 0, None
    while True:
        kwargs = {"logGroupName": group}
        if token:
            kwargs["nextToken"] = token
        try:
            page = logs.describe_log_streams(**kwargs)
        except logs.exceptions.ResourceNotFoundException:
            return 0
        n += len(page.get("logStreams", []))
        token = page.get("nextToken")
        if not token:
            return n


# --- main ------------------------------------------------------------------------------------

def resource(state, key):
    for r in state["resources"]:
        if r["key"] == key and r.get("phase") == "created":
            return r
    raise SystemExit(f"the state has no created {key}: is [analytics] enabled?")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("endpoint")
    p.add_argument("state")
    p.add_argument("manifest")
    p.add_argument("readings", type=int)
    p.add_argument("--seed", type=int, default=18)
    p.add_argument("--publishers", type=int, default=8, help="publisher threads")
    p.add_argument("--timeout", type=float, default=300,
                   help="give up when the detector takes nothing for this long (s)")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--without-processor", action="store_true",
                   help="disable the recipe's processor rule while publishing (enabled again "
                        "after): only the analytics path runs")
    args = p.parse_args()
    if not args.endpoint.startswith("http://127.0.0.1:"):
        p.error(f"refusing non-local endpoint {args.endpoint}")
    if args.readings < 1:
        p.error("READINGS must be at least 1")

    state = json.load(open(args.state))
    stream = resource(state, "analytics_stream")["name"]
    table = resource(state, "detector_table")["name"]
    function = resource(state, "detector_function")["name"]
    processor = resource(state, "function")["name"]
    uuid = resource(state, "analytics_mapping")["arn"].rsplit(":", 1)[1]
    with open(args.manifest, newline="") as f:
        devices = [row["thing_name"] for row in csv.DictReader(f)]
    if not devices:
        p.error(f"{args.manifest} names no devices")

    lam = client("lambda", args.endpoint)
    env = lam.get_function_configuration(FunctionName=function)["Environment"]["Variables"]
    min_history, max_rate = int(env["MIN_HISTORY"]), float(env["MAX_RATE"])
    grace = int(env["RATE_WINDOW"])
    mapping = lam.get_event_source_mapping(UUID=uuid)
    deadline = time.time() + 30
    while mapping["State"] != "Enabled" and time.time() < deadline:
        time.sleep(0.2)
        mapping = lam.get_event_source_mapping(UUID=uuid)
    if mapping["State"] != "Enabled":
        raise SystemExit(f"mapping {uuid} is {mapping['State']}, not Enabled")
    shards = len(client("kinesis", args.endpoint).list_shards(StreamName=stream)["Shards"])
    score_alerts = load_scoring()

    series, anomalies = make_readings(devices, args.readings, args.seed, min_history, max_rate)
    total = len(devices) * args.readings
    kinds = {k: sum(1 for a in anomalies if a[1] == k) for k, _ in MIX}
    print(f"# {len(devices)} devices x {args.readings} readings = {total}, seed {args.seed}; "
          f"{len(anomalies)} injected anomalies ({', '.join(f'{v} {k}' for k, v in kinds.items())})")
    print(f"# stream {stream} ({shards} shards), mapping BatchSize {mapping['BatchSize']}, "
          f"MaximumBatchingWindowInSeconds {mapping['MaximumBatchingWindowInSeconds']}; detector "
          f"WINDOW {env['WINDOW']} MIN_HISTORY {min_history} THRESHOLD {env['THRESHOLD']} "
          f"STUCK_COUNT {env['STUCK_COUNT']} MAX_RATE {max_rate} RATE_WINDOW {grace}")
    before = mapping_counters(args.endpoint, uuid)
    if before["recordsOk"] or before["invocations"]:
        raise SystemExit(f"mapping {uuid} has already run ({before['invocations']} invocations): "
                         "a fresh deployment is expected")

    iot = client("iot", args.endpoint)
    processor_rule = resource(state, "rule")["name"]
    if args.without_processor:
        iot.disable_topic_rule(ruleName=processor_rule)
    print(f"# the processor rule {processor_rule}: "
          f"{'disabled while publishing' if args.without_processor else 'enabled, as deployed'}")
    print(f"publishing with {args.publishers} threads…", file=sys.stderr)
    # A failed run leaves the rule disabled: `down` deletes it either way.
    t0, t_published, where = publish_all(args.endpoint, series, args.readings, args.publishers)
    print(f"published {total} in {t_published - t0:.1f} s; waiting for the detector…",
          file=sys.stderr)
    m = wait_taken(args.endpoint, uuid, total, args.timeout, progress=True)
    t_polled = time.time()
    if args.without_processor:
        # Every reading is on the stream by now (or never will be): the dispatcher is done with
        # them, so enabling the rule again lets none of them through. `down` then finds the
        # stack as `up` left it.
        iot.enable_topic_rule(ruleName=processor_rule)

    logs = client("logs", args.endpoint)
    # The recipe's processor rule takes every reading too: one invocation (a subprocess on the
    # local AWS) per reading, sharing the machine with the detector's.
    processor_runs = count_streams(logs, f"/aws/lambda/{processor}")
    events = log_events(logs, f"/aws/lambda/{function}")
    durations, report_ts, alerts_raw = [], [], []
    records_taken = invocations_summary = records_per = 0
    batch_sizes = []
    errors = 0
    for e in events:
        msg = e["message"]
        hit = REPORT.match(msg)
        if hit:
            durations.append(float(hit.group(2)))
            report_ts.append(e["timestamp"] / 1000)
            continue
        if msg.startswith("[ERROR]"):
            errors += 1
        # Logged records: [INFO]\t<time>\t<request id>\tANOMALY {...}
        text = msg.split("\t", 3)[-1].rstrip("\n")
        if text.startswith("ANOMALY "):
            alerts_raw.append(json.loads(text[len("ANOMALY "):]))
        elif text.startswith("SUMMARY "):
            s = json.loads(text[len("SUMMARY "):])
            invocations_summary += 1
            records_per += s["records"]
            batch_sizes.append(s["records"])
            records_taken += s["records"] - s["skipped"]

    # Every device's state item, from outside: it exists and has a last sequence number.
    ddb = client("dynamodb", args.endpoint)
    items, key = [], None
    while True:
        kw = {"TableName": table, "ConsistentRead": True}
        if key:
            kw["ExclusiveStartKey"] = key
        page = ddb.scan(**kw)
        items.extend(page["Items"])
        key = page.get("LastEvaluatedKey")
        if not key:
            break
    with_seq = {i["device"]["S"] for i in items if "last_seq" in i}
    missing_items = sorted(set(devices) - with_seq)

    complete = (m["recordsOk"] == total and m["recordsGivenUp"] == 0 and records_taken == total
                and not missing_items)
    t_end = max(report_ts) if report_ts else t_polled

    alerts, unplaced, alert_lat = [], 0, []
    for a in alerts_raw:
        i = where.get((a["device"], a.get("timestamp")))
        if i is None:
            unplaced += 1
            continue
        if series[a["device"]][i] != a["value"]:
            raise SystemExit(f"alert {a} does not carry reading {i}'s value "
                             f"{series[a['device']][i]}")
        alerts.append((a["device"], i, a["rule"]))
        alert_lat.append(parse_iso(a["detected_at"]) - parse_iso(a["timestamp"]))
    figures = score_alerts(alerts, anomalies, grace=grace)

    e2e = t_end - t0
    print()
    print(f"{'figure':<34} {'value':>12}")
    rows = [
        ("readings published", f"{total}"),
        ("publish: wall", f"{t_published - t0:.2f} s"),
        ("publish: readings/s", f"{total / (t_published - t0):.1f}"),
        ("detector took (recordsOk)", f"{m['recordsOk']}/{total}"),
        ("given up (to the failure queue)", f"{m['recordsGivenUp']}"),
        ("end to end: wall", f"{e2e:.2f} s"),
        ("end to end: readings/s", f"{total / e2e:.1f}" if complete else "incomplete"),
        ("detector invocations", f"{len(durations)}"),
        ("  failed ([ERROR] lines)", f"{errors}"),
        ("  records per invocation (mean)",
         f"{records_per / invocations_summary:.1f}" if invocations_summary else "nan"),
        ("  records per invocation (max)", f"{max(batch_sizes) if batch_sizes else 0}"),
        ("detector Duration p50", f"{pct(durations, 50):.1f} ms"),
        ("detector Duration p99", f"{pct(durations, 99):.1f} ms"),
        ("alert latency p50", f"{pct(alert_lat, 50):.2f} s"),
        ("alert latency p99", f"{pct(alert_lat, 99):.2f} s"),
        ("alerts (ANOMALY lines)", f"{len(alerts_raw)}"),
        ("  not placed at a reading", f"{unplaced}"),
        ("processor invocations meanwhile", f"{processor_runs}"),
    ]
    for name, value in rows:
        print(f"{name:<34} {value:>12}")
    print()
    print(f"{'rule':<8} {'alerts':>6} {'false':>5} {'dup':>4} {'precision':>9} {'recall':>7} "
          f"{'of':>4}")
    for rule, f in figures.items():
        print(f"{rule:<8} {f['alerts']:>6} {f['false']:>5} {f['duplicates']:>4} "
              f"{f['precision']:>9.3f} {f['recall']:>7.3f} {f['anomalies']:>4}")
    # What the false alerts and the misses were: the figures alone do not say why.
    def match(alert):
        device, i, _ = alert
        return next((a for a in anomalies if a[0] == device and a[2] <= i <= a[3] + grace), None)
    false = [al for al in alerts if match(al) is None]
    for device, i, rule in false:
        xs = series[device]
        print(f"  false: {rule} {device} reading {i} = {xs[i]} "
              f"(previous {xs[max(0, i - 3):i]})")
    found = {(match(al), al[2]) for al in alerts if match(al) is not None}
    rule_of = {"spike": "zscore", "stuck": "stuck", "ramp": "rate"}
    for a in anomalies:
        if (a, rule_of[a[1]]) not in found:
            print(f"  missed: {a[1]} {a[0]} readings {a[2]}..{a[3]} "
                  f"({series[a[0]][a[2] - 1:a[3] + 2]})")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"readings": total, "publish_s": t_published - t0, "e2e_s": e2e,
                       "complete": complete, "records_ok": m["recordsOk"],
                       "invocations": len(durations), "duration_ms": durations,
                       "alert_latency_s": alert_lat, "figures": figures,
                       "counters": m}, f, indent=1)

    if not complete:
        print(f"\nNOT every reading reached the detector: mapping recordsOk {m['recordsOk']}, "
              f"given up {m['recordsGivenUp']}, SUMMARY records taken {records_taken}, "
              f"devices without a state item {len(missing_items)} "
              f"{missing_items[:5]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
