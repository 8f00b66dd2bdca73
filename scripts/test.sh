#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the build and the tests need first
# (idempotently, scripts/install-deps.sh), so it works on a fresh machine: the Rust toolchain
# must be there; everything else comes from here.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

# The fuzz targets (crates/postern-fuzz) run their corpus, then random inputs for this long each.
export BOLERO_RANDOM_TEST_TIME_MS="${BOLERO_RANDOM_TEST_TIME_MS:-2000}"
# A few test threads per binary on this 2-core machine: the end-to-end tests start real processes.
cargo test --workspace --locked --no-fail-fast -- --test-threads="${POSTERN_TEST_THREADS:-4}"
# The Debian package, built from the binaries the tests just built, installed, run and purged.
scripts/package-test.sh
