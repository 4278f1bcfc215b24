#!/usr/bin/env bash
# The demo: build iotreg, start the local AWS (moto + the project's fixes, with its device gateway)
# on free loopback ports, then run plan -> up -> status -> the device (a bundle, a reading published
# by mosquitto_pub from nothing but the bundle, iotreg device simulate) -> verify (cloud side and as
# the device) -> up again (nothing to do) -> plan (in sync, exit 0) -> down against it, and stop
# it. The verify JUnit report is kept in target/demo/verify.xml.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf '\n== %s\n' "$*"; }

say "Python venv for the local AWS (.venv, pinned moto; the first run installs it, a minute or two)"
bash "$root/scripts/venv.sh"
say "mosquitto's MQTT clients (Debian's mosquitto-clients), to be the device"
bash "$root/scripts/clients.sh"
say "building iotreg (cargo; the first build takes a few minutes)"
cargo build --manifest-path "$root/Cargo.toml"
# Where cargo put it: CARGO_TARGET_DIR when set (relative to here, as cargo reads it).
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
bin="$target/debug/iotreg"
report_dir="$root/target/demo"
mkdir -p "$report_dir"
junit="$report_dir/verify.xml"

say "starting the local AWS"
work="$(mktemp -d)"
log="$work/emulator.log"
"$root/.venv/bin/python" "$root/emulator/server.py" --host 127.0.0.1 --port 0 >"$work/url" 2>"$log" &
emulator=$!
trap 'kill $emulator 2>/dev/null; wait $emulator 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q listening "$work/url" && break; sleep 0.1; done
url="$(awk '{print $NF}' "$work/url")"
[ -n "$url" ] || { echo "local AWS did not start:"; cat "$log"; exit 1; }
echo "local AWS: $url (fake credentials, account 123456789012)"
# Where its device gateway listens (the AWS IoT data endpoint, locally) and the CA it chains to.
eval "$("$root/.venv/bin/python" "$root/scripts/gateway_env.py" "$url")"
echo "device gateway: $IOTREG_DEVICE_ENDPOINT, MQTT port $IOTREG_DEVICE_MQTT_PORT, CA $IOTREG_DEVICE_CA_FILE"

export AWS_ENDPOINT_URL="$url" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing \
  AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
cd "$work"
say "the deployment's life, in $work"
set -x
"$bin" plan
"$bin" up
"$bin" status
"$bin" device bundle --out device
{ set +x; } 2>/dev/null
say "the device: a reading published by mosquitto_pub with nothing but the bundle (its README's command)"
(cd device && set -x && sh -c "$(grep -m1 '^mosquitto_pub ' README.txt) -d")
set -x
"$bin" device simulate --count 3 --interval 0.2
"$bin" verify --junit "$junit"
"$bin" up
"$bin" plan --detailed-exitcode
"$bin" down
{ set +x; } 2>/dev/null
say "demo done: plan, up, status, the device connecting with its bundle (mosquitto_pub, iotreg device simulate), verify (its device.* checks: the device connected, its reading reached the function and raised its alert, its shadow, its least privilege), up again (nothing to change), plan (in sync) and down against the local AWS; the JUnit report of verify is in $junit"
