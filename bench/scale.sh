#!/usr/bin/env bash
# Postern at scale: what one edge and one connector need to hold many long-lived connections, on
# loopback.
#
#   1. SCALE_WEBSOCKETS WebSockets (default 10,000): client -> (TLS) edge -> (mTLS tunnel)
#      connector -> WebSocket echo backend (Node, npm ws), opened at a bounded concurrency, then
#      each echoing a small message every SCALE_MESSAGE_INTERVAL seconds for SCALE_SECONDS.
#   2. SCALE_IDLE_CONNECTIONS HTTPS connections (default 10,000) at the edge, one GET each through
#      the tunnel, then kept open idle.
#
# Reports opens and their failures, echoes sent/echoed/mismatched/lost, and the VmRSS of the edge
# and connector before, with everything open and after closing, with memory per connection.
# Exits non-zero if any WebSocket failed or lost an echo, or any idle connection was refused.
#
# Usage:  bench/scale.sh
#         SCALE_WEBSOCKETS=500 SCALE_IDLE_CONNECTIONS=500 SCALE_SECONDS=5 bench/scale.sh   (smoke)
# shellcheck disable=SC2317  # cleanup, tcp_open and through are called through trap and wait_until
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$BENCH_DIR/.." && pwd)"

# ----------------------------------------------------------------------------
# Configuration (environment variables)
# ----------------------------------------------------------------------------
SCALE_WEBSOCKETS=${SCALE_WEBSOCKETS:-10000}              # concurrent WebSockets (0 = skip)
SCALE_IDLE_CONNECTIONS=${SCALE_IDLE_CONNECTIONS:-10000}  # idle keep-alive connections (0 = skip)
SCALE_SECONDS=${SCALE_SECONDS:-20}                       # how long the WebSockets exchange messages
SCALE_MESSAGE_INTERVAL=${SCALE_MESSAGE_INTERVAL:-5}      # seconds between a socket's messages
SCALE_OPEN_CONCURRENCY=${SCALE_OPEN_CONCURRENCY:-200}    # connections being opened at once
SCALE_SETTLE_SECONDS=${SCALE_SETTLE_SECONDS:-3}          # idle time before the "all open" sample
SCALE_RELEASE_SECONDS=${SCALE_RELEASE_SECONDS:-15}       # wait after closing before the "after" sample
SCALE_TUNNELS=${SCALE_TUNNELS:-}                         # connector run --tunnels (empty = its default)
SCALE_NOFILE=${SCALE_NOFILE:-200000}                     # ulimit -n wanted for every process
SCALE_READY_TIMEOUT=${SCALE_READY_TIMEOUT:-30}           # seconds to wait for a component to come up
SCALE_INSTALL=${SCALE_INSTALL:-1}                        # 1 = npm ci --prefix bench if ws is missing
SCALE_KEEP=${SCALE_KEEP:-0}                              # 1 = keep the work dir (logs, JSON results)
SCALE_HOST=${SCALE_HOST:-scale.localhost}                # external host of the app (SNI and Host)
POSTERN_BIN=${POSTERN_BIN:-$REPO_ROOT/target/release/postern}

log() { printf '[scale] %s\n' "$*" >&2; }
die() { printf '[scale] ERROR: %s\n' "$*" >&2; exit 1; }

for v in SCALE_WEBSOCKETS SCALE_IDLE_CONNECTIONS SCALE_SECONDS SCALE_MESSAGE_INTERVAL \
         SCALE_OPEN_CONCURRENCY SCALE_SETTLE_SECONDS SCALE_RELEASE_SECONDS SCALE_NOFILE \
         SCALE_READY_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
[[ -z $SCALE_TUNNELS || $SCALE_TUNNELS =~ ^[1-9][0-9]*$ ]] || die "SCALE_TUNNELS must be a positive integer"
(( SCALE_OPEN_CONCURRENCY > 0 && SCALE_MESSAGE_INTERVAL > 0 )) \
  || die "SCALE_OPEN_CONCURRENCY and SCALE_MESSAGE_INTERVAL must be > 0"
[[ -x $POSTERN_BIN ]] || die "no binary at $POSTERN_BIN (cargo build --release -p postern, or set POSTERN_BIN)"
command -v node >/dev/null || die "node not found (Node 20 or later)"
command -v python3 >/dev/null || die "python3 not found (picks free ports)"

