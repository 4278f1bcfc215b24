#!/usr/bin/env bash
# bench/fleet.sh — fleet provisioning throughput: `iotreg up --fleet` for N
# devices (wall time, devices/s, peak RSS) and `iotreg down`, against the
# local emulator's ceiling (bench/fleet_ceiling.py: the same per-device calls
# from plain boto3, 16 threads). Local emulator (moto) on 127.0.0.1 only, fake
# credentials; a fresh emulator for every measured run. See bench/README.md.
#
# Usage:  bash bench/fleet.sh
# Environment:
#   N            devices (default 1000)
#   ROUNDS       rounds (default 1); medians over rounds
#   IOTREG_BIN   iotreg binary (default target/release/iotreg; when that
#                default is missing, target/debug/iotreg is used, with a
#                message; never builds)
#   CONCURRENCY  iotreg --concurrency and the ceiling's threads (default 16)
#   LIMITS       which iotreg runs: `both` (default), `default` (iotreg's
#                built-in client-side rate limits = AWS IoT's default quotas,
#                ~15 devices/s), `off` (every limit set to 0 via
#                [aws.rate_limits] in a --config file: the run to compare
#                with the ceiling)
#   PROBES       1 (default) = also run the ceiling with --probes (iotreg's two
#                extra reads per device, DescribeThing + GetThingShadow); 0 = skip
#   CHECK        1 (default) = untimed check after every up (each device
#                complete) and down (nothing left); 0 = skip
#   TIMEOUT      seconds allowed per iotreg / ceiling run (default 900; then
#                SIGTERM, and SIGKILL 10 s later)
#   KEEP_LOGS    1 = keep the work directory even when everything passed
# Exit status: 0 when every run succeeded (and checked), 1 otherwise, 2 bad input.
set -Eeuo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
cd "$REPO_DIR"

BENCH_NAME=fleet.sh
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

N="${N:-1000}"
ROUNDS="${ROUNDS:-1}"
CONCURRENCY="${CONCURRENCY:-16}"
LIMITS="${LIMITS:-both}"
CHECK="${CHECK:-1}"
PROBES="${PROBES:-1}"
TIMEOUT="${TIMEOUT:-900}"
[[ "$N" =~ ^[1-9][0-9]*$ ]] && ((N <= 99999)) || die "N must be 1 to 99999 (got '$N')"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got '$ROUNDS')"
[[ "$CONCURRENCY" =~ ^[1-9][0-9]*$ ]] && ((CONCURRENCY <= 256)) || die "CONCURRENCY must be 1 to 256 (got '$CONCURRENCY')"
case "$LIMITS" in both) VARIANTS="default off" ;; default | off) VARIANTS="$LIMITS" ;; *) die "LIMITS must be both, default or off (got '$LIMITS')" ;; esac
[[ "$CHECK" == 0 || "$CHECK" == 1 ]] || die "CHECK must be 0 or 1 (got '$CHECK')"
[[ "$PROBES" == 0 || "$PROBES" == 1 ]] || die "PROBES must be 0 or 1 (got '$PROBES')"
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "TIMEOUT must be a positive number of seconds (got '$TIMEOUT')"

