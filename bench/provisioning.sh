#!/usr/bin/env bash
# bench/provisioning.sh — provisioning a large fleet (default 10,000 devices) on the local AWS,
# three ways (PARTS):
#   api    `iotreg up --fleet` through the per-device API at AWS's default rates (iotreg's
#          built-in client-side rate limits left on = AWS IoT Core's default per-account quotas),
#          with the device policy on each certificate and on the fleet's thing group
#   bulk   `iotreg up --fleet` with fleet.mode = "bulk" (one StartThingRegistrationTask), the
#          emulator registering as fast as it can (IOTREG_EMULATOR_REGISTRATION_RATE unset)
#   claim  `iotreg device simulate --claim --count CLAIM_N`: devices provisioning themselves by
#          claim over MQTT on the local AWS's device gateway (after an untimed `iotreg up`)
# Per run: wall time, devices/s, iotreg's CPU time and peak RSS (GNU time); for api and bulk the
# calls made per device and the rate each operation went at (the emulator's request log,
# time-stamped by bench/provisioning.py watch), which quota bounds the run, and an independent
# check of what was created. Local emulator on 127.0.0.1 only, fake credentials, a fresh
# emulator per run. See bench/README.md#provisioning.
#
# Usage:  bash bench/provisioning.sh
# Environment:
#   PARTS        what to run, in order (default "api"; any of api bulk claim)
#   N            devices for api and bulk (default 10000)
#   ATTACH       the per-device API variants, in order (default "certificate group"):
#                  certificate  fleet.group set, policy.attach_to = "certificate"
#                  group        fleet.group set, policy.attach_to = "group"
#                  nogroup      no fleet.group, policy.attach_to = "certificate" (what the group costs)
#   IOTREG_BIN   iotreg binary (default target/release/iotreg; never builds; copy a binary others
#                may rebuild to /tmp first)
#   BUILD        release | debug, printed when IOTREG_BIN's path does not say (a copy in /tmp)
#   CONCURRENCY  iotreg --concurrency (default 16)
#   CHECK        1 (default) = untimed check after up (bench/provisioning.py check); 0 = skip
#   SAMPLE       devices the check inspects one by one (default 200; the counts cover all)
#   CLAIM_N      devices for claim (default 1000)
#   CLAIM_CONCURRENCY  simulate's --concurrency (default 64, its own default)
#   HOOK         1 (default) = claim with the pre-provisioning hook (a Lambda function the local
#                AWS runs per RegisterThing, allowing the manifest's serials); 0 = without
#   DOWN         1 = `iotreg down` after each run, limits off ([aws.rate_limits] "*" = 0), timed but
#                not the measurement, then check-empty; 0 (default) = the emulator is just stopped
#   TIMEOUT      seconds allowed per iotreg run (default 3600; then SIGTERM, SIGKILL 10 s later)
#   NICE         niceness of the emulator and iotreg (default 0). On a machine saturated by other
#                work both are starved and the run measures the machine, not the quotas; NICE=-5
#                (root) lets them keep up. Printed with the results; CPU time and RSS do not change.
#   KEEP_LOGS    1 = keep the work directory even when everything passed
# Exit status: 0 when every run succeeded (and checked), 1 otherwise, 2 bad input.
set -Eeuo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
cd "$REPO_DIR"

BENCH_NAME=provisioning.sh SINCE_FMT=%.1f RATE_FMT=%.2f
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

