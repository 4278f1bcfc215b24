# bench/lib.sh — shell helpers shared by the benchmark scripts (fleet.sh, provisioning.sh,
# s3_state.sh, jobs.sh). Sourced, never run:
#
#   BENCH_NAME=fleet.sh                 # the name messages start with
#   source "$BENCH_DIR/lib.sh"
#
# Globals the helpers read or set: EMU_PID and URL (the emulator), CHILD_PID (the child
# run_child waits for), TIMEOUT (for why). Number formats, each with the default most scripts
# use; a script sets one before sourcing to keep its own:
#   SINCE_FMT  since's seconds (default %.3f)
#   RATE_FMT   rate's per-second figure (default %.1f)
#   CPU_FMT    cpu_s's CPU seconds (default %.1f)
#   HWM_NONE   what emulator_hwm prints when the emulator is gone (default ?)
# shellcheck shell=bash

: "${BENCH_NAME:=bench}"
: "${SINCE_FMT:=%.3f}" "${RATE_FMT:=%.1f}" "${CPU_FMT:=%.1f}" "${HWM_NONE:=?}"
EMU_PID="${EMU_PID:-}" URL="${URL:-}" CHILD_PID="${CHILD_PID:-}"

log() { printf '%s\n' "$*" >&2; }
die() { log "$BENCH_NAME: $*"; exit 2; }

# No real AWS: fake credentials, no profile or config file, no instance metadata. Every call
# gets the emulator's URL explicitly (AWS_ENDPOINT_URL is unset here and set per command).
local_aws_env() {
    export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
    export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
    unset AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE AWS_ENDPOINT_URL
    export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
    export AWS_EC2_METADATA_DISABLED=true AWS_PAGER=""
}

# Runs "$@" in the background and waits for it, so that a signal to the script is handled at
# once (bash defers traps while a foreground child runs); the EXIT trap stops the child
# (stop_child). Returns the child's status.
run_child() {
    local rc=0
    "$@" &
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return $rc
}
stop_child() {
    if [[ -n "$CHILD_PID" ]] && kill -0 "$CHILD_PID" 2>/dev/null; then
        # The child is `timeout` itself or /usr/bin/time running `timeout`: TERM to `timeout`
        # reaches its process group (iotreg / python), and it sends SIGKILL 10 s later if that
        # has not ended them (-k 10).
        local p
        for p in "$CHILD_PID" $(pgrep -P "$CHILD_PID" 2>/dev/null || true); do
            [[ "$(ps -o comm= -p "$p" 2>/dev/null)" == timeout ]] && kill -TERM "$p" 2>/dev/null || true
        done
        wait "$CHILD_PID" 2>/dev/null || true
    fi
    CHILD_PID=""
}

# Waits (up to 30 s) for the emulator started as EMU_PID to print its "listening" line in OUT;
# sets URL. The emulator gone or silent: its stderr (ERR) is shown and the script exits 1; a
# URL that is not on 127.0.0.1 is refused (exit 1).
await_emulator() {
    local out=$1 err=$2
    URL=""
    for _ in $(seq 300); do
        URL=$(sed -n 's|^iotreg-emulator listening on \(http://127\.0\.0\.1:[0-9][0-9]*\)$|\1|p' "$out" 2>/dev/null)
        [[ -n "$URL" ]] && break
        kill -0 "$EMU_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z "$URL" ]]; then
        log "$BENCH_NAME: the emulator did not start; its stderr:"; tail -20 "$err" >&2
        exit 1
    fi
    case "$URL" in http://127.0.0.1:*) ;; *) log "$BENCH_NAME: refusing non-local endpoint $URL"; exit 1 ;; esac
}
# Untimed warm-up: the emulator loads the AWS-managed IAM policies on its first IAM call (~1 s).
warm_up_iam() {
    "$PY" -c 'import sys, boto3
boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1").get_policy(
    PolicyArn="arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole")' "$URL" >/dev/null 2>&1 \
        || log "$BENCH_NAME: emulator warm-up call failed (continuing)"
}
stop_emulator() {
    if [[ -n "$EMU_PID" ]] && kill -0 "$EMU_PID" 2>/dev/null; then
        kill -TERM "$EMU_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$EMU_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$EMU_PID" 2>/dev/null && kill -KILL "$EMU_PID" 2>/dev/null || true
        wait "$EMU_PID" 2>/dev/null || true
    fi
    EMU_PID="" URL=""
}
# The emulator's peak RSS in MB (VmHWM), while it runs.
emulator_hwm() { awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$EMU_PID/status" 2>/dev/null || echo "$HWM_NONE"; }
# CPU seconds (user + system) process PID has used so far, its threads included (/proc/PID/stat).
proc_cpu_s() {
    local tck; tck=$(getconf CLK_TCK)
    awk -v t="$tck" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / t }' "/proc/$1/stat" 2>/dev/null || echo nan
}

# Seconds since T0 (an $EPOCHREALTIME).
since() { awk -v a="$1" -v b="$EPOCHREALTIME" -v f="$SINCE_FMT" 'BEGIN { printf f, b - a }'; }
# N per S seconds; nan for a time that was not measured.
rate() { awk -v n="$1" -v s="$2" -v f="$RATE_FMT" 'BEGIN { if (s == "nan" || s <= 0) print "nan"; else printf f, n / s }'; }
# The median of the numbers on stdin (blank-separated); nan for none.
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit } if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b <= 0) print "nan"; else printf "%.2f", a / b }'; }
# user + system CPU seconds from a /usr/bin/time -v file
cpu_s() { awk -F': ' -v f="$CPU_FMT" '/User time|System time/ { s += $2 } END { printf f, s }' "$1"; }
# "Maximum resident set size (kbytes): K" from a /usr/bin/time -v file -> MB
peak_mb() { awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$1"; }
# Why a child failed, from its exit status.
why() { case "$1" in 124 | 137 | 143) echo "timed out after ${TIMEOUT} s (TIMEOUT), killed: hung?" ;; *) echo "exit status $1" ;; esac; }
# What else the machine was doing: load average and the five busiest processes over one second
# (top's second frame; its first one averages over each process's whole life).
machine_load() {
    echo "load $(cut -d' ' -f1-3 /proc/loadavg); busiest over 1 s:" \
        "$(top -b -n 2 -d 1 -o %CPU -w 200 2>/dev/null |
            awk '/^top -/ { f++ } f == 2 && $1 ~ /^[0-9]+$/ && n < 5 { printf "%s %s%%, ", $12, $9; n++ }')"
}
