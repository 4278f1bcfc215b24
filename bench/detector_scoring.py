"""Precision and recall of the anomaly detector (templates/anomaly-detector.py) on seeded series
with injected anomalies, bigger and over more seeds than its pytest test, and for other settings.

The series, the delivery through the handler (stub DynamoDB and SNS, batches of 100 records from
one shard) and the matching of alerts to injected anomalies are the test's own
(tests/handler/test_anomaly_detector.py: make_series, run_series, score_alerts), so the figures
here and there are measured the same way.

    .venv/bin/python bench/detector_scoring.py                      # defaults, seeds 1..10
    .venv/bin/python bench/detector_scoring.py --readings 100000 --seeds 3
    .venv/bin/python bench/detector_scoring.py --sweep THRESHOLD=3.5,4,5 --sweep WINDOW=30,60
"""
import argparse
import importlib.util
import itertools
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests", "handler", "test_anomaly_detector.py")

DEFAULTS = {"WINDOW": "60", "MIN_HISTORY": "30", "THRESHOLD": "4.5", "STUCK_COUNT": "10",
            "MAX_RATE": "1.0", "RATE_WINDOW": "8", "STATE_TTL_DAYS": "7"}


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def detector(t, settings):
    os.environ.update({"AWS_DEFAULT_REGION": "us-east-1", "TABLE_NAME": t.TABLE,
                       "ALERT_TOPIC_ARN": t.TOPIC, **settings})
    d = load(t.DETECTOR, "anomaly_detector")
    d.dynamodb, d.sns = t.StubDynamoDB(), t.StubSns()
    d.time.sleep = lambda s: None
    return d


def measure(t, settings, seeds, readings, devices):
    totals = {}
    for seed in seeds:
        series, anomalies = t.make_series(seed, total=readings, devices=devices)
        d = detector(t, settings)
        alerts = t.run_series(d, series)
        figures = t.score_alerts(alerts, anomalies, grace=int(settings["RATE_WINDOW"]))
        for rule, f in figures.items():
            tot = totals.setdefault(rule, {"alerts": 0, "false": 0, "duplicates": 0,
                                           "found": 0.0, "anomalies": 0, "worst_p": 1.0,
                                           "worst_r": 1.0})
            for k in ("alerts", "false", "duplicates", "anomalies"):
                tot[k] += f[k]
            tot["found"] += f["recall"] * f["anomalies"]
            tot["worst_p"] = min(tot["worst_p"], f["precision"])
            tot["worst_r"] = min(tot["worst_r"], f["recall"])
    return totals


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readings", type=int, default=10_000, help="readings per series")
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--seeds", type=int, default=10, help="series with seeds 1..N")
    p.add_argument("--sweep", action="append", default=[],
                   help="NAME=v1,v2,...: settings to try (environment variable names)")
    args = p.parse_args()
    sys.path.insert(0, os.path.dirname(TESTS))
    t = load(TESTS, "detector_tests")

    names = [s.split("=", 1)[0] for s in args.sweep]
    choices = [s.split("=", 1)[1].split(",") for s in args.sweep]
    print(f"{args.seeds} series of {args.readings} readings, {args.devices} devices, 1% anomalies"
          " (half spikes, a quarter stuck runs, a quarter ramps)")
    for combo in itertools.product(*choices) if names else [()]:
        settings = dict(DEFAULTS, **dict(zip(names, combo)))
        started = time.monotonic()
        totals = measure(t, settings, range(1, args.seeds + 1), args.readings, args.devices)
        took = time.monotonic() - started
        label = " ".join(f"{n}={v}" for n, v in zip(names, combo)) or "defaults"
        print(f"\n{label}  ({took:.1f} s, {args.seeds * args.readings / took:,.0f} readings/s)")
        print(f"{'rule':<8} {'alerts':>7} {'false':>6} {'dup':>5} {'precision':>9} {'worst':>6}"
              f" {'recall':>7} {'worst':>6} {'of':>6}")
        for rule, f in totals.items():
            hits = f["alerts"] - f["false"]
            precision = hits / f["alerts"] if f["alerts"] else 1.0
            recall = f["found"] / f["anomalies"] if f["anomalies"] else 1.0
            print(f"{rule:<8} {f['alerts']:>7} {f['false']:>6} {f['duplicates']:>5} "
                  f"{precision:>9.3f} {f['worst_p']:>6.3f} {recall:>7.3f} {f['worst_r']:>6.3f} "
                  f"{f['anomalies']:>6}")
        false = totals["overall"]["false"]
        print(f"false alerts per 1000 readings: {1000 * false / (args.seeds * args.readings):.2f}")


if __name__ == "__main__":
    main()
