#!/usr/bin/env bash
# Creates .venv with the local AWS's pinned requirements (moto and friends), once.
# Sourced by demo.sh and test.sh; safe to run again (pip skips what is installed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -x "$root/.venv/bin/python" ]; then
  python3 -m venv "$root/.venv"
fi
stamp="$root/.venv/.requirements.sha256"
want="$(sha256sum "$root/emulator/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$root/emulator/requirements.txt"
  echo "$want" > "$stamp"
fi
