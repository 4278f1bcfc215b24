#!/usr/bin/env bash
# bench/s3_state.sh — the cost of shared state in S3 (issue 14): `iotreg up` + `down` with
# `--state s3://iotreg-bench-state/…` against a local state file, on the local AWS (the
# emulator, moto) for the recipe stack and for an N-device fleet, with the ratios S3/local
# (goal: within 1.2×), the S3 requests each run makes, and, for the fleet journal, what one
# PutObject of the whole state costs against one of a journal segment. 127.0.0.1 only, fake
# credentials, never real AWS. See bench/README.md, "Shared state in S3".
#
# Usage:  IOTREG_BIN=/path/to/iotreg bash bench/s3_state.sh
# Environment:
#   IOTREG_BIN    iotreg binary with S3 state (default target/release/iotreg; when that default
#                 is missing, target/debug/iotreg, with a message; never builds). Copy a binary
#                 someone may rebuild to /tmp first.
#   PARTS         what to run: `stack fleet` (default), `stack` or `fleet`
#   ROUNDS        stack rounds (default 3); each round: local up+down and S3 up+down, the
#                 order alternating between rounds
#   N             fleet devices (default 1000)
#   FLEET_ROUNDS  fleet rounds (default 1), each local and S3 on fresh emulators, alternating
#   CONCURRENCY   iotreg --concurrency for the fleet (default 16)
#   REPS          PutObject repetitions for the PUT-cost figures (default 20; segments: 3×)
#   CHECK         1 (default) = untimed AWS resource checks too (check_stack.py, fleet_ceiling.py
#                 --check); the state checks (object / file present after up, nothing left in
#                 the bucket and no local state file after down) always run
#   TIMEOUT       seconds per iotreg run (default 900; then TERM, KILL 10 s later)
#   KEEP_LOGS     1 = keep the work directory even when everything passed
# Exit status: 0 when every run succeeded and every check held, 1 otherwise, 2 bad input.
set -Eeuo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
cd "$REPO_DIR"

BENCH_NAME=s3_state.sh CPU_FMT=%.2f HWM_NONE=nan
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

