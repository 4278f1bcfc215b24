#!/usr/bin/env bash
# bench/jobs.sh — a firmware rollout to a fleet: DEVICES simulated devices (default
# 1000) taking ONE firmware job at the maximum rollout rate (maximum_per_minute = 1000) on the
# local AWS, whose jobs engine keeps its normal 60-second minute. Per run:
#   1. `iotreg up` (untimed for the figures): the fleet in a thing group, one [[job_templates]]
#      with a firmware file of FIRMWARE_KB kB, monitoring off; iotreg's client-side rate limits
#      off for the deploy ([aws.rate_limits] "*" = 0) — the deploy is not what is measured;
#   2. `iotreg job start fw`, then `iotreg device simulate --fleet --jobs --linger LINGER`
#      (device.connect_timeout_s = CONNECT_TIMEOUT): wall time from job start to every
#      execution SUCCEEDED (DescribeJob polled by bench/jobs.py wait), the simulate process's
#      CPU time and peak RSS (GNU time), the emulator's CPU over the same span (/proc);
#   3. `iotreg job status ID` and `… --no-reported`, STATUS_REPS times each (median), with the
#      requests each makes (the emulator's request log);
#   4. `iotreg down` (limits off) and a check that nothing is left.
# The job commands, simulate and status run with iotreg's default (AWS's) client-side limits.
# Local emulator on 127.0.0.1 only (with its device gateway), fake credentials, a fresh emulator
# per run, stopped at the end. See bench/README.md, "Jobs".
#
# Usage:  bash bench/jobs.sh [DEVICES]
# Environment:
#   RUNS             runs (default 1), each on a fresh emulator; medians over runs
#   IOTREG_BIN       iotreg binary (default target/release/iotreg; never builds; copy a binary
#                    others may rebuild to /tmp first)
#   BUILD            release | debug, printed when IOTREG_BIN's path does not say (a copy in /tmp)
#   CONNECT_TIMEOUT  device.connect_timeout_s for simulate (default 60): every wait of a device
#                    (connect, SUBACK, an answer to a jobs or shadow request) is bounded by it
#   LINGER           simulate --linger (default 5)
#   SIM_CONCURRENCY  simulate --concurrency: connects in flight (default: simulate's own)
#   FIRMWARE_KB      the firmware file's size in kB (default 1024)
#   CONCURRENCY      iotreg up --concurrency (default 16)
#   STATUS_REPS      runs of each `job status` form (default 3)
#   CHECK            1 (default) = untimed checks after up and after down; 0 = skip
#   TIMEOUT          seconds allowed per iotreg command (default 900; TERM, KILL 10 s later)
#   NICE             niceness of the emulator and iotreg (default 0; < 0 needs root), printed
#   EMULATOR_SCRIPT  the emulator's entry point (default emulator/server.py; a wrapper taking
#                    the same arguments, e.g. to profile it)
#   KEEP_LOGS        1 = keep the work directory even when everything passed
# Exit status: 0 when every run succeeded (and checked), 1 otherwise, 2 bad input.
set -Eeuo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
cd "$REPO_DIR"

