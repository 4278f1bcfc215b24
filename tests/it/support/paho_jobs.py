#!/usr/bin/env python3
"""A device written with paho-mqtt that takes AWS IoT jobs, given only its certificate, key,
the gateway's CA and address.

    paho_jobs.py HOST PORT CA CERT KEY THING [--fail] [--once] [--linger S]

Connects as THING (client id = THING), subscribes to $aws/things/THING/jobs/notify-next, the
answers of start-next, $next/get and every job's update (accepted/rejected), and its classic
shadow's update/accepted and update/rejected. Then, for each execution: asks what is next
($next/get, DescribeJobExecution), starts it with start-next and the step as statusDetails
({"step": "downloading"} for a firmware update, {"step": "applying"} for a configuration
change), downloads the firmware from its URL and checks its size and SHA-256 (or applies the
`set`), reports the result in its shadow (reported.firmware_version, or reported.config) and
sends SUCCEEDED ({"firmware_version": V} / {"applied": "k=v,..."}) to
$aws/things/THING/jobs/JOB/update. With --fail it sends FAILED {"reason": "simulated
failure"} instead; a download that fails or does not match is FAILED with the reason; an
unknown operation is REJECTED with the reason. With nothing pending it waits for notify-next
up to --linger seconds (default 5). With --once it stops after one execution (and fails when
none comes).

Prints one JSON line per execution handled: {"thing", "job_id", "execution_number",
"status", "version", "bytes"}, and exits 0; or prints what failed and exits 1. Every wait is
bounded; every request carries a clientToken and waits for the answer that echoes it.
"""

import argparse
import hashlib
import json
import queue
import sys
import threading
import time
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt

WAIT = 15.0


class Device:
    def __init__(self, args):
        self.thing = args.thing
        self.base = f"$aws/things/{args.thing}/jobs"
        self.shadow = f"$aws/things/{args.thing}/shadow/update"
        self.events = {n: threading.Event() for n in ("connected", "subscribed")}
        self.lock = threading.Lock()
        self.answers = {}  # clientToken -> (topic, document)
        self.answered = threading.Condition(self.lock)
        self.notifications = queue.Queue()
        self.connack = None
        self.suback = None
        self.tokens = 0
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.thing,
                        protocol=mqtt.MQTTv311)
        c.tls_set(ca_certs=args.ca, certfile=args.cert, keyfile=args.key)
        c.on_connect = self.on_connect
        c.on_subscribe = self.on_subscribe
        c.on_message = self.on_message
        self.client = c
        c.connect(args.host, args.port, keepalive=30)
        c.loop_start()
        if not self.events["connected"].wait(WAIT) or self.connack != 0:
            raise SystemExit(f"no CONNACK 0 for {args.thing}: {self.connack}")
        b = self.base
        filters = [f"{b}/notify-next", f"{b}/start-next/accepted", f"{b}/start-next/rejected",
                   f"{b}/$next/get/accepted", f"{b}/$next/get/rejected",
                   f"{b}/+/update/accepted", f"{b}/+/update/rejected",
                   f"{self.shadow}/accepted", f"{self.shadow}/rejected"]
        c.subscribe([(f, 1) for f in filters])
        if not self.events["subscribed"].wait(WAIT) or 128 in self.suback:
            raise SystemExit(f"subscription refused: {self.suback}")

    def on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = getattr(reason_code, "value", reason_code)
        self.events["connected"].set()

    def on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.suback = [getattr(c, "value", c) for c in reason_codes]
        self.events["subscribed"].set()

    def on_message(self, client, userdata, message):
        try:
            doc = json.loads(message.payload or b"{}")
        except ValueError:
            return
        if message.topic == f"{self.base}/notify-next":
            self.notifications.put(doc)
            return
        token = doc.get("clientToken") if isinstance(doc, dict) else None
        if token is not None:
            with self.lock:
                self.answers[token] = (message.topic, doc)
                self.answered.notify_all()

    def request(self, topic, doc):
        """Publishes doc (QoS 1, with a clientToken) and returns (accepted?, answer)."""
        self.tokens += 1
        token = f"paho-{self.thing}-{self.tokens}"
        doc = dict(doc, clientToken=token)
        info = self.client.publish(topic, json.dumps(doc), qos=1)
        deadline = time.monotonic() + WAIT
        with self.lock:
            while token not in self.answers:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"no answer on {topic}/accepted or /rejected")
                self.answered.wait(left)
            answer_topic, answer = self.answers.pop(token)
        if not info.is_published():
            info.wait_for_publish(WAIT)
        return answer_topic == f"{topic}/accepted", answer

    def next_execution(self, linger):
        """The next pending execution (with its document), else the next notified one."""
        while not self.notifications.empty():  # stale: asked afresh below
            self.notifications.get_nowait()
        ok, answer = self.request(f"{self.base}/$next/get", {"includeJobDocument": True})
        if not ok:
            raise SystemExit(f"$next/get rejected: {answer}")
        if "execution" in answer:
            return answer["execution"]
        deadline = time.monotonic() + linger
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                note = self.notifications.get(timeout=left)
            except queue.Empty:
                return None
            if note.get("execution"):
                return note["execution"]

    def update(self, execution, status, details):
        doc = {"status": status, "statusDetails": details, "includeJobExecutionState": True}
        for field, name in (("expectedVersion", "versionNumber"), ("executionNumber", "executionNumber")):
            if execution.get(name) is not None:
                doc[field] = execution[name]
        ok, answer = self.request(f"{self.base}/{execution['jobId']}/update", doc)
        if not ok:
            raise SystemExit(f"{status} update of {execution['jobId']} rejected: {answer}")
        return answer.get("executionState", {}).get("versionNumber")

    def report(self, reported):
        ok, answer = self.request(self.shadow, {"state": {"reported": reported}})
        if not ok:
            raise SystemExit(f"shadow update rejected: {answer}")

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def operation(document):
    """(kind, details) of a job document, or raise ValueError with the reason to reject."""
    if isinstance(document, str):
        document = json.loads(document)
    if not isinstance(document, dict):
        raise ValueError("the job document is not a JSON object")
    op = document.get("operation")
    if op == "firmware_update":
        f = document.get("firmware")
        if not isinstance(f, dict) or not all(k in f for k in ("version", "size", "sha256", "url")):
            raise ValueError("firmware_update: firmware.version, size, sha256 and url are required")
        return "firmware", f
    if op == "config":
        s = document.get("set")
        if not isinstance(s, dict) or not s:
            raise ValueError("config: the document has no \"set\" object")
        return "config", s
    raise ValueError(f"unknown operation {op!r}")


