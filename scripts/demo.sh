#!/usr/bin/env bash
# The demo: build iotreg, start the local AWS (moto + the project's fixes, with its device gateway)
# on free loopback ports, then run plan -> up -> status -> the device (a bundle, a reading published
# by mosquitto_pub from nothing but the bundle, iotreg device simulate) -> verify (cloud side and as
# the device) -> up again (nothing to do) -> plan (in sync, exit 0) -> down against it, and stop
# it. Telemetry analytics is on: verify sends a probe device's readings and an outlier through the
# stream to the anomaly detector, and a device playing a spiking sensor raises an alert that an
# SQS queue subscribed to the alert topic receives. The verify JUnit report is kept in
# target/demo/verify.xml.
set -euo pipefail
report_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/demo"
# shellcheck source=scripts/local-aws.sh
source "$(dirname "${BASH_SOURCE[0]}")/local-aws.sh"
mkdir -p "$report_dir"
junit="$report_dir/verify.xml"

cd "$work"
say "the deployment's life, in $work (with telemetry analytics on)"
printf '[analytics]\nenabled = true\n' > iotreg.toml
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
{ set +x; } 2>/dev/null
say "analytics: the device plays a spiking sensor; the detector finds the spike and alerts"
queue="$("$root/.venv/bin/python" "$root/scripts/alerts.py" subscribe)"
set -x
"$bin" device simulate --pattern spike --count 40 --interval 0.02 --no-shadow
"$root/.venv/bin/python" "$root/scripts/alerts.py" show "$queue" 1
"$bin" up
"$bin" plan --detailed-exitcode
"$bin" down
{ set +x; } 2>/dev/null
say "demo done: plan, up, status, the device connecting with its bundle (mosquitto_pub, iotreg device simulate), verify (its device.* checks: the device connected, its reading reached the function and raised its alert, its shadow, its least privilege; e2e.anomaly: the detector found the probe's outlier), a spiking sensor's anomaly alert received from the alert topic, up again (nothing to change), plan (in sync) and down against the local AWS; the JUnit report of verify is in $junit"