PY="$REPO_DIR/.venv/bin/python"
[[ -x "$PY" ]] || die "$PY missing: python3 -m venv .venv && .venv/bin/pip install -r emulator/requirements.txt"
"$PY" -c 'import boto3, cryptography' 2>/dev/null || die "boto3/cryptography missing in .venv: .venv/bin/pip install -r emulator/requirements.txt"
[[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time, for peak RSS) is missing: apt-get install time"

if [[ -n "${IOTREG_BIN:-}" ]]; then
    [[ "$IOTREG_BIN" == /* ]] || IOTREG_BIN="$REPO_DIR/$IOTREG_BIN"
    [[ -x "$IOTREG_BIN" ]] || die "IOTREG_BIN=$IOTREG_BIN is not an executable"
else
    IOTREG_BIN="$REPO_DIR/target/release/iotreg"
    if [[ ! -x "$IOTREG_BIN" ]]; then
        log "fleet.sh: no release build ($IOTREG_BIN missing); using the DEBUG build target/debug/iotreg."
        log "fleet.sh: debug figures are not release figures: run 'cargo build --release' (~12 min cold) for those."
        IOTREG_BIN="$REPO_DIR/target/debug/iotreg"
        [[ -x "$IOTREG_BIN" ]] || die "$IOTREG_BIN missing too: run cargo build (or cargo build --release)"
    fi
fi
"$IOTREG_BIN" up --help 2>/dev/null | grep -q -- '--fleet' || die "$IOTREG_BIN up has no --fleet option (an older build?)"
case "$IOTREG_BIN" in
    */release/*) PROFILE=release ;;
    */debug/*) PROFILE=debug ;;
    *) PROFILE=unknown ;;
esac
BIN_STAMP=$(stat -c '%Y %s' "$IOTREG_BIN")

# ----------------------------------------------------------------- no real AWS
local_aws_env

# ------------------------------------------------------------------- work dir
WORK=$(mktemp -d "${TMPDIR:-/tmp}/iotreg-fleet.XXXXXX")
EMU_PID=""
URL=""
FAILURES=0
RES=""
CHILD_PID=""
on_exit() {
    local rc=$?
    stop_child
    stop_emulator
    if [[ $rc -ne 0 || $FAILURES -ne 0 || "${KEEP_LOGS:-0}" == 1 ]]; then
        log "fleet.sh: logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# A fresh emulator, started as scripts/demo.sh does (port 0, the "listening"
# line), on 127.0.0.1 only. Sets EMU_PID and URL.
start_emulator() {
    local name=$1 out="$WORK/$1.emulator.out" err="$WORK/$1.emulator.err"
    "$PY" emulator/server.py --host 127.0.0.1 --port 0 >"$out" 2>"$err" &
    EMU_PID=$!
    await_emulator "$out" "$err"
    # Untimed warm-up: the emulator loads the AWS-managed IAM policies on its
    # first IAM call (~1 s); the ceiling makes no IAM call, so neither side pays it.
    warm_up_iam
}
check() { [[ "$CHECK" == 1 ]] || return 0; "$PY" bench/fleet_ceiling.py --endpoint-url "$URL" --manifest "$MANIFEST" --threads 8 --check "$1" >>"$2" 2>&1; }

# ------------------------------------------------------------------- manifest
MANIFEST="$WORK/devices.csv"
"$PY" bench/fleet_manifest.py "$N" "$MANIFEST"

# [aws.rate_limits] with every limited operation at 0 (no limit): the names in
# src/ratelimit.rs's DEFAULT_RATES plus the fleet's calls (unknown names are
# accepted and harmless).
NOLIMIT_TOML="$WORK/iotreg-nolimits.toml"
{
    echo "# bench/fleet.sh: iotreg's client-side rate limits off (0 = no limit)"
    echo "[aws.rate_limits]"
    echo '"*" = 0'   # every built-in limit (iotreg >= the `"*"` key); the names below for older builds
    {
        sed -n 's/^[[:space:]]*("\([A-Za-z]*\)",[[:space:]]*[0-9.]*),.*/\1/p' src/ratelimit.rs 2>/dev/null || true
        printf '%s\n' CreateThing CreateCertificateFromCsr UpdateCertificate AttachPolicy AttachThingPrincipal \
            UpdateThingShadow DescribeThing DescribeCertificate GetThingShadow DetachPolicy DetachThingPrincipal \
            DeleteCertificate DeleteThing DeleteThingShadow ListThingPrincipals ListAttachedPolicies \
            ListTargetsForPolicy ListCertificates ListThings ListTagsForResource
    } | sort -u | awk 'NF { printf "%s = 0\n", $1 }'
} >"$NOLIMIT_TOML"

# The fleet phase's own duration from iotreg's progress output
# ("✔ created   fleet N devices (6.2s)" / "(946ms)"), in seconds; "nan" if absent.
fleet_phase_s() {
    sed -n 's/.*created[[:space:]]*fleet [0-9]* devices (\([0-9.]*\)\(m*s\)).*/\1 \2/p' "$1" | tail -1 |
        awk 'NF == 2 { printf "%.3f", ($2 == "ms") ? $1 / 1000 : $1; found = 1 } END { if (!found) print "nan" }'
}

# iotreg_in DIR TIMEFILE ARGS...: iotreg ARGS in DIR against the emulator, under
# /usr/bin/time -v (peak RSS to DIR/TIMEFILE), output appended to DIR/log.
iotreg_in() {
    local dir=$1 tf=$2; shift 2
    # time(1) outside timeout(1): a TERM to time would orphan iotreg; the peak
    # RSS time reports is the largest of timeout and iotreg, i.e. iotreg's.
    cd "$dir" && AWS_ENDPOINT_URL="$URL" exec /usr/bin/time -v -o "$dir/$tf" timeout -k 10 "$TIMEOUT" \
        "$IOTREG_BIN" "${cfg[@]}" "$@" >>"$dir/log" 2>&1
}

# One iotreg `up --fleet` then `down` on a fresh emulator, in a fresh working
# directory (state in its .iotreg/). Sets RES="UP_S PEAK_MB DOWN_S DOWN_PEAK_MB FLEET_S UP_CPU_S".
# (Not run in $(...): the emulator's pid must stay visible to the EXIT trap.)
run_iotreg() {
    local name=$1 variant=$2 dir="$WORK/$1" t0 up down cfg=()
    mkdir -p "$dir"
    if [[ "$variant" == off ]]; then cfg=(--config "$NOLIMIT_TOML"); fi
    local out="$dir/log"
    start_emulator "$name"
    log "  $name: emulator $URL; iotreg up --fleet ($N devices, limits $variant)"
    t0=$EPOCHREALTIME
    local rc=0
    run_child iotreg_in "$dir" up.time up --fleet "$MANIFEST" --concurrency "$CONCURRENCY" || rc=$?
    if [[ $rc -ne 0 ]]; then
        log "  $name: iotreg up FAILED, $(why $rc) (log: $out)"; tail -5 "$out" >&2
        stop_emulator; return 1
    fi
    up=$(since "$t0")
    local fleet_s; fleet_s=$(fleet_phase_s "$out")
    if ! check up "$out"; then
        log "  $name: after iotreg up a device is incomplete (log: $out)"; grep '^CHECK' "$out" | tail -3 >&2
        stop_emulator; return 1
    fi
    # From here on the up figures count even if down fails.
    RES="$up $(peak_mb "$dir/up.time") nan nan $fleet_s $(cpu_s "$dir/up.time")"
    log "  $name: up $up s; iotreg down"
    t0=$EPOCHREALTIME
    run_child iotreg_in "$dir" down.time down || rc=$?
    if [[ $rc -ne 0 ]]; then
        log "  $name: iotreg down FAILED, $(why $rc) (log: $out)"; tail -5 "$out" >&2
        if [[ "$CHECK" == 1 ]] && ! check empty "$out"; then grep '^CHECK' "$out" | tail -4 >&2; fi
        stop_emulator; return 1
    fi
    down=$(since "$t0")
    if ! check empty "$out"; then
        log "  $name: iotreg down left resources behind (log: $out)"; grep '^CHECK' "$out" | tail -3 >&2
        stop_emulator; return 1
    fi
    echo "emulator peak RSS: $(emulator_hwm) MB" >>"$out"
    stop_emulator
    RES="$up $(peak_mb "$dir/up.time") $down $(peak_mb "$dir/down.time") $fleet_s $(cpu_s "$dir/up.time")"
}

ceiling_to() {
    local out=$1; shift
    exec timeout -k 10 "$TIMEOUT" "$PY" bench/fleet_ceiling.py --endpoint-url "$URL" --manifest "$MANIFEST" \
        --threads "$CONCURRENCY" "$@" >"$out" 2>&1
}

# The ceiling on a fresh emulator (extra args go to fleet_ceiling.py). Sets RES="WALL_S CLIENT_CPU_S".
run_ceiling() {
    local name=$1 out="$WORK/$1.log" wall; shift
    start_emulator "$name"
    log "  $name: emulator $URL; fleet_ceiling.py $* ($N devices, $CONCURRENCY threads)"
    local rc=0
    run_child ceiling_to "$out" "$@" || rc=$?
    if [[ $rc -ne 0 ]]; then
        log "  $name: fleet_ceiling.py FAILED, $(why $rc) (log: $out)"; tail -5 "$out" >&2
        stop_emulator; return 1
    fi
    wall=$(sed -n 's/^RESULT .* wall_s=\([0-9.]*\) .*/\1/p' "$out")
    if ! check up "$out"; then
        log "  $name: after fleet_ceiling.py a device is incomplete (log: $out)"
        stop_emulator; return 1
    fi
    echo "emulator peak RSS: $(emulator_hwm) MB" >>"$out"
    stop_emulator
    RES="$wall $(sed -n 's/^RESULT .* client_cpu_s=\([0-9.]*\).*/\1/p' "$out")"
}

# ---------------------------------------------------------------------- rounds
CPU=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -1)
MEM=$(free -g | awk '/^Mem:/ { print $2 " GB RAM" }')
echo "machine:  $(nproc) CPU(s), ${CPU:-unknown CPU}, ${MEM:-? RAM}; $(uname -sr)"
echo "iotreg:   $IOTREG_BIN ($PROFILE build)"
echo "fleet:    N=$N devices ($MANIFEST: thing_name + 3 attributes), concurrency $CONCURRENCY, limits: $VARIANTS"
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15-min load average at start)"
declare -A UP PEAK DOWN FLEET CPU
for v in $VARIANTS; do UP[$v]="" PEAK[$v]="" DOWN[$v]="" FLEET[$v]="" CPU[$v]=""; done
T_CEIL="" T_PROBE="" C_CEIL=""
for r in $(seq "$ROUNDS"); do
    line="round $r/$ROUNDS:"
    for v in $VARIANTS; do
        RES=""; ok=1
        run_iotreg "round$r-iotreg-limits-$v" "$v" || { ok=0; FAILURES=$((FAILURES + 1)); }
        if [[ -n "$RES" ]]; then
            read -r up pk down dpk fl cpu <<<"$RES"
            UP[$v]+=" $up" PEAK[$v]+=" $pk" CPU[$v]+=" $cpu"
            [[ "$fl" == nan ]] || FLEET[$v]+=" $fl"
            line+=$(printf ' iotreg(limits %s) up %.2f s = %s dev/s, peak RSS %s MB,' "$v" "$up" "$(rate "$N" "$up")" "$pk")
            if [[ $ok == 1 ]]; then
                DOWN[$v]+=" $down"
                line+=$(printf ' down %.2f s (RSS %s MB) |' "$down" "$dpk")
            else
                line+=" down FAILED |"
            fi
        else
            line+=" iotreg(limits $v) up FAILED |"
        fi
    done
    if run_ceiling "round$r-ceiling"; then
        read -r wall ccpu <<<"$RES"
        T_CEIL+=" $wall" C_CEIL+=" ${ccpu:-nan}"
        line+=$(printf ' ceiling %.2f s = %s dev/s' "$wall" "$(rate "$N" "$wall")")
    else
        FAILURES=$((FAILURES + 1)); line+=" ceiling FAILED"
    fi
    if [[ "$PROBES" == 1 ]]; then
        if run_ceiling "round$r-ceiling-probes" --probes; then
            read -r wall ccpu <<<"$RES"
            T_PROBE+=" $wall"
            line+=$(printf ' | ceiling with probes %.2f s = %s dev/s' "$wall" "$(rate "$N" "$wall")")
        else
            FAILURES=$((FAILURES + 1)); line+=" | ceiling with probes FAILED"
        fi
    fi
    echo "$line"
