#!/usr/bin/env bash
# Postern benchmark: the built-in OpenID Connect provider of one edge, on loopback.
#
#   sign-ins   IDP_CONCURRENCY clients each signing in with a password, again and again, for
#              IDP_SECONDS: GET /authorize, GET /signin (the form), POST /signin (the password,
#              an Argon2id check), GET /continue, up to the redirect back to the client with a
#              code. Every sign-in is a fresh browser (no cookies) on a new TLS connection.
#   redeem     every code from the sign-ins redeemed at the token endpoint (client_secret_basic,
#              PKCE S256), IDP_CONCURRENCY at a time, as a relying party's server would.
#   refresh    refresh-token grants (with rotation) for IDP_SECONDS, IDP_CONCURRENCY at a time.
#
# For each: operations/s, p50/p99 latency, errors and the edge's CPU per operation; and the
# Argon2id parameters the edge hashes with. Exits non-zero if anything failed. See
# bench/README.md.
#
# Usage:  bench/idp.sh                  (IDP_SECONDS=10, IDP_CONCURRENCY=8)
#         IDP_SECONDS=3 bench/idp.sh    (smoke run)
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$BENCH_DIR/.." && pwd)"

# ----------------------------------------------------------------------------
# Configuration (environment variables)
# ----------------------------------------------------------------------------
IDP_SECONDS=${IDP_SECONDS:-10}              # length of the sign-in and the refresh runs
IDP_CONCURRENCY=${IDP_CONCURRENCY:-8}       # clients at once, in every phase
IDP_USERS=${IDP_USERS:-64}                  # users signing in (at least IDP_CONCURRENCY)
IDP_SOURCE_ADDRESSES=${IDP_SOURCE_ADDRESSES:-1}  # 1 = each sign-in client from its own loopback
                                            # address (127.0.1.x); 0 = all from 127.0.0.1
IDP_SUT_CPUS=${IDP_SUT_CPUS:-1}             # taskset list for the edge ("" = no pinning)
IDP_LOAD_CPUS=${IDP_LOAD_CPUS:-0}           # taskset list for the load generator ("" = no pinning)
IDP_READY_TIMEOUT=${IDP_READY_TIMEOUT:-30}  # seconds to wait for the edge to come up
IDP_HOST=${IDP_HOST:-login.localhost}       # the provider's host (--idp-host): SNI and Host
IDP_KEEP=${IDP_KEEP:-0}                     # 1 = keep the work dir (edge data, logs, results)
POSTERN_BIN=${POSTERN_BIN:-$REPO_ROOT/target/release/postern}

REDIRECT_URI=https://rp.bench.example/callback   # never visited: the client reads the code from it

log()  { printf '[idp-bench] %s\n' "$*" >&2; }
die()  { printf '[idp-bench] ERROR: %s\n' "$*" >&2; exit 1; }

for v in IDP_SECONDS IDP_CONCURRENCY IDP_USERS IDP_READY_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
(( IDP_SECONDS > 0 )) || die "IDP_SECONDS must be > 0"
# 250 clients at most: one loopback source address each (127.0.1.1-250), and under the edge's
# 256 connections per address when they all come from 127.0.0.1.
(( IDP_CONCURRENCY >= 1 && IDP_CONCURRENCY <= 250 )) || die "IDP_CONCURRENCY must be 1 to 250"
(( IDP_USERS >= IDP_CONCURRENCY )) \
  || die "IDP_USERS ($IDP_USERS) must be at least IDP_CONCURRENCY ($IDP_CONCURRENCY): an account signs in one at a time"
[[ $IDP_SOURCE_ADDRESSES == [01] ]] || die "IDP_SOURCE_ADDRESSES must be 0 or 1"

