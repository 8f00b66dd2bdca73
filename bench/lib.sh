# shellcheck shell=bash
# Shared by bench/run.sh, bench/scale.sh and bench/idp.sh (sourced, not run). The script defines
# log() and sets KEEP_WORK (1 = keep the work dir) and, optionally, START_PIN (a command prefix
# such as `taskset -c 1`, which execs the command so $! is its own PID) before using these.

WORK=""
PIDS=()
declare -A PID_OF=()
START_PIN=()
KEEP_WORK=0

descendants() {  # all descendant PIDs of $1
  local child
  for child in $(pgrep -P "$1" 2>/dev/null || true); do
    echo "$child"
    descendants "$child"
  done
}

# On exit: everything started (and what it started) gets TERM, up to 3 s, then KILL; the work dir
# goes unless KEEP_WORK=1 or the script failed.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local all=() pid alive
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || continue
    # shellcheck disable=SC2207  # PIDs are single words
    all+=("$pid" $(descendants "$pid"))
  done
  if (( ${#all[@]} )); then
    kill -TERM "${all[@]}" 2>/dev/null || true
    for _ in $(seq 1 30); do
      alive=0
      for pid in "${all[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      (( alive )) || break
      sleep 0.1
    done
    kill -KILL "${all[@]}" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  if [[ -n $WORK && -d $WORK ]]; then
    if [[ $KEEP_WORK == 1 || $rc != 0 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: run CMD in the background (behind START_PIN), logging to $WORK/logs/NAME.log.
start() {
  local name=$1; shift
  "${START_PIN[@]}" "$@" >"$WORK/logs/$name.log" 2>&1 </dev/null &
  PID_OF[$name]=$!
  PIDS+=($!)
  log "started $name (pid $!)"
}

# run_waited OUT ERRLOG CMD...: CMD in the background, its output to OUT and its errors appended
# to ERRLOG, waited for here, so that a signal to the script is handled at once and the trap
# kills CMD too.
run_waited() {
  local out=$1 errlog=$2; shift 2
  "$@" >"$out" 2>>"$errlog" &
  PIDS+=($!)
  local rc=0
  wait $! || rc=$?
  return $rc
}

# postern_admin_at PORT DIR ARGS...: `postern admin ARGS` against the edge whose admin API is on
# 127.0.0.1:PORT and whose data dir (admin token, CA) is DIR; errors to the admin log.
postern_admin_at() {
  local port=$1 dir=$2; shift 2
  timeout 60 "$POSTERN_BIN" admin --admin-url "https://127.0.0.1:$port" \
    --token-file "$dir/admin-token" --ca-file "$dir/ca.pem" \
    "$@" 2>>"$WORK/logs/postern-admin.log"
}

alive() { [[ -n ${PID_OF[$1]:-} ]] && kill -0 "${PID_OF[$1]}" 2>/dev/null; }

show_log() {  # a component's panic message (if any) and last log lines, to explain a failure
  local f="$WORK/logs/$1.log"
  [[ -s $f ]] || return 0
  if grep -q 'panicked at' "$f"; then
    log "--- panic in $f ---"
    grep -m 1 -A 1 'panicked at' "$f" | sed 's/^/    /' >&2
  fi
  log "--- last lines of $f ---"
  tail -n 20 "$f" | sed 's/^/    /' >&2
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1"); }

# free_ports N: N distinct free TCP ports on 127.0.0.1 (all bound at once, then released)
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}