BENCH_NAME=jobs.sh RATE_FMT=%.1f
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^set -Eeuo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
fi
(($# <= 1)) || die "usage: bash bench/jobs.sh [DEVICES]"
DEVICES="${1:-1000}"
RUNS="${RUNS:-1}"
CONNECT_TIMEOUT="${CONNECT_TIMEOUT:-60}"
LINGER="${LINGER:-5}"
SIM_CONCURRENCY="${SIM_CONCURRENCY:-}"
FIRMWARE_KB="${FIRMWARE_KB:-1024}"
CONCURRENCY="${CONCURRENCY:-16}"
STATUS_REPS="${STATUS_REPS:-3}"
CHECK="${CHECK:-1}"
TIMEOUT="${TIMEOUT:-900}"
NICE="${NICE:-0}"
EMULATOR_SCRIPT="${EMULATOR_SCRIPT:-emulator/server.py}"
[[ "$DEVICES" =~ ^[1-9][0-9]*$ ]] && ((DEVICES <= 10000)) || die "DEVICES must be 1 to 10000 (got '$DEVICES')"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer (got '$RUNS')"
[[ "$CONNECT_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "CONNECT_TIMEOUT must be a positive number of seconds (got '$CONNECT_TIMEOUT')"
[[ "$LINGER" =~ ^[0-9]+$ ]] || die "LINGER must be a number of seconds (got '$LINGER')"
[[ -z "$SIM_CONCURRENCY" || "$SIM_CONCURRENCY" =~ ^[1-9][0-9]*$ ]] || die "SIM_CONCURRENCY must be a positive integer (got '$SIM_CONCURRENCY')"
[[ "$FIRMWARE_KB" =~ ^[1-9][0-9]*$ ]] && ((FIRMWARE_KB <= 102400)) || die "FIRMWARE_KB must be 1 to 102400 (got '$FIRMWARE_KB')"
[[ "$CONCURRENCY" =~ ^[1-9][0-9]*$ ]] && ((CONCURRENCY <= 256)) || die "CONCURRENCY must be 1 to 256 (got '$CONCURRENCY')"
[[ "$STATUS_REPS" =~ ^[1-9][0-9]*$ ]] || die "STATUS_REPS must be a positive integer (got '$STATUS_REPS')"
[[ "$CHECK" == 0 || "$CHECK" == 1 ]] || die "CHECK must be 0 or 1 (got '$CHECK')"
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "TIMEOUT must be a positive number of seconds (got '$TIMEOUT')"
[[ "$NICE" =~ ^-?[0-9]+$ ]] && ((NICE >= -20 && NICE <= 19)) || die "NICE must be -20 to 19 (got '$NICE')"
if ((NICE < 0)) && [[ "$(id -u)" != 0 ]]; then die "NICE=$NICE needs root"; fi
[[ -f "$EMULATOR_SCRIPT" ]] || die "EMULATOR_SCRIPT=$EMULATOR_SCRIPT is not a file"

PY="$REPO_DIR/.venv/bin/python"
[[ -x "$PY" ]] || die "$PY missing: bash scripts/venv.sh"
"$PY" -c 'import boto3, amqtt' 2>/dev/null || die "boto3/amqtt missing in .venv: bash scripts/venv.sh"
[[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time, for peak RSS) is missing: apt-get install time"

IOTREG_BIN="${IOTREG_BIN:-target/release/iotreg}"
[[ "$IOTREG_BIN" == /* ]] || IOTREG_BIN="$REPO_DIR/$IOTREG_BIN"
[[ -x "$IOTREG_BIN" ]] || die "IOTREG_BIN=$IOTREG_BIN is not an executable (cargo build --release; this script never builds)"
"$IOTREG_BIN" device simulate --help 2>/dev/null | grep -q -- '--jobs' || die "$IOTREG_BIN has no device simulate --jobs (an older build?)"
case "$IOTREG_BIN" in */release/*) PROFILE=release ;; */debug/*) PROFILE=debug ;; *) PROFILE="${BUILD:-unknown}" ;; esac
BIN_STAMP=$(stat -c '%Y %s' "$IOTREG_BIN")

# ----------------------------------------------------------------- no real AWS
local_aws_env

WORK=$(mktemp -d "${TMPDIR:-/tmp}/iotreg-jobs.XXXXXX")
WAIT_PID="" FAILURES=0
on_exit() {
    local rc=$?
    stop_child
    if [[ -n "$WAIT_PID" ]]; then kill -TERM "$WAIT_PID" 2>/dev/null; wait "$WAIT_PID" 2>/dev/null; fi
    stop_emulator
    if [[ $rc -ne 0 || $FAILURES -ne 0 || "${KEEP_LOGS:-0}" == 1 ]]; then
        log "jobs.sh: logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# A fresh emulator with its device gateway and request log (REQLOG), the jobs minute at its
# default (60 s): IOTREG_EMULATOR_JOBS_MINUTE is dropped from the environment.
start_emulator() {
    local dir=$1
    REQLOG="$dir/requests.jsonl"
    env -u IOTREG_EMULATOR_JOBS_MINUTE nice -n "$NICE" "$PY" "$EMULATOR_SCRIPT" --host 127.0.0.1 --port 0 \
        --request-log "$REQLOG" >"$dir/emulator.out" 2>"$dir/emulator.err" &
    EMU_PID=$!
    await_emulator "$dir/emulator.out" "$dir/emulator.err"
    warm_up_iam
    # The devices' side (simulate) connects to the emulator's device gateway.
    eval "$("$PY" scripts/gateway_env.py "$URL")"
}
logsize() { stat -c %s "$REQLOG" 2>/dev/null || echo 0; }

# iotreg_in DIR TIMEFILE CONFIG OUT ARGS...: iotreg ARGS in DIR against the emulator under GNU
# time (DIR/TIMEFILE), stdout to OUT, stderr appended to DIR/log.
iotreg_in() {
    local dir=$1 tf=$2 cfgfile=$3 out=$4; shift 4
    cd "$dir" && AWS_ENDPOINT_URL="$URL" exec /usr/bin/time -v -o "$dir/$tf" nice -n "$NICE" timeout -k 10 "$TIMEOUT" \
        "$IOTREG_BIN" --config "$cfgfile" "$@" >"$out" 2>>"$dir/log"
}

# The configs: iotreg.toml (the fleet, its group, the template; what the job commands use) and
# deploy.toml (the same with every client-side rate limit off, for up and down).
write_configs() {
    local dir=$1
    {
        echo "# bench/jobs.sh"
        echo "[fleet]"
        echo 'manifest = "devices.csv"'
        echo 'group = "bench-jobs-{{suffix}}"'
        echo "[monitoring]"
        echo "enabled = false"
        echo "[device]"
        echo "connect_timeout_s = $CONNECT_TIMEOUT"
        echo "[[job_templates]]"
        echo 'name = "fw"'
        echo 'firmware = "fw.bin"'
        echo 'version = "2.0.0"'
        echo "[job_templates.rollout]"
        echo "maximum_per_minute = 1000"
    } >"$dir/iotreg.toml"
    { printf '[aws.rate_limits]\n"*" = 0\n'; cat "$dir/iotreg.toml"; } >"$dir/deploy.toml"
    "$PY" -c 'import sys
n = int(sys.argv[1]); w = len(str(n))
print("thing_name,serial_number")
for i in range(1, n + 1):
    print(f"jobdev-{i:0{w}d},SN-{i:0{w}d}")' "$DEVICES" >"$dir/devices.csv"
    head -c $((FIRMWARE_KB * 1024)) /dev/urandom >"$dir/fw.bin"
}

# One `job status` form, STATUS_REPS times: sets ST_TIMES (seconds each) and ST_REQ (the REQ
# line of the first run). Extra arguments go to `job status`.
status_runs() {
    local dir=$1 id=$2 tag=$3; shift 3
    local i t0 before after rc
    ST_TIMES="" ST_REQ=""
    for i in $(seq "$STATUS_REPS"); do
        before=$(logsize)
        t0=$EPOCHREALTIME
        rc=0
        run_child iotreg_in "$dir" "status-$tag-$i.time" "$dir/iotreg.toml" "$dir/status-$tag-$i.json" \
            job status "$id" --output json "$@" || rc=$?
        ST_TIMES+=" $(since "$t0")"
        after=$(logsize)
        if [[ $rc -ne 0 ]]; then log "  job status $* FAILED, $(why $rc)"; tail -3 "$dir/log" >&2; return 1; fi
        [[ $i == 1 ]] && ST_REQ=$("$PY" bench/jobs.py requests "$REQLOG" --from-byte "$before" --to-byte "$after")
    done
    return 0
}

# One run. Sets RES="ALL_S START_S SIM_WALL SIM_CPU SIM_RSS EMU_CPU ST_MED ST_NR_MED UP_S DOWN_S".
run_one() {
    local name=$1 dir="$WORK/$1" rc=0 t0 up id
    mkdir -p "$dir"
    write_configs "$dir"
    start_emulator "$dir"
    echo "$(date -u +%H:%M:%S) start: $(machine_load)" >>"$dir/machine"
    log "  $name: emulator $URL; iotreg up ($DEVICES devices, firmware $FIRMWARE_KB kB, limits off)"
    t0=$EPOCHREALTIME
    run_child iotreg_in "$dir" up.time "$dir/deploy.toml" "$dir/up.out" up --concurrency "$CONCURRENCY" || rc=$?
    up=$(since "$t0")
    if [[ $rc -ne 0 ]]; then
        log "  $name: iotreg up FAILED, $(why $rc) (log: $dir/log)"; tail -5 "$dir/log" >&2
        stop_emulator; return 1
    fi
    if [[ "$CHECK" == 1 ]]; then
        if ! "$PY" bench/jobs.py check-up --endpoint-url "$URL" --expect "$DEVICES" >>"$dir/check.log" 2>&1; then
            log "  $name: the check after up FAILED:"; tail -3 "$dir/check.log" >&2
            stop_emulator; return 1
        fi
        log "  $name: up $up s; $(tail -1 "$dir/check.log")"
    fi

    # The measured part: job start -> every execution SUCCEEDED.
    local emu0 emu1 start_s sim_s req0
    req0=$(logsize)
    emu0=$(proc_cpu_s "$EMU_PID")
    t0=$EPOCHREALTIME
    local t0_epoch; t0_epoch=$(date +%s.%N)
    if ! run_child iotreg_in "$dir" start.time "$dir/iotreg.toml" "$dir/start.json" job start fw --output json; then
        log "  $name: iotreg job start FAILED (log: $dir/log)"; tail -5 "$dir/log" >&2
        stop_emulator; return 1
    fi
    start_s=$(since "$t0")
    id=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["job_id"])' "$dir/start.json")
    "$PY" bench/jobs.py wait --endpoint-url "$URL" --job-id "$id" --expect "$DEVICES" --t0 "$t0_epoch" \
        --timeout "$TIMEOUT" >"$dir/wait.log" 2>&1 &
    WAIT_PID=$!
    log "  $name: job $id started in $start_s s; device simulate --fleet --jobs --linger $LINGER (connect_timeout_s $CONNECT_TIMEOUT)"
    local sim_args=(device simulate --fleet --jobs --linger "$LINGER" --output json)
    [[ -n "$SIM_CONCURRENCY" ]] && sim_args+=(--concurrency "$SIM_CONCURRENCY")
    local t1=$EPOCHREALTIME
    run_child iotreg_in "$dir" sim.time "$dir/iotreg.toml" "$dir/sim.json" "${sim_args[@]}" || rc=$?
    sim_s=$(since "$t1")
    emu1=$(proc_cpu_s "$EMU_PID")
    local wrc=0
    if [[ $rc -ne 0 ]]; then
        # simulate gave up: executions it left will not succeed; the waiter gets 10 s.
        for _ in $(seq 100); do kill -0 "$WAIT_PID" 2>/dev/null || break; sleep 0.1; done
        kill -TERM "$WAIT_PID" 2>/dev/null || true
    fi
    wait "$WAIT_PID" || wrc=$?
    WAIT_PID=""
    echo "$(date -u +%H:%M:%S) end: $(machine_load)" >>"$dir/machine"
    local counts
    counts=$("$PY" -c 'import json, sys
s = json.load(open(sys.argv[1]))
g = lambda k: s.get(k, "?")
print(g("devices"), g("connects_ok"), g("connects_failed"), g("succeeded"), g("failed"), g("rejected"), g("firmware_bytes"))' \
        "$dir/sim.json" 2>>"$dir/log") || counts="? ? ? ? ? ? ?"
    log "  $name: simulate exit $rc in $sim_s s: devices connects_ok connects_failed succeeded failed rejected firmware_bytes = $counts"
    local all_s; all_s=$(sed -n 's/^ALL_SUCCEEDED t=\([0-9.]*\) .*/\1/p' "$dir/wait.log")
    if [[ $rc -ne 0 || $wrc -ne 0 || -z "$all_s" ]]; then
        log "  $name: the rollout FAILED (simulate $(why $rc), wait exit $wrc): $(tail -1 "$dir/wait.log")"
        "$PY" -c 'import json, sys
f = json.load(open(sys.argv[1])).get("failures") or []
print(f"{len(f)} device failures; first: {f[:3]}")' "$dir/sim.json" >&2 2>/dev/null || tail -5 "$dir/log" >&2
        stop_emulator; return 1
    fi
    local rollout_req; rollout_req=$("$PY" bench/jobs.py requests "$REQLOG" --from-byte "$req0")
    log "  $name: every execution SUCCEEDED $all_s s after job start; requests during the rollout: $rollout_req"

    # job status, with and without the shadows' reports.
    local st_med st_nr_med st_req st_nr_req
    status_runs "$dir" "$id" reported || { stop_emulator; return 1; }
    st_med=$(median <<<"$ST_TIMES"); st_req=$ST_REQ
    status_runs "$dir" "$id" noreported --no-reported || { stop_emulator; return 1; }
    st_nr_med=$(median <<<"$ST_TIMES"); st_nr_req=$ST_REQ
    local reported; reported=$("$PY" -c 'import json, sys
r = json.load(open(sys.argv[1])).get("reported") or {}
print("%s of %s devices report %s" % (r.get("matching", "?"), r.get("devices", "?"), r.get("what", "?")))' "$dir/status-reported-1.json" 2>>"$dir/log") || reported="?"
    log "  $name: job status ${st_med} s (median of $STATUS_REPS; $reported; $st_req)"
    log "  $name: job status --no-reported ${st_nr_med} s ($st_nr_req)"

    # down, limits off, and nothing left.
    t0=$EPOCHREALTIME
    if ! run_child iotreg_in "$dir" down.time "$dir/deploy.toml" "$dir/down.out" down; then
        log "  $name: iotreg down FAILED (log: $dir/log)"; tail -5 "$dir/log" >&2
        stop_emulator; return 1
    fi
    local down; down=$(since "$t0")
    if [[ "$CHECK" == 1 ]]; then
        if ! "$PY" bench/jobs.py check-empty --endpoint-url "$URL" >>"$dir/check.log" 2>&1; then
            log "  $name: down left resources behind:"; tail -3 "$dir/check.log" >&2
            stop_emulator; return 1
        fi
        log "  $name: down $down s; $(tail -1 "$dir/check.log")"
    fi
    local emu_mb; emu_mb=$(emulator_hwm)
    stop_emulator
    local emu_cpu; emu_cpu=$(awk -v a="$emu0" -v b="$emu1" 'BEGIN { if (a == "nan" || b == "nan") print "nan"; else printf "%.1f", b - a }')
    RES="$all_s $start_s $sim_s $(cpu_s "$dir/sim.time") $(peak_mb "$dir/sim.time") $emu_cpu $st_med $st_nr_med $up $down"
    {
        printf '| %s | %s s | %s s | %s s | %s s | %s MB | %s s | %s s | %s s | %s MB |\n' "$name" "$all_s" "$start_s" \
            "$sim_s" "$(cpu_s "$dir/sim.time")" "$(peak_mb "$dir/sim.time")" "$emu_cpu" "$st_med" "$st_nr_med" "$emu_mb"
        echo "rollout requests: $rollout_req"
        echo "job status requests: $st_req"
        echo "job status --no-reported requests: $st_nr_req"
        cat "$dir/machine"
    } >"$dir/summary"
}

# ---------------------------------------------------------------------- runs
CPU=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -1)
MEM=$(free -g | awk '/^Mem:/ { print $2 " GB RAM" }')
echo "machine:  $(nproc) CPU(s), ${CPU:-unknown CPU}, ${MEM:-? RAM}; $(uname -sr)"
echo "iotreg:   $IOTREG_BIN ($PROFILE build)"
echo "runs:     RUNS=$RUNS; $DEVICES devices, one firmware job of $FIRMWARE_KB kB, maximum_per_minute = 1000, jobs minute 60 s;" \
    "simulate --linger $LINGER${SIM_CONCURRENCY:+ --concurrency $SIM_CONCURRENCY}, device.connect_timeout_s = $CONNECT_TIMEOUT;" \
    "emulator and iotreg at nice $NICE"
echo "start:    $(date -u '+%F %H:%M:%S') UTC, $(machine_load)"
ROWS=() ALL=() SIMCPU=() SIMRSS=() EMUCPU=() ST=() STNR=()
for r in $(seq "$RUNS"); do
    RES=""
    if run_one "run$r"; then
        read -r all_s start_s sim_s sim_cpu sim_rss emu_cpu st st_nr up down <<<"$RES"
        ALL+=("$all_s") SIMCPU+=("$sim_cpu") SIMRSS+=("$sim_rss") EMUCPU+=("$emu_cpu") ST+=("$st") STNR+=("$st_nr")
        ROWS+=("$(head -1 "$WORK/run$r/summary")")
        sed -n '2,4p' "$WORK/run$r/summary"
    else
        FAILURES=$((FAILURES + 1)); ROWS+=("| run$r | FAILED |")
    fi
    echo "$(date -u +%H:%M:%S) run$r done: $(machine_load)"
done
echo "end:      $(date -u '+%F %H:%M:%S') UTC, $(machine_load)"
echo
echo "| run | job start → all SUCCEEDED | job start | simulate wall | simulate CPU | simulate peak RSS | emulator CPU (rollout) | job status (median of $STATUS_REPS) | job status --no-reported | emulator peak RSS |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
if ((${#ALL[@]} > 1)); then
    printf '| median | %s s | | | %s s | %s MB | %s s | %s s | %s s | |\n' "$(median <<<"${ALL[*]}")" \
        "$(median <<<"${SIMCPU[*]}")" "$(median <<<"${SIMRSS[*]}")" "$(median <<<"${EMUCPU[*]}")" \
        "$(median <<<"${ST[*]}")" "$(median <<<"${STNR[*]}")"
fi
if [[ "$(stat -c '%Y %s' "$IOTREG_BIN" 2>/dev/null)" != "$BIN_STAMP" ]]; then
    echo "WARNING: $IOTREG_BIN changed during the benchmark (rebuilt?)" >&2
fi
if [[ $FAILURES -ne 0 ]]; then
    echo "FAILED: $FAILURES run(s) failed" >&2
    exit 1
fi