PARTS="${PARTS:-stack fleet}"
ROUNDS="${ROUNDS:-3}"
N="${N:-1000}"
FLEET_ROUNDS="${FLEET_ROUNDS:-1}"
CONCURRENCY="${CONCURRENCY:-16}"
REPS="${REPS:-20}"
CHECK="${CHECK:-1}"
TIMEOUT="${TIMEOUT:-900}"
for p in $PARTS; do [[ "$p" == stack || "$p" == fleet ]] || die "PARTS: stack and/or fleet (got '$PARTS')"; done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got '$ROUNDS')"
[[ "$FLEET_ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "FLEET_ROUNDS must be a positive integer (got '$FLEET_ROUNDS')"
[[ "$N" =~ ^[1-9][0-9]*$ ]] && ((N <= 99999)) || die "N must be 1 to 99999 (got '$N')"
[[ "$CONCURRENCY" =~ ^[1-9][0-9]*$ ]] && ((CONCURRENCY <= 256)) || die "CONCURRENCY must be 1 to 256 (got '$CONCURRENCY')"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer (got '$REPS')"
[[ "$CHECK" == 0 || "$CHECK" == 1 ]] || die "CHECK must be 0 or 1 (got '$CHECK')"
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
        log "s3_state.sh: no release build ($IOTREG_BIN missing); using the DEBUG build target/debug/iotreg."
        IOTREG_BIN="$REPO_DIR/target/debug/iotreg"
        [[ -x "$IOTREG_BIN" ]] || die "$IOTREG_BIN missing too: run cargo build (or cargo build --release)"
    fi
fi
"$IOTREG_BIN" --help 2>/dev/null | grep -q 's3://' || die "$IOTREG_BIN has no S3 state (--state s3://…): an older build?"
PROFILE=$(file -b "$IOTREG_BIN" 2>/dev/null | grep -q 'with debug_info' && echo "debug (has debug info)" || echo "release (no debug info)")
BIN_STAMP=$(stat -c '%Y %s' "$IOTREG_BIN")

BUCKET=iotreg-bench-state
STACK_KEY=stack/state.json
FLEET_KEY=fleet/state.json

# ----------------------------------------------------------------- no real AWS
local_aws_env

# ------------------------------------------------------------------- work dir
WORK=$(mktemp -d "${TMPDIR:-/tmp}/iotreg-s3state.XXXXXX")
EMU_PID="" URL="" REQLOG="" CHILD_PID=""
FAILURES=0
on_exit() {
    local rc=$?
    stop_child
    stop_emulator
    if [[ $rc -ne 0 || $FAILURES -ne 0 || "${KEEP_LOGS:-0}" == 1 ]]; then
        log "s3_state.sh: logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# A fresh emulator (127.0.0.1, port 0, the "listening" line, no device gateway), with its
# request log, an untimed IAM warm-up call and the state bucket (versioning on). Sets EMU_PID,
# URL and REQLOG.
start_emulator() {
    local name=$1 out="$WORK/$1.emulator.out" err="$WORK/$1.emulator.err"
    REQLOG="$WORK/$1.requests.jsonl"
    "$PY" emulator/server.py --host 127.0.0.1 --port 0 --no-gateway --request-log "$REQLOG" >"$out" 2>"$err" &
    EMU_PID=$!
    await_emulator "$out" "$err"
    warm_up_iam
    setup_bucket
}
setup_bucket() { "$PY" bench/s3_state.py setup --endpoint-url "$URL" --bucket "$BUCKET" >>"$WORK/setup.log" 2>&1 || { log "s3_state.sh: bucket set-up failed"; exit 1; }; }
reset_emulator() {
    "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/moto-api/reset", method="POST"), timeout=30).read()' "$URL" \
        || log "s3_state.sh: emulator reset failed"
    setup_bucket
}

add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a + b }'; }
# median to 2 decimals
m2() { median | awk '{ if ($1 == "nan") print "nan"; else printf "%.2f\n", $1 }'; }
# verdict RATIO: met / MISSED against the 1.2x goal
verdict() { awk -v r="$1" 'BEGIN { if (r == "nan") print "?"; else if (r <= 1.2) print "met"; else print "MISSED" }'; }
# median of counts, printed without trailing zeros (41, 40.5)
mcount() { median | awk '{ printf "%g\n", $1 }'; }
# calc EXPR FORMAT: awk arithmetic; "nan" when EXPR holds a value that was not measured
calc() { if [[ "$1" == *nan* || "$1" == *"/ 0"* ]]; then echo nan; else awk "BEGIN { x = $1; printf \"$2\", x }"; fi; }
logsize() { stat -c %s "$REQLOG" 2>/dev/null || echo 0; }
# requests KEY FROM_BYTE: the REQ line (S3 and other requests since FROM_BYTE of the log)
requests() { "$PY" bench/s3_state.py requests --log "$REQLOG" --from-byte "$2" --bucket "$BUCKET" --key "$1"; }
# field NAME LINE: the value of NAME=… in a `KEY k=v …` line
field() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }

# iotreg_in DIR TIMEFILE CONFIG STATE ARGS...: iotreg in DIR against the emulator under GNU
# time (peak RSS to DIR/TIMEFILE), output appended to DIR/log.
iotreg_in() {
    local dir=$1 tf=$2 cfg=$3 state=$4; shift 4
    cd "$dir" && AWS_ENDPOINT_URL="$URL" exec /usr/bin/time -v -o "$dir/$tf" timeout -k 10 "$TIMEOUT" \
        "$IOTREG_BIN" --config "$cfg" --state "$state" "$@" >>"$dir/log" 2>&1
}

