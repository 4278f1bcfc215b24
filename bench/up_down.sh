#!/usr/bin/env bash
# bench/up_down.sh — wall-clock time to create + remove the recipe's stack:
# `iotreg up && iotreg down` versus the recipe's own AWS CLI commands
# (bench/recipe.sh, with its `sleep 10` as written and with the sleep removed),
# all against one local emulator (moto) on 127.0.0.1. See bench/README.md.
#
# Usage:  bash bench/up_down.sh
# Environment:
#   ROUNDS      rounds (default 5); each round runs, in this order,
#               iotreg up+down, recipe.sh (sleep 10), recipe.sh (sleep 0)
#   IOTREG_BIN  iotreg binary (default target/release/iotreg; when that
#               default is missing it is built with `cargo build --release`)
#   KEEP_LOGS   1 = keep the log directory even when everything passed
# Exit status: 0 when every run succeeded (and left nothing behind), else 1.
set -Eeuo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
cd "$REPO_DIR"

ROUNDS="${ROUNDS:-5}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "up_down.sh: ROUNDS must be a positive integer (got '$ROUNDS')" >&2; exit 2; }
IOTREG_BIN="${IOTREG_BIN:-target/release/iotreg}"
[[ "$IOTREG_BIN" == /* ]] || IOTREG_BIN="$REPO_DIR/$IOTREG_BIN"
VENV="$REPO_DIR/.venv"
PY="$VENV/bin/python"
AWS_CLI="$VENV/bin/aws"

# ----------------------------------------------------------------- no real AWS
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
unset AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE AWS_ENDPOINT_URL
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export AWS_EC2_METADATA_DISABLED=true AWS_PAGER=""

log() { printf '%s\n' "$*" >&2; }

# ---------------------------------------------------------------- prerequisites
if [[ ! -x "$PY" ]]; then
    log "up_down.sh: creating $VENV (python3 -m venv; pip install emulator + bench requirements)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r emulator/requirements.txt -r bench/requirements.txt
fi
want_aws=$(sed -n 's/^awscli==\([^ #]*\).*/\1/p' bench/requirements.txt)
if [[ ! -x "$AWS_CLI" ]] || [[ "$("$PY" -c 'import awscli; print(awscli.__version__)' 2>/dev/null)" != "$want_aws" ]]; then
    log "up_down.sh: installing bench/requirements.txt (awscli==$want_aws) into $VENV"
    "$VENV/bin/pip" install -q -r emulator/requirements.txt -r bench/requirements.txt
fi
if [[ ! -x "$IOTREG_BIN" ]]; then
    if [[ "$IOTREG_BIN" == "$REPO_DIR/target/release/iotreg" ]]; then
        log "up_down.sh: $IOTREG_BIN missing; running cargo build --release (a cold build takes minutes)"
        cargo build --release
    else
        log "up_down.sh: IOTREG_BIN=$IOTREG_BIN is not an executable"; exit 2
    fi
fi
case "$IOTREG_BIN" in
    */release/*) PROFILE=release ;;
    */debug/*) PROFILE=debug ;;
    *) PROFILE=unknown ;;
esac

BIN_STAMP=$(stat -c '%Y %s' "$IOTREG_BIN")

# ------------------------------------------------------------------- emulator
WORK=$(mktemp -d "${TMPDIR:-/tmp}/iotreg-bench.XXXXXX")
# Like for like: the recipe's commands build no monitoring (topic, alarms, dashboard), so
# iotreg runs here with it off.
RECIPE_TOML="$WORK/recipe-stack.toml"
printf '[monitoring]\nenabled = false\n' >"$RECIPE_TOML"
EMU_PID=""
FAILURES=0
stop_emulator() {
    if [[ -n "$EMU_PID" ]] && kill -0 "$EMU_PID" 2>/dev/null; then
        kill -TERM "$EMU_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$EMU_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$EMU_PID" 2>/dev/null && kill -KILL "$EMU_PID" 2>/dev/null || true
        wait "$EMU_PID" 2>/dev/null || true
    fi
    EMU_PID=""
}
on_exit() {
    local rc=$?
    stop_emulator
    if [[ $rc -ne 0 || $FAILURES -ne 0 || "${KEEP_LOGS:-0}" == 1 ]]; then
        log "up_down.sh: logs kept in $WORK"
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
URL=""
for _ in $(seq 600); do
    URL=$(sed -n 's|^iotreg-emulator listening on \(http://127\.0\.0\.1:[0-9][0-9]*\)$|\1|p' "$WORK/emulator.out")
    [[ -n "$URL" ]] && break
    kill -0 "$EMU_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ -z "$URL" ]]; then
    log "up_down.sh: the emulator did not start; its stderr:"; tail -20 "$WORK/emulator.err" >&2
    exit 1
fi
log "up_down.sh: emulator at $URL (pid $EMU_PID)"

reset_emulator() {
    "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/moto-api/reset", method="POST"), timeout=30).read()' "$URL" \
        || log "up_down.sh: emulator reset failed"
}
check() { "$PY" bench/check_stack.py --endpoint-url "$URL" --expect "$1" >>"$2" 2>&1; }
# seconds elapsed since $1 (an $EPOCHREALTIME value), 3 decimals
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }
add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a + b }'; }

# One `iotreg up && iotreg down` in a fresh directory; prints "UP DOWN" seconds.
run_iotreg() {
    local name=$1 dir="$WORK/$1" t0 up down
    mkdir -p "$dir/run"
    local state="$dir/run/state.json" out="$dir/log"
    t0=$EPOCHREALTIME
    if ! (cd "$dir" && timeout 300 "$IOTREG_BIN" --config "$RECIPE_TOML" --endpoint-url "$URL" --state "$state" up) >>"$out" 2>&1; then
        log "  $name: iotreg up FAILED (log: $out)"; tail -5 "$out" >&2
        (cd "$dir" && timeout 300 "$IOTREG_BIN" --config "$RECIPE_TOML" --endpoint-url "$URL" --state "$state" down) >>"$out" 2>&1 || true
        return 1
    fi
    up=$(since "$t0")
    if ! check one "$out"; then
        log "  $name: after iotreg up the stack is incomplete (log: $out)"; tail -1 "$out" >&2
        (cd "$dir" && timeout 300 "$IOTREG_BIN" --config "$RECIPE_TOML" --endpoint-url "$URL" --state "$state" down) >>"$out" 2>&1 || true
        return 1
    fi
    t0=$EPOCHREALTIME
    if ! (cd "$dir" && timeout 300 "$IOTREG_BIN" --config "$RECIPE_TOML" --endpoint-url "$URL" --state "$state" down) >>"$out" 2>&1; then
        log "  $name: iotreg down FAILED (log: $out)"; tail -5 "$out" >&2
        return 1
    fi
    down=$(since "$t0")
    if ! check empty "$out"; then
        log "  $name: iotreg down left resources behind (log: $out)"; tail -1 "$out" >&2
        return 1
    fi
    echo "$up $down"
}

# One bench/recipe.sh (setup + cleanup) with the given IAM sleep; prints seconds.
run_recipe() {
    local name=$1 sleep_s=$2 out="$WORK/$1.log" t0 el
    t0=$EPOCHREALTIME
    if ! AWS_CLI="$AWS_CLI" RECIPE_IAM_SLEEP="$sleep_s" timeout 600 \
            bash bench/recipe.sh --endpoint-url "$URL" >"$out" 2>&1; then
        log "  $name: recipe.sh FAILED (log: $out)"; tail -5 "$out" >&2
        return 1
    fi
    el=$(since "$t0")
    if ! check empty "$out"; then
        log "  $name: recipe.sh cleanup left resources behind (log: $out)"; tail -1 "$out" >&2
        return 1
    fi
    echo "$el"
}

median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit } if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b <= 0) print "nan"; else printf "%.1f", a / b }'; }

# ------------------------------------------------------------------- warm-up
# Untimed: the emulator loads the AWS-managed IAM policies on the first IAM
# call (~1 s) and the first CLI start warms the page cache.
log "up_down.sh: warm-up (untimed)"
if ! run_iotreg warmup >/dev/null; then FAILURES=$((FAILURES + 1)); reset_emulator; fi
"$AWS_CLI" --endpoint-url "$URL" sts get-caller-identity >/dev/null 2>&1 || true

# ---------------------------------------------------------------------- rounds
CPU=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -1)
echo "machine: $(nproc) CPU(s), ${CPU:-unknown CPU}; $(uname -sr)"
echo "iotreg:  $IOTREG_BIN ($PROFILE build); aws: $("$AWS_CLI" --version 2>&1)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15-min load average at start)"
echo "rounds:  $ROUNDS (each: iotreg up+down | recipe.sh, sleep 10 | recipe.sh, sleep 0)"
T_IOT="" T_UP="" T_DOWN="" T_REC="" T_REC0=""
for r in $(seq "$ROUNDS"); do
    if res=$(run_iotreg "round$r-iotreg"); then
        read -r up down <<<"$res"; t=$(add "$up" "$down")
        T_IOT+=" $t" T_UP+=" $up" T_DOWN+=" $down"
        s_iot="$(printf '%7.2f s (up %.2f + down %.2f)' "$t" "$up" "$down")"
    else
        FAILURES=$((FAILURES + 1)); reset_emulator; s_iot="FAILED"
    fi
    if t=$(run_recipe "round$r-recipe-sleep10" 10); then
        T_REC+=" $t"; s_rec=$(printf '%7.2f s' "$t")
    else
        FAILURES=$((FAILURES + 1)); reset_emulator; s_rec="FAILED"
    fi
    if t=$(run_recipe "round$r-recipe-sleep0" 0); then
        T_REC0+=" $t"; s_rec0=$(printf '%7.2f s' "$t")
    else
        FAILURES=$((FAILURES + 1)); reset_emulator; s_rec0="FAILED"
    fi
    echo "round $r/$ROUNDS: iotreg $s_iot | recipe as written $s_rec | recipe sleep removed $s_rec0"
done

echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (at end)"
M_IOT=$(median <<<"$T_IOT"); M_UP=$(median <<<"$T_UP"); M_DOWN=$(median <<<"$T_DOWN")
M_REC=$(median <<<"$T_REC"); M_REC0=$(median <<<"$T_REC0")
CALLS=$(sed -n 's/^recipe.sh: OK (\([0-9]*\) aws CLI calls.*/\1/p' "$WORK"/round*-recipe-sleep0.log 2>/dev/null | head -1)
echo
echo "median iotreg up+down:          $M_IOT s (up $M_UP s, down $M_DOWN s)"
echo "median recipe as written:       $M_REC s (${CALLS:-?} aws CLI calls + sleep 10)"
echo "median recipe, sleep removed:   $M_REC0 s"
echo "ratio (recipe sleep removed / iotreg): $(ratio "$M_REC0" "$M_IOT")x"
R=$(ratio "$M_REC" "$M_IOT")
echo "ratio (recipe as written / iotreg): ${R}x (goal ≥ 30x)"
if [[ "$(stat -c '%Y %s' "$IOTREG_BIN" 2>/dev/null)" != "$BIN_STAMP" ]]; then
    echo "WARNING: $IOTREG_BIN changed during the benchmark (rebuilt?); rounds may mix two builds" >&2
fi
if [[ $FAILURES -ne 0 ]]; then
    echo "FAILED: $FAILURES run(s) failed; medians cover the successful runs only" >&2
    exit 1
fi