command -v node    >/dev/null || die "node not found (Node 20: apt-get install nodejs)"
command -v python3 >/dev/null || die "python3 not found"
command -v curl    >/dev/null || die "curl not found"
if [[ -n $IDP_SUT_CPUS || -n $IDP_LOAD_CPUS ]]; then
  command -v taskset >/dev/null || die "taskset not found (util-linux), or set IDP_SUT_CPUS= IDP_LOAD_CPUS="
fi
[[ -x $POSTERN_BIN ]] || die "no binary at $POSTERN_BIN (cargo build --release -p postern, or set POSTERN_BIN)"

# ----------------------------------------------------------------------------
# Process management: everything started is recorded and killed on exit
# ----------------------------------------------------------------------------
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
KEEP_WORK=$IDP_KEEP
EDGE_PID=""

# pin CPUS: the command prefix that runs a command on CPUS (none when CPUS is empty), into PIN.
# taskset execs the command, so the PID of a started process is the command's own.
pin() {
  PIN=()
  if [[ -n $1 ]]; then PIN=(taskset -c "$1"); fi
}


edge_alive() { [[ -n $EDGE_PID ]] && kill -0 "$EDGE_PID" 2>/dev/null; }

show_edge_log() {
  local f="$WORK/logs/edge.log"
  [[ -s $f ]] || return 0
  grep -m 1 -A 1 'panicked at' "$f" | sed 's/^/    /' >&2 || true
  log "--- last lines of $f ---"
  tail -n 20 "$f" | sed 's/^/    /' >&2
}

# wait_until WHAT CMD...: until CMD succeeds, the edge staying up, within IDP_READY_TIMEOUT.
wait_until() {
  local what=$1; shift
  local deadline=$((SECONDS + IDP_READY_TIMEOUT))
  while (( SECONDS < deadline )); do
    edge_alive || { show_edge_log; die "the edge exited (waiting for $what)"; }
    "$@" 2>/dev/null && return 0
    sleep 0.05
  done
  show_edge_log; die "$what: not ready after ${IDP_READY_TIMEOUT}s"
}

# edge_ticks: the edge's user+sys CPU so far, in clock ticks (CLK_TCK a second)
CLK_TCK=$(getconf CLK_TCK)
edge_ticks() {
  local stat f
  stat=$(cat "/proc/$EDGE_PID/stat" 2>/dev/null) || { echo 0; return 0; }   # the edge is gone
  read -r -a f <<< "${stat##*) }"   # f[0] is field 3 (state); utime=field 14, stime=field 15
  echo $((f[11] + f[12]))
}

