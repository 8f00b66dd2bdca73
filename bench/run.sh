#!/usr/bin/env bash
# Postern benchmark: the same backend reached several ways, on loopback, in one run.
#
#   direct       wrk -> backend nginx (plain HTTP)
#   nginx        wrk -> nginx reverse proxy -> backend
#   nginx_tls    wrk -> (HTTPS: TLS 1.3, HTTP/1.1) nginx reverse proxy -> backend: nginx as one
#                TLS hop (a self-signed certificate made at setup)
#   rathole      wrk -> rathole server -> (TCP tunnel) -> rathole client -> backend
#   rathole_tls  as rathole, with rathole's TLS transport between server and client (a CA and a
#                server certificate made at setup; the client checks the server's)
#   postern      wrk -> (HTTPS) postern edge -> (mTLS tunnel) -> postern connector -> backend
#   postern-sso  as postern (same edge and connector), to a second app published with
#                pre-authentication (OpenID Connect against the test suite's oidc-provider),
#                every request carrying a signed-in session cookie
#   postern-observed  as postern, through a second edge and connector that write the access
#                log (to a file) and serve /metrics (scraped once a second during the run), to
#                compare the cost of observability in the same run
#
# For each path: req/s and p50/p99 latency for a 64-byte response (keep-alive),
# MB/s for a 1 MiB response, CPU time per request of the proxy/tunnel processes,
# and, for the tunnels, the idle RSS of both ends; Postern's figures as ratios to the other
# proxies' (nginx_tls and rathole_tls carry TLS on the wire, as Postern does). See bench/README.md.
#
# Usage:  bench/run.sh                  (full run, BENCH_SECONDS=10 per measurement)
#         BENCH_SECONDS=2 bench/run.sh  (smoke run)
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$BENCH_DIR/.." && pwd)"

# ----------------------------------------------------------------------------
# Configuration (environment variables)
# ----------------------------------------------------------------------------
BENCH_SECONDS=${BENCH_SECONDS:-10}                 # duration of each measured wrk run
BENCH_WARMUP_SECONDS=${BENCH_WARMUP_SECONDS:-1}    # unmeasured wrk run before each measurement (0 = none)
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}         # keep-alive connections for the 64-byte test
BENCH_LARGE_CONNECTIONS=${BENCH_LARGE_CONNECTIONS:-8}  # connections for the 1 MiB test
BENCH_THREADS=${BENCH_THREADS:-1}                  # wrk threads (all on the load CPU)
BENCH_ROUNDS=${BENCH_ROUNDS:-1}                    # rounds of both tests, paths interleaved in each; the
                                                   # figures are then each path's median round
BENCH_PATHS=${BENCH_PATHS:-"direct nginx nginx_tls rathole rathole_tls postern postern-sso postern-observed"}
BENCH_LOAD_CPUS=${BENCH_LOAD_CPUS:-0}              # taskset list for wrk
BENCH_SUT_CPUS=${BENCH_SUT_CPUS:-1}                # taskset list for everything under test
BENCH_READY_TIMEOUT=${BENCH_READY_TIMEOUT:-30}     # seconds to wait for a component to come up
BENCH_INSTALL=${BENCH_INSTALL:-1}                  # 1 = apt-get/cargo install missing tools
BENCH_BUILD_POSTERN=${BENCH_BUILD_POSTERN:-1}      # 1 = cargo build --release -p postern if the binary is
                                                   # missing; always = rebuild (no-op when fresh); 0 = never
BENCH_BUILD_TIMEOUT=${BENCH_BUILD_TIMEOUT:-3600}
BENCH_INSTRUCTIONS=${BENCH_INSTRUCTIONS:-0}        # 1 = run the Postern edge and connector under callgrind and
                                                   # count their instructions per request (repeatable where
                                                   # seconds are not; about 50x slower, so keep runs short)
BENCH_KEEP=${BENCH_KEEP:-0}                        # 1 = keep the work dir (configs, logs, raw wrk output)
BENCH_RESULTS_TSV=${BENCH_RESULTS_TSV:-}           # optional file to write the figures to as TSV
POSTERN_BIN=${POSTERN_BIN:-$REPO_ROOT/target/release/postern}
POSTERN_HOST=${POSTERN_HOST:-bench.localhost}      # external host name of the published app
POSTERN_SSO_HOST=${POSTERN_SSO_HOST:-sso.localhost}  # external host name of the pre-authenticated app

SMALL_PATH=/64b
LARGE_PATH=/1m
SMALL_SIZE=64
LARGE_SIZE=1048576

ALL_PATHS=(direct nginx nginx_tls rathole rathole_tls postern postern-sso postern-observed)

# postern-sso: the OpenID provider the test suite runs against (npm oidc-provider).
SSO_JS_DIR=$REPO_ROOT/crates/postern/tests/js
SSO_EMAIL=bench@example.com
SSO_SKIP=""            # set to "skipped: ..." when node or the provider's npm deps are missing

# ----------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------
log()  { printf '[bench] %s\n' "$*" >&2; }
die()  { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }
want() { [[ " $BENCH_PATHS " == *" $1 "* ]]; }   # is path $1 selected?

# Floating point via awk: calc '<expr>' (variables passed as a=1 b=2 ...)
calc() { local expr=$1; shift; awk "$@" "BEGIN { printf \"%s\", $expr }" </dev/null; }

# ratio VALUE BASE -> "0.42x" (or "-" if either side is missing)
ratio() {
  if [[ -z ${1:-} || -z ${2:-} ]]; then printf -- '-'; return; fi
  awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else printf "-" }'
}

for v in BENCH_SECONDS BENCH_WARMUP_SECONDS BENCH_CONNECTIONS BENCH_LARGE_CONNECTIONS \
         BENCH_THREADS BENCH_READY_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
(( BENCH_SECONDS > 0 )) || die "BENCH_SECONDS must be > 0"
(( BENCH_THREADS >= 1 && BENCH_THREADS <= BENCH_CONNECTIONS && BENCH_THREADS <= BENCH_LARGE_CONNECTIONS )) \
  || die "BENCH_THREADS must be between 1 and the connection counts"
for p in $BENCH_PATHS; do
  [[ " ${ALL_PATHS[*]} " == *" $p "* ]] || die "unknown path '$p' in BENCH_PATHS (known: ${ALL_PATHS[*]})"
done

# ----------------------------------------------------------------------------
# Tools: install what is missing, idempotently
# ----------------------------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin:${CARGO_HOME:-$HOME/.cargo}/bin"

APT_UPDATED=0
apt_install() {
  [[ $BENCH_INSTALL == 1 ]] || die "missing packages: $* (and BENCH_INSTALL=0)"
  [[ $(id -u) == 0 ]] || die "missing packages: $* (run as root, or install them yourself)"
  command -v apt-get >/dev/null || die "missing packages: $* and no apt-get"
  if [[ $APT_UPDATED == 0 ]]; then
    log "apt-get update"
    apt-get update -qq >&2
    APT_UPDATED=1
  fi
  # Debian's nginx package starts the system nginx on :80 at install time unless
  # a policy-rc.d forbids it; we only want the binary. Use a temporary one.
  local made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  log "apt-get install -y $*"
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 || rc=$?
  [[ $made_policy == 1 ]] && rm -f /usr/sbin/policy-rc.d
  return $rc
}

