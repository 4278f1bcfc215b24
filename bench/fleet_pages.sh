#!/usr/bin/env bash
# bench/fleet_pages.sh — a fleet read in pages. DEVICES devices (default 10000) are deployed
# on the local AWS with Fleet Indexing on (iotreg's client-side rate limits off for that
# deploy: it is not what is measured). Then, with iotreg's default client-side limits (AWS's
# per-account rates: ListThings, ListCertificates, ListTargetsForPolicy 10/s, SearchIndex 15/s,
# DescribeCertificate and ListThingPrincipals 10/s, …):
#   1. `up` with nothing to do, `plan`, and `verify --skip-e2e --skip-device`: wall time, peak
#      RSS (GNU time), requests (the emulator's request log: page calls, per-device calls);
#   2. DRIFT devices (default 20) edited from outside with boto3 (an attribute, a certificate made
#      INACTIVE, a shadow's desired state, in turn): `plan --detailed-exitcode` (must exit 3 and
#      name exactly those devices) and `up` (must write for those only), timed the same way;
#   3. with FULL=1, `plan --full` (every device read one call per resource: the old way);
#   4. `down` (limits off; DOWN=0 skips it: the emulator is stopped at the end anyway).
# One run on a fresh emulator bound to 127.0.0.1, stopped at the end. See bench/README.md,
# "Fleets in pages".
#
# Usage:  bash bench/fleet_pages.sh [DEVICES]
# Environment:
#   IOTREG_BIN   iotreg binary (default target/release/iotreg; never builds)
#   BUILD        release | debug, printed when IOTREG_BIN's path does not say
#   DRIFT        devices edited from outside (default 20; 0 skips step 2)
#   SAMPLE       --sample for the timed runs (default: iotreg's default, 100)
#   FULL         1 = also time `plan --full` (slow at AWS's rates: about DEVICES / 10 s)
#   CONCURRENCY  iotreg --concurrency (default 16)
#   DOWN         0 = skip `down` (default 1)
#   TIMEOUT      seconds allowed per iotreg command (default 3600)
#   KEEP_LOGS    1 = keep the work directory
# Exit status: 0 when every step succeeded and checked out, 1 otherwise, 2 bad input.
set -Eeuo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
cd "$REPO_DIR"

