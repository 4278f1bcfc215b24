#!/usr/bin/env bash
# bench/analytics.sh — telemetry analytics through the local data path: DEVICES devices
# (default 100) x READINGS readings each (default 100) published by iot-data Publish on
# sensor/temperature/<thing>, through the analytics topic rule, the Kinesis stream, the event
# source mapping and the anomaly detector. One run:
#   1. a fresh emulator on 127.0.0.1 (port 0), stopped at the end;
#   2. in a fresh work directory, iotreg.toml = `[analytics] enabled = true` with iotreg's
#      client-side rate limits off ([aws.rate_limits] "*" = 0: the deploy is not measured) and
#      a manifest of DEVICES devices; `iotreg up --fleet devices.csv` (timed, not a figure);
#   3. bench/analytics.py: seeded readings with 1% injected anomalies (spikes, stuck runs,
#      ramps), published in time order; prints publish rate, end-to-end readings/s (first
#      publish -> the detector has taken every reading), detector Duration p50/p99 (REPORT
#      lines), alert latency p50/p99 (reading timestamp -> detected_at), precision/recall per
#      rule and overall (ANOMALY lines, scored as tests/handler/test_anomaly_detector.py does);
#   4. `iotreg down`, and the emulator's CPU over the run.
# Local emulator only, fake credentials. See bench/README.md, "Telemetry analytics".
#
# Usage:  bash bench/analytics.sh [DEVICES] [READINGS]
# Environment:
#   IOTREG_BIN   iotreg binary (default target/release/iotreg; never builds)
#   BUILD        release | debug, printed when IOTREG_BIN's path does not say
#   SEED         the readings' seed (default 18)
#   PUBLISHERS   publisher threads (default 8)
#   PROCESSOR    1 (default) = the recipe's processor rule stays enabled, as deployed: it invokes
#                the processor function once per reading; 0 = it is disabled while publishing
#                (enabled again before `down`), so only the analytics path runs
#   WAIT         seconds the detector may take nothing before the run is given up (default 300)
#   TIMEOUT      seconds allowed per iotreg command (default 900)
#   KEEP_LOGS    1 = keep the work directory (kept anyway when something failed)
# Exit status: 0 when every reading reached the detector and up/down succeeded, 1 otherwise,
# 2 bad input.
set -Eeuo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
cd "$REPO_DIR"

