#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first (idempotently), so it works
# on a fresh machine: the Rust toolchain must be there; everything else comes from here.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# The tests read /proc and send signals with `kill` (procps).
command -v kill >/dev/null 2>&1 || need_apt+=(procps)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
    else
        echo "scripts/test.sh: missing ${need_apt[*]}; install them (apt-get install ${need_apt[*]})" >&2
        exit 1
    fi
fi

# The identity provider's tests validate its tokens with an independent OpenID Connect library
# (openid-client for Node), pinned by tests/js/package-lock.json.
if ! command -v npm >/dev/null 2>&1; then
    echo "scripts/test.sh: missing node and npm (Node 20+); install them (apt-get install nodejs npm)" >&2
    exit 1
fi
npm ci --prefix crates/postern/tests/js --no-audit --no-fund --silent

# A few test threads per binary on this 2-core machine: the end-to-end tests start real processes.
cargo test --workspace --locked -- --test-threads="${POSTERN_TEST_THREADS:-4}"