PARTS="${PARTS:-api}"
N="${N:-10000}"
ATTACH="${ATTACH:-certificate group}"
CLAIM_N="${CLAIM_N:-1000}"
CLAIM_CONCURRENCY="${CLAIM_CONCURRENCY:-64}"
HOOK="${HOOK:-1}"
CONCURRENCY="${CONCURRENCY:-16}"
CHECK="${CHECK:-1}"
SAMPLE="${SAMPLE:-200}"
DOWN="${DOWN:-0}"
TIMEOUT="${TIMEOUT:-3600}"
[[ "$N" =~ ^[1-9][0-9]*$ ]] && ((N <= 99999)) || die "N must be 1 to 99999 (got '$N')"
for p in $PARTS; do case "$p" in api | bulk | claim) ;; *) die "PARTS takes api, bulk, claim (got '$p')" ;; esac; done
[[ -n "${PARTS// /}" ]] || die "PARTS is empty"
[[ "$CLAIM_N" =~ ^[1-9][0-9]*$ ]] && ((CLAIM_N <= 99999)) || die "CLAIM_N must be 1 to 99999 (got '$CLAIM_N')"
[[ "$CLAIM_CONCURRENCY" =~ ^[1-9][0-9]*$ ]] && ((CLAIM_CONCURRENCY <= 4096)) || die "CLAIM_CONCURRENCY must be 1 to 4096 (got '$CLAIM_CONCURRENCY')"
[[ "$HOOK" == 0 || "$HOOK" == 1 ]] || die "HOOK must be 0 or 1 (got '$HOOK')"
for v in $ATTACH; do
    case "$v" in certificate | group | nogroup) ;; *) die "ATTACH takes certificate, group, nogroup (got '$v')" ;; esac
done
[[ -n "${ATTACH// /}" ]] || die "ATTACH is empty"
[[ "$CONCURRENCY" =~ ^[1-9][0-9]*$ ]] && ((CONCURRENCY <= 256)) || die "CONCURRENCY must be 1 to 256 (got '$CONCURRENCY')"
[[ "$CHECK" == 0 || "$CHECK" == 1 ]] || die "CHECK must be 0 or 1 (got '$CHECK')"
[[ "$SAMPLE" =~ ^[1-9][0-9]*$ ]] || die "SAMPLE must be a positive integer (got '$SAMPLE')"
[[ "$DOWN" == 0 || "$DOWN" == 1 ]] || die "DOWN must be 0 or 1 (got '$DOWN')"
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "TIMEOUT must be a positive number of seconds (got '$TIMEOUT')"
NICE="${NICE:-0}"
[[ "$NICE" =~ ^-?[0-9]+$ ]] && ((NICE >= -20 && NICE <= 19)) || die "NICE must be -20 to 19 (got '$NICE')"
if ((NICE < 0)) && [[ "$(id -u)" != 0 ]]; then die "NICE=$NICE needs root"; fi

