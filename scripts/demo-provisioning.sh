#!/usr/bin/env bash
# Provisioning at fleet scale on the local AWS, each mode end to end with devices connecting:
#   csr    devices whose keys are made by openssl on "the device" (a factory directory): iotreg
#          gets only their CSRs; each device then publishes with mosquitto_pub, its own key and
#          the certificate iotreg wrote
#   group  a fleet in a thing group with the device policy attached once to the group; a member
#          publishes with mosquitto_pub, a device taken out of the group is refused
#   all    every mode above, one after the other (the default)
# Usage: bash scripts/demo-provisioning.sh [MODE] [DEVICES]   (DEVICES default 20)
set -euo pipefail
mode="${1:-all}"
n="${2:-20}"
case "$mode" in csr|group|all) ;; *) echo "usage: $0 [csr|group|all] [DEVICES]" >&2; exit 2 ;; esac
# shellcheck source=scripts/local-aws.sh
source "$(dirname "${BASH_SOURCE[0]}")/local-aws.sh"

# One QoS 1 reading as DEVICE with CERT and KEY (mosquitto's client, as a device would).
publish() {
  mosquitto_pub --cafile "$IOTREG_DEVICE_CA_FILE" --cert "$2" --key "$3" \
    -h "$IOTREG_DEVICE_ENDPOINT" -p "$IOTREG_DEVICE_MQTT_PORT" -i "$1" \
    -t "sensor/temperature/$1" -q 1 -m '{"temperature": 22.5, "humidity": 40}'
}

manifest() { # manifest FILE [csr]: N devices, with a csr column pointing into factory/ when asked
  { if [ "${2:-}" = csr ]; then echo "thing_name,serial_number,csr"; else echo "thing_name,serial_number"; fi
    for i in $(seq 1 "$n" | xargs printf "%04d "); do
      if [ "${2:-}" = csr ]; then echo "sensor-$i,SN-$i,factory/sensor-$i.csr"; else echo "sensor-$i,SN-$i"; fi
    done; } >"$1"
}

csr_mode() {
  local dir="$work/csr"; mkdir -p "$dir/factory"; cd "$dir"
  say "csr: $n devices make their own keys (openssl, in $dir/factory: the devices' side)"
  for i in $(seq 1 "$n" | xargs printf "%04d "); do
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "factory/sensor-$i.key" 2>/dev/null
    openssl req -new -subj "/CN=sensor-$i" -key "factory/sensor-$i.key" -out "factory/sensor-$i.csr"
  done
  manifest devices.csv csr
  printf '[aws.rate_limits]\n"*" = 0\n' >iotreg.toml
  ( set -x; "$bin" up --fleet devices.csv )
  say "csr: no private key on the operator's side (.iotreg holds certificates only)"
  ( set -x; ls .iotreg | grep -c certificate.pem.crt; ! grep -rl "PRIVATE KEY" .iotreg )
  say "csr: sensor-0001 publishes with its own key and the certificate iotreg wrote"
  ( set -x; publish sensor-0001 .iotreg/sensor-0001-certificate.pem.crt factory/sensor-0001.key )
  ( set -x; "$bin" verify --skip-e2e --sample 3; "$bin" down )
}

group_mode() {
  local dir="$work/group"; mkdir -p "$dir"; cd "$dir"
  say "group: $n devices in a thing group, the device policy attached once, to the group"
  manifest devices.csv
  printf '[aws.rate_limits]\n"*" = 0\n[fleet]\ngroup = "sensors-{{suffix}}"\n[policy]\nattach_to = "group"\n' >iotreg.toml
  ( set -x; "$bin" up --fleet devices.csv )
  local suffix; suffix="$("$bin" status --output json | "$root/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["suffix"])')"
  say "group: the policy's only target is the group; sensor-0001 (a member) publishes"
  ( set -x
    "$root/.venv/bin/python" -c 'import boto3,sys; print(boto3.client("iot", endpoint_url=sys.argv[1]).list_targets_for_policy(policyName=sys.argv[2])["targets"])' "$url" "device-policy-$suffix"
    publish sensor-0001 .iotreg/sensor-0001-certificate.pem.crt .iotreg/sensor-0001-private.pem.key )
  say "group: sensor-0002 taken out of the group is refused; verify names it; up puts it back"
  "$root/.venv/bin/python" -c 'import boto3,sys; boto3.client("iot", endpoint_url=sys.argv[1]).remove_thing_from_thing_group(thingGroupName=sys.argv[2], thingName="sensor-0002")' "$url" "sensors-$suffix"
  if publish sensor-0002 .iotreg/sensor-0002-certificate.pem.crt .iotreg/sensor-0002-private.pem.key 2>/dev/null; then
    echo "sensor-0002 was let in out of the group"; exit 1
  fi
  echo "sensor-0002: refused, as it should be"
  ( set -x; "$bin" verify --skip-e2e --sample 3 || true; "$bin" up --fleet devices.csv -q
    publish sensor-0002 .iotreg/sensor-0002-certificate.pem.crt .iotreg/sensor-0002-private.pem.key
    "$bin" down )
}

case "$mode" in
  csr) csr_mode ;;
  group) group_mode ;;
  all) csr_mode; group_mode ;;
esac
say "provisioning demo ($mode) done"