ensure_tools() {
  local missing=()
  command -v python3 >/dev/null || missing+=(python3)
  command -v curl    >/dev/null || missing+=(curl)
  command -v taskset >/dev/null || missing+=(util-linux)
  command -v timeout >/dev/null || missing+=(coreutils)
  command -v pgrep   >/dev/null || missing+=(procps)
  command -v wrk     >/dev/null || missing+=(wrk)
  if want nginx_tls || want rathole_tls; then
    command -v openssl >/dev/null || missing+=(openssl)   # the certificates, made at setup
  fi
  if (( ${#missing[@]} )); then apt_install "${missing[@]}"; fi
  if ! command -v nginx >/dev/null; then
    apt_install nginx-light || apt_install nginx
  fi
  command -v nginx >/dev/null || die "nginx not found after install"
  command -v wrk   >/dev/null || die "wrk not found after install"

  if { want rathole || want rathole_tls; } && ! command -v rathole >/dev/null; then
    [[ $BENCH_INSTALL == 1 ]] || die "rathole not on PATH (and BENCH_INSTALL=0)"
    command -v cargo >/dev/null || die "rathole not on PATH and no cargo to install it"
    # The server+client with the TLS transport (rathole_tls; native-tls, i.e. the system's
    # OpenSSL, so its headers are needed to build); none of the noise/websocket/hot-reload
    # extras. If that build fails, the plain-TCP one (no OpenSSL needed): rathole_tls is then
    # skipped with the reason, the rathole path still runs. (Not --locked: its lock file no
    # longer builds on current Rust.)
    if ! pkg-config --exists openssl 2>/dev/null; then
      if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        apt_install libssl-dev pkg-config || log "could not install libssl-dev; rathole's TLS build may fail"
      else
        log "no OpenSSL headers (libssl-dev) and not root: rathole's TLS build may fail"
      fi
    fi
    log "cargo install rathole (one-time, takes a few minutes)"
    cargo install rathole --no-default-features --features server,client,tls >&2 \
      || { log "cargo install rathole with TLS failed; installing the plain-TCP build (rathole_tls will be skipped)"
           cargo install rathole --no-default-features --features server,client >&2; } \
      || cargo install rathole >&2 \
      || die "cargo install rathole failed"
  fi

  if want postern-sso; then ensure_sso_deps || true; fi   # on failure SSO_SKIP says why
}

# ensure_sso_deps: node and the OpenID provider's npm packages (from the committed lock file,
# as scripts/test.sh installs them). On failure, sets SSO_SKIP and the path is skipped.
ensure_sso_deps() {
  if [[ ! -f $SSO_JS_DIR/issuer.mjs ]]; then
    SSO_SKIP="skipped: no OpenID provider script at $SSO_JS_DIR/issuer.mjs"; return 1
  fi
  if ! command -v node >/dev/null; then
    SSO_SKIP="skipped: node not found (apt-get install nodejs npm; then npm ci --prefix $SSO_JS_DIR)"
    return 1
  fi
  [[ -f $SSO_JS_DIR/node_modules/oidc-provider/package.json ]] && return 0
  if [[ $BENCH_INSTALL != 1 ]] || ! command -v npm >/dev/null; then
    SSO_SKIP="skipped: npm package oidc-provider not installed (npm ci --prefix $SSO_JS_DIR)"
    return 1
  fi
  log "npm ci --prefix $SSO_JS_DIR (the OpenID provider for postern-sso)"
  if ! timeout 600 npm ci --prefix "$SSO_JS_DIR" --no-audit --no-fund --loglevel=error >&2 \
     || [[ ! -f $SSO_JS_DIR/node_modules/oidc-provider/package.json ]]; then
    SSO_SKIP="skipped: npm ci --prefix $SSO_JS_DIR failed (oidc-provider not installed)"
    return 1
  fi
  # The same stamp as scripts/test.sh, so it does not reinstall.
  sha256sum "$SSO_JS_DIR/package-lock.json" | cut -d' ' -f1 > "$SSO_JS_DIR/node_modules/.installed-from"
}

# ----------------------------------------------------------------------------
# Process management: everything we start is recorded and killed on exit
# ----------------------------------------------------------------------------
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
KEEP_WORK=$BENCH_KEEP
START_PIN=(taskset -c "$BENCH_SUT_CPUS")   # everything under test on its CPUs

# start_counted NAME CMD...: as start, under callgrind when BENCH_INSTRUCTIONS=1 (see
# count_instructions).
start_counted() {
  local name=$1; shift
  if (( BENCH_INSTRUCTIONS )); then
    start "$name" valgrind --tool=callgrind --dump-instr=no \
      --callgrind-out-file="$WORK/callgrind-$name.%p" "$@"
  else
    start "$name" "$@"
  fi
}

# count_instructions zero|read NAME...: zeroes the callgrind counters of the named processes, or
# dumps them and prints the instructions executed since they were zeroed (all threads).
count_instructions() {
  local what=$1; shift
  (( BENCH_INSTRUCTIONS )) || { [[ $what == read ]] && echo 0; return 0; }
  local name pid total=0 file n
  for name in "$@"; do
    pid=${PID_OF[$name]:-}
    [[ -n $pid ]] || continue
    if [[ $what == zero ]]; then
      callgrind_control -z "$pid" >/dev/null
      continue
    fi
    callgrind_control -d "$pid" >/dev/null
    # The newest dump of this process; its summary line is the instruction count (Ir).
    # shellcheck disable=SC2012  # names are ours: callgrind-NAME.PID.N
    file=$(ls -t "$WORK/callgrind-$name.$pid".* 2>/dev/null | head -n 1)
    n=$(awk '/^summary:/ { print $2 }' "$file" 2>/dev/null)
    total=$((total + ${n:-0}))
  done
  [[ $what == read ]] && echo "$total"
  return 0
}


# wait_tcp NAME PORT: until 127.0.0.1:PORT accepts a TCP connection
wait_tcp() {
  local name=$1 port=$2 deadline=$((SECONDS + BENCH_READY_TIMEOUT))
  while (( SECONDS < deadline )); do
    alive "$name" || { show_log "$name"; log "$name exited while starting"; return 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  show_log "$name"; log "$name: port $port not accepting after ${BENCH_READY_TIMEOUT}s"; return 1
}

# wait_http "NAME..." URL SIZE [CURL ARGS...]: until URL returns 200 with SIZE bytes.
# NAME... are the components that must stay up meanwhile (fail at once if one exits).
wait_http() {
  local names=$1 url=$2 size=$3; shift 3
  local deadline=$((SECONDS + BENCH_READY_TIMEOUT)) got="" name
  while (( SECONDS < deadline )); do
    for name in $names; do
      alive "$name" || { show_log "$name"; log "$name exited (while waiting for $url)"; return 1; }
    done
    got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' --max-time 5 "$@" "$url" 2>/dev/null || true)
    [[ $got == "200 $size" ]] && return 0
    sleep 0.1
  done
  for name in $names; do show_log "$name"; done
  log "$url never returned 200 with $size bytes within ${BENCH_READY_TIMEOUT}s (last: '${got:-no answer}')"
  return 1
}

# wait_file NAME FILE: until FILE exists and is non-empty
wait_file() {
  local name=$1 file=$2 deadline=$((SECONDS + BENCH_READY_TIMEOUT))
  while (( SECONDS < deadline )); do
    [[ -s $file ]] && return 0
    alive "$name" || { show_log "$name"; log "$name exited while starting"; return 1; }
    sleep 0.05
  done
  show_log "$name"; log "$name: $file did not appear within ${BENCH_READY_TIMEOUT}s"; return 1
}

# render TEMPLATE OUT KEY=VALUE...: copy a template replacing @KEY@ with VALUE
render() {
  local tpl=$1 out=$2; shift 2
  local args=() kv
  for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${args[@]}" "$BENCH_DIR/templates/$tpl" > "$out"
}

# ----------------------------------------------------------------------------
# /proc accounting
# ----------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)

# cpu_ticks NAME...: utime+stime (all threads) of the named components and their descendants
cpu_ticks() {
  local total=0 name pid stat f
  for name in "$@"; do
    [[ -n ${PID_OF[$name]:-} ]] || continue
    for pid in "${PID_OF[$name]}" $(descendants "${PID_OF[$name]}"); do
      stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
      read -r -a f <<< "${stat##*) }"   # f[0] is field 3 (state); utime=field 14, stime=field 15
      total=$((total + f[11] + f[12]))
    done
  done
  echo "$total"
}

# status_kib NAME FIELD: e.g. VmRSS / VmHWM of a component's main process, in KiB
status_kib() {
  local pid=${PID_OF[$1]:-}
  [[ -n $pid ]] || return 0
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null || true
}

mib() {  # KiB -> "12.3 MiB"
  if [[ -n ${1:-} ]]; then awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; else printf -- '-'; fi
}

# ----------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------
declare -A STATUS=()          # path -> "ok" or the reason it was skipped/failed
declare -A URL_SMALL=() URL_LARGE=() WRK_ENV=() WRK_HEADER=() PROXY_PROCS=()
declare -A RPS=() P50=() P99=() MBPS=() ERR_SMALL=() ERR_LARGE=()
declare -A CPU_REQ=() CPU_MIB=() BCPU_REQ=() BCPU_MIB=()

# load OUTFILE CMD...: run a load-generator command in the background, output to
# OUTFILE, and wait for it, so that a signal to this script is handled at once
# (not only after the command ends). The redirection is inside on purpose: a
# trap firing during `wait` must not inherit it.
load() {
  local out=$1; shift
  "$@" >"$out" 2>&1 &
  PIDS+=($!)
  local rc=0
  wait $! || rc=$?
  return $rc
}

# run_wrk PATH KIND URL CONNECTIONS: one warm-up + one measured wrk run.
# Sets globals: W_REQUESTS W_BYTES W_SECONDS W_P50_MS W_P99_MS W_ERRORS W_CPU W_BCPU
run_wrk() {
  local path=$1 kind=$2 url=$3 conns=$4
  local out="$WORK/wrk-$path-$kind.txt"
  local wrk_cmd=(taskset -c "$BENCH_LOAD_CPUS" wrk -t "$BENCH_THREADS" -c "$conns"
                 --latency --timeout 5s -s "$BENCH_DIR/wrk-report.lua")
  # An extra request header for this path (postern-sso: the session cookie).
  [[ -n ${WRK_HEADER[$path]:-} ]] && wrk_cmd+=(-H "${WRK_HEADER[$path]}")
  local env_args=(env ${WRK_ENV[$path]:-})

  if (( BENCH_WARMUP_SECONDS > 0 )); then
    load "$WORK/wrk-$path-$kind-warmup.txt" timeout $((BENCH_WARMUP_SECONDS + 30)) \
      "${env_args[@]}" "${wrk_cmd[@]}" -d "${BENCH_WARMUP_SECONDS}s" "$url" || true
  fi

  local cpu0 bcpu0 cpu1 bcpu1 rc=0 counted=""
  W_INSTR=0
  [[ ${PROXY_PROCS[$path]} == edge* ]] && counted=${PROXY_PROCS[$path]}
  # shellcheck disable=SC2086  # process names
  count_instructions zero $counted
  cpu0=$(cpu_ticks ${PROXY_PROCS[$path]}); bcpu0=$(cpu_ticks backend)
  load "$out" timeout $((BENCH_SECONDS + 30)) \
    "${env_args[@]}" "${wrk_cmd[@]}" -d "${BENCH_SECONDS}s" "$url" || rc=$?
  cpu1=$(cpu_ticks ${PROXY_PROCS[$path]}); bcpu1=$(cpu_ticks backend)
  # shellcheck disable=SC2086
  W_INSTR=$(count_instructions read $counted)

  local line
  line=$(grep '^BENCH_RESULT ' "$out" | tail -n 1 || true)
  if [[ -z $line ]]; then
    log "$path/$kind: wrk produced no result (exit $rc); output:"
    sed 's/^/    /' "$out" >&2
    return 1
  fi
  local requests=0 bytes=0 duration_us=0 p50_us=0 p99_us=0 ec=0 er=0 ew=0 es=0 et=0
  eval "$(sed -e 's/^BENCH_RESULT //' \
              -e 's/err_connect=/ec=/; s/err_read=/er=/; s/err_write=/ew=/; s/err_status=/es=/; s/err_timeout=/et=/' \
              -e 's/max_us=[0-9]*//' <<< "$line")"
  (( requests > 0 )) || { log "$path/$kind: no request completed"; sed 's/^/    /' "$out" >&2; return 1; }
  W_REQUESTS=$requests
  W_BYTES=$bytes
  W_SECONDS=$(calc 'd / 1e6' -v d="$duration_us")
  W_P50_MS=$(calc 'u / 1000' -v u="$p50_us")
  W_P99_MS=$(calc 'u / 1000' -v u="$p99_us")
  W_ERRORS=$((ec + er + ew + es + et))
  W_CPU=$(calc '(c1 - c0) / t' -v c1="$cpu1" -v c0="$cpu0" -v t="$CLK_TCK")
  W_BCPU=$(calc '(c1 - c0) / t' -v c1="$bcpu1" -v c0="$bcpu0" -v t="$CLK_TCK")
  if (( W_ERRORS > 0 )); then
    log "$path/$kind: $W_ERRORS errors (connect $ec, read $er, write $ew, non-2xx $es, timeout $et)"
  fi
}

# bench_small PATH ROUND: one round of the small-response test; each figure is kept per round
# (space-separated lists), and the path's figure is the median round (see median_rounds).
bench_small() {
  local path=$1 round=$2
  log "measuring $path: ${SMALL_SIZE}-byte responses, $BENCH_CONNECTIONS connections, ${BENCH_SECONDS}s (round $round of $BENCH_ROUNDS)"
  run_wrk "$path" small "${URL_SMALL[$path]}" "$BENCH_CONNECTIONS" || { STATUS[$path]="wrk failed"; return 1; }
  R_RPS[$path]+=" $(calc 'n / s' -v n="$W_REQUESTS" -v s="$W_SECONDS")"
  R_P50[$path]+=" $W_P50_MS"
  R_P99[$path]+=" $W_P99_MS"
  ERR_SMALL[$path]=$(( ${ERR_SMALL[$path]:-0} + W_ERRORS ))
  [[ -n ${PROXY_PROCS[$path]} ]] && R_CPU_REQ[$path]+=" $(calc 'c * 1e6 / n' -v c="$W_CPU" -v n="$W_REQUESTS")"
  R_BCPU_REQ[$path]+=" $(calc 'c * 1e6 / n' -v c="$W_BCPU" -v n="$W_REQUESTS")"
  (( W_INSTR > 0 )) && R_INSTR_REQ[$path]+=" $(calc 'i / n' -v i="$W_INSTR" -v n="$W_REQUESTS")"
  log "  $W_REQUESTS requests in ${W_SECONDS}s; CPU: proxy ${W_CPU}s, backend ${W_BCPU}s${W_INSTR:+; instructions (edge+connector): $W_INSTR}"
}

# median LIST...: the median of the numbers given (the mean of the middle two for an even count).
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

median_rounds() {
  local p
  for p in "${!R_RPS[@]}"; do
    # shellcheck disable=SC2086  # the lists are space-separated numbers
    RPS[$p]=$(median ${R_RPS[$p]})
    # shellcheck disable=SC2086
    P50[$p]=$(median ${R_P50[$p]}); P99[$p]=$(median ${R_P99[$p]})
    # shellcheck disable=SC2086
    [[ -n ${R_CPU_REQ[$p]:-} ]] && CPU_REQ[$p]=$(median ${R_CPU_REQ[$p]})
    # shellcheck disable=SC2086
    BCPU_REQ[$p]=$(median ${R_BCPU_REQ[$p]})
  done
  for p in "${!R_MBPS[@]}"; do
    # shellcheck disable=SC2086
    MBPS[$p]=$(median ${R_MBPS[$p]})
    # shellcheck disable=SC2086
    [[ -n ${R_CPU_MIB[$p]:-} ]] && CPU_MIB[$p]=$(median ${R_CPU_MIB[$p]})
    # shellcheck disable=SC2086
    BCPU_MIB[$p]=$(median ${R_BCPU_MIB[$p]})
  done
}

# round_ratios A B: the ratio A/B of each round's figures, from two space-separated lists.
round_ratios() {
  # shellcheck disable=SC2086
  paste -d' ' <(printf '%s\n' $1) <(printf '%s\n' $2) | awk '$2 > 0 { print $1 / $2 }'
}

# bench_large PATH ROUND: one round of the large-response test, kept per round like bench_small.
bench_large() {
  local path=$1 round=$2
  log "measuring $path: 1 MiB responses, $BENCH_LARGE_CONNECTIONS connections, ${BENCH_SECONDS}s (round $round of $BENCH_ROUNDS)"
  run_wrk "$path" large "${URL_LARGE[$path]}" "$BENCH_LARGE_CONNECTIONS" || { STATUS[$path]="wrk failed (1 MiB)"; return 1; }
  R_MBPS[$path]+=" $(calc 'b / s / 1e6' -v b="$W_BYTES" -v s="$W_SECONDS")"
  ERR_LARGE[$path]=$(( ${ERR_LARGE[$path]:-0} + W_ERRORS ))
  local mib_moved
  mib_moved=$(calc 'b / 1048576' -v b="$W_BYTES")
  [[ -n ${PROXY_PROCS[$path]} ]] && R_CPU_MIB[$path]+=" $(calc 'c * 1e3 / m' -v c="$W_CPU" -v m="$mib_moved")"
  R_BCPU_MIB[$path]+=" $(calc 'c * 1e3 / m' -v c="$W_BCPU" -v m="$mib_moved")"
  log "  $W_REQUESTS responses ($W_BYTES bytes) in ${W_SECONDS}s; CPU: proxy ${W_CPU}s, backend ${W_BCPU}s"
}

# ----------------------------------------------------------------------------
# Setup of each path. Each returns non-zero (after logging why) on failure;
# a failed path is reported as such and the others still run.
# ----------------------------------------------------------------------------
setup_backend() {
  mkdir -p "$WORK/www"
  chmod 755 "$WORK/www"
  head -c "$SMALL_SIZE" /dev/zero | tr '\0' 'x' > "$WORK/www/64b"
  head -c "$LARGE_SIZE" /dev/urandom > "$WORK/www/1m"
  render backend-nginx.conf "$WORK/backend-nginx.conf" WORK="$WORK" PORT="$P_BACKEND"
  start backend nginx -p "$WORK" -c "$WORK/backend-nginx.conf" -e "$WORK/logs/backend-nginx.error.log"
  wait_tcp backend "$P_BACKEND" || return 1
  wait_http backend "http://127.0.0.1:$P_BACKEND$SMALL_PATH" "$SMALL_SIZE" || return 1
  URL_SMALL[direct]="http://127.0.0.1:$P_BACKEND$SMALL_PATH"
  URL_LARGE[direct]="http://127.0.0.1:$P_BACKEND$LARGE_PATH"
  PROXY_PROCS[direct]=""   # no proxy: only the backend's CPU is counted
}

setup_nginx() {
  render proxy-nginx.conf "$WORK/proxy-nginx.conf" WORK="$WORK" PORT="$P_PROXY" BACKEND_PORT="$P_BACKEND"
  start proxy nginx -p "$WORK" -c "$WORK/proxy-nginx.conf" -e "$WORK/logs/proxy-nginx.error.log"
  wait_tcp proxy "$P_PROXY" || return 1
  URL_SMALL[nginx]="http://127.0.0.1:$P_PROXY$SMALL_PATH"
  URL_LARGE[nginx]="http://127.0.0.1:$P_PROXY$LARGE_PATH"
  PROXY_PROCS[nginx]=proxy
}

setup_rathole() {
  local token
  token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  render rathole-server.toml "$WORK/rathole-server.toml" \
    CONTROL_PORT="$P_RATHOLE_CONTROL" PUBLIC_PORT="$P_RATHOLE_PUBLIC" TOKEN="$token"
  render rathole-client.toml "$WORK/rathole-client.toml" \
    CONTROL_PORT="$P_RATHOLE_CONTROL" BACKEND_PORT="$P_BACKEND" TOKEN="$token"
  start rathole-server rathole --server "$WORK/rathole-server.toml"
  wait_tcp rathole-server "$P_RATHOLE_CONTROL" || return 1
  start rathole-client rathole --client "$WORK/rathole-client.toml"
  # The server opens the public port once the client's control channel is up.
  wait_tcp rathole-server "$P_RATHOLE_PUBLIC" || return 1
  alive rathole-client || { show_log rathole-client; log "rathole client exited"; return 1; }
  URL_SMALL[rathole]="http://127.0.0.1:$P_RATHOLE_PUBLIC$SMALL_PATH"
  URL_LARGE[rathole]="http://127.0.0.1:$P_RATHOLE_PUBLIC$LARGE_PATH"
  PROXY_PROCS[rathole]="rathole-server rathole-client"
}

# TLS material for nginx_tls and rathole_tls, made with openssl in $WORK/tls: ECDSA P-256 keys
# (as the Postern edge's), certificates for localhost and 127.0.0.1 valid two days.
# openssl_conf: a self-contained config, so the system's openssl.cnf adds no extensions.
openssl_conf() {
  local conf="$WORK/tls/openssl.cnf"
  [[ -f $conf ]] && { echo "$conf"; return 0; }
  mkdir -p "$WORK/tls"
  cat > "$conf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = localhost
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
EOF
  echo "$conf"
}

# make_nginx_cert: a self-signed certificate + key for nginx_tls ($WORK/tls/nginx.{pem,key}).
make_nginx_cert() {
  local conf dir="$WORK/tls"
  conf=$(openssl_conf)
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=localhost" -config "$conf" -extensions leaf \
    -keyout "$dir/nginx.key" -out "$dir/nginx.pem" >>"$WORK/logs/openssl.log" 2>&1 \
    || { show_log openssl; log "openssl: could not make the nginx_tls certificate"; return 1; }
}

# make_rathole_pki: a CA ($WORK/tls/rathole-ca.pem, the client's trusted_root), a server
# certificate signed by it, and the server's identity as PKCS#12 (rathole-server.p12, with a
# random password in RATHOLE_P12_PASSWORD). The PKCS#12 is OpenSSL 3's default (PBES2,
# AES-256-CBC): rathole's native-tls uses the system's OpenSSL, and OpenSSL 3 cannot read an
# `openssl pkcs12 -export -legacy` file (RC2-40) without its legacy provider; rathole then aborts
# with "Failed to create identitiy ... unsupported ... RC2-40-CBC".
RATHOLE_P12_PASSWORD=""
make_rathole_pki() {
  local conf dir="$WORK/tls" ol="$WORK/logs/openssl.log"
  conf=$(openssl_conf)
  RATHOLE_P12_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  if ! { openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
           -subj "/CN=Postern bench rathole CA" -config "$conf" -extensions ca \
           -keyout "$dir/rathole-ca.key" -out "$dir/rathole-ca.pem" \
         && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
           -subj "/CN=localhost" -config "$conf" \
           -keyout "$dir/rathole-server.key" -out "$dir/rathole-server.csr" \
         && openssl x509 -req -days 2 -in "$dir/rathole-server.csr" \
           -CA "$dir/rathole-ca.pem" -CAkey "$dir/rathole-ca.key" -CAcreateserial \
           -extfile "$conf" -extensions leaf -out "$dir/rathole-server.pem" \
         && openssl verify -CAfile "$dir/rathole-ca.pem" "$dir/rathole-server.pem" \
         && openssl pkcs12 -export -inkey "$dir/rathole-server.key" -in "$dir/rathole-server.pem" \
           -certfile "$dir/rathole-ca.pem" -passout "pass:$RATHOLE_P12_PASSWORD" \
           -out "$dir/rathole-server.p12"; } >>"$ol" 2>&1; then
    show_log openssl; log "openssl: could not make the rathole_tls CA and server certificate"; return 1
  fi
  chmod 600 "$dir"/*.key "$dir/rathole-server.p12"
}

setup_nginx_tls() {
  make_nginx_cert || return 1
  # `http2 off;` exists from nginx 1.25.1; before, HTTP/2 is only on with `listen ... http2`.
  local version http2_off="# (this nginx: no http2 directive)"
  version=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9][0-9.]*\).*|\1|p')
  if [[ -n $version && $(printf '%s\n' 1.25.1 "$version" | sort -V | head -n 1) == 1.25.1 ]]; then
    http2_off="http2 off;"
  fi
  render proxy-nginx-tls.conf "$WORK/proxy-nginx-tls.conf" WORK="$WORK" PORT="$P_NGINX_TLS" \
    BACKEND_PORT="$P_BACKEND" CERT="$WORK/tls/nginx.pem" KEY="$WORK/tls/nginx.key" HTTP2_OFF="$http2_off"
  start proxy-tls nginx -p "$WORK" -c "$WORK/proxy-nginx-tls.conf" -e "$WORK/logs/proxy-tls-nginx.error.log"
  wait_tcp proxy-tls "$P_NGINX_TLS" || return 1
  # https://localhost:PORT: SNI and Host "localhost", which the certificate names; wrk connects
  # to 127.0.0.1 (localhost may resolve to ::1 first, where nothing listens), curl is told so.
  URL_SMALL[nginx_tls]="https://localhost:$P_NGINX_TLS$SMALL_PATH"
  URL_LARGE[nginx_tls]="https://localhost:$P_NGINX_TLS$LARGE_PATH"
  WRK_ENV[nginx_tls]="WRK_CONNECT_HOST=127.0.0.1"
  PROXY_PROCS[nginx_tls]=proxy-tls
  NGINX_TLS_CURL=(--cacert "$WORK/tls/nginx.pem" --resolve "localhost:$P_NGINX_TLS:127.0.0.1")
}
NGINX_TLS_CURL=()

# setup_rathole_tls: as setup_rathole, over rathole's TLS transport. If this rathole was built
# without TLS (it aborts at start: "The feature 'tls' is not compiled in this binary"), sets
# RATHOLE_TLS_SKIP to say so and returns 1.
RATHOLE_TLS_SKIP=""
setup_rathole_tls() {
  make_rathole_pki || return 1
  local token name
  token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  render rathole-tls-server.toml "$WORK/rathole-tls-server.toml" \
    CONTROL_PORT="$P_RATHOLE_TLS_CONTROL" PUBLIC_PORT="$P_RATHOLE_TLS_PUBLIC" TOKEN="$token" \
    PKCS12="$WORK/tls/rathole-server.p12" PKCS12_PASSWORD="$RATHOLE_P12_PASSWORD"
  render rathole-tls-client.toml "$WORK/rathole-tls-client.toml" \
    CONTROL_PORT="$P_RATHOLE_TLS_CONTROL" BACKEND_PORT="$P_BACKEND" TOKEN="$token" \
    TRUSTED_ROOT="$WORK/tls/rathole-ca.pem"
  chmod 600 "$WORK/rathole-tls-server.toml"
  start rathole-tls-server rathole --server "$WORK/rathole-tls-server.toml"
  # The server loads its identity before listening: with the control port open, TLS is in.
  local deadline=$((SECONDS + BENCH_READY_TIMEOUT))
  until (exec 3<>"/dev/tcp/127.0.0.1/$P_RATHOLE_TLS_CONTROL") 2>/dev/null; do
    if ! alive rathole-tls-server; then
      rathole_lacks_tls rathole-tls-server && return 1
      show_log rathole-tls-server; log "rathole-tls-server exited while starting"; return 1
    fi
    if (( SECONDS >= deadline )); then
      show_log rathole-tls-server
      log "rathole-tls-server: port $P_RATHOLE_TLS_CONTROL not accepting after ${BENCH_READY_TIMEOUT}s"
      return 1
    fi
    sleep 0.05
  done
  start rathole-tls-client rathole --client "$WORK/rathole-tls-client.toml"
  # The server opens the public port once the client's control channel (TLS, the server's
  # certificate checked against the CA) is up.
  if ! wait_tcp rathole-tls-server "$P_RATHOLE_TLS_PUBLIC"; then
    rathole_lacks_tls rathole-tls-client && return 1
    show_log rathole-tls-client; return 1
  fi
  for name in rathole-tls-server rathole-tls-client; do
    alive "$name" || { show_log "$name"; log "$name exited"; return 1; }
  done
  URL_SMALL[rathole_tls]="http://127.0.0.1:$P_RATHOLE_TLS_PUBLIC$SMALL_PATH"
  URL_LARGE[rathole_tls]="http://127.0.0.1:$P_RATHOLE_TLS_PUBLIC$LARGE_PATH"
  PROXY_PROCS[rathole_tls]="rathole-tls-server rathole-tls-client"
}

# rathole_lacks_tls NAME: true (and RATHOLE_TLS_SKIP set) if NAME's log says its rathole has no
# TLS transport compiled in.
rathole_lacks_tls() {
  grep -q "feature 'tls' is not compiled" "$WORK/logs/$1.log" 2>/dev/null || return 1
  RATHOLE_TLS_SKIP="skipped: $(command -v rathole) was built without TLS support (reinstall: cargo install rathole --force --no-default-features --features server,client,tls)"
}

# ensure_postern_binary: on failure, sets POSTERN_SKIP (the reason, for postern and postern-sso).
POSTERN_SKIP=""
ensure_postern_binary() {
  [[ -x $POSTERN_BIN && $BENCH_BUILD_POSTERN != always ]] && return 0
  if [[ $BENCH_BUILD_POSTERN == 1 || $BENCH_BUILD_POSTERN == always ]] \
     && [[ -f $REPO_ROOT/Cargo.toml ]] && command -v cargo >/dev/null; then
    log "cargo build --release -p postern (in $REPO_ROOT)"
    if ! (cd "$REPO_ROOT" && timeout "$BENCH_BUILD_TIMEOUT" cargo build --release -p postern >&2); then
      POSTERN_SKIP="skipped: cargo build --release -p postern failed"
      return 1
    fi
  fi
  if [[ ! -x $POSTERN_BIN ]]; then
    POSTERN_SKIP="skipped: no binary at $POSTERN_BIN (cargo build --release -p postern, or set POSTERN_BIN)"
    return 1
  fi
}

# postern_admin ARGS...: run an admin subcommand against the bench edge (or the one P_ADMIN_NOW
# and ADMIN_DIR_NOW name); stdout is the command's, errors go to logs/postern-admin.log.
P_ADMIN_NOW="" ADMIN_DIR_NOW=""
postern_admin() { postern_admin_at "${P_ADMIN_NOW:-$P_EDGE_ADMIN}" "${ADMIN_DIR_NOW:-$WORK/edge}" "$@"; }

# setup_postern [observed]: the edge and connector of the postern path, or (with `observed`) a
# second pair, edge-observed and connector-observed, with the access log and /metrics on.
setup_postern() {
  local variant=${1:-} path=postern suffix="" extra=()
  local p_public=$P_EDGE_PUBLIC p_connector=$P_EDGE_CONNECTOR p_admin=$P_EDGE_ADMIN
  if [[ $variant == observed ]]; then
    path=postern-observed suffix=-observed
    p_public=$P_OBS_PUBLIC p_connector=$P_OBS_CONNECTOR p_admin=$P_OBS_ADMIN
    extra=(--access-log "$WORK/access.log" --metrics-listen "127.0.0.1:$P_OBS_METRICS")
  fi
  local edge=edge$suffix connector=connector$suffix
  local edge_dir="$WORK/$edge" state_dir="$WORK/$connector"
  mkdir -p "$edge_dir" "$state_dir"

  start_counted "$edge" "$POSTERN_BIN" edge --data "$edge_dir" \
    --listen "127.0.0.1:$p_public" \
    --connector-listen "127.0.0.1:$p_connector" \
    --admin-listen "127.0.0.1:$p_admin" "${extra[@]}" \
    --requests-per-ip 0   # every request of the load comes from one address
  wait_file "$edge" "$edge_dir/admin-token" || return 1
  wait_file "$edge" "$edge_dir/ca.pem" || return 1
  wait_tcp "$edge" "$p_admin" || return 1
  wait_tcp "$edge" "$p_connector" || return 1
  wait_tcp "$edge" "$p_public" || return 1
  # postern_admin talks to this edge.
  P_ADMIN_NOW=$p_admin ADMIN_DIR_NOW=$edge_dir

  local external="https://$POSTERN_HOST:$p_public"
  if ! postern_admin group create bench >>"$WORK/logs/postern-admin.log"; then
    show_log postern-admin; log "postern admin group create failed"; return 1
  fi
  if ! postern_admin app publish bench --external-url "$external" \
       --internal-url "http://127.0.0.1:$P_BACKEND" --group bench --preauth passthrough \
       >>"$WORK/logs/postern-admin.log"; then
    show_log postern-admin; log "postern admin app publish failed"; return 1
  fi
  local token
  if ! token=$(postern_admin connector token --group bench) || [[ -z ${token//[[:space:]]/} ]]; then
    show_log postern-admin; log "postern admin connector token failed"; return 1
  fi
  token=$(tr -d '[:space:]' <<< "$token")

  if ! timeout 60 "$POSTERN_BIN" connector register --edge "https://127.0.0.1:$p_connector" \
       --token "$token" --state "$state_dir" --ca-file "$edge_dir/ca.pem" \
       >"$WORK/logs/$connector-register.log" 2>&1; then
    show_log "$connector-register"; log "postern connector register failed"; return 1
  fi
  start_counted "$connector" "$POSTERN_BIN" connector run --state "$state_dir"

  # Ready once a request goes all the way through: edge -> tunnel -> connector -> backend.
  local resolve=(--insecure --resolve "$POSTERN_HOST:$p_public:127.0.0.1")
  wait_http "$edge $connector" "$external$SMALL_PATH" "$SMALL_SIZE" "${resolve[@]}" || return 1
  wait_http "$edge $connector" "$external$LARGE_PATH" "$LARGE_SIZE" "${resolve[@]}" || return 1
  URL_SMALL[$path]="$external$SMALL_PATH"
  URL_LARGE[$path]="$external$LARGE_PATH"
  # wrk connects to 127.0.0.1 but keeps the URL host for SNI and Host (see wrk-report.lua).
  WRK_ENV[$path]="WRK_CONNECT_HOST=127.0.0.1"
  PROXY_PROCS[$path]="$edge $connector"
  P_ADMIN_NOW=$P_EDGE_ADMIN ADMIN_DIR_NOW=$WORK/edge
}

# scrape_metrics: what a Prometheus server does to the observed edge, once a second, so that
# rendering is part of the cost measured.
scrape_metrics() {
  while sleep 1; do
    curl -s -o /dev/null "http://127.0.0.1:$P_OBS_METRICS/metrics" || true
  done
}

# setup_postern_sso: on the edge and connector of setup_postern, a second app `bench-sso` (same
# backend, same connector group) published with --preauth oidc against the test suite's OpenID
# provider; signs in once with curl and keeps the session cookie for wrk. Sets STATUS[postern-sso]
# to "ready" or to why not.
setup_postern_sso() {
  local issuer_dir="$WORK/issuer" external="https://$POSTERN_SSO_HOST:$P_EDGE_PUBLIC"
  mkdir -p "$issuer_dir"
  local client_id=bench-sso secret password
  secret=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
  password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')
  printf '%s\n' "$secret" > "$issuer_dir/client-secret"
  chmod 600 "$issuer_dir/client-secret"
  local config
  config=$(python3 - "$client_id" "$secret" "$external" "$SSO_EMAIL" "$password" <<'PY'
import json, sys
client_id, secret, external, email, password = sys.argv[1:]
print(json.dumps({
    "clients": [{"client_id": client_id, "client_secret": secret,
                 "redirect_uris": [external + "/.postern/callback"],
                 "post_logout_redirect_uris": [external + "/.postern/signed-out"]}],
    "accounts": {"bench-0001": {"email": email, "password": password,
                                "name": "Bench", "groups": ["bench"]}},
}))
PY
)

  # The provider prints {"issuer": "http://127.0.0.1:PORT"} once listening; its stdout goes to
  # its log file (never a pipe that could close under it).
  start issuer node "$SSO_JS_DIR/issuer.mjs" "$config"
  local deadline=$((SECONDS + BENCH_READY_TIMEOUT)) issuer=""
  while (( SECONDS < deadline )); do
    issuer=$(sed -n 's/^{"issuer":"\(http[^"]*\)"}$/\1/p' "$WORK/logs/issuer.log" 2>/dev/null | head -n 1 || true)
    [[ -n $issuer ]] && break
    alive issuer || break
    sleep 0.1
  done
  if [[ -z $issuer ]]; then
    show_log issuer
    STATUS[postern-sso]="failed: the OpenID provider (node issuer.mjs) did not start (see log above)"
    return 1
  fi
  log "OpenID provider at $issuer"

  if ! postern_admin app publish bench-sso --external-url "$external" \
       --internal-url "http://127.0.0.1:$P_BACKEND" --group bench --preauth oidc \
       --issuer "$issuer" --client-id "$client_id" --client-secret-file "$issuer_dir/client-secret" \
       >>"$WORK/logs/postern-admin.log"; then
    show_log postern-admin
    STATUS[postern-sso]="failed: postern admin app publish bench-sso --preauth oidc failed"
    return 1
  fi

  # Sign in once, as a browser would: the app sends curl to the provider's login form; posting it
  # returns through /.postern/callback (the edge redeems the code and sets the session cookie)
  # to the app. The edge's certificate is checked against its CA.
  local jar="$issuer_dir/cookies.txt" page="$issuer_dir/login.html"
  local browser=(curl -sS -L --max-redirs 10 --max-time 30 -b "$jar" -c "$jar"
                 --cacert "$WORK/edge/ca.pem" --resolve "$POSTERN_SSO_HOST:$P_EDGE_PUBLIC:127.0.0.1")
  : > "$jar"
  local got action
  # Until the edge has the new app (the admin API answers before the routes reload).
  deadline=$((SECONDS + BENCH_READY_TIMEOUT))
  while :; do
    got=$("${browser[@]}" -o "$page" -w '%{http_code} %{url_effective}' "$external$SMALL_PATH" \
            2>>"$WORK/logs/sso-signin.log" || true)
    action=$(grep -o 'action="/interaction/[^"]*/login"' "$page" 2>/dev/null | head -n 1 || true)
    action=${action#action=\"}; action=${action%\"}
    [[ -n $action ]] && break
    if (( SECONDS >= deadline )) || ! alive edge || ! alive issuer; then
      show_log sso-signin; show_log issuer; show_log edge
      STATUS[postern-sso]="failed: $external$SMALL_PATH did not lead to the provider's login form (last: '${got:-no answer}')"
      return 1
    fi
    sleep 0.2
  done
  got=$("${browser[@]}" -o "$page" -w '%{http_code} %{url_effective}' \
          --data-urlencode "email=$SSO_EMAIL" --data-urlencode "password=$password" \
          "$issuer$action" 2>>"$WORK/logs/sso-signin.log" || true)
  if [[ $got != "200 $external$SMALL_PATH" || $(wc -c < "$page") != "$SMALL_SIZE" ]]; then
    show_log sso-signin; show_log issuer; show_log edge
    STATUS[postern-sso]="failed: signing in did not end at the app with $SMALL_SIZE bytes (last: '${got:-no answer}', $(wc -c < "$page") bytes)"
    return 1
  fi
  # The jar marks HttpOnly cookies with a "#HttpOnly_" prefix on the domain field.
  local cookie
  cookie=$(awk -F '\t' '$6 == "__Host-postern-session" { v = $7 } END { print v }' "$jar")
  if [[ -z $cookie ]]; then
    STATUS[postern-sso]="failed: signed in, but no __Host-postern-session cookie in the jar ($jar)"
    return 1
  fi
  log "signed in as $SSO_EMAIL; session cookie ${#cookie} bytes"

  # The cookie alone (no jar, no redirects) must reach the backend: 200 with the exact body size,
  # not a redirect to sign in.
  local header="Cookie: __Host-postern-session=$cookie" url size
  for url in "$external$SMALL_PATH" "$external$LARGE_PATH"; do
    [[ $url == *"$SMALL_PATH" ]] && size=$SMALL_SIZE || size=$LARGE_SIZE
    got=$(curl -s -o /dev/null --max-time 10 --cacert "$WORK/edge/ca.pem" \
            --resolve "$POSTERN_SSO_HOST:$P_EDGE_PUBLIC:127.0.0.1" -H "$header" \
            -w '%{http_code} %{size_download} %{redirect_url}' "$url" || true)
    if [[ $got != "200 $size " ]]; then
      STATUS[postern-sso]="failed: with the session cookie, $url answered '${got:-nothing}' instead of 200 with $size bytes from the backend"
      return 1
    fi
  done
  # And without it, the edge must not let the request through (else this measures passthrough).
  got=$(curl -s -o /dev/null --max-time 10 --cacert "$WORK/edge/ca.pem" \
          --resolve "$POSTERN_SSO_HOST:$P_EDGE_PUBLIC:127.0.0.1" -w '%{http_code}' "$external$SMALL_PATH" || true)
  if [[ $got != 302 ]]; then
    STATUS[postern-sso]="failed: without a session cookie $external$SMALL_PATH answered '$got', not a 302 to sign in"
    return 1
  fi

  URL_SMALL[postern-sso]="$external$SMALL_PATH"
  URL_LARGE[postern-sso]="$external$LARGE_PATH"
  WRK_ENV[postern-sso]="WRK_CONNECT_HOST=127.0.0.1"
  WRK_HEADER[postern-sso]=$header
  # The provider sits idle during the runs (the cookie needs no call to it) and is not counted.
  PROXY_PROCS[postern-sso]="edge connector"
  STATUS[postern-sso]=ready
}

# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------
fmt() { [[ -n ${2:-} ]] && printf "$1" "$2" || printf -- '-'; }

# peer_ratio_row LABEL A B: one row of A's figures as ratios to B's (req/s, p50, p99, proxy CPU per
# request, MB/s, proxy CPU per MiB).
peer_ratio_row() {
  local label=$1 a=$2 b=$3
  printf '  %-22s %8s %8s %8s %13s %8s %13s\n' "$label" \
    "$(ratio "${RPS[$a]:-}" "${RPS[$b]:-}")" \
    "$(ratio "${P50[$a]:-}" "${P50[$b]:-}")" \
    "$(ratio "${P99[$a]:-}" "${P99[$b]:-}")" \
    "$(ratio "${CPU_REQ[$a]:-}" "${CPU_REQ[$b]:-}")" \
    "$(ratio "${MBPS[$a]:-}" "${MBPS[$b]:-}")" \
    "$(ratio "${CPU_MIB[$a]:-}" "${CPU_MIB[$b]:-}")"
}

# print_peer_ratios: Postern's figures as ratios to each other proxy that ran, the TLS ones first
# (TLS on the wire, as Postern has: the like-for-like comparison), and what TLS costs nginx and
# rathole (each TLS path against its plain one).
print_peer_ratios() {
  local peer peers=() pair plain tls pairs=()
  local head='  %-22s %8s %8s %8s %13s %8s %13s\n'
  for peer in nginx_tls rathole_tls nginx rathole; do
    want "$peer" && [[ -n ${RPS[$peer]:-} ]] && peers+=("$peer")
  done
  if want postern && [[ -n ${RPS[postern]:-} ]] && (( ${#peers[@]} )); then
    echo
    if (( BENCH_INSTRUCTIONS )); then
      echo "Postern vs the other proxies: not shown with BENCH_INSTRUCTIONS=1 (Postern runs under callgrind)."
    else
      echo "Postern (passthrough) vs the other proxies, postern's figure / the peer's"
      echo "(req/s, MB/s: above 1x = postern faster; p50, p99, proxy CPU: below 1x = postern cheaper):"
      # shellcheck disable=SC2059  # the format is ours
      printf "$head" "postern vs" req/s p50 p99 "proxy us/req" MB/s "proxy ms/MiB"
      for peer in "${peers[@]}"; do peer_ratio_row "$peer" postern "$peer"; done
    fi
  fi
  for pair in nginx:nginx_tls rathole:rathole_tls; do
    plain=${pair%%:*} tls=${pair#*:}
    want "$plain" && want "$tls" && [[ -n ${RPS[$plain]:-} && -n ${RPS[$tls]:-} ]] && pairs+=("$pair")
  done
  if (( ${#pairs[@]} )); then
    echo
    echo "What TLS costs the peers, the TLS path's figure / the plain path's:"
    # shellcheck disable=SC2059
    printf "$head" "" req/s p50 p99 "proxy us/req" MB/s "proxy ms/MiB"
    for pair in "${pairs[@]}"; do
      plain=${pair%%:*} tls=${pair#*:}
      peer_ratio_row "$tls / $plain" "$tls" "$plain"
    done
  fi
}

print_report() {
  local base=direct p
  # Without a direct run there is nothing to compare with; "none" names no path, so every ratio
  # prints as "-".
  [[ ${STATUS[direct]:-} == ok ]] || base=none
  echo
  echo "Postern benchmark — $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), $(nproc) CPUs," \
       "${BUSY_BEFORE}% busy before start"
  echo "wrk ${BENCH_THREADS} thread(s) on CPU ${BENCH_LOAD_CPUS}; backend, proxies and tunnels on CPU ${BENCH_SUT_CPUS};" \
       "${BENCH_SECONDS}s per measurement (after ${BENCH_WARMUP_SECONDS}s warm-up)"
  echo
  echo "Small response: GET $SMALL_PATH ($SMALL_SIZE bytes), $BENCH_CONNECTIONS keep-alive connections"
  printf '%-16s %10s %8s %9s %8s %9s %8s %13s %15s %7s\n' \
    path req/s "vs dir" "p50 ms" "vs dir" "p99 ms" "vs dir" "proxy us/req" "backend us/req" errors
  for p in "${ALL_PATHS[@]}"; do
    want "$p" || continue
    if [[ ${STATUS[$p]:-} != ok && -z ${RPS[$p]:-} ]]; then
      printf '%-16s %s\n' "$p" "${STATUS[$p]:-not run}"; continue
    fi
    printf '%-16s %10s %8s %9s %8s %9s %8s %13s %15s %7s\n' "$p" \
      "$(fmt %.0f "${RPS[$p]:-}")" "$(ratio "${RPS[$p]:-}" "${RPS[$base]:-}")" \
      "$(fmt %.3f "${P50[$p]:-}")" "$(ratio "${P50[$p]:-}" "${P50[$base]:-}")" \
      "$(fmt %.3f "${P99[$p]:-}")" "$(ratio "${P99[$p]:-}" "${P99[$base]:-}")" \
      "$(fmt %.1f "${CPU_REQ[$p]:-}")" "$(fmt %.1f "${BCPU_REQ[$p]:-}")" "${ERR_SMALL[$p]:-0}"
  done
  echo
  echo "Large response: GET $LARGE_PATH (1 MiB), $BENCH_LARGE_CONNECTIONS keep-alive connections (MB = 10^6 bytes)"
  printf '%-16s %10s %8s %14s %14s %7s\n' path MB/s "vs dir" "proxy ms/MiB" "backend ms/MiB" errors
  for p in "${ALL_PATHS[@]}"; do
    want "$p" || continue
    if [[ -z ${MBPS[$p]:-} ]]; then
      printf '%-16s %s\n' "$p" "${STATUS[$p]:-not run}"; continue
    fi
    printf '%-16s %10s %8s %14s %14s %7s\n' "$p" \
      "$(fmt %.1f "${MBPS[$p]:-}")" "$(ratio "${MBPS[$p]:-}" "${MBPS[$base]:-}")" \
      "$(fmt %.2f "${CPU_MIB[$p]:-}")" "$(fmt %.2f "${BCPU_MIB[$p]:-}")" "${ERR_LARGE[$p]:-0}"
  done
  echo
  echo "CPU = user+sys from /proc/PID/stat over the measured run, all threads and child processes."
  echo "  proxy = what sits between wrk and the backend: nginx, nginx_tls = proxy nginx; rathole, rathole_tls = server+client;"
  echo "          postern, postern-sso, postern-observed = edge+connector. backend = the backend nginx (same work on every path)."
  echo "  vs dir: ratio to the direct path (for req/s and MB/s higher is better; for latency lower is better)."
  print_peer_ratios
  if want postern-observed && [[ -n ${RPS[postern-observed]:-} && -n ${RPS[postern]:-} ]]; then
    echo
    echo "Access log and metrics on (postern-observed) vs off (postern), each its own edge and connector:"
    printf '  req/s %s   p50 %s   p99 %s   proxy us/req %s   MB/s (1 MiB) %s\n' \
      "$(ratio "${RPS[postern-observed]}" "${RPS[postern]}")" \
      "$(ratio "${P50[postern-observed]:-}" "${P50[postern]:-}")" \
      "$(ratio "${P99[postern-observed]:-}" "${P99[postern]:-}")" \
      "$(ratio "${CPU_REQ[postern-observed]:-}" "${CPU_REQ[postern]:-}")" \
      "$(ratio "${MBPS[postern-observed]:-}" "${MBPS[postern]:-}")"
    echo "  access log records written: $(wc -l < "$WORK/access.log" 2>/dev/null || echo 0)"
  fi
  if want postern-sso && [[ -n ${RPS[postern-sso]:-} && -n ${RPS[postern]:-} ]]; then
    echo
    echo "Signed-in session (postern-sso) vs passthrough (postern), same edge and connector:"
    printf '  req/s %s   p50 %s   p99 %s   proxy us/req %s   MB/s (1 MiB) %s   proxy ms/MiB %s\n' \
      "$(ratio "${RPS[postern-sso]}" "${RPS[postern]}")" \
      "$(ratio "${P50[postern-sso]:-}" "${P50[postern]:-}")" \
      "$(ratio "${P99[postern-sso]:-}" "${P99[postern]:-}")" \
      "$(ratio "${CPU_REQ[postern-sso]:-}" "${CPU_REQ[postern]:-}")" \
      "$(ratio "${MBPS[postern-sso]:-}" "${MBPS[postern]:-}")" \
      "$(ratio "${CPU_MIB[postern-sso]:-}" "${CPU_MIB[postern]:-}")"
    # The target is judged on the paired rounds: each round's ratio, and their median.
    local ratios
    ratios=$(round_ratios "${R_RPS[postern-sso]}" "${R_RPS[postern]}")
    if (( BENCH_ROUNDS > 1 )); then
      echo "  req/s ratio per round: $(printf '%.2fx ' $ratios)"
      echo "  MB/s ratio per round:  $(printf '%.2fx ' $(round_ratios "${R_MBPS[postern-sso]:-}" "${R_MBPS[postern]:-}"))"
    fi
    if [[ -n ${R_INSTR_REQ[postern-sso]:-} && -n ${R_INSTR_REQ[postern]:-} ]]; then
      local ipass isso
      # shellcheck disable=SC2086
      ipass=$(median ${R_INSTR_REQ[postern]}); isso=$(median ${R_INSTR_REQ[postern-sso]})
      awk -v p="$ipass" -v s="$isso" 'BEGIN {
        printf "  instructions per small request, edge+connector (callgrind, median round): passthrough %.0f, signed in %.0f (+%.0f, %.2fx)\n", p, s, s - p, s / p }'
    fi
    # Under callgrind, req/s says how fast valgrind is, not Postern.
    (( BENCH_INSTRUCTIONS )) && ratios=""
    # shellcheck disable=SC2086
    [[ -n $ratios ]] && median $ratios | awk -v n="$BENCH_ROUNDS" '{
      printf "  target: keep >= 0.90x of passthrough req/s -> %.2fx (median of %d paired rounds), %s\n", $1, n, ($1 >= 0.90 ? "met" : "NOT met") }'
  fi
  (( ${#RSS_IDLE[@]} )) || return 0
  echo
  echo "Memory (VmRSS of the main process): idle = tunnel up, before any load; after = after all runs; peak = VmHWM"
  printf '%-18s %12s %12s %12s\n' process idle after peak
  local name label
  for name in connector edge rathole-client rathole-server rathole-tls-client rathole-tls-server; do
    case $name in
      connector) label="postern connector"; want postern || want postern-sso || continue ;;
      edge) label="postern edge"; want postern || want postern-sso || continue ;;
      rathole-client) label="rathole client"; want rathole || continue ;;
      rathole-server) label="rathole server"; want rathole || continue ;;
      rathole-tls-client) label="rathole_tls client"; want rathole_tls || continue ;;
      rathole-tls-server) label="rathole_tls server"; want rathole_tls || continue ;;
    esac
    [[ -n ${RSS_IDLE[$name]:-} ]] || continue   # not running
    printf '%-18s %12s %12s %12s\n' "$label" "$(mib "${RSS_IDLE[$name]}")" \
      "$(mib "${RSS_AFTER[$name]:-}")" "$(mib "${RSS_PEAK[$name]:-}")"
  done
}

write_tsv() {
  [[ -n $BENCH_RESULTS_TSV ]] || return 0
  {
    printf 'path\tstatus\treq_per_s\tp50_ms\tp99_ms\tmb_per_s\tproxy_cpu_us_per_req\tbackend_cpu_us_per_req\tproxy_cpu_ms_per_mib\tbackend_cpu_ms_per_mib\terrors_small\terrors_large\tidle_rss_kib_tunnel_client\n'
    local p client
    for p in "${ALL_PATHS[@]}"; do
      want "$p" || continue
      case $p in
        postern|postern-sso) client=connector ;;
        postern-observed) client="connector-observed" ;;
        rathole) client="rathole-client" ;;
        rathole_tls) client="rathole-tls-client" ;;
        *) client="" ;;   # direct, nginx, nginx_tls: no tunnel
      esac
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "${STATUS[$p]:-not run}" \
        "${RPS[$p]:-}" "${P50[$p]:-}" "${P99[$p]:-}" "${MBPS[$p]:-}" "${CPU_REQ[$p]:-}" "${BCPU_REQ[$p]:-}" \
        "${CPU_MIB[$p]:-}" "${BCPU_MIB[$p]:-}" "${ERR_SMALL[$p]:-}" "${ERR_LARGE[$p]:-}" \
        "${client:+${RSS_IDLE[$client]:-}}"
    done
  } > "$BENCH_RESULTS_TSV"
  log "figures written to $BENCH_RESULTS_TSV"
}

# busy_percent: share of all CPUs busy over the next second (from /proc/stat)
busy_percent() {
  local a b
  a=$(head -n 1 /proc/stat); sleep 1; b=$(head -n 1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {
    n = split(a, x); split(b, y); total = 0; idle = 0
    for (i = 2; i <= n; i++) total += y[i] - x[i]
    idle = (y[5] - x[5]) + (y[6] - x[6])          # idle + iowait
    busy = (total > 0) ? 100 * (total - idle) / total : 0
    printf "%.0f", busy }'
}

# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------
ensure_tools

BUSY_BEFORE=$(busy_percent)
if (( BUSY_BEFORE > 15 )); then
  log "WARNING: the machine is already ${BUSY_BEFORE}% busy (a build running?); the figures will be noisy"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/postern-bench.XXXXXX")
mkdir -p "$WORK/logs" "$WORK/tmp"
chmod 755 "$WORK"   # nginx workers run as an unprivileged user and must read $WORK/www
log "work dir: $WORK"

read -r P_BACKEND P_PROXY P_RATHOLE_CONTROL P_RATHOLE_PUBLIC \
        P_EDGE_PUBLIC P_EDGE_CONNECTOR P_EDGE_ADMIN \
        P_OBS_PUBLIC P_OBS_CONNECTOR P_OBS_ADMIN P_OBS_METRICS \
        P_NGINX_TLS P_RATHOLE_TLS_CONTROL P_RATHOLE_TLS_PUBLIC <<< "$(free_ports 14)"

declare -A RSS_IDLE=() RSS_AFTER=() RSS_PEAK=()

# The backend is needed by every path.
setup_backend || die "backend nginx did not come up"
STATUS[direct]=ready

if want nginx; then
  if setup_nginx && wait_http proxy "${URL_SMALL[nginx]}" "$SMALL_SIZE"; then STATUS[nginx]=ready
  else STATUS[nginx]="failed: nginx proxy did not come up (see log above)"; fi
fi
if want nginx_tls; then
  if setup_nginx_tls \
     && wait_http proxy-tls "${URL_SMALL[nginx_tls]}" "$SMALL_SIZE" "${NGINX_TLS_CURL[@]}" \
     && wait_http proxy-tls "${URL_LARGE[nginx_tls]}" "$LARGE_SIZE" "${NGINX_TLS_CURL[@]}"; then STATUS[nginx_tls]=ready
  else STATUS[nginx_tls]="failed: nginx TLS proxy did not come up (see log above)"; fi
fi
if want rathole; then
  if setup_rathole && wait_http "rathole-server rathole-client" "${URL_SMALL[rathole]}" "$SMALL_SIZE" \
     && wait_http "rathole-server rathole-client" "${URL_LARGE[rathole]}" "$LARGE_SIZE"; then STATUS[rathole]=ready
  else STATUS[rathole]="failed: rathole tunnel did not come up (see log above)"; fi
fi
if want rathole_tls; then
  if setup_rathole_tls \
     && wait_http "rathole-tls-server rathole-tls-client" "${URL_SMALL[rathole_tls]}" "$SMALL_SIZE" \
     && wait_http "rathole-tls-server rathole-tls-client" "${URL_LARGE[rathole_tls]}" "$LARGE_SIZE"; then
    STATUS[rathole_tls]=ready
  elif [[ -n $RATHOLE_TLS_SKIP ]]; then STATUS[rathole_tls]=$RATHOLE_TLS_SKIP; log "rathole_tls: $RATHOLE_TLS_SKIP"
  else STATUS[rathole_tls]="failed: rathole TLS tunnel did not come up (see log above)"; fi
fi
if want postern-sso && [[ -n $SSO_SKIP ]]; then
  STATUS[postern-sso]=$SSO_SKIP
  log "postern-sso: $SSO_SKIP"
fi
if want postern || { want postern-sso && [[ -z $SSO_SKIP ]]; }; then
  # One edge and one connector serve both Postern paths.
  postern_status=ready
  if ! ensure_postern_binary; then postern_status=$POSTERN_SKIP
  elif ! setup_postern; then postern_status="failed: postern did not come up (see log above)"; fi
  if want postern; then
    STATUS[postern]=$postern_status
    [[ $postern_status == ready ]] || log "postern: $postern_status"
  fi
  if want postern-sso; then
    if [[ -n $SSO_SKIP ]]; then :   # already set and logged above
    elif [[ $postern_status != ready ]]; then STATUS[postern-sso]=$postern_status
    else setup_postern_sso || true
    fi
    [[ -n $SSO_SKIP || ${STATUS[postern-sso]} == ready ]] || log "postern-sso: ${STATUS[postern-sso]}"
  fi
fi

if want postern-observed; then
  if ! ensure_postern_binary; then STATUS[postern-observed]=$POSTERN_SKIP
  elif setup_postern observed; then
    STATUS[postern-observed]=ready
    scrape_metrics &
    PIDS+=($!)
  else STATUS[postern-observed]="failed: the observed postern did not come up (see log above)"; fi
  [[ ${STATUS[postern-observed]} == ready ]] || log "postern-observed: ${STATUS[postern-observed]}"
fi

# Idle memory: everything is up and each tunnel has carried one or two requests, no load yet.
for name in connector edge connector-observed edge-observed rathole-client rathole-server \
            rathole-tls-client rathole-tls-server; do
  alive "$name" || continue
  RSS_IDLE[$name]=$(status_kib "$name" VmRSS)
done

# Both tests in rounds, the paths interleaved in each, so that a slow spell of this shared
# machine falls on every path alike.
declare -A R_RPS=() R_P50=() R_P99=() R_CPU_REQ=() R_BCPU_REQ=() R_MBPS=() R_CPU_MIB=() R_BCPU_MIB=()
declare -A R_INSTR_REQ=()
KINDS="small large"
(( BENCH_INSTRUCTIONS )) && KINDS=small   # 1 MiB under callgrind outlasts wrk's timeouts
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  for kind in $KINDS; do
    for p in "${ALL_PATHS[@]}"; do
      want "$p" || continue
      [[ ${STATUS[$p]:-} == ready ]] || continue
      "bench_$kind" "$p" "$round" || true
    done
  done
done
for p in "${ALL_PATHS[@]}"; do
  [[ ${STATUS[$p]:-} == ready ]] && STATUS[$p]=ok
done
median_rounds

for name in connector edge connector-observed edge-observed rathole-client rathole-server \
            rathole-tls-client rathole-tls-server; do
  alive "$name" || continue
  RSS_AFTER[$name]=$(status_kib "$name" VmRSS)
  RSS_PEAK[$name]=$(status_kib "$name" VmHWM)
done

print_report
write_tsv
