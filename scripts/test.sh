#!/usr/bin/env bash
# The whole test suite: formatting, clippy, the Rust tests (unit, SDK-level with mocks,
# end to end against the local AWS) and the local AWS's own tests. What .ci/run calls.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/venv.sh
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --quiet
.venv/bin/python -m pytest -q emulator/tests