# State checks (untimed). local: DIR/state/state.json after up, no state.json* after down;
# s3: the object after up (and no local state file), an empty bucket after down (and no local
# state file).
state_check() {
    local variant=$1 when=$2 dir=$3 key=$4 out="$3/log"
    if [[ "$variant" == local ]]; then
        if [[ "$when" == up ]]; then
            [[ -s "$dir/state/state.json" ]] || { echo "CHECK up local: $dir/state/state.json missing" >>"$out"; return 1; }
        else
            if compgen -G "$dir/state/state.json*" >/dev/null; then echo "CHECK down local: state file(s) left: $(ls "$dir/state")" >>"$out"; return 1; fi
        fi
        echo "CHECK $when local ok" >>"$out"
    else
        "$PY" bench/s3_state.py check --endpoint-url "$URL" --bucket "$BUCKET" --key "$key" \
            --expect "$([[ "$when" == up ]] && echo present || echo empty)" >>"$out" 2>&1 || return 1
        if compgen -G "$dir/.iotreg/state.json*" >/dev/null || compgen -G "$dir/state/state.json*" >/dev/null; then
            echo "CHECK $when s3: a local state file exists" >>"$out"; return 1
        fi
    fi
}

CPU=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -1)
MEM=$(free -g | awk '/^Mem:/ { print $2 " GB RAM" }')
echo "machine: $(nproc) CPU(s), ${CPU:-unknown CPU}, ${MEM:-? RAM}; $(uname -sr)"
echo "iotreg:  $IOTREG_BIN ($PROFILE)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15-min load average at start)"
echo "parts:   $PARTS; S3 state in s3://$BUCKET/ (versioning on) on the local emulator"