PY="$REPO_DIR/.venv/bin/python"
[[ -x "$PY" ]] || die "$PY missing: python3 -m venv .venv && .venv/bin/pip install -r emulator/requirements.txt"
"$PY" -c 'import boto3' 2>/dev/null || die "boto3 missing in .venv: .venv/bin/pip install -r emulator/requirements.txt"
[[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time, for peak RSS) is missing: apt-get install time"

IOTREG_BIN="${IOTREG_BIN:-target/release/iotreg}"
[[ "$IOTREG_BIN" == /* ]] || IOTREG_BIN="$REPO_DIR/$IOTREG_BIN"
[[ -x "$IOTREG_BIN" ]] || die "IOTREG_BIN=$IOTREG_BIN is not an executable (cargo build --release; this script never builds)"
"$IOTREG_BIN" up --help 2>/dev/null | grep -q -- '--fleet' || die "$IOTREG_BIN up has no --fleet option (an older build?)"
# BUILD names the build when the path does not (a copy in /tmp): release or debug.
case "$IOTREG_BIN" in */release/*) PROFILE=release ;; */debug/*) PROFILE=debug ;; *) PROFILE="${BUILD:-unknown}" ;; esac
BIN_STAMP=$(stat -c '%Y %s' "$IOTREG_BIN")

# ----------------------------------------------------------------- no real AWS
local_aws_env

WORK=$(mktemp -d "${TMPDIR:-/tmp}/iotreg-provisioning.XXXXXX")
EMU_PID="" URL="" WATCH_PID="" CHILD_PID="" FAILURES=0

stop_watch() {
    if [[ -n "$WATCH_PID" ]]; then
        touch "$1.stop" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$WATCH_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$WATCH_PID" 2>/dev/null && kill -TERM "$WATCH_PID" 2>/dev/null || true
        wait "$WATCH_PID" 2>/dev/null || true
    fi
    WATCH_PID=""
}
on_exit() {
    local rc=$?
    stop_child
    [[ -n "$WATCH_PID" ]] && kill -TERM "$WATCH_PID" 2>/dev/null && wait "$WATCH_PID" 2>/dev/null
    stop_emulator
    if [[ $rc -ne 0 || $FAILURES -ne 0 || "${KEEP_LOGS:-0}" == 1 ]]; then
        log "provisioning.sh: logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# A fresh emulator (127.0.0.1, port 0, the "listening" line), its request log in $2; with a
# third argument "gateway" its device gateway too (claim), else none.
start_emulator() {
    local dir=$1 reqlog=$2 gw=--no-gateway
    [[ "${3:-}" == gateway ]] && gw=""
    # The bulk part measures iotreg's own work: the emulator registers as fast as it can.
    env -u IOTREG_EMULATOR_REGISTRATION_RATE nice -n "$NICE" "$PY" emulator/server.py --host 127.0.0.1 --port 0 $gw \
        --request-log "$reqlog" >"$dir/emulator.out" 2>"$dir/emulator.err" &
    EMU_PID=$!
    await_emulator "$dir/emulator.out" "$dir/emulator.err"
}
fleet_phase_s() {
    sed -n 's/.*created[[:space:]]*fleet [0-9]* devices (\([0-9.]*\)\(m*s\)).*/\1 \2/p' "$1" | tail -1 |
        awk 'NF == 2 { printf "%.1f", ($2 == "ms") ? $1 / 1000 : $1; found = 1 } END { if (!found) print "nan" }'
}
iotreg_in() {
    local dir=$1 tf=$2 cfgfile=$3; shift 3
    cd "$dir" && AWS_ENDPOINT_URL="$URL" exec /usr/bin/time -v -o "$dir/$tf" nice -n "$NICE" timeout -k 10 "$TIMEOUT" \
        "$IOTREG_BIN" --config "$cfgfile" "$@" >>"$dir/log" 2>&1
}
# The same with iotreg's stdout in $OUT (JSON answers), stderr to the log.
iotreg_out() {
    local dir=$1 tf=$2 cfgfile=$3 out=$4; shift 4
    cd "$dir" && AWS_ENDPOINT_URL="$URL" exec /usr/bin/time -v -o "$dir/$tf" nice -n "$NICE" timeout -k 10 "$TIMEOUT" \
        "$IOTREG_BIN" --config "$cfgfile" "$@" >"$out" 2>>"$dir/log"
}

# ------------------------------------------------------------------- manifest
MANIFEST="$WORK/devices.csv"
"$PY" bench/fleet_manifest.py "$N" "$MANIFEST"
GROUP="bench-fleet"

# The config of a variant: the fleet's group and where the policy goes; monitoring off (no
# per-device call, and the alarms are not what is measured).
write_config() {
    local variant=$1 file=$2
    {
        echo "# bench/provisioning.sh, variant $variant"
        echo "[monitoring]"
        echo "enabled = false"
        if [[ "$variant" != nogroup ]]; then
            echo "[fleet]"
            echo "group = \"$GROUP\""
        fi
        echo "[policy]"
        if [[ "$variant" == group ]]; then echo 'attach_to = "group"'; else echo 'attach_to = "certificate"'; fi
    } >"$file"
}

# One `up --fleet` at the default rates on a fresh emulator. Sets RES (one summary line).
run_api() {
    local v=$1 name="api-$1" dir="$WORK/api-$1" rc=0 t0 up
    mkdir -p "$dir"
    write_config "$v" "$dir/iotreg.toml"
    start_emulator "$dir" "$dir/requests.jsonl"
    echo "$(date -u +%H:%M:%S) start: $(machine_load)" >>"$dir/machine"
    "$PY" bench/provisioning.py watch "$dir/requests.jsonl" "$dir/timeline" &
    WATCH_PID=$!
    log "  $name: emulator $URL; iotreg up --fleet ($N devices, AWS's default rates, $(tr '\n' ' ' <"$dir/iotreg.toml" | sed 's/# [^[]*//'))"
    t0=$EPOCHREALTIME
    run_child iotreg_in "$dir" up.time "$dir/iotreg.toml" up --fleet "$MANIFEST" --concurrency "$CONCURRENCY" || rc=$?
    up=$(since "$t0")
    echo "$(date -u +%H:%M:%S) end: $(machine_load)" >>"$dir/machine"
    stop_watch "$dir/timeline"
    if [[ $rc -ne 0 ]]; then
        log "  $name: iotreg up FAILED, $(why $rc) (log: $dir/log)"; tail -5 "$dir/log" >&2
        stop_emulator; return 1
    fi
    "$PY" bench/provisioning.py report "$dir/timeline" --devices "$N" --json "$dir/report.json" >"$dir/report.txt" 2>&1 || true
    sed 's/^/    /' "$dir/report.txt"
    local bound; bound=$(sed -n 's/^BOUND op=\([^ ]*\) limit=\([^ ]*\) calls_per_device=\([^ ]*\) max_devices_per_s=\([^ ]*\)$/\1 (\2\/s × \3 per device ⇒ ≤ \4 devices\/s)/p' "$dir/report.txt")
    local per_dev; per_dev=$(sed -n 's/^requests: [0-9]* in all, \([0-9.]*\) per device.*/\1/p' "$dir/report.txt")
    local pace; pace=$(sed -n 's/^PACE steady_devices_per_s=\([0-9.]*\) of max [0-9.]* (\(.*\))$/\1\/s, \2/p' "$dir/report.txt")
    if [[ "$CHECK" == 1 ]]; then
        local attach=certificate; [[ "$v" == group ]] && attach=group
        local group_arg=$GROUP; [[ "$v" == nogroup ]] && group_arg=""
        if [[ -n "$group_arg" ]]; then
            if ! "$PY" bench/provisioning.py check --endpoint-url "$URL" --manifest "$MANIFEST" --group "$GROUP" \
                --attach "$attach" --sample "$SAMPLE" >>"$dir/check.log" 2>&1; then
                log "  $name: the check after up FAILED:"; tail -5 "$dir/check.log" >&2
                stop_emulator; return 1
            fi
        else
            # No group to check membership against: fleet_ceiling.py's check covers the rest.
            if ! "$PY" bench/fleet_ceiling.py --endpoint-url "$URL" --manifest "$MANIFEST" --threads 8 --check up \
                >>"$dir/check.log" 2>&1; then
                log "  $name: the check after up FAILED:"; tail -5 "$dir/check.log" >&2
                stop_emulator; return 1
            fi
        fi
        log "  $name: $(tail -1 "$dir/check.log")"
    fi
    local down="-"
    if [[ "$DOWN" == 1 ]]; then
        { cat "$dir/iotreg.toml"; echo '[aws.rate_limits]'; echo '"*" = 0'; } >"$dir/iotreg-nolimits.toml"
        t0=$EPOCHREALTIME
        if ! run_child iotreg_in "$dir" down.time "$dir/iotreg-nolimits.toml" down; then
            log "  $name: iotreg down FAILED (log: $dir/log)"; tail -5 "$dir/log" >&2
            stop_emulator; return 1
        fi
        down="$(since "$t0") s"
        if [[ "$CHECK" == 1 ]] && ! "$PY" bench/provisioning.py check-empty --endpoint-url "$URL" --manifest "$MANIFEST" \
            --group "$GROUP" >>"$dir/check.log" 2>&1; then
            log "  $name: down left resources behind:"; tail -5 "$dir/check.log" >&2
            stop_emulator; return 1
        fi
    fi
    local emu; emu=$(emulator_hwm)
    stop_emulator
    RES=$(printf '| %s | %s s | %s | %s s | %s s | %s MB | %s | %s | %s | %s | %s MB |' \
        "$v" "$up" "$(rate "$N" "$up")" "$(fleet_phase_s "$dir/log")" "$(cpu_s "$dir/up.time")" \
        "$(peak_mb "$dir/up.time")" "${per_dev:-?}" "${bound:-?}" "${pace:-?}" "$down" "$emu")
    { echo "$RES"; cat "$dir/machine"; } >"$dir/summary"
}

# Bulk registration of N devices on a fresh emulator that registers as fast as it can: what is
# measured is iotreg's own work (keys and CSRs, the upload, polling, reports, state, shadows).
# Sets RES.
run_bulk() {
    local dir="$WORK/bulk" rc=0 t0 up
    mkdir -p "$dir"
    {
        echo "# bench/provisioning.sh, bulk"
        echo "[monitoring]"
        echo "enabled = false"
        echo "[fleet]"
        echo 'mode = "bulk"'
        echo "group = \"$GROUP\""
        echo "[policy]"
        echo 'attach_to = "certificate"'
    } >"$dir/iotreg.toml"
    start_emulator "$dir" "$dir/requests.jsonl"
    echo "$(date -u +%H:%M:%S) start: $(machine_load)" >>"$dir/machine"
    "$PY" bench/provisioning.py watch "$dir/requests.jsonl" "$dir/timeline" &
    WATCH_PID=$!
    log "  bulk: emulator $URL; iotreg up --fleet ($N devices, fleet.mode = \"bulk\", AWS's default rates for iotreg's own calls)"
    t0=$EPOCHREALTIME
    run_child iotreg_in "$dir" up.time "$dir/iotreg.toml" up --fleet "$MANIFEST" --concurrency "$CONCURRENCY" || rc=$?
    up=$(since "$t0")
    echo "$(date -u +%H:%M:%S) end: $(machine_load)" >>"$dir/machine"
    stop_watch "$dir/timeline"
    if [[ $rc -ne 0 ]]; then
        log "  bulk: iotreg up FAILED, $(why $rc) (log: $dir/log)"; tail -5 "$dir/log" >&2
        stop_emulator; return 1
    fi
    "$PY" bench/provisioning.py report "$dir/timeline" --devices "$N" --json "$dir/report.json" >"$dir/report.txt" 2>&1 || true
    "$PY" bench/provisioning.py bulk-task --endpoint-url "$URL" --json "$dir/task.json" >>"$dir/report.txt" 2>&1 || true
    sed 's/^/    /' "$dir/report.txt"
    if [[ "$CHECK" == 1 ]] && ! "$PY" bench/provisioning.py check --endpoint-url "$URL" --manifest "$MANIFEST" \
        --group "$GROUP" --attach certificate --sample "$SAMPLE" >>"$dir/check.log" 2>&1; then
        log "  bulk: the check after up FAILED:"; tail -5 "$dir/check.log" >&2
        stop_emulator; return 1
    fi
    [[ "$CHECK" == 1 ]] && log "  bulk: $(tail -1 "$dir/check.log")"
    local emu; emu=$(emulator_hwm)
    stop_emulator
    local server; server=$(sed -n 's/^TASK .* server_s=\([0-9.]*\)$/\1/p' "$dir/report.txt" | awk '{ s += $1 } END { if (NR) printf "%.1f", s; else print "nan" }')
    local marks; marks=$(sed -n 's/^BULK //p' "$dir/report.txt")
    local start_at last_poll end_at polls
    start_at=$(sed -n 's/.*start_at=\([0-9.]*\).*/\1/p' <<<"$marks")
    last_poll=$(sed -n 's/.*last_poll_at=\([0-9.]*\).*/\1/p' <<<"$marks")
    end_at=$(sed -n 's/.*end_at=\([0-9.]*\).*/\1/p' <<<"$marks")
    polls=$(sed -n 's/.*polls=\([0-9]*\).*/\1/p' <<<"$marks")
    local own; own=$(awk -v w="$up" -v t="$server" 'BEGIN { if (t == "nan") print "nan"; else printf "%.1f", w - t }')
    local after; after=$(awk -v a="$last_poll" -v b="$end_at" 'BEGIN { if (a == "" || b == "") print "?"; else printf "%.1f", b - a }')
    local per_dev; per_dev=$(sed -n 's/^requests: [0-9]* in all, \([0-9.]*\) per device.*/\1/p' "$dir/report.txt")
    RES=$(printf '| bulk | %s s | %s | %s s | %s s | %s MB | %s s | %s s | %s s | %s s | %s | %s | %s MB |' \
        "$up" "$(rate "$N" "$up")" "$(cpu_s "$dir/up.time")" "$own" "$(peak_mb "$dir/up.time")" "$server" \
        "${start_at:-?}" "$(awk -v a="$start_at" -v b="$last_poll" 'BEGIN { printf "%.1f", b - a }')" "$after" \
        "${per_dev:-?}" "${polls:-?}" "$emu")
    { echo "$RES"; cat "$dir/machine"; } >"$dir/summary"
}

# Fleet provisioning by claim: an untimed `up` in claim mode (template, claim certificate, hook),
# then `device simulate --claim --count CLAIM_N` timed. Sets RES.
run_claim() {
    local dir="$WORK/claim" rc=0 t0 sim
    mkdir -p "$dir"
    # The hook's allow-list: the first CLAIM_N devices, thing_name and serial_number.
    head -n "$((CLAIM_N + 1))" "$MANIFEST" | cut -d, -f1,2 | sed '1s/.*/thing_name,serial_number/' >"$dir/claim.csv"
    {
        echo "# bench/provisioning.sh, claim"
        echo "[monitoring]"
        echo "enabled = false"
        echo "[provisioning]"
        echo 'mode = "claim"'
        if [[ "$HOOK" == 1 ]]; then echo "hook = true"; else echo "hook = false"; fi
        echo "[fleet]"
        echo 'manifest = "claim.csv"'
    } >"$dir/iotreg.toml"
    start_emulator "$dir" "$dir/requests.jsonl" gateway
    eval "$("$PY" scripts/gateway_env.py "$URL")"
    log "  claim: emulator $URL, gateway $IOTREG_DEVICE_ENDPOINT:$IOTREG_DEVICE_MQTT_PORT; iotreg up (claim mode, hook $HOOK, untimed)"
    if ! run_child iotreg_in "$dir" up.time "$dir/iotreg.toml" up; then
        log "  claim: iotreg up FAILED (log: $dir/log)"; tail -5 "$dir/log" >&2
        stop_emulator; return 1
    fi
    echo "$(date -u +%H:%M:%S) start: $(machine_load)" >>"$dir/machine"
    log "  claim: iotreg device simulate --claim --count $CLAIM_N --concurrency $CLAIM_CONCURRENCY"
    t0=$EPOCHREALTIME
    run_child iotreg_out "$dir" sim.time "$dir/iotreg.toml" "$dir/sim.json" \
        device simulate --claim --count "$CLAIM_N" --concurrency "$CLAIM_CONCURRENCY" --output json || rc=$?
    sim=$(since "$t0")
    echo "$(date -u +%H:%M:%S) end: $(machine_load)" >>"$dir/machine"
    local counts
    counts=$("$PY" -c 'import json, sys
s = json.load(open(sys.argv[1]))
f = lambda v, d=0: "-" if v is None else f"{v:.{d}f}"
print(s["provisioned"], s["refused"], s["failed"], f(s.get("seconds"), 1), f(s.get("publish_p50_ms")), f(s.get("publish_p99_ms")))' \
        "$dir/sim.json" 2>>"$dir/log") || counts=""
    if [[ $rc -ne 0 || -z "$counts" ]]; then
        log "  claim: simulate FAILED, $(why $rc) (log: $dir/log)"; tail -5 "$dir/log" >&2; head -c 2000 "$dir/sim.json" >&2
        stop_emulator; return 1
    fi
    local prov refused failed own p50 p99
    read -r prov refused failed own p50 p99 <<<"$counts"
    log "  claim: $prov provisioned, $refused refused, $failed failed in $own s (simulate's own timer)"
    if [[ "$CHECK" == 1 ]] && ! "$PY" bench/provisioning.py check-claim --endpoint-url "$URL" --expect "$CLAIM_N" \
        >>"$dir/check.log" 2>&1; then
        log "  claim: the check after simulate FAILED:"; tail -5 "$dir/check.log" >&2
        stop_emulator; return 1
    fi
    [[ "$CHECK" == 1 ]] && log "  claim: $(tail -1 "$dir/check.log")"
    local emu; emu=$(emulator_hwm)
    stop_emulator
    RES=$(printf '| claim (hook %s) | %s | %s s | %s | %s s | %s MB | %s / %s / %s | %s / %s ms | %s MB |' \
        "$HOOK" "$CLAIM_N" "$sim" "$(rate "$CLAIM_N" "$sim")" "$(cpu_s "$dir/sim.time")" "$(peak_mb "$dir/sim.time")" \
        "$prov" "$refused" "$failed" "$p50" "$p99" "$emu")
    { echo "$RES"; cat "$dir/machine"; } >"$dir/summary"
}

# ---------------------------------------------------------------------- runs
CPU=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -1)
MEM=$(free -g | awk '/^Mem:/ { print $2 " GB RAM" }')
echo "machine:  $(nproc) CPU(s), ${CPU:-unknown CPU}, ${MEM:-? RAM}; $(uname -sr)"
echo "iotreg:   $IOTREG_BIN ($PROFILE build)"
echo "runs:     PARTS=\"$PARTS\"; api/bulk N=$N devices, concurrency $CONCURRENCY, iotreg's default rate limits (AWS's default quotas); claim CLAIM_N=$CLAIM_N, concurrency $CLAIM_CONCURRENCY, hook $HOOK; emulator and iotreg at nice $NICE"
echo "start:    $(date -u '+%F %H:%M:%S') UTC, $(machine_load)"
ROWS=() BULK_ROWS=() CLAIM_ROWS=()
for part in $PARTS; do
    case "$part" in
        api)
            for v in $ATTACH; do
                RES=""
                if run_api "$v"; then ROWS+=("$RES"); else FAILURES=$((FAILURES + 1)); ROWS+=("| $v | FAILED |"); fi
                echo "$(date -u +%H:%M:%S) api-$v done: $(machine_load)"
            done
            ;;
        bulk)
            RES=""
            if run_bulk; then BULK_ROWS+=("$RES"); else FAILURES=$((FAILURES + 1)); BULK_ROWS+=("| bulk | FAILED |"); fi
            echo "$(date -u +%H:%M:%S) bulk done: $(machine_load)"
            ;;
        claim)
            RES=""
            if run_claim; then CLAIM_ROWS+=("$RES"); else FAILURES=$((FAILURES + 1)); CLAIM_ROWS+=("| claim | FAILED |"); fi
            echo "$(date -u +%H:%M:%S) claim done: $(machine_load)"
            ;;
    esac
