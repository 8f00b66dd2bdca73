#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the build and the tests need first
# (idempotently, scripts/install-deps.sh), so it works on a fresh machine: the Rust toolchain
# must be there; everything else comes from here.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

# A few test threads per binary on this 2-core machine: the end-to-end tests start real processes.
cargo test --workspace --locked -- --test-threads="${POSTERN_TEST_THREADS:-4}"
