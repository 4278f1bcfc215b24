#!/usr/bin/env bash
# The fleet-scale state benchmark: saves and loads a state of DEVICES (default 10,000) fleet
# devices, and appends one journal line per device as a fleet run does, then prints the
# figures, each step's time and its process's peak memory (VmHWM). Release build by default
# (PROFILE=dev for a quick look at a debug build). STATE_FORMAT=schema3 runs the same steps
# with the state as iotreg held and stored it before schema 4 (the "before" figures).
#   DEVICES=100000 bash bench/state.sh                       # the 100,000-device goal
#   DEVICES=100000 STATE_FORMAT=schema3 bash bench/state.sh  # before (needs ~2 GB of memory)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
profile="${PROFILE:-release}"
DEVICES="${DEVICES:-10000}" STATE_FORMAT="${STATE_FORMAT:-packed}" \
  cargo test --quiet --profile "$profile" --bin iotreg \
  -- --ignored --nocapture --exact state::bench::bench_state_at_fleet_scale 2>&1 |
  grep -E "^state |test result|panicked"
