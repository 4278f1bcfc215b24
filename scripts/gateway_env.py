#!/usr/bin/env python3
"""Prints the shell exports that point iotreg's device side at the local AWS's device gateway.

    eval "$(.venv/bin/python scripts/gateway_env.py http://127.0.0.1:PORT)"

Reads the emulator's GET /iotreg-test/gateway (endpoint, CA file, ports) and prints one line
setting IOTREG_DEVICE_ENDPOINT, IOTREG_DEVICE_CA_FILE and the IOTREG_DEVICE_*_PORT variables.
Used by scripts/demo.sh and bench/device.sh.
"""

import json
import shlex
import sys
import urllib.request

gateway = json.load(urllib.request.urlopen(sys.argv[1] + "/iotreg-test/gateway"))
ports = gateway["ports"]
values = {
    "IOTREG_DEVICE_ENDPOINT": gateway["endpoint"],
    "IOTREG_DEVICE_CA_FILE": gateway["ca_file"],
    "IOTREG_DEVICE_MQTT_PORT": ports["mqtt"],
    "IOTREG_DEVICE_ALPN_PORT": ports["alpn"],
    "IOTREG_DEVICE_HTTPS_PORT": ports["https"],
}
print("export " + " ".join(f"{k}={shlex.quote(str(v))}" for k, v in values.items()))