# ======================================================================= stack
if [[ " $PARTS " == *" stack "* ]]; then
    STACK_TOML="$WORK/recipe-stack.toml"
    printf '[monitoring]\nenabled = false\n' >"$STACK_TOML"
    # One `up` then `down` in a fresh directory. Sets RES="UP_S DOWN_S UP_S3REQ UP_PUTS DOWN_S3REQ
    # DOWN_PUTS UP_CPU_S DOWN_CPU_S".
    run_stack() {
        local name=$1 variant=$2 dir="$WORK/$1" t0 up down rc=0 state b0 rq_up rq_down
        mkdir -p "$dir/state"
        if [[ "$variant" == local ]]; then state="$dir/state/state.json"; else state="s3://$BUCKET/$STACK_KEY"; fi
        RES=""
        b0=$(logsize); t0=$EPOCHREALTIME
        run_child iotreg_in "$dir" up.time "$STACK_TOML" "$state" up || rc=$?
        up=$(since "$t0")
        if [[ $rc -ne 0 ]]; then
            log "  $name: iotreg up FAILED, $(why $rc) (log: $dir/log)"; tail -5 "$dir/log" >&2
            run_child iotreg_in "$dir" down.time "$STACK_TOML" "$state" down || true
            return 1
        fi
        rq_up=$(requests "$STACK_KEY" "$b0")
        if ! state_check "$variant" up "$dir" "$STACK_KEY" || { [[ "$CHECK" == 1 ]] && ! "$PY" bench/check_stack.py --endpoint-url "$URL" --expect one >>"$dir/log" 2>&1; }; then
            log "  $name: check after up FAILED (log: $dir/log)"; tail -2 "$dir/log" >&2
            run_child iotreg_in "$dir" down.time "$STACK_TOML" "$state" down || true
            return 1
        fi
        b0=$(logsize); t0=$EPOCHREALTIME
        run_child iotreg_in "$dir" down.time "$STACK_TOML" "$state" down || rc=$?
        down=$(since "$t0")
        if [[ $rc -ne 0 ]]; then
            log "  $name: iotreg down FAILED, $(why $rc) (log: $dir/log)"; tail -5 "$dir/log" >&2; return 1
        fi
        rq_down=$(requests "$STACK_KEY" "$b0")
        if ! state_check "$variant" down "$dir" "$STACK_KEY" || { [[ "$CHECK" == 1 ]] && ! "$PY" bench/check_stack.py --endpoint-url "$URL" --expect empty >>"$dir/log" 2>&1; }; then
            log "  $name: check after down FAILED (log: $dir/log)"; tail -2 "$dir/log" >&2; return 1
        fi
        echo "$rq_up" >"$dir/requests.up"; echo "$rq_down" >"$dir/requests.down"
        RES="$up $down $(field s3 "$rq_up") $(( $(field put_state "$rq_up") + $(field put_lock "$rq_up") )) $(field s3 "$rq_down") $(( $(field put_state "$rq_down") + $(field put_lock "$rq_down") ))"
        RES+=" $(cpu_s "$dir/up.time") $(cpu_s "$dir/down.time")"
    }

    echo
    echo "== stack: the recipe stack, monitoring.enabled = false (as in up_down.sh), $ROUNDS round(s)"
    start_emulator stack
    log "s3_state.sh: stack emulator at $URL; warm-up (untimed): one local and one S3 up+down"
    run_stack warmup-local local || { FAILURES=$((FAILURES + 1)); reset_emulator; }
    run_stack warmup-s3 s3 || { FAILURES=$((FAILURES + 1)); reset_emulator; }
    declare -A S_UP S_DOWN S_TOT S_REQ S_PUT S_DREQ S_DPUT S_CPU
    P_UP="" P_DOWN="" P_TOT=""
    for v in local s3; do S_CPU[$v]="" S_UP[$v]="" S_DOWN[$v]="" S_TOT[$v]="" S_REQ[$v]="" S_PUT[$v]="" S_DREQ[$v]="" S_DPUT[$v]=""; done
    for r in $(seq "$ROUNDS"); do
        order="local s3"; ((r % 2 == 0)) && order="s3 local"
        line="round $r/$ROUNDS (load $(cut -d' ' -f1 /proc/loadavg)):"
        declare -A RU=() RD=()
        for v in $order; do
            if run_stack "stack-round$r-$v" "$v"; then
                read -r up down req puts dreq dputs ucpu dcpu <<<"$RES"
                S_CPU[$v]+=" $(add "$ucpu" "$dcpu")"
                t=$(add "$up" "$down"); RU[$v]=$up RD[$v]=$down
                S_UP[$v]+=" $up" S_DOWN[$v]+=" $down" S_TOT[$v]+=" $t"
                S_REQ[$v]+=" $req" S_PUT[$v]+=" $puts" S_DREQ[$v]+=" $dreq" S_DPUT[$v]+=" $dputs"
                line+=$(printf ' %s %.2f s (up %.2f + down %.2f; S3 requests %s + %s, PUTs %s + %s) |' "$v" "$t" "$up" "$down" "$req" "$dreq" "$puts" "$dputs")
            else
                FAILURES=$((FAILURES + 1)); reset_emulator; line+=" $v FAILED |"
            fi
        done
        if [[ -n "${RU[local]:-}" && -n "${RU[s3]:-}" ]]; then
            P_UP+=" $(ratio "${RU[s3]}" "${RU[local]}")" P_DOWN+=" $(ratio "${RD[s3]}" "${RD[local]}")"
            P_TOT+=" $(ratio "$(add "${RU[s3]}" "${RD[s3]}")" "$(add "${RU[local]}" "${RD[local]}")")"
        fi
        echo "${line% |}"
    done
    # What one PUT of this state costs from a plain client (boto3, warm connection), for the
    # "where the time goes" line: the stack state's bytes, written after one more S3 up.
    STACK_PUT_MS=nan STACK_BYTES=nan
    d="$WORK/stack-putcost"; mkdir -p "$d/state"
    if run_child iotreg_in "$d" up.time "$STACK_TOML" "s3://$BUCKET/$STACK_KEY" up; then
        "$PY" bench/s3_state.py check --endpoint-url "$URL" --bucket "$BUCKET" --key "$STACK_KEY" --expect present --save "$d/state.bytes" >>"$d/log" 2>&1 || true
        if [[ -s "$d/state.bytes" ]]; then
            pc=$("$PY" bench/s3_state.py putcost --endpoint-url "$URL" --bucket "$BUCKET" --item "stack,overwrite,1,$d/state.bytes" --reps "$REPS")
            echo "$pc" >>"$d/log"
            STACK_PUT_MS=$(field median_ms "$pc"); STACK_BYTES=$(field bytes "$pc")
        fi
        run_child iotreg_in "$d" down.time "$STACK_TOML" "s3://$BUCKET/$STACK_KEY" down || true
    fi
    stop_emulator

    echo
    echo "stack summary (medians over $ROUNDS round(s)):"
    for v in local s3; do
        printf '  %-5s up %s s, down %s s, up+down %s s (iotreg CPU %s s); S3 requests per up %s (PutObject %s), per down %s (PutObject %s)\n' \
            "$v" "$(m2 <<<"${S_UP[$v]}")" "$(m2 <<<"${S_DOWN[$v]}")" "$(m2 <<<"${S_TOT[$v]}")" "$(m2 <<<"${S_CPU[$v]}")" \
            "$(mcount <<<"${S_REQ[$v]}")" "$(mcount <<<"${S_PUT[$v]}")" "$(mcount <<<"${S_DREQ[$v]}")" "$(mcount <<<"${S_DPUT[$v]}")"
    done
    for x in UP DOWN TOT; do
        declare -n arr="S_$x" par="P_$x"
        r=$(ratio "$(median <<<"${arr[s3]}")" "$(median <<<"${arr[local]}")")
        pr=$(m2 <<<"$par")
        printf '  ratio S3/local, %-8s %s of the medians (goal <= 1.2: %s); median of the per-round ratios %s (%s)\n' \
            "$(tr 'A-Z' 'a-z' <<<"${x/TOT/up+down}"):" "$r" "$(verdict "$r")" "$pr" "$(verdict "$pr")"
        unset -n arr par
    done
    ml=$(median <<<"${S_TOT[local]}"); ms=$(median <<<"${S_TOT[s3]}")
    reqs=$(add "$(mcount <<<"${S_REQ[s3]}")" "$(mcount <<<"${S_DREQ[s3]}")" | awk '{ printf "%g", $1 }')
    echo "  S3 writes per up (PutObject, state + lock): $(mcount <<<"${S_PUT[s3]}"); S3 requests per up+down: $reqs"
    echo "  extra time per S3 request (S3 - local) / requests, up+down: $(calc "($ms - $ml) * 1000 / $reqs" '%.1f') ms;" \
        "one PutObject of this state (${STACK_BYTES} bytes) from boto3: ${STACK_PUT_MS} ms (median of $REPS)," \
        "x $(mcount <<<"${S_PUT[s3]}") PUTs per up = $(calc "$(mcount <<<"${S_PUT[s3]}") * $STACK_PUT_MS / 1000" '%.2f') s"
