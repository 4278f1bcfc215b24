#!/usr/bin/env bash
# bench/device.sh — a fleet of devices connecting as themselves: `iotreg device simulate --fleet
# --count 1 --no-shadow` for N devices (each: an MQTT connect over mutual TLS with its own
# certificate, one QoS 1 publish, its PUBACK, disconnect), against the ceiling of the same work
# done with paho-mqtt from threads (bench/device_ceiling.py), on the same local device gateway.
# Prints wall time, publish-to-PUBACK p50/p99 and peak RSS of each, and the ratio.
#
# Usage:  bash bench/device.sh
# Environment:
#   N            devices (default 1000)
#   ROUNDS       measured rounds of each (default 3); medians are reported
#   CONCURRENCY  devices in flight: iotreg --concurrency and the ceiling's threads (default 64)
#   IOTREG_BIN   iotreg binary (default target/release/iotreg, else target/debug/iotreg with a
#                warning; never builds)
# Exit status: 0 when every run succeeded, 1 otherwise, 2 bad input.
set -Eeuo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
cd "$REPO_DIR"

log() { printf '%s\n' "$*" >&2; }
die() { log "device.sh: $*"; exit 2; }

N="${N:-1000}"
ROUNDS="${ROUNDS:-3}"
CONCURRENCY="${CONCURRENCY:-64}"
[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer (got '$N')"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got '$ROUNDS')"
[[ "$CONCURRENCY" =~ ^[1-9][0-9]*$ ]] || die "CONCURRENCY must be a positive integer (got '$CONCURRENCY')"

PY="$REPO_DIR/.venv/bin/python"
[[ -x "$PY" ]] || die "$PY missing: bash scripts/venv.sh"
"$PY" -c 'import paho.mqtt' 2>/dev/null || die "paho-mqtt missing in .venv: bash scripts/venv.sh"
[[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time, for peak RSS) is missing: apt-get install time"

if [[ -n "${IOTREG_BIN:-}" ]]; then
    [[ "$IOTREG_BIN" == /* ]] || IOTREG_BIN="$REPO_DIR/$IOTREG_BIN"
else
    IOTREG_BIN="$REPO_DIR/target/release/iotreg"
    if [[ ! -x "$IOTREG_BIN" ]]; then
        log "device.sh: no release build; using the DEBUG build target/debug/iotreg (not release figures)"
        IOTREG_BIN="$REPO_DIR/target/debug/iotreg"
    fi
fi
[[ -x "$IOTREG_BIN" ]] || die "$IOTREG_BIN is not an executable (cargo build --release)"
"$IOTREG_BIN" device simulate --help 2>/dev/null | grep -q -- '--no-shadow' || die "$IOTREG_BIN has no device simulate --no-shadow (an older build?)"

WORK=$(mktemp -d)
EMU_PID=""
cleanup() {
    [[ -n "$EMU_PID" ]] && kill "$EMU_PID" 2>/dev/null && wait "$EMU_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# The local AWS and its device gateway, on free loopback ports.
"$PY" emulator/server.py --host 127.0.0.1 --port 0 >"$WORK/emulator.out" 2>"$WORK/emulator.err" &
EMU_PID=$!
for _ in $(seq 100); do grep -q listening "$WORK/emulator.out" 2>/dev/null && break; sleep 0.1; done
URL=$(awk '{print $NF}' "$WORK/emulator.out")
[[ -n "$URL" ]] || { cat "$WORK/emulator.err" >&2; die "the emulator did not start"; }
eval "$("$PY" "$REPO_DIR/scripts/gateway_env.py" "$URL")"
export AWS_ENDPOINT_URL="$URL" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing \
    AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true

# N devices, provisioned once (untimed) by iotreg itself, without client-side rate limits. The
# topic rule is deployed disabled: enabled, every reading would start the function's handler as
# a Python process in the local AWS, and those thousand processes on two cores, not the devices'
# connections, would be what is measured (on AWS the rules engine is not on the device's path).
cd "$WORK"
printf '[aws.rate_limits]\n"*" = 0\n[rule]\nenabled = false\n[monitoring]\nenabled = false\n' >iotreg.toml
{ echo "thing_name"; for i in $(seq -w 1 "$N"); do echo "bench-$i"; done; } >devices.csv
tail -n +2 devices.csv >things.txt
log "device.sh: provisioning $N devices (untimed)…"
"$IOTREG_BIN" -q up --fleet devices.csv >/dev/null
log "device.sh: gateway $IOTREG_DEVICE_ENDPOINT:$IOTREG_DEVICE_MQTT_PORT; $N devices, $CONCURRENCY in flight, $ROUNDS rounds each"

# One round of each; figures from their own output, peak RSS from GNU time.
iotreg_round() {
    /usr/bin/time -f '%M' -o rss.txt "$IOTREG_BIN" -q --output json device simulate --fleet \
        --count 1 --interval 0 --no-shadow --concurrency "$CONCURRENCY" >sim.json
    "$PY" - <<'PY'
import json
s = json.load(open("sim.json"))
rss = int(open("rss.txt").read().split()[-1]) / 1024
assert s["ok"] and s["pubacks"] == s["devices"], s
print(f"{s['seconds']:.3f} {s['latency_p50_ms']:.2f} {s['latency_p99_ms']:.2f} {rss:.0f}")
PY
}
ceiling_round() {
    /usr/bin/time -f '%M' -o rss.txt "$PY" "$BENCH_DIR/device_ceiling.py" --keys .iotreg \
        --things things.txt --host "$IOTREG_DEVICE_ENDPOINT" --port "$IOTREG_DEVICE_MQTT_PORT" \
        --cafile "$IOTREG_DEVICE_CA_FILE" --threads "$CONCURRENCY" >ceiling.txt
    "$PY" - <<'PY'
import re
line = open("ceiling.txt").read().strip().splitlines()[-1]
f = dict(kv.split("=") for kv in line.split()[1:])
assert f["errors"] == "0", line
rss = int(open("rss.txt").read().split()[-1]) / 1024
print(f"{float(f['wall_s']):.3f} {float(f['p50_ms']):.2f} {float(f['p99_ms']):.2f} {rss:.0f}")
PY
}

: >iotreg.rounds
: >ceiling.rounds
for r in $(seq "$ROUNDS"); do
    # Alternate which goes first, so neither always meets a warmer gateway.
    if ((r % 2)); then
        iotreg_round >>iotreg.rounds; ceiling_round >>ceiling.rounds
    else
        ceiling_round >>ceiling.rounds; iotreg_round >>iotreg.rounds
    fi
    log "device.sh: round $r: iotreg $(tail -1 iotreg.rounds) | ceiling $(tail -1 ceiling.rounds)  (wall_s p50_ms p99_ms rss_mb)"
done

"$PY" - "$N" "$CONCURRENCY" <<'PY'
import statistics, sys
n, c = sys.argv[1], sys.argv[2]
def med(path):
    rows = [list(map(float, l.split())) for l in open(path) if l.strip()]
    return [statistics.median(col) for col in zip(*rows)]
i, p = med("iotreg.rounds"), med("ceiling.rounds")
print(f"devices={n} concurrency={c} (medians of {len(open('iotreg.rounds').readlines())} rounds)")
print(f"{'':22}{'wall s':>10}{'p50 ms':>10}{'p99 ms':>10}{'peak RSS MB':>13}")
print(f"{'iotreg simulate':22}{i[0]:10.2f}{i[1]:10.2f}{i[2]:10.2f}{i[3]:13.0f}")
print(f"{'paho-mqtt ceiling':22}{p[0]:10.2f}{p[1]:10.2f}{p[2]:10.2f}{p[3]:13.0f}")
print(f"RESULT wall_ratio={i[0] / p[0]:.2f} iotreg_wall_s={i[0]:.2f} ceiling_wall_s={p[0]:.2f} "
      f"iotreg_p50_ms={i[1]:.2f} iotreg_p99_ms={i[2]:.2f} iotreg_rss_mb={i[3]:.0f}")
PY
