#!/usr/bin/env python3
"""A device written with paho-mqtt, given nothing but an iotreg device bundle.

    paho_device.py BUNDLE_DIR MARKER

Reads BUNDLE_DIR/connection.json and connects exactly as it says (endpoint, MQTT port, client
id, the bundle's CA, certificate and key: no other setting, no certificate check turned off),
then: subscribes to the shadow's get/accepted, asks for the shadow (publish to .../shadow/get)
and waits for the answer; publishes one reading carrying MARKER to its reading topic at QoS 1
and waits for the PUBACK. Prints one JSON line {"connack": 0, "shadow_version": N,
"puback": true} and exits 0, or prints what failed and exits 1. Every wait is bounded.
"""

import json
import os
import ssl
import sys
import threading

import paho.mqtt.client as mqtt

WAIT = 15.0


def main() -> int:
    bundle, marker = sys.argv[1], sys.argv[2]
    with open(os.path.join(bundle, "connection.json")) as f:
        conn = json.load(f)
    files = {k: os.path.join(bundle, v) for k, v in conn["files"].items()}
    thing = conn["thing_name"]
    events = {name: threading.Event() for name in ("connected", "subscribed", "shadow", "acked")}
    seen = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        seen["connack"] = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
        events["connected"].set()

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        seen["suback"] = [getattr(c, "value", c) for c in reason_codes]
        events["subscribed"].set()

    def on_message(client, userdata, message):
        if message.topic.endswith("/shadow/get/accepted"):
            seen["shadow_version"] = json.loads(message.payload).get("version")
            events["shadow"].set()

    def on_publish(client, userdata, mid, reason_code, properties):
        if mid == seen.get("reading_mid"):
            events["acked"].set()

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=conn["client_id"], protocol=mqtt.MQTTv311
    )
    client.tls_set(ca_certs=files["root_ca"], certfile=files["certificate"], keyfile=files["private_key"])
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_publish = on_publish
    client.connect(conn["endpoint"], conn["ports"]["mqtt"], keepalive=30)
    client.loop_start()
    try:
        if not events["connected"].wait(WAIT) or seen["connack"] != 0:
            print(f"no CONNACK 0: {seen}")
            return 1
        get = f"$aws/things/{thing}/shadow/get"
        assert get in conn["topics"]["publish"], conn["topics"]
        client.subscribe(f"{get}/accepted", qos=1)
        if not events["subscribed"].wait(WAIT) or 128 in seen["suback"]:
            print(f"subscription refused: {seen}")
            return 1
        client.publish(get, b"", qos=1)
        if not events["shadow"].wait(WAIT):
            print("no answer on shadow/get/accepted")
            return 1
        reading = {"temperature": 21.0, "humidity": 40, "device": thing, "battery_level": 90,
                   "iotreg_test": marker}
        info = client.publish(f"sensor/temperature/{thing}", json.dumps(reading), qos=1)
        seen["reading_mid"] = info.mid
        if info.is_published():
            events["acked"].set()
        if not events["acked"].wait(WAIT):
            print("no PUBACK for the reading")
            return 1
        print(json.dumps({"connack": seen["connack"], "shadow_version": seen["shadow_version"],
                          "puback": True}))
        return 0
    finally:
        client.disconnect()
        client.loop_stop()


if __name__ == "__main__":
    sys.exit(main())