def download(firmware):
    """(bytes received, None) when the body matches the document, else (bytes, reason)."""
    url = firmware["url"]
    shown = url.split("?")[0]
    digest, received = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            while True:
                chunk = response.read(65536)
                if not chunk:
                    break
                received += len(chunk)
                digest.update(chunk)
    except urllib.error.HTTPError as e:
        return received, f"GET {shown}: HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return received, f"GET {shown}: {e}"
    if received != firmware["size"]:
        return received, f"size mismatch: {received} bytes, the document says {firmware['size']}"
    if digest.hexdigest() != str(firmware["sha256"]).lower():
        return received, f"SHA-256 mismatch: {digest.hexdigest()}"
    return received, None


def value_text(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def handle(device, peeked, fail):
    """Carries out one execution; returns the line to print."""
    try:
        kind, _ = operation(peeked.get("jobDocument"))
        step = {"step": "downloading" if kind == "firmware" else "applying"}
    except ValueError:
        step = None
    ok, answer = device.request(f"{device.base}/start-next",
                                {"statusDetails": step} if step else {})
    if not ok:
        raise SystemExit(f"start-next rejected: {answer}")
    execution = answer.get("execution")
    if not execution:
        return None
    line = {"thing": device.thing, "job_id": execution["jobId"],
            "execution_number": execution.get("executionNumber"), "bytes": 0}
    try:
        kind, spec = operation(execution.get("jobDocument"))
    except ValueError as reason:
        line["version"] = device.update(execution, "REJECTED", {"reason": str(reason)})
        line["status"] = "REJECTED"
        return line
    if kind == "firmware":
        line["bytes"], reason = download(spec)
        if reason is not None:
            line["version"] = device.update(execution, "FAILED", {"reason": reason[:1024]})
            line["status"] = "FAILED"
            return line
        reported = {"firmware_version": spec["version"]}
        details = {"firmware_version": spec["version"]}
    else:
        reported = {"config": spec}
        details = {"applied": ",".join(f"{k}={value_text(v)}" for k, v in spec.items())}
    if fail:
        line["version"] = device.update(execution, "FAILED", {"reason": "simulated failure"})
        line["status"] = "FAILED"
        return line
    device.report(reported)  # the shadow says it before the job does
    line["version"] = device.update(execution, "SUCCEEDED", details)
    line["status"] = "SUCCEEDED"
    return line


def main() -> int:
    p = argparse.ArgumentParser()
    for name in ("host", "port", "ca", "cert", "key", "thing"):
        p.add_argument(name, type=int if name == "port" else str)
    p.add_argument("--fail", action="store_true")
    p.add_argument("--once", action="store_true")
    p.add_argument("--linger", type=float, default=5.0)
    args = p.parse_args()
    device = Device(args)
    handled = 0
    try:
        while True:
            peeked = device.next_execution(args.linger)
            if peeked is None:
                break
            line = handle(device, peeked, args.fail)
            if line is None:
                continue
            print(json.dumps(line), flush=True)
            handled += 1
            if args.once:
                break
    finally:
        device.close()
    if args.once and handled == 0:
        print(f"no job execution for {args.thing} within {args.linger}s")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
