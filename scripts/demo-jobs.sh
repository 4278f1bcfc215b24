#!/usr/bin/env bash
# Fleet operations on the local AWS, end to end, with simulated devices taking the jobs over MQTT:
#   1. up: a fleet of DEVICES in a thing group, a firmware job template (a 1 MB file, rolled out
#      at 4 devices a minute, aborted when 20% fail) and its bucket and pre-signing role
#   2. a firmware rollout: iotreg job start, the devices (iotreg device simulate --jobs) download
#      the firmware through its pre-signed link, check its SHA-256 and report the version in
#      their shadow, while iotreg job status --watch shows the rollout's progress
#   3. a bad rollout rehearsed: a new firmware version with 40% of the devices failing it; the
#      abort cancels the job, and --watch exits 1
#   4. a configuration change (job start --set) reaching every device's reported state; one
#      device played by paho-mqtt (a client someone else wrote)
#   5. down: jobs cancelled and deleted, templates, firmware and role gone
# The local AWS runs its jobs engine with a 2-second "minute", so the rollout's pace shows in
# seconds. Usage: bash scripts/demo-jobs.sh [DEVICES]   (default 20)
set -euo pipefail
n="${1:-20}"
export IOTREG_EMULATOR_JOBS_MINUTE="${IOTREG_EMULATOR_JOBS_MINUTE:-2}"
# shellcheck source=scripts/local-aws.sh
source "$(dirname "${BASH_SOURCE[0]}")/local-aws.sh"
py="$root/.venv/bin/python"
dir="$work/jobs"; mkdir -p "$dir"; cd "$dir"

say "a fleet of $n devices in a group, and a firmware job template (one jobs minute = ${IOTREG_EMULATOR_JOBS_MINUTE} s here)"
{ echo "thing_name,serial_number"; for i in $(seq 1 "$n" | xargs printf "%04d "); do echo "sensor-$i,SN-$i"; done; } >devices.csv
head -c 1048576 /dev/urandom >sensor-2.0.0.bin
template() { # template VERSION: the config with the firmware template for VERSION
  cat <<EOF
[aws.rate_limits]
"*" = 0
[fleet]
manifest = "devices.csv"
group = "sensors-{{suffix}}"
[monitoring]
enabled = false

[[job_templates]]
name = "firmware"
firmware = "sensor-$1.bin"
version = "$1"
timeout_minutes = 5
[job_templates.rollout]
maximum_per_minute = 4
[[job_templates.abort]]
failure_type = "FAILED"
threshold_percentage = 20
min_executed_things = 5
EOF
}
template 2.0.0 >iotreg.toml
( set -x; "$bin" up )

say "a firmware rollout: 4 devices a (demo) minute; the devices take it as it reaches them"
id="$("$bin" job start firmware)"
echo "job: $id"
"$bin" device simulate --fleet --jobs --linger 8 --output json >simulate.json &
sim=$!
( set -x; "$bin" job status "$id" --watch --interval 1 )
wait "$sim"
"$py" -c 'import json; s=json.load(open("simulate.json")); print("devices:", s["devices"], "succeeded:", s["succeeded"], "firmware bytes downloaded:", s["firmware_bytes"])'

say "a bad rollout rehearsed: firmware 2.0.1 fails on 40% of the devices; the abort stops it"
head -c 1048576 /dev/urandom >sensor-2.0.1.bin
template 2.0.1 >iotreg.toml
( set -x; "$bin" plan || true; "$bin" up )
id="$("$bin" job start firmware)"
"$bin" device simulate --fleet --jobs --fail-rate 0.4 --seed 3 --linger 8 >/dev/null &
sim=$!
set +e
( set -x; "$bin" job status "$id" --watch --interval 1 )
code=$?
set -e
wait "$sim" || true
echo "job status --watch exited $code (1: the rollout was aborted)"
[ "$code" = 1 ]

say "a configuration change: reporting_interval=30 to every device; sensor-0001 played by paho-mqtt"
id="$("$bin" job start --set reporting_interval=30)"
files=".iotreg/sensor-0001"
"$py" "$root/tests/it/support/paho_jobs.py" "$IOTREG_DEVICE_ENDPOINT" "$IOTREG_DEVICE_MQTT_PORT" \
  "$IOTREG_DEVICE_CA_FILE" "$files-certificate.pem.crt" "$files-private.pem.key" sensor-0001 --once
( set -x; "$bin" device simulate --fleet --jobs --linger 3 >/dev/null; "$bin" job status "$id" )

say "the deployment's jobs, then down"
( set -x; "$bin" job list; "$bin" down )
