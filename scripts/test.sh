#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first (idempotently), so it works
# on a fresh machine: the Rust toolchain must be there; everything else comes from here.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# The tests read /proc and send signals with `kill` (procps).
command -v kill >/dev/null 2>&1 || need_apt+=(procps)
# Independent peers: the npm OpenID provider and Playwright run on Node; pages are tested in
# Debian's Chromium.
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
    else
        echo "scripts/test.sh: missing ${need_apt[*]}; install them (apt-get install ${need_apt[*]})" >&2
        exit 1
    fi
fi

# The Node peers, from the committed lock file; reinstalled only when the lock file changes.
peers=crates/postern/tests/js
stamp="$peers/node_modules/.installed-from"
want=$(sha256sum "$peers/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    npm ci --prefix "$peers" --no-audit --no-fund --loglevel=error
    echo "$want" > "$stamp"
fi

# A few test threads per binary on this 2-core machine: the end-to-end tests start real processes.
cargo test --workspace --locked -- --test-threads="${POSTERN_TEST_THREADS:-4}"