# Every socket is a file descriptor: the client and the backend hold one per connection, the
# edge one per client connection, the connector one per WebSocket to the backend. Raised here
# so that all of them inherit it; without CAP_SYS_RESOURCE only up to the hard limit.
if ! ulimit -n "$SCALE_NOFILE" 2>/dev/null; then
  ulimit -n "$(ulimit -Hn)"
  log "ulimit -n $SCALE_NOFILE not allowed (hard limit $(ulimit -Hn)); using $(ulimit -n)"
fi
NEED_FDS=$(( (SCALE_WEBSOCKETS > SCALE_IDLE_CONNECTIONS ? SCALE_WEBSOCKETS : SCALE_IDLE_CONNECTIONS) + 1024 ))
if [[ $(ulimit -n) != unlimited ]] && (( $(ulimit -n) < NEED_FDS )); then
  log "WARNING: ulimit -n is $(ulimit -n), below the ~$NEED_FDS descriptors a process needs here"
fi

# npm ws, from the committed lock file.
if [[ ! -f $BENCH_DIR/node_modules/ws/package.json ]]; then
  [[ $SCALE_INSTALL == 1 ]] || die "npm package ws missing: npm ci --prefix $BENCH_DIR"
  log "npm ci --prefix $BENCH_DIR (npm ws)"
  timeout 300 npm ci --prefix "$BENCH_DIR" --no-audit --no-fund --loglevel=error >&2 \
    || die "npm ci --prefix $BENCH_DIR failed"
fi

# ----------------------------------------------------------------------------
# Process management (as in run.sh): everything started is recorded and killed on exit
# ----------------------------------------------------------------------------
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
KEEP_WORK=$SCALE_KEEP

# wait_until NAME WHAT CMD...: poll CMD until it succeeds, failing at once if NAME exits.
wait_until() {
  local name=$1 what=$2; shift 2
  local deadline=$((SECONDS + SCALE_READY_TIMEOUT))
  while (( SECONDS < deadline )); do
    "$@" 2>/dev/null && return 0
    alive "$name" || { show_log "$name"; die "$name exited while waiting for $what"; }
    sleep 0.05
  done
  show_log "$name"; die "$name: no $what within ${SCALE_READY_TIMEOUT}s"
}

postern_admin() { postern_admin_at "$P_ADMIN" "$WORK/edge" "$@"; }

# ----------------------------------------------------------------------------
# Setup: backend, edge, one app, one connector
# ----------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/postern-scale.XXXXXX")
mkdir -p "$WORK/logs" "$WORK/edge" "$WORK/connector"
log "work dir: $WORK"
read -r P_BACKEND P_PUBLIC P_CONNECTOR P_ADMIN <<< "$(free_ports 4)"

start backend node "$BENCH_DIR/scale.mjs" backend "$P_BACKEND"
wait_until backend "port $P_BACKEND" tcp_open "$P_BACKEND"

# The edge's defaults protect it from one address opening many connections (256 at once, 100
# handshakes and 500 requests a second, 128 requests or WebSockets in flight); here every client
# is 127.0.0.1, so they would be the thing measured. They are lifted, as is --idle-timeout
# (1 min), how long a keep-alive connection at rest stays open: the idle phase's first connections
# wait, idle, for the others to open and the settle time, about 45 s for 10,000 on an otherwise
# idle 2-core machine and over a minute on a busy one, and the edge would close them (after 60 s,
# as it should). An upgraded WebSocket has no idle timeout at the edge. --max-connections stays
# below the file-descriptor limit: the edge caps it there itself and says so in its log (shown at
# the end).
start edge "$POSTERN_BIN" edge --data "$WORK/edge" \
  --listen "127.0.0.1:$P_PUBLIC" --connector-listen "127.0.0.1:$P_CONNECTOR" \
  --admin-listen "127.0.0.1:$P_ADMIN" \
  --max-connections 1000000 --max-connections-per-ip 1000000 \
  --handshakes-per-ip 0 --requests-per-ip 0 --requests-in-flight-per-ip 0 --idle-timeout 10m
wait_until edge admin-token test -s "$WORK/edge/admin-token"
wait_until edge ca.pem test -s "$WORK/edge/ca.pem"
for port in "$P_ADMIN" "$P_CONNECTOR" "$P_PUBLIC"; do wait_until edge "port $port" tcp_open "$port"; done

postern_admin group create scale >>"$WORK/logs/postern-admin.log" \
  || { show_log postern-admin; die "postern admin group create failed"; }
postern_admin app publish scale --external-url "https://$SCALE_HOST:$P_PUBLIC" \
  --internal-url "http://127.0.0.1:$P_BACKEND" --group scale --preauth passthrough \
  >>"$WORK/logs/postern-admin.log" || { show_log postern-admin; die "postern admin app publish failed"; }
