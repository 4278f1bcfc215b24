#!/usr/bin/env python3
"""The ceiling for `iotreg device simulate --fleet` (used by bench/device.sh).

    device_ceiling.py --keys DIR --things things.txt --host localhost --port P --cafile CA
                      [--threads 64] [--timeout 30]

For every thing name in THINGS (one per line) it does what `iotreg device simulate --fleet
--count 1` does per device, with paho-mqtt (a client other people wrote) from THREADS threads
and nothing else: an MQTT 3.1.1 connect over TLS with the device's own certificate and key
(DIR/<thing>-certificate.pem.crt, DIR/<thing>-private.pem.key, as `iotreg up` writes them) and
client id = thing name, one QoS 1 publish of a reading to sensor/temperature/<thing>, wait for
its PUBACK, disconnect. Wall time runs from the first connect to the last disconnect.

Prints one line:

    RESULT devices=N connected=N acked=N errors=0 wall_s=1.234 p50_ms=2.1 p99_ms=9.8 peak_rss_mb=40

(p50/p99: publish to PUBACK; peak_rss_mb: this process's own peak resident set.)
"""

from __future__ import annotations

import argparse
import json
import resource
import ssl
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import paho.mqtt.client as mqtt


def one_device(thing: str, args: argparse.Namespace) -> float:
    """Connect, publish QoS 1, wait for the PUBACK; the publish-to-PUBACK seconds."""
    ctx = ssl.create_default_context(cafile=args.cafile)
    ctx.load_cert_chain(
        f"{args.keys}/{thing}-certificate.pem.crt", f"{args.keys}/{thing}-private.pem.key"
    )
    connected = threading.Event()
    acked = threading.Event()
    result: dict[str, object] = {}

    def on_connect(client, userdata, flags, reason_code, properties):  # noqa: ARG001
        result["connack"] = reason_code
        connected.set()

    def on_publish(client, userdata, mid, reason_code, properties):  # noqa: ARG001
        result["acked_at"] = time.perf_counter()
        acked.set()

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=thing,
        protocol=mqtt.MQTTv311,
    )
    client.tls_set_context(ctx)
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect(args.host, args.port, keepalive=60)
    client.loop_start()
    try:
        if not connected.wait(args.timeout):
            raise TimeoutError(f"{thing}: no CONNACK within {args.timeout}s")
        if result["connack"] != 0:
            raise ConnectionError(f"{thing}: CONNACK {result['connack']}")
        reading = {
            "temperature": 72.5,
            "humidity": 65,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "device": thing,
            "battery_level": 87,
        }
        sent = time.perf_counter()
        client.publish(f"sensor/temperature/{thing}", json.dumps(reading), qos=1)
        if not acked.wait(args.timeout):
            raise TimeoutError(f"{thing}: no PUBACK within {args.timeout}s")
        return float(result["acked_at"]) - sent
    finally:
        client.disconnect()
        client.loop_stop()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", required=True)
    parser.add_argument("--things", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    things = [t.strip() for t in open(args.things) if t.strip()]
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        futures = [pool.submit(one_device, t, args) for t in things]
        for f in futures:
            try:
                latencies.append(f.result())
            except Exception as error:  # noqa: BLE001 - counted and shown, never hidden
                errors.append(str(error))
    wall = time.perf_counter() - started
    for e in errors[:5]:
        print(f"error: {e}", file=sys.stderr)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"RESULT devices={len(things)} connected={len(latencies)} acked={len(latencies)} "
        f"errors={len(errors)} wall_s={wall:.3f} "
        f"p50_ms={percentile(latencies, 50) * 1000:.1f} p99_ms={percentile(latencies, 99) * 1000:.1f} "
        f"mean_ms={(statistics.mean(latencies) * 1000 if latencies else float('nan')):.1f} "
        f"peak_rss_mb={rss_mb:.0f}"
    )
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
