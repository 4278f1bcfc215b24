#!/usr/bin/env bash
# The fleet-scale state benchmark: saves and loads a state of DEVICES (default 10,000) fleet
# devices, and appends one journal line per device as a fleet run does, then prints the
# figures. Release build by default (PROFILE=dev for a quick look at a debug build).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
profile="${PROFILE:-release}"
DEVICES="${DEVICES:-10000}" cargo test --quiet --profile "$profile" --bin iotreg \
  -- --ignored --nocapture bench_state_at_fleet_scale 2>&1 | grep -E "^state |test result|panicked"