token=$(postern_admin connector token --group scale | tr -d '[:space:]') || token=""
[[ -n $token ]] || { show_log postern-admin; die "postern admin connector token failed"; }
timeout 60 "$POSTERN_BIN" connector register --edge "https://127.0.0.1:$P_CONNECTOR" \
  --token "$token" --state "$WORK/connector" --ca-file "$WORK/edge/ca.pem" \
  >"$WORK/logs/connector-register.log" 2>&1 \
  || { show_log connector-register; die "postern connector register failed"; }
start connector "$POSTERN_BIN" connector run --state "$WORK/connector" ${SCALE_TUNNELS:+--tunnels "$SCALE_TUNNELS"}

# Ready once a request goes all the way through: edge -> tunnel -> connector -> backend.
through() {
  alive connector || return 1
  [[ $(curl -s -o /dev/null -w '%{http_code} %{size_download}' --max-time 5 \
         --cacert "$WORK/edge/ca.pem" --resolve "$SCALE_HOST:$P_PUBLIC:127.0.0.1" \
         "https://$SCALE_HOST:$P_PUBLIC/small") == "200 64" ]]
}
wait_until edge "answer through the tunnel" through

# ----------------------------------------------------------------------------
# The two phases, one after the other on the same edge and connector
# ----------------------------------------------------------------------------
client_env=(env SCALE_HOST="$SCALE_HOST" SCALE_EDGE_PORT="$P_PUBLIC" SCALE_CA="$WORK/edge/ca.pem"
  SCALE_PIDS="edge=${PID_OF[edge]} connector=${PID_OF[connector]} backend=${PID_OF[backend]}"
  SCALE_WEBSOCKETS="$SCALE_WEBSOCKETS" SCALE_IDLE_CONNECTIONS="$SCALE_IDLE_CONNECTIONS"
  SCALE_SECONDS="$SCALE_SECONDS" SCALE_MESSAGE_INTERVAL="$SCALE_MESSAGE_INTERVAL"
  SCALE_OPEN_CONCURRENCY="$SCALE_OPEN_CONCURRENCY" SCALE_SETTLE_SECONDS="$SCALE_SETTLE_SECONDS"
  SCALE_RELEASE_SECONDS="$SCALE_RELEASE_SECONDS")
# The client's heap grows with the sockets it holds (some tens of KiB each with TLS).
node_client=(node --max-old-space-size=4096 "$BENCH_DIR/scale.mjs")

: >"$WORK/websockets.json"
: >"$WORK/idle.json"
if (( SCALE_WEBSOCKETS > 0 )); then
  log "phase 1: $SCALE_WEBSOCKETS WebSockets, ${SCALE_SECONDS}s of echoes (progress: $WORK/logs/client.log)"
  run_waited "$WORK/websockets.json" "$WORK/logs/client.log" "${client_env[@]}" "${node_client[@]}" websockets \
    || die "the WebSocket client failed (see $WORK/logs/client.log)"
fi
if (( SCALE_IDLE_CONNECTIONS > 0 )); then
  log "phase 2: $SCALE_IDLE_CONNECTIONS idle HTTPS connections"
  run_waited "$WORK/idle.json" "$WORK/logs/client.log" "${client_env[@]}" "${node_client[@]}" idle \
    || die "the idle-connection client failed (see $WORK/logs/client.log)"
fi

# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------
echo
echo "Postern at scale — $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), $(nproc) CPUs, ulimit -n $(ulimit -n)," \
     "connector tunnels: ${SCALE_TUNNELS:-default}"
rc=0
node "$BENCH_DIR/scale.mjs" report "$WORK/websockets.json" "$WORK/idle.json" || rc=$?
for name in edge connector backend; do
  alive "$name" || { echo "  $name is not running any more (see $WORK/logs/$name.log)"; rc=1; }
done
# What the edge and connector complained about, counted by message (limits hit, upgrades failed).
for name in edge connector; do
  if grep -Eq ' (WARN|ERROR) ' "$WORK/logs/$name.log"; then
    echo "  $name log warnings/errors (count × message):"
    sed -E 's/\x1b\[[0-9;]*m//g' "$WORK/logs/$name.log" | grep -E ' (WARN|ERROR) ' \
      | sed -E 's/^[^ ]+ +//; s/(peer|latest|request_id|tunnel|id)=[^ ]+/\1=…/g' \
      | sort | uniq -c | sort -rn | head -n 10 | sed 's/^/    /'
  fi
done
exit "$rc"   # the work dir is kept on failure (see cleanup)