BENCH_NAME=fleet_pages.sh SINCE_FMT=%.1f
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^set -Eeuo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
fi
(($# <= 1)) || die "usage: bash bench/fleet_pages.sh [DEVICES]"
DEVICES="${1:-10000}"
DRIFT="${DRIFT:-20}"
SAMPLE="${SAMPLE:-}"
FULL="${FULL:-0}"
DOWN="${DOWN:-1}"
CONCURRENCY="${CONCURRENCY:-16}"
TIMEOUT="${TIMEOUT:-3600}"
[[ "$DEVICES" =~ ^[1-9][0-9]*$ ]] && ((DEVICES <= 100000)) || die "DEVICES must be 1 to 100000 (got '$DEVICES')"
[[ "$DRIFT" =~ ^[0-9]+$ ]] && ((DRIFT <= DEVICES)) || die "DRIFT must be 0 to DEVICES (got '$DRIFT')"
[[ -z "$SAMPLE" || "$SAMPLE" =~ ^[1-9][0-9]*$ ]] || die "SAMPLE must be a positive integer (got '$SAMPLE')"
[[ "$FULL" == 0 || "$FULL" == 1 ]] || die "FULL must be 0 or 1 (got '$FULL')"
[[ "$DOWN" == 0 || "$DOWN" == 1 ]] || die "DOWN must be 0 or 1 (got '$DOWN')"
[[ "$CONCURRENCY" =~ ^[1-9][0-9]*$ ]] && ((CONCURRENCY <= 256)) || die "CONCURRENCY must be 1 to 256 (got '$CONCURRENCY')"
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "TIMEOUT must be a positive number of seconds (got '$TIMEOUT')"

PY="$REPO_DIR/.venv/bin/python"
[[ -x "$PY" ]] || die "$PY missing: bash scripts/venv.sh"
[[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time, for peak RSS) is missing: apt-get install time"
IOTREG_BIN="${IOTREG_BIN:-target/release/iotreg}"
[[ "$IOTREG_BIN" == /* ]] || IOTREG_BIN="$REPO_DIR/$IOTREG_BIN"
[[ -x "$IOTREG_BIN" ]] || die "IOTREG_BIN=$IOTREG_BIN is not an executable (cargo build --release; this script never builds)"
"$IOTREG_BIN" plan --help 2>/dev/null | grep -q -- '--full' || die "$IOTREG_BIN has no plan --full (an older build?)"
case "$IOTREG_BIN" in */release/*) PROFILE=release ;; */debug/*) PROFILE=debug ;; *) PROFILE="${BUILD:-unknown}" ;; esac
READS=()
[[ -n "$SAMPLE" ]] && READS=(--sample "$SAMPLE")

local_aws_env
WORK=$(mktemp -d "${TMPDIR:-/tmp}/iotreg-pages.XXXXXX")
FAILURES=0
on_exit() {
    local rc=$?
    stop_child
    stop_emulator
    if [[ $rc -ne 0 || $FAILURES -ne 0 || "${KEEP_LOGS:-0}" == 1 ]]; then
        log "fleet_pages.sh: logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

REQLOG="$WORK/requests.jsonl"
"$PY" emulator/server.py --host 127.0.0.1 --port 0 --request-log "$REQLOG" \
    >"$WORK/emulator.out" 2>"$WORK/emulator.err" &
EMU_PID=$!
await_emulator "$WORK/emulator.out" "$WORK/emulator.err"
warm_up_iam
logsize() { stat -c %s "$REQLOG" 2>/dev/null || echo 0; }

{
    echo "# bench/fleet_pages.sh"
    echo "[fleet]"
    echo 'manifest = "devices.csv"'
    echo "indexing = true"
    echo "[monitoring]"
    echo "enabled = false"
} >"$WORK/iotreg.toml"
{ printf '[aws.rate_limits]\n"*" = 0\n'; cat "$WORK/iotreg.toml"; } >"$WORK/deploy.toml"
"$PY" -c 'import sys
n = int(sys.argv[1])
print("thing_name,serial,line")
for i in range(n):
    print(f"sensor-{i:06d},SN-{i:06d},L{i % 3}")' "$DEVICES" >"$WORK/devices.csv"

# timed NAME CONFIG EXPECT ARGS...: iotreg ARGS under GNU time; prints one result line:
# NAME: wall, exit status, peak RSS, requests. Fails (FAILURES) when the exit status is not EXPECT.
timed() {
    local name=$1 cfg=$2 expect=$3; shift 3
    local before after t0 rc=0 wall
    before=$(logsize)
    t0=$EPOCHREALTIME
    (cd "$WORK" && AWS_ENDPOINT_URL="$URL" exec /usr/bin/time -v -o "$WORK/$name.time" timeout -k 10 "$TIMEOUT" \
        "$IOTREG_BIN" --config "$cfg" "$@" >"$WORK/$name.out" 2>>"$WORK/log") || rc=$?
    wall=$(since "$t0")
    after=$(logsize)
    printf '%-14s %8s s  exit %s  peak %6s MB  %s\n' "$name" "$wall" "$rc" "$(peak_mb "$WORK/$name.time")" \
        "$("$PY" bench/fleet_pages.py requests "$REQLOG" "$before" "$after")"
    if [[ $rc -ne $expect ]]; then
        log "  $name: exit $rc, expected $expect ($(why $rc)); log: $WORK/log"; tail -5 "$WORK/log" >&2
        FAILURES=$((FAILURES + 1))
        return 1
    fi
}

log "fleet_pages.sh: $DEVICES devices, iotreg $PROFILE build ($IOTREG_BIN), emulator $URL; $(machine_load)"
log "  deploying (limits off, not measured)…"
timed deploy "$WORK/deploy.toml" 0 up --concurrency "$CONCURRENCY" || exit 1
echo "# $DEVICES devices, $PROFILE build, AWS's default client-side rates, sample ${SAMPLE:-100}"
timed up-noop "$WORK/iotreg.toml" 0 up --concurrency "$CONCURRENCY" "${READS[@]}" || true
grep -q "unchanged  fleet" "$WORK/up-noop.out" || { log "  up-noop: the fleet was not unchanged"; FAILURES=$((FAILURES + 1)); }
timed plan "$WORK/iotreg.toml" 0 plan --detailed-exitcode "${READS[@]}" || true
timed verify "$WORK/iotreg.toml" 0 verify --skip-e2e --skip-device "${READS[@]}" || true
grep -o 'fleet.connectivity.*' "$WORK/verify.out" | head -1 || true

if ((DRIFT > 0)); then
    "$PY" bench/fleet_pages.py drift "$URL" "$WORK/.iotreg/state.json" "$DRIFT" | sort >"$WORK/drifted"
    timed plan-drift "$WORK/iotreg.toml" 3 plan --detailed-exitcode --output json "${READS[@]}" || true
    "$PY" -c 'import json, sys
plan = json.load(open(sys.argv[1]))
fleet = next(r for r in plan["resources"] if r["key"] == "fleet")
for d in fleet.get("devices", []):
    print(d["thing"])' "$WORK/plan-drift.out" | sort >"$WORK/named"
    if cmp -s "$WORK/drifted" "$WORK/named"; then
        echo "plan named exactly the $DRIFT devices edited from outside"
    else
        log "  plan named $(wc -l <"$WORK/named") devices, not the $DRIFT edited"; FAILURES=$((FAILURES + 1))
    fi
    timed up-repair "$WORK/iotreg.toml" 0 up --concurrency "$CONCURRENCY" "${READS[@]}" || true
    timed plan-after "$WORK/iotreg.toml" 0 plan --detailed-exitcode "${READS[@]}" || true
fi
if [[ "$FULL" == 1 ]]; then
    timed plan-full "$WORK/iotreg.toml" 0 plan --detailed-exitcode --full || true
fi
if [[ "$DOWN" == 1 ]]; then
    timed down "$WORK/deploy.toml" 0 down || true
fi
((FAILURES == 0)) || { log "fleet_pages.sh: $FAILURES problems"; exit 1; }