fi

# ======================================================================= fleet
if [[ " $PARTS " == *" fleet "* ]]; then
    MANIFEST="$WORK/devices.csv"
    "$PY" bench/fleet_manifest.py "$N" "$MANIFEST"
    NOLIMIT_TOML="$WORK/iotreg-nolimits.toml"
    {
        echo "# bench/s3_state.sh: iotreg's client-side rate limits off (0 = no limit), as bench/fleet.sh"
        echo "[aws.rate_limits]"
        echo '"*" = 0'
    } >"$NOLIMIT_TOML"
    fleet_phase_s() {
        sed -n 's/.*created[[:space:]]*fleet [0-9]* devices (\([0-9.]*\)\(m*s\)).*/\1 \2/p' "$1" | tail -1 |
            awk 'NF == 2 { printf "%.3f", ($2 == "ms") ? $1 / 1000 : $1; found = 1 } END { if (!found) print "nan" }'
    }
    fcheck() { [[ "$CHECK" == 1 ]] || return 0; "$PY" bench/fleet_ceiling.py --endpoint-url "$URL" --manifest "$MANIFEST" --threads 8 --check "$1" >>"$2" 2>&1; }

    # One `up --fleet` then `down` on a fresh emulator. Sets RES="UP_S UP_MB DOWN_S DOWN_MB FLEET_S
    # UP_CPU UP_S3REQ SEG_PUTS STATE_PUTS DOWN_S3REQ EMULATOR_PEAK_MB" (nan where not measured;
    # the emulator's peak RSS as of the end of `down`).
    run_fleet() {
        local name=$1 variant=$2 dir="$WORK/$1" t0 up down rc=0 state b0 rq_up rq_down
        mkdir -p "$dir/state"
        if [[ "$variant" == local ]]; then state="$dir/state/state.json"; else state="s3://$BUCKET/$FLEET_KEY"; fi
        RES=""
        start_emulator "$name"
        log "  $name: emulator $URL; iotreg up --fleet ($N devices, $variant state)"
        b0=$(logsize); t0=$EPOCHREALTIME
        run_child iotreg_in "$dir" up.time "$NOLIMIT_TOML" "$state" up --fleet "$MANIFEST" --concurrency "$CONCURRENCY" || rc=$?
        up=$(since "$t0")
        if [[ $rc -ne 0 ]]; then
            log "  $name: iotreg up FAILED, $(why $rc) (log: $dir/log)"; tail -5 "$dir/log" >&2
            stop_emulator; return 1
        fi
        rq_up=$(requests "$FLEET_KEY" "$b0"); echo "$rq_up" >"$dir/requests.up"
        if ! state_check "$variant" up "$dir" "$FLEET_KEY" || ! fcheck up "$dir/log"; then
            log "  $name: check after up FAILED (log: $dir/log)"; grep '^CHECK' "$dir/log" | tail -3 >&2
            stop_emulator; return 1
        fi
        if [[ "$variant" == s3 ]]; then
            # Untimed: the whole state as a full write would PUT it.
            (cd "$dir" && AWS_ENDPOINT_URL="$URL" timeout 300 "$IOTREG_BIN" --state "$state" state pull >"$dir/pulled.json" 2>>"$dir/log") \
                || log "  $name: state pull failed (log: $dir/log)"
        fi
        log "  $name: up $up s; iotreg down"
        b0=$(logsize); t0=$EPOCHREALTIME
        run_child iotreg_in "$dir" down.time "$NOLIMIT_TOML" "$state" down || rc=$?
        down=$(since "$t0")
        if [[ $rc -ne 0 ]]; then
            log "  $name: iotreg down FAILED, $(why $rc) (log: $dir/log)"; tail -5 "$dir/log" >&2
            stop_emulator; return 1
        fi
        rq_down=$(requests "$FLEET_KEY" "$b0"); echo "$rq_down" >"$dir/requests.down"
        if ! state_check "$variant" down "$dir" "$FLEET_KEY" || ! fcheck empty "$dir/log"; then
            log "  $name: check after down FAILED (log: $dir/log)"; grep '^CHECK' "$dir/log" | tail -3 >&2
            stop_emulator; return 1
        fi
        EMU_MB=$(emulator_hwm)
        if [[ "$variant" == s3 ]]; then
            # The segments' sizes: their versions stay (bucket versioning) after the full writes
            # and the down deleted them. Listed only now: listing versions is slow in moto and
            # grows the emulator by GBs, which must not happen before a timed run.
            "$PY" bench/s3_state.py segments --endpoint-url "$URL" --bucket "$BUCKET" --key "$FLEET_KEY" \
                --save-median "$dir/segment.median" >"$dir/segments" 2>>"$dir/log" || log "  $name: listing segments failed"
        fi
        if [[ "$variant" == s3 && -s "$dir/pulled.json" ]]; then
            # "Measure which": one PutObject of the whole state (If-Match, as a full write) against
            # one of a median segment (If-None-Match: *, a new key each time), same emulator.
            local items=(--item "full,overwrite,1,$dir/pulled.json" --item "half,overwrite,0.5,$dir/pulled.json")
            if [[ -s "$dir/segment.median" ]]; then items+=(--item "segment,new,1,$dir/segment.median"); else log "  $name: no segment version found to time"; fi
            {
                "$PY" bench/s3_state.py putcost --endpoint-url "$URL" --bucket "$BUCKET" "${items[@]}" --reps "$REPS"
            } >"$dir/putcost" 2>>"$dir/log" || log "  $name: putcost failed (log: $dir/log)"
            "$PY" bench/s3_state.py check --endpoint-url "$URL" --bucket "$BUCKET" --key "$FLEET_KEY" --expect empty --versions >>"$dir/log" 2>&1 \
                || { log "  $name: the bucket is not empty after the PUT-cost runs"; stop_emulator; return 1; }
        fi
        stop_emulator
        RES="$up $(peak_mb "$dir/up.time") $down $(peak_mb "$dir/down.time") $(fleet_phase_s "$dir/log") $(cpu_s "$dir/up.time")"
        RES+=" $(field s3 "$rq_up") $(field put_segment "$rq_up") $(field put_state "$rq_up") $(field s3 "$rq_down") $EMU_MB"
    }

    echo
    echo "== fleet: N=$N devices, concurrency $CONCURRENCY, client-side rate limits off ([aws.rate_limits] \"*\" = 0)," \
        "monitoring default (on), a fresh emulator per run, $FLEET_ROUNDS round(s)"
    declare -A F_UP F_DOWN F_TOT F_MB F_DMB F_FL F_CPU F_REQ F_SEG F_SPUT F_DREQ F_EMU
    for v in local s3; do F_UP[$v]="" F_DOWN[$v]="" F_TOT[$v]="" F_MB[$v]="" F_DMB[$v]="" F_FL[$v]="" F_CPU[$v]="" F_REQ[$v]="" F_SEG[$v]="" F_SPUT[$v]="" F_DREQ[$v]="" F_EMU[$v]=""; done
    Q_UP="" Q_DOWN="" Q_TOT=""
    LAST_S3=""
    for r in $(seq "$FLEET_ROUNDS"); do
        order="local s3"; ((r % 2 == 0)) && order="s3 local"
        line="round $r/$FLEET_ROUNDS (load $(cut -d' ' -f1 /proc/loadavg)):"
        declare -A RU=() RD=()
        for v in $order; do
            if run_fleet "fleet-round$r-$v" "$v"; then
                read -r up mb down dmb fl cpu req seg sput dreq emu <<<"$RES"
                RU[$v]=$up RD[$v]=$down F_EMU[$v]+=" $emu"
                F_UP[$v]+=" $up" F_DOWN[$v]+=" $down" F_TOT[$v]+=" $(add "$up" "$down")" F_MB[$v]+=" $mb" F_DMB[$v]+=" $dmb"
                F_FL[$v]+=" $fl" F_CPU[$v]+=" $cpu" F_REQ[$v]+=" $req" F_SEG[$v]+=" $seg" F_SPUT[$v]+=" $sput" F_DREQ[$v]+=" $dreq"
                [[ "$v" == s3 ]] && LAST_S3="$WORK/fleet-round$r-s3"
                line+=$(printf ' %s [load %s at its end] up %.2f s (fleet phase %s s, RSS %s MB, CPU %s s; S3 requests %s, segment PUTs %s, state PUTs %s), down %.2f s (RSS %s MB; S3 requests %s; emulator peak %s MB) |' \
                    "$v" "$(cut -d' ' -f1 /proc/loadavg)" "$up" "$fl" "$mb" "$cpu" "$req" "$seg" "$sput" "$down" "$dmb" "$dreq" "$emu")
            else
                FAILURES=$((FAILURES + 1)); line+=" $v FAILED |"
            fi
        done
        if [[ -n "${RU[local]:-}" && -n "${RU[s3]:-}" ]]; then
            Q_UP+=" $(ratio "${RU[s3]}" "${RU[local]}")" Q_DOWN+=" $(ratio "${RD[s3]}" "${RD[local]}")"
            Q_TOT+=" $(ratio "$(add "${RU[s3]}" "${RD[s3]}")" "$(add "${RU[local]}" "${RD[local]}")")"
        fi
        echo "${line% |}"
    done

    echo
    echo "fleet summary (medians over $FLEET_ROUNDS round(s), N=$N):"
    for v in local s3; do
        printf '  %-5s up %s s (%s dev/s; fleet phase %s s), down %s s, up+down %s s; peak RSS up %s MB, down %s MB; up CPU %s s; emulator peak RSS %s MB\n' \
            "$v" "$(m2 <<<"${F_UP[$v]}")" "$(calc "$N / $(median <<<"${F_UP[$v]}")" '%.1f')" \
            "$(m2 <<<"${F_FL[$v]}")" "$(m2 <<<"${F_DOWN[$v]}")" "$(m2 <<<"${F_TOT[$v]}")" \
            "$(m2 <<<"${F_MB[$v]}")" "$(m2 <<<"${F_DMB[$v]}")" "$(m2 <<<"${F_CPU[$v]}")" "$(mcount <<<"${F_EMU[$v]}")"
    done
    for x in UP DOWN TOT; do
        declare -n arr="F_$x" par="Q_$x"
        r=$(ratio "$(median <<<"${arr[s3]}")" "$(median <<<"${arr[local]}")")
        pr=$(m2 <<<"$par")
        printf '  ratio S3/local, %-8s %s of the medians (goal <= 1.2: %s); median of the per-round ratios %s (%s)\n' \
            "$(tr 'A-Z' 'a-z' <<<"${x/TOT/up+down}"):" "$r" "$(verdict "$r")" "$pr" "$(verdict "$pr")"
        unset -n arr par
    done
    SEG=$(mcount <<<"${F_SEG[s3]}")
    echo "  S3 requests per fleet up: $(mcount <<<"${F_REQ[s3]}") (journal segment PUTs $SEG = $(calc "$SEG / $N" '%.2f') per device," \
        "state PUTs $(mcount <<<"${F_SPUT[s3]}")); per down: $(mcount <<<"${F_DREQ[s3]}")"

    # ------------------------------------------------ measure which: segments vs full writes
    if [[ -n "$LAST_S3" && -s "$LAST_S3/putcost" ]]; then
        pcl() { grep "label=$1 " "$LAST_S3/putcost" || true; }
        full=$(pcl full) half=$(pcl half) segl=$(pcl segment) segs=$(cat "$LAST_S3/segments" 2>/dev/null || true)
        tf=$(field median_ms "$full"); th=$(field median_ms "$half"); ts=$(field median_ms "$segl")
        fb=$(field bytes "$full"); sb=$(field bytes "$segl")
        nseg=$(field count "$segs")
        dup=$(calc "$(median <<<"${F_UP[s3]}") - $(median <<<"${F_UP[local]}")" '%.2f')
        echo
        echo "measure which (fleet journal, from the last S3 round; boto3 PutObject on the same emulator, warm connection):"
        echo "  full state (iotreg state pull after up): $fb bytes = $(calc "$fb / 1048576" '%.2f') MB; one PutObject (If-Match) median $tf ms" \
            "(p90 $(field p90_ms "$full") ms); half of it $th ms"
        echo "  journal segments written: $nseg (from the bucket's versions; request log: $SEG PUTs), median $(field median_bytes "$segs") bytes," \
            "mean $(field mean_bytes "$segs"), max $(field max_bytes "$segs"); per segment (sample of $(field sampled "$segs"))" \
            "$(field lines_per_segment "$segs") journal lines of $(field devices_per_segment "$segs") device(s)"
        echo "  one PutObject of a median segment (If-None-Match) median $ts ms (p90 $(field p90_ms "$segl") ms, min $(field min_ms "$segl") ms);" \
            "of the full state: min $(field min_ms "$full") ms (PUTs interleaved, $(field reps "$full") each)"
        echo "  segments as they are:         $SEG PUTs x $ts ms = $(calc "$SEG * $ts / 1000" '%.1f') s of PUTs;" \
            "measured cost of S3 state on this fleet up (S3 up - local up, medians): $dup s = $(calc "$dup * 1000 / $SEG" '%.1f') ms per segment PUT"
        echo "  a full write per durable point ($SEG points): $SEG x $tf ms = $(calc "$SEG * $tf / 1000" '%.1f') s at full size;" \
            "$(calc "$SEG * $th / 1000" '%.1f') s with the state growing from 0 (half size on average)"
        echo "  a full write per durable point (~5 per device, $((5 * N)) points): $(calc "5 * $N * $tf / 1000" '%.1f') s at full size;" \
            "$(calc "5 * $N * $th / 1000" '%.1f') s growing"
        echo "  (PUT time only: the full-write projections leave out serializing the state each time; writes are" \
            "conditional on the previous ETag, so they cannot overlap)"
    fi
fi

echo
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (at end)"
if [[ "$(stat -c '%Y %s' "$IOTREG_BIN" 2>/dev/null)" != "$BIN_STAMP" ]]; then
    echo "WARNING: $IOTREG_BIN changed during the benchmark (rebuilt?); runs may mix two builds" >&2
fi
if [[ $FAILURES -ne 0 ]]; then
    echo "FAILED: $FAILURES run(s) failed; medians cover the successful runs only" >&2
    exit 1
fi
