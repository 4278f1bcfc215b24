# Sourced by scripts/demo.sh and scripts/demo-provisioning.sh: the venv and the MQTT clients,
# iotreg built, and the local AWS (moto + the project's fixes, with its device gateway) started on
# free loopback ports for this shell, stopped (and its work directory removed) when the shell
# exits. Sets: root, bin, work, url; exports the AWS_* and IOTREG_DEVICE_* variables.
say() { printf '\n== %s\n' "$*"; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
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

say "starting the local AWS"
work="$(mktemp -d)"
"$root/.venv/bin/python" "$root/emulator/server.py" --host 127.0.0.1 --port 0 >"$work/url" 2>"$work/emulator.log" &
emulator=$!
trap 'kill $emulator 2>/dev/null; wait $emulator 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q listening "$work/url" && break; sleep 0.1; done
url="$(awk '{print $NF}' "$work/url")"
[ -n "$url" ] || { echo "local AWS did not start:"; cat "$work/emulator.log"; exit 1; }
echo "local AWS: $url (fake credentials, account 123456789012)"
# Where its device gateway listens (the AWS IoT data endpoint, locally) and the CA it chains to.
eval "$("$root/.venv/bin/python" "$root/scripts/gateway_env.py" "$url")"
echo "device gateway: $IOTREG_DEVICE_ENDPOINT, MQTT port $IOTREG_DEVICE_MQTT_PORT, CA $IOTREG_DEVICE_CA_FILE"
export AWS_ENDPOINT_URL="$url" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing \
  AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