# busy_percent: share of all CPUs busy over the next second (from /proc/stat)
busy_percent() {
  local a b
  a=$(head -n 1 /proc/stat); sleep 1; b=$(head -n 1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {
    n = split(a, x); split(b, y); total = 0
    for (i = 2; i <= n; i++) total += y[i] - x[i]
    idle = (y[5] - x[5]) + (y[6] - x[6])
    printf "%.0f", (total > 0) ? 100 * (total - idle) / total : 0 }'
}

postern_admin() { postern_admin_at "$P_ADMIN" "$WORK/edge" "$@"; }

# ----------------------------------------------------------------------------
# Phases: each runs bench/idp.mjs once, measuring the edge's CPU around it
# ----------------------------------------------------------------------------
declare -A R=()   # "phase.key" -> figure

# phase NAME: runs `node idp.mjs NAME` on the load CPUs; keeps its IDP_RESULT fields as
# R[NAME.key] and the edge's CPU seconds as R[NAME.cpu_s]. Fails if the run failed.
phase() {
  local name=$1 out="$WORK/result-$1.txt" t0 t1 rc=0 kv
  t0=$(edge_ticks)
  pin "$IDP_LOAD_CPUS"
  run_waited "$out" "$WORK/logs/idp-mjs.log" timeout $((IDP_SECONDS + 120)) \
    "${PIN[@]}" node "$BENCH_DIR/idp.mjs" "$name" "$WORK/config.json" || rc=$?
  t1=$(edge_ticks)
  R[$name.cpu_s]=$(awk -v a="$t0" -v b="$t1" -v h="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / h }')
  local fields=()
  read -r -a fields <<< "$(sed -n 's/^IDP_RESULT //p' "$out")"
  for kv in "${fields[@]}"; do R[$name.${kv%%=*}]=${kv#*=}; done
  if (( rc != 0 )) || [[ -z ${R[$name.done]:-} ]]; then
    log "$name: node idp.mjs failed (exit $rc); its log:"
    tail -n 20 "$WORK/logs/idp-mjs.log" | sed 's/^/    /' >&2
    edge_alive || { show_edge_log; log "the edge is gone"; }
    return 1
  fi
  log "$name: ${R[$name.done]} done${R[$name.seconds]:+ in ${R[$name.seconds]} s}, ${R[$name.errors]} errors, edge CPU ${R[$name.cpu_s]} s"
}

# error_kinds: the failures idp.mjs counted, by phase, step and answer ("signin: 3 x POST /signin -> 429").
error_kinds() { sed -n 's/^\[idp\.mjs\] \([a-z]*: [0-9]* x .*\)$/\1/p' "$WORK/logs/idp-mjs.log"; }

# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------
BUSY_BEFORE=$(busy_percent)
(( BUSY_BEFORE > 15 )) && log "WARNING: the machine is already ${BUSY_BEFORE}% busy (a build running?); the figures will be noisy"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/postern-idp-bench.XXXXXX")
mkdir -p "$WORK/logs"
log "work dir: $WORK"
read -r P_PUBLIC P_CONNECTOR P_ADMIN <<< "$(free_ports 3)"

# The edge's per-address limits are lifted because the load is not what they are for:
#   --requests-per-ip 0     every token request comes from one address (the relying party's
#                           server, 127.0.0.1), thousands a second, past the default 500/s;
#   --handshakes-per-ip 0   every sign-in opens a new TLS connection, all from 127.0.0.1 with
#                           IDP_SOURCE_ADDRESSES=0 (default 100/s).
# The provider's own brute-force throttles have no flag and stay on: per account, each user has
# at most one sign-in in flight (client w signs in as users w, w+C, …); per address, an attempt
# counts as a failure until its password checks out, 20 are free, so IDP_SOURCE_ADDRESSES=1 gives
# each client its own loopback address, as people signing in from their own machines (with 0,
# more than about 20 clients are throttled by design).
pin "$IDP_SUT_CPUS"
"${PIN[@]}" "$POSTERN_BIN" edge --data "$WORK/edge" \
  --listen "127.0.0.1:$P_PUBLIC" --connector-listen "127.0.0.1:$P_CONNECTOR" \
  --admin-listen "127.0.0.1:$P_ADMIN" --idp-host "$IDP_HOST" \
  --requests-per-ip 0 --handshakes-per-ip 0 \
  >"$WORK/logs/edge.log" 2>&1 </dev/null &
EDGE_PID=$!
PIDS+=("$EDGE_PID")
log "started edge (pid $EDGE_PID), provider at https://$IDP_HOST:$P_PUBLIC"

wait_until "edge admin token" test -s "$WORK/edge/admin-token"
wait_until "edge CA" test -s "$WORK/edge/ca.pem"
wait_until "admin listener" tcp_open "$P_ADMIN"
wait_until "public listener" tcp_open "$P_PUBLIC"
discovery_ok() {
  [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$WORK/edge/ca.pem" \
        --resolve "$IDP_HOST:$P_PUBLIC:127.0.0.1" \
        "https://$IDP_HOST:$P_PUBLIC/.well-known/openid-configuration") == 200 ]]
}
wait_until "the provider's discovery document" discovery_ok

# Users and the client. One password for all (the policy refuses one containing the email's
# local part, which a random one never does).
PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
printf '%s\n' "$PASSWORD" > "$WORK/password"
chmod 600 "$WORK/password"
USERS=()
for ((i = 1; i <= IDP_USERS; i++)); do USERS+=("$(printf 'bench-%04d@example.com' "$i")"); done
log "creating $IDP_USERS users"
# Each creation hashes the password on the edge; a few at a time are quicker than one by one.
printf '%s\n' "${USERS[@]}" | xargs -P 4 -I '{}' timeout 60 "$POSTERN_BIN" admin \
  --admin-url "https://127.0.0.1:$P_ADMIN" --token-file "$WORK/edge/admin-token" \
  --ca-file "$WORK/edge/ca.pem" user create '{}' --password-file "$WORK/password" \
  >>"$WORK/logs/postern-admin.log" 2>&1 \
  || { tail -n 5 "$WORK/logs/postern-admin.log" >&2; die "postern admin user create failed"; }
postern_admin --json client create bench --redirect-uri "$REDIRECT_URI" > "$WORK/client.json" \
  || { tail -n 5 "$WORK/logs/postern-admin.log" >&2; die "postern admin client create failed"; }

# The Argon2id parameters in use: read from the hashes the edge just stored (what this binary
# does), not assumed from the source. The code makes them with argon2's Params::default()
# (crates/postern-idp/src/password.rs).
read -r ARGON_M ARGON_T ARGON_P ARGON_USERS <<< "$(python3 - "$WORK/edge/state.db" <<'PY'
import re, sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
rows = [r[0] for r in db.execute("SELECT password_hash FROM idp_users")]
params = {re.match(r"\$argon2id\$v=\d+\$m=(\d+),t=(\d+),p=(\d+)\$", h).groups() for h in rows}
assert len(params) == 1, f"the users' hashes differ in parameters: {params}"
print(*params.pop(), len(rows))
PY
)" || die "cannot read the Argon2id parameters from $WORK/edge/state.db"
(( ARGON_USERS == IDP_USERS )) || die "expected $IDP_USERS users in the store, found $ARGON_USERS"
# The hashing pool's bounds, from the source (they are constants, not flags).
HASHING_RS=$REPO_ROOT/crates/postern-idp/src/hashing.rs
const_of() { sed -n "s/^pub const $1: [a-zA-Z]* = \(.*\);$/\1/p" "$HASHING_RS" 2>/dev/null; }
HASH_JOBS=$(const_of MAX_HASH_JOBS); HASH_QUEUE=$(const_of HASH_QUEUE_DEPTH)
HASH_WAIT=$(sed -n 's/^pub const HASH_QUEUE_WAIT: Duration = Duration::from_secs(\([0-9]*\));$/\1 s/p' "$HASHING_RS" 2>/dev/null)

python3 - "$WORK" <<PY
import json, sys
work = sys.argv[1]
client = json.load(open(f"{work}/client.json"))
json.dump({
    "host": "$IDP_HOST", "port": $P_PUBLIC, "ca": f"{work}/edge/ca.pem",
    "clientId": client["client_id"], "clientSecret": client["client_secret"],
    "redirectUri": "$REDIRECT_URI", "password": open(f"{work}/password").read().strip(),
    "users": "${USERS[*]}".split(), "concurrency": $IDP_CONCURRENCY, "seconds": $IDP_SECONDS,
    "sourceAddresses": $IDP_SOURCE_ADDRESSES == 1, "work": work,
}, open(f"{work}/config.json", "w"))
PY
chmod 600 "$WORK/config.json"

log "checking the flow once (sign-in, redemption, ID token signature, refresh)"
phase check || die "the sign-in flow does not work (see above); nothing measured"
log "measuring sign-ins: $IDP_CONCURRENCY clients, ${IDP_SECONDS}s"
FAILED=0
phase signin || FAILED=1
if (( ! FAILED )); then
  log "measuring code redemptions: ${R[signin.done]} codes, $IDP_CONCURRENCY clients"
  phase redeem || FAILED=1
fi
if (( ! FAILED )); then
  log "measuring refresh-token grants: $IDP_CONCURRENCY clients, ${IDP_SECONDS}s"
  phase refresh || FAILED=1
fi
EDGE_PEAK_KIB=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$EDGE_PID/status" 2>/dev/null || true)

# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------
# row LABEL PHASE: one line of the table (a dash where the phase did not run).
row() {
  local label=$1 p=$2
  if [[ -z ${R[$p.done]:-} ]]; then printf '%-36s %s\n' "$label" "not run"; return; fi
  printf '%-36s %7s %9.1f %9.1f %9.1f %12s %7s\n' "$label" "${R[$p.done]}" "${R[$p.rate]}" \
    "${R[$p.p50_ms]}" "${R[$p.p99_ms]}" \
    "$(awk -v c="${R[$p.cpu_s]}" -v n="${R[$p.done]}" 'BEGIN { if (n > 0) printf "%.2f", c * 1000 / n; else printf "-" }')" \
    "${R[$p.errors]}"
}

echo
echo "Postern identity provider benchmark — $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), $(nproc) CPUs, ${BUSY_BEFORE}% busy before start"
echo "edge on CPU ${IDP_SUT_CPUS:-any}, load generator (node) on CPU ${IDP_LOAD_CPUS:-any}; $IDP_CONCURRENCY clients;" \
     "$IDP_USERS users; ${IDP_SECONDS}s timed runs; sign-ins from $( ((IDP_SOURCE_ADDRESSES)) && echo "one loopback address per client" || echo "127.0.0.1")"
echo "Argon2id: m=$ARGON_M KiB ($(awk -v m="$ARGON_M" 'BEGIN { printf "%g", m / 1024 }') MiB), t=$ARGON_T iterations, p=$ARGON_P lane(s)" \
     "(from the $ARGON_USERS stored hashes; Params::default() in postern-idp/src/password.rs)"
echo "hashing pool: ${HASH_JOBS:-?} at once, ${HASH_QUEUE:-?} waiting, at most ${HASH_WAIT:-?} (postern-idp/src/hashing.rs)"
echo
printf '%-36s %7s %9s %9s %9s %12s %7s\n' phase "done" "per s" "p50 ms" "p99 ms" "edge CPU ms" errors
row "password sign-in (4 requests)" signin
if [[ -n ${R[signin.post_p50_ms]:-} ]]; then
  printf '%-36s %7s %9s %9.1f %9.1f %12s %7s\n' "  of which POST /signin (Argon2id)" - - \
    "${R[signin.post_p50_ms]}" "${R[signin.post_p99_ms]}" - -
fi
row "token: authorization_code + PKCE" redeem
row "token: refresh_token (rotation)" refresh
echo
echo "done = operations completed; per s = done / time from the first start to the last end."
echo "edge CPU ms = the edge's user+sys CPU (all threads) over the run, per operation."
[[ -n ${R[redeem.skipped]:-} && ${R[redeem.skipped]} != 0 ]] && echo "codes skipped as about to expire (60 s lifetime): ${R[redeem.skipped]}"
[[ -n $EDGE_PEAK_KIB ]] && echo "edge peak RSS (VmHWM): $(awk -v k="$EDGE_PEAK_KIB" 'BEGIN { printf "%.1f MiB", k / 1024 }')"

ERRORS=$(( ${R[signin.errors]:-0} + ${R[redeem.errors]:-0} + ${R[refresh.errors]:-0} ))
if (( ERRORS > 0 )); then
  echo "errors by kind:"
  error_kinds | sed 's/^/  /'
fi
if (( FAILED || ERRORS > 0 )); then
  log "FAILED: $ERRORS errors$( ((FAILED)) && echo ", and a phase did not complete"); logs in $WORK/logs"
  exit 1
fi