BENCH_NAME=analytics.sh SINCE_FMT=%.1f
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^set -Eeuo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
fi
(($# <= 2)) || die "usage: bash bench/analytics.sh [DEVICES] [READINGS]"
DEVICES="${1:-100}"
READINGS="${2:-100}"
SEED="${SEED:-18}"
PUBLISHERS="${PUBLISHERS:-8}"
WAIT="${WAIT:-300}"
TIMEOUT="${TIMEOUT:-900}"
PROCESSOR="${PROCESSOR:-1}"
[[ "$DEVICES" =~ ^[1-9][0-9]*$ ]] && ((DEVICES <= 10000)) || die "DEVICES must be 1 to 10000 (got '$DEVICES')"
[[ "$READINGS" =~ ^[1-9][0-9]*$ ]] && ((READINGS >= 60 && READINGS <= 100000)) ||
    die "READINGS must be 60 to 100000: anomalies start at reading 40, after the detector's history (got '$READINGS')"
[[ "$SEED" =~ ^[0-9]+$ ]] || die "SEED must be a non-negative integer (got '$SEED')"
[[ "$PUBLISHERS" =~ ^[1-9][0-9]*$ ]] && ((PUBLISHERS <= 64)) || die "PUBLISHERS must be 1 to 64 (got '$PUBLISHERS')"
[[ "$WAIT" =~ ^[1-9][0-9]*$ ]] || die "WAIT must be a positive number of seconds (got '$WAIT')"
[[ "$PROCESSOR" == 0 || "$PROCESSOR" == 1 ]] || die "PROCESSOR must be 0 or 1 (got '$PROCESSOR')"
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "TIMEOUT must be a positive number of seconds (got '$TIMEOUT')"

PY="$REPO_DIR/.venv/bin/python"
[[ -x "$PY" ]] || die "$PY missing: bash scripts/venv.sh"
"$PY" -c 'import boto3, pytest' 2>/dev/null || die "boto3/pytest missing in .venv: bash scripts/venv.sh"
IOTREG_BIN="${IOTREG_BIN:-target/release/iotreg}"
[[ "$IOTREG_BIN" == /* ]] || IOTREG_BIN="$REPO_DIR/$IOTREG_BIN"
[[ -x "$IOTREG_BIN" ]] || die "IOTREG_BIN=$IOTREG_BIN is not an executable (cargo build --release; this script never builds)"
case "$IOTREG_BIN" in */release/*) PROFILE=release ;; */debug/*) PROFILE=debug ;; *) PROFILE="${BUILD:-unknown}" ;; esac

local_aws_env
WORK=$(mktemp -d "${TMPDIR:-/tmp}/iotreg-analytics.XXXXXX")
FAILURES=0
on_exit() {
    local rc=$?
    stop_child
    stop_emulator
    if [[ $rc -ne 0 || $FAILURES -ne 0 || "${KEEP_LOGS:-0}" == 1 ]]; then
        log "analytics.sh: logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

"$PY" emulator/server.py --host 127.0.0.1 --port 0 >"$WORK/emulator.out" 2>"$WORK/emulator.err" &
EMU_PID=$!
await_emulator "$WORK/emulator.out" "$WORK/emulator.err"
warm_up_iam
# The emulator's CPU seconds, its handler subprocesses (reaped children) included.
emulator_cpu() {
    local tck; tck=$(getconf CLK_TCK)
    awk -v t="$tck" '{ sub(/^.*\) /, ""); printf "%.1f", ($12 + $13 + $14 + $15) / t }' "/proc/$EMU_PID/stat" 2>/dev/null || echo nan
}

printf '[analytics]\nenabled = true\n[aws.rate_limits]\n"*" = 0\n' >"$WORK/iotreg.toml"
"$PY" -c 'import sys
print("thing_name")
for i in range(1, int(sys.argv[1]) + 1):
    print(f"sensor-{i:04d}")' "$DEVICES" >"$WORK/devices.csv"

# iotreg_run NAME ARGS...: iotreg ARGS in WORK against the emulator; stdout to WORK/NAME.out,
# stderr appended to WORK/log. Prints NAME, wall time and exit status; FAILURES on a non-zero exit.
iotreg_run() {
    local name=$1 t0 rc=0; shift
    t0=$EPOCHREALTIME
    run_child env AWS_ENDPOINT_URL="$URL" bash -c 'cd "$1" && shift && exec timeout -k 10 "$@"' _ \
        "$WORK" "$TIMEOUT" "$IOTREG_BIN" --config "$WORK/iotreg.toml" "$@" >"$WORK/$name.out" 2>>"$WORK/log" || rc=$?
    log "  iotreg $name: $(since "$t0") s, exit $rc"
    if ((rc != 0)); then
        log "  iotreg $name failed ($(why $rc)); log: $WORK/log"; tail -5 "$WORK/log" >&2
        FAILURES=$((FAILURES + 1))
        return 1
    fi
}

log "analytics.sh: $DEVICES devices x $READINGS readings, iotreg $PROFILE build ($IOTREG_BIN), emulator $URL"
log "  machine before: $(machine_load)"
iotreg_run up up --fleet devices.csv || exit 1
cpu0=$(emulator_cpu)
rc=0
EXTRA=()
[[ "$PROCESSOR" == 0 ]] && EXTRA=(--without-processor)
run_child "$PY" bench/analytics.py "$URL" "$WORK/.iotreg/state.json" "$WORK/devices.csv" "$READINGS" \
    --seed "$SEED" --publishers "$PUBLISHERS" --timeout "$WAIT" --json "$WORK/figures.json" "${EXTRA[@]}" || rc=$?
cpu1=$(emulator_cpu)
echo "emulator CPU (handler subprocesses included) while analytics.py ran: $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.1f", b - a }') s"
log "  machine after: $(machine_load)"
((rc == 0)) || FAILURES=$((FAILURES + 1))
iotreg_run down down || true
((FAILURES == 0)) || { log "analytics.sh: $FAILURES problems"; exit 1; }