done
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (at end)"

# --------------------------------------------------------------------- summary
M_CEIL=$(median <<<"$T_CEIL"); R_CEIL=$(rate "$N" "$M_CEIL")
M_PROBE=$(median <<<"$T_PROBE"); R_PROBE=$(rate "$N" "$M_PROBE")
echo
echo "summary (medians over $ROUNDS round(s); N=$N; $PROFILE build):"
printf '| %-50s | %-12s | %-8s |\n' "metric" "value" "goal"
printf '| %-50s | %-12s | %-8s |\n' "$(printf '%.0s-' {1..50})" "------------" "--------"
row() { printf '| %-50s | %-12s | %-8s |\n' "$1" "$2" "$3"; }
for v in $VARIANTS; do
    mu=$(median <<<"${UP[$v]}"); mp=$(median <<<"${PEAK[$v]}"); md=$(median <<<"${DOWN[$v]}")
    ru=$(rate "$N" "$mu"); mf=$(median <<<"${FLEET[$v]}")
    goal_ratio="<= 1.3"; [[ "$v" == default ]] && goal_ratio="(info)"
    row "iotreg up --fleet, limits $v: wall" "$mu s" ""
    row "iotreg up --fleet, limits $v: devices/s" "$ru" ""
    row "  fleet phase only (iotreg's own timer): dev/s" "$(rate "$N" "$mf")" ""
    row "ratio ceiling/iotreg, limits $v" "$(ratio "$R_CEIL" "$ru")" "$goal_ratio"
    if [[ "$PROBES" == 1 ]]; then row "ratio ceiling-with-probes/iotreg, limits $v" "$(ratio "$R_PROBE" "$ru")" "(info)"; fi
    row "iotreg up peak RSS, limits $v" "$mp MB" "< 100 MB"
    row "iotreg up CPU (user + system), limits $v" "$(median <<<"${CPU[$v]}") s" ""
    row "iotreg down, limits $v: wall" "$md s" ""
done
row "ceiling (boto3, $CONCURRENCY threads, 5 calls): wall" "$M_CEIL s" ""
row "ceiling devices/s" "$R_CEIL" ""
row "ceiling client CPU (the Python script itself)" "$(median <<<"$C_CEIL") s" ""
if [[ "$PROBES" == 1 ]]; then
    row "ceiling with probes (7 calls): wall" "$M_PROBE s" ""
    row "ceiling with probes devices/s" "$R_PROBE" ""
fi
if [[ "$(stat -c '%Y %s' "$IOTREG_BIN" 2>/dev/null)" != "$BIN_STAMP" ]]; then
    echo "WARNING: $IOTREG_BIN changed during the benchmark (rebuilt?); rounds may mix two builds" >&2
fi
if [[ $FAILURES -ne 0 ]]; then
    echo "FAILED: $FAILURES run(s) failed; medians cover the successful runs only" >&2
    exit 1
fi
