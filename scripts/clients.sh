#!/usr/bin/env bash
# MQTT software written by other people, which the tests use: mosquitto's command-line clients
# (Debian's mosquitto-clients) prove a device bundle works unchanged against the local AWS's
# gateway, and the mosquitto broker (Debian's mosquitto) is a second, independent server for
# iotreg's own MQTT client's unit tests. paho-mqtt comes with the Python venv (scripts/venv.sh).
# Installs them once; safe to run again.
set -euo pipefail
have_broker() { [ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null; }
if command -v mosquitto_pub >/dev/null && command -v mosquitto_sub >/dev/null && have_broker; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "mosquitto_pub/mosquitto_sub and mosquitto are needed by the tests: install Debian's mosquitto-clients and mosquitto (apt-get install mosquitto-clients mosquitto)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
packages=(mosquitto-clients mosquitto)
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null 2>&1 ||
  { "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null; }
command -v mosquitto_pub >/dev/null && have_broker