done
echo "end:      $(date -u '+%F %H:%M:%S') UTC, $(machine_load)"
if ((${#ROWS[@]})); then
    echo
    echo "| variant | up wall | devices/s | fleet phase | iotreg CPU | iotreg peak RSS | requests/device | bound (quota) | steady pace | down, limits off | emulator peak RSS |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${ROWS[@]}"
fi
if ((${#BULK_ROWS[@]})); then
    echo
    echo "| mode | up wall | devices/s | iotreg CPU | iotreg's own (wall - task) | iotreg peak RSS | task on the emulator | before the start | start to last poll | after the last poll | requests/device | polls | emulator peak RSS |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${BULK_ROWS[@]}"
fi
if ((${#CLAIM_ROWS[@]})); then
    echo
    echo "| mode | devices | simulate wall | devices/s | simulate CPU | simulate peak RSS | provisioned / refused / failed | first publish p50 / p99 | emulator peak RSS |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${CLAIM_ROWS[@]}"
fi
if [[ "$(stat -c '%Y %s' "$IOTREG_BIN" 2>/dev/null)" != "$BIN_STAMP" ]]; then
    echo "WARNING: $IOTREG_BIN changed during the benchmark (rebuilt?)" >&2
fi
if [[ $FAILURES -ne 0 ]]; then
    echo "FAILED: $FAILURES run(s) failed" >&2
    exit 1
fi
