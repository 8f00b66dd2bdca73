#!/usr/bin/env bash
# Postern soak: normal users at saturation while every anonymous attack runs at once (oversized
# heads, clients that stop reading, silent TLS connections, a request flood, a sign-in flood, an
# authorization flood), on a release build, with the edge's and connector's memory sampled.
#
# Passes when no normal request failed and memory falls back to its baseline after the attack.
#
# Usage:  bench/soak.sh              (60 s of attack)
#         SOAK_SECONDS=300 bench/soak.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
POSTERN_SOAK_SECONDS=${SOAK_SECONDS:-60} exec cargo test --release -p postern --test soak -- --nocapture
