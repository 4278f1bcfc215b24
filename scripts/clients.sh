#!/usr/bin/env bash
# MQTT clients written by other people, which the tests use to prove a device bundle works
# unchanged: mosquitto's command-line clients (Debian's mosquitto-clients). paho-mqtt comes with
# the Python venv (scripts/venv.sh). Installs them once; safe to run again.
set -euo pipefail
if command -v mosquitto_pub >/dev/null && command -v mosquitto_sub >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "mosquitto_pub/mosquitto_sub are needed by the tests: install Debian's mosquitto-clients (apt-get install mosquitto-clients)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get install -y -q --no-install-recommends mosquitto-clients >/dev/null 2>&1 ||
  { "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" apt-get install -y -q --no-install-recommends mosquitto-clients >/dev/null; }
command -v mosquitto_pub >/dev/null
