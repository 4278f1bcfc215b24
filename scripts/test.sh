#!/usr/bin/env bash
# The whole test suite: formatting, clippy, the Rust tests (unit, SDK-level with mocks,
# end to end against the local AWS), the local AWS's own tests and the handler's. What .ci/run calls.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/venv.sh
bash scripts/clients.sh
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
# Three test threads on CI's two cores: the end-to-end tests mostly wait on their local AWS and
# the iotreg child processes (measured: the tests/it binary in 296 s with 3, 371 s with 2).
cargo test --quiet -- --test-threads 3
.venv/bin/python -m pytest -q emulator/tests
# The built-in Lambda handler on its own (which readings alert, retries of a refused publish).
.venv/bin/python -m pytest -q -p no:cacheprovider tests/handler
