#!/usr/bin/env bash
# Tests the Debian package on this machine: builds it from the debug binaries (target/debug, as
# `cargo test` or `cargo build -p postern --bins` leaves them) with packaging/build-deb.sh,
# installs it with dpkg, checks what it installed (binaries, users, units with
# `systemd-analyze verify`, the default /etc/postern/edge.toml, modes), runs the edge and a
# connector as their service users under the units' restrictions that work without systemd,
# sends a request through them, and purges the package, checking that it left nothing behind.
#
# Needs root on Debian. It refuses to touch a postern package it did not install itself.
set -euo pipefail
cd "$(dirname "$0")/.."

me=scripts/package-test.sh
fail() {
    echo "$me: FAIL: $*" >&2
    exit 1
}
step() { echo "$me: [${SECONDS} s] $*"; }

[ "$(id -u)" -eq 0 ] || fail "run it as root: it installs and purges the postern package"
command -v dpkg >/dev/null 2>&1 || fail "needs dpkg (a Debian system)"

# What the test itself uses, idempotently.
need_apt=()
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v setpriv >/dev/null 2>&1 || need_apt+=(util-linux)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v ss >/dev/null 2>&1 || need_apt+=(iproute2)
[ -x /usr/bin/python3 ] || need_apt+=(python3)
command -v dpkg-shlibdeps >/dev/null 2>&1 || need_apt+=(dpkg-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need_apt[@]}"
fi
# cargo-deb, pinned; 3.8.0 builds with Rust 1.85 and later.
cargo_deb_version=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $cargo_deb_version" ]; then
    cargo install --locked cargo-deb --version "$cargo_deb_version"
fi

# dpkg, waiting up to 10 minutes while another dpkg or apt holds its lock (as apt's
# DPkg::Lock::Timeout does); its errors on standard error.
dpkg_waiting() {
    local deadline=$((SECONDS + 600)) err rc
    err=$(mktemp)
    while true; do
        rc=0
        dpkg "$@" >/dev/null 2>"$err" || rc=$?
        if [ "$rc" -ne 0 ] && grep -q 'lock' "$err" && [ "$SECONDS" -lt "$deadline" ]; then
            sleep 2
            continue
        fi
        cat "$err" >&2
        rm -f "$err"
        return "$rc"
    done
}

# A postern package installed by someone else holds someone's edge: leave it alone. One this test
# installed (a run that was killed) is purged.
marker=/var/tmp/postern-package-test.installed
status() { dpkg-query -W -f='${db:Status-Status}' postern 2>/dev/null || true; }
if [ -n "$(status)" ] && [ "$(status)" != not-installed ]; then
    [ -e "$marker" ] || fail "a postern package is installed on this machine and this test did not install it; remove it first (dpkg --purge postern)"
    step "purging the postern package a previous run left"
    dpkg_waiting --purge postern || fail "dpkg --purge postern failed"
fi
rm -f "$marker"

tmp=$(mktemp -d)
chmod 0755 "$tmp"
pids=()
cleanup() {
    local rc=$?
    local pid
    for pid in "${pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -e "$marker" ]; then
        dpkg_waiting --purge postern 2>/dev/null || true
        rm -f "$marker"
    fi
    rm -rf "$tmp"
    if [ "$rc" -ne 0 ]; then
        echo "$me: failed (exit $rc)" >&2
    fi
}
trap cleanup EXIT

# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# Whether process $1 runs (a child that exited is a zombie until waited for).
alive() {
    local state
    state=$(ps -o stat= -p "$1") && [ "${state:0:1}" != Z ]
}

# Sends SIGTERM to $2 and waits for it to exit (at most the units' TimeoutStopSec=45s); fails
# unless it exited 0.
stop() {
    local name=$1 pid=$2 rc=0
    kill -TERM "$pid"
    wait_for 45 exited "$pid" || fail "$name did not exit within 45 s of SIGTERM"
    wait "$pid" || rc=$?
    # Reaped: its PID may be reused, so the cleanup must not signal it.
    local left=() p
    for p in "${pids[@]}"; do
        [ "$p" = "$pid" ] || left+=("$p")
    done
    pids=("${left[@]}")
    [ "$rc" -eq 0 ] || fail "$name exited $rc after SIGTERM"
}
exited() { ! alive "$1"; }

# --- Build ---------------------------------------------------------------------------------

for bin in postern postern-connector; do
    if [ ! -x "target/debug/$bin" ]; then
        step "target/debug/$bin is missing: building the binaries"
        cargo build --locked -p postern --bins
        break
    fi
done
start=$SECONDS
deb=$(packaging/build-deb.sh dev --fast | tail -n 1) || fail "packaging/build-deb.sh dev failed"
[ -f "$deb" ] || fail "packaging/build-deb.sh printed no package path (got: $deb)"
step "built $deb in $((SECONDS - start)) s"

dpkg-deb -f "$deb" Package | grep -qx postern || fail "the package is not named postern"
dpkg-deb -f "$deb" Depends | grep -q adduser || fail "the package does not depend on adduser"
mkdir "$tmp/control"
dpkg-deb -e "$deb" "$tmp/control"
grep -qx /etc/postern/edge.toml "$tmp/control/conffiles" || fail "/etc/postern/edge.toml is not a conffile"
for script in postinst prerm postrm; do
    [ -x "$tmp/control/$script" ] || fail "the package has no executable $script"
    sh -n "$tmp/control/$script" || fail "$script is not valid sh"
    ! grep -q '#DEBHELPER#' "$tmp/control/$script" || fail "$script still holds #DEBHELPER#"
done

# --- Install -------------------------------------------------------------------------------

touch "$marker"
start=$SECONDS
dpkg_waiting -i "$deb" || fail "dpkg -i $deb failed"
step "installed in $((SECONDS - start)) s"
[ "$(status)" = installed ] || fail "postern is not installed after dpkg -i"

# Both binaries run and are of the package's version.
upstream=$(dpkg-deb -f "$deb" Version)
upstream=${upstream%-*}
for bin in postern postern-connector; do
    out=$(/usr/bin/$bin version 2>&1) || fail "/usr/bin/$bin version failed: $out"
    [[ "$out" == "$bin $upstream ("* ]] || fail "/usr/bin/$bin version says '$out', not $bin $upstream"
    step "$out"
done

# The system users: no login, their own group, home in their state directory.
for user in postern postern-connector; do
    entry=$(getent passwd "$user") || fail "user $user does not exist"
    IFS=: read -r _ _ uid gid _ home shell <<<"$entry"
    [ "$uid" -lt 1000 ] || fail "user $user is not a system user (uid $uid)"
    [ "$(getent group "$gid" | cut -d: -f1)" = "$user" ] || fail "user $user's group is not $user"
    [ "$home" = "/var/lib/$user" ] || fail "user $user's home is $home, not /var/lib/$user"
    [ "$shell" = /usr/sbin/nologin ] || fail "user $user's shell is $shell, not /usr/sbin/nologin"
done

# Modes and owners: "path mode owner:group".
check_mode() {
    local got
    got=$(stat -c '%a %U:%G' "$1") || fail "$1 is missing"
    [ "$got" = "$2" ] || fail "$1 is $got, expected $2"
}
unit_dir=$(dirname "$(dpkg -L postern | grep '/systemd/system/postern-edge.service$')")
[ -n "$unit_dir" ] || fail "postern-edge.service is not in the package"
check_mode /usr/bin/postern "755 root:root"
check_mode /usr/bin/postern-connector "755 root:root"
check_mode "$unit_dir/postern-edge.service" "644 root:root"
check_mode "$unit_dir/postern-connector.service" "644 root:root"
check_mode /etc/postern "755 root:root"
check_mode /etc/postern/edge.toml "644 root:root"
check_mode /var/lib/postern "700 postern:postern"
check_mode /var/lib/postern-connector "700 postern-connector:postern-connector"
check_mode /usr/share/man/man1/postern-edge.1.gz "644 root:root"
check_mode /usr/share/man/man1/postern-connector-run.1.gz "644 root:root"
check_mode /usr/share/bash-completion/completions/postern "644 root:root"
check_mode /usr/share/doc/postern/deploy.md "644 root:root"
# Nothing in the package is writable by anyone but root, nor setuid.
bad=$(dpkg -L postern | while read -r f; do
    [ -e "$f" ] && find "$f" -maxdepth 0 \( -perm /022 -o -perm /6000 -o ! -user root \) -print
done)
[ -z "$bad" ] || fail "package files writable by others, setuid or not root's: $bad"

# The units pass systemd-analyze verify with no complaint at all (it exits 0 for unknown keys and
# bad values, so any output counts). The Documentation= man pages are checked above.
for unit in postern-edge postern-connector; do
    out=$(systemd-analyze verify --man=no "$unit_dir/$unit.service" 2>&1) ||
        fail "systemd-analyze verify $unit.service failed: $out"
    [ -z "$out" ] || fail "systemd-analyze verify $unit.service complained: $out"
done
step "systemd-analyze verify: both units clean"
grep -qx 'ExecStart=/usr/bin/postern edge --config /etc/postern/edge.toml' "$unit_dir/postern-edge.service" ||
    fail "postern-edge.service does not run /usr/bin/postern edge --config /etc/postern/edge.toml"
grep -qx 'ExecStart=/usr/bin/postern-connector run --state /var/lib/postern-connector' "$unit_dir/postern-connector.service" ||
    fail "postern-connector.service does not run postern-connector run --state /var/lib/postern-connector"

# The default configuration is valid, read as the service reads it.
out=$(setpriv --reuid=postern --regid=postern --init-groups -- \
    /usr/bin/postern edge --config /etc/postern/edge.toml --check-config 2>&1) ||
    fail "postern edge --config /etc/postern/edge.toml --check-config failed: $out"
grep -q '^configuration OK' <<<"$out" || fail "--check-config did not say OK: $out"
grep -q '^  data = /var/lib/postern ' <<<"$out" || fail "edge.toml does not set data = /var/lib/postern: $out"
step "/etc/postern/edge.toml: configuration OK"

# --- Run the services as systemd would ---------------------------------------------------
#
# systemd is not PID 1 in a container, so this runs each service's ExecStart (with loopback
# listeners) as its user with what of the unit works without systemd: the capability bounding and
# ambient sets, NoNewPrivileges, UMask=0077, LimitNOFILE when allowed and MemoryDenyWriteExecute
# (the kernel's PR_SET_MDWE, which systemd also uses; set on the wrapper and kept across exec).

case "$(uname -m)" in
    x86_64) prctl_nr=157 ;;
    aarch64) prctl_nr=167 ;;
    *) prctl_nr= ;;
esac
# Sets $as_service to the command that runs what follows it as service user $1 with only the
# capabilities in $2 (setpriv's syntax: -all, or -all,+net_bind_service). Each step execs the
# next, so the command keeps the PID of the first.
as_service() {
    local user=$1 caps=$2
    as_service=()
    if [ -n "$prctl_nr" ]; then
        as_service+=(perl -e "syscall($prctl_nr, 65, 1, 0, 0, 0) == 0 or die \"PR_SET_MDWE: \$!\\n\"; exec {\$ARGV[0]} @ARGV or die" --)
    fi
    if prlimit --nofile=65536:65536 true 2>/dev/null; then
        as_service+=(prlimit --nofile=65536:65536)
    fi
    as_service+=(setpriv --reuid="$user" --regid="$user" --init-groups --no-new-privs
        --inh-caps="$caps" --ambient-caps="$caps" --bounding-set="$caps" --
        sh -c 'umask 0077 && exec "$@"' sh)
}
[ -n "$prctl_nr" ] || step "no PR_SET_MDWE on $(uname -m): running without MemoryDenyWriteExecute"

# The public listener on a privileged port, which only CAP_NET_BIND_SERVICE allows.
port=
for p in 443 $(seq 1023 -1 1000); do
    if [ -z "$(ss -Hltn "sport = :$p")" ]; then
        port=$p
        break
    fi
done
[ -n "$port" ] || fail "no free port below 1024 to run the edge on"

as_service postern -all,+net_bind_service
"${as_service[@]}" /usr/bin/postern edge --config /etc/postern/edge.toml \
    --listen "127.0.0.1:$port" --connector-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    >"$tmp/edge.out" 2>"$tmp/edge.err" &
edge=$!
pids+=("$edge")
edge_ready() {
    alive "$edge" || fail "the edge exited: $(tail -n 20 "$tmp/edge.err")"
    grep -q '^  admin token: ' "$tmp/edge.out"
}
wait_for 60 edge_ready || fail "the edge did not print its listeners within 60 s: $(tail -n 20 "$tmp/edge.err")"
head -n 1 "$tmp/edge.out" | grep -qx 'postern edge ready' || fail "the edge did not print 'postern edge ready': $(cat "$tmp/edge.out")"
grep -qx "  public:    https://127.0.0.1:$port" "$tmp/edge.out" || fail "the edge is not on port $port: $(cat "$tmp/edge.out")"
admin_url=$(sed -n 's|^  admin: *||p' "$tmp/edge.out")
connector_url=$(sed -n 's|^  connector: *||p' "$tmp/edge.out")
[ -n "$admin_url" ] && [ -n "$connector_url" ] || fail "the edge did not print its admin and connector listeners: $(cat "$tmp/edge.out")"
step "edge up as user postern on 127.0.0.1:$port (CAP_NET_BIND_SERVICE only)"

[ "$(stat -c %U /proc/"$edge")" = postern ] || fail "the edge does not run as postern"
grep -q '^CapEff:[[:space:]]*0000000000000400$' /proc/"$edge"/status || fail "the edge has other capabilities than CAP_NET_BIND_SERVICE: $(grep ^Cap /proc/"$edge"/status)"
check_mode /var/lib/postern "700 postern:postern"
for f in state.db admin-token ca-key.pem connector-ca-key.pem; do
    check_mode "/var/lib/postern/$f" "600 postern:postern"
done

adm() {
    /usr/bin/postern admin --admin-url "$admin_url" --token-file /var/lib/postern/admin-token \
        --ca-file /var/lib/postern/ca.pem "$@"
}
adm group create package-test >/dev/null || fail "postern admin group create failed"
token=$(adm connector token --group package-test) || fail "postern admin connector token failed"
install -m 0644 /var/lib/postern/ca.pem "$tmp/ca.pem"

# The connector registers and runs as its user, with no capabilities.
as_service postern-connector -all
"${as_service[@]}" /usr/bin/postern-connector register --edge "$connector_url" \
    --token "$token" --state /var/lib/postern-connector --ca-file "$tmp/ca.pem" >"$tmp/register.out" 2>&1 ||
    fail "postern-connector register as postern-connector failed: $(cat "$tmp/register.out")"
"${as_service[@]}" /usr/bin/postern-connector run --state /var/lib/postern-connector \
    >"$tmp/connector.out" 2>"$tmp/connector.err" &
connector=$!
pids+=("$connector")
connector_active() {
    alive "$connector" || fail "the connector exited: $(tail -n 20 "$tmp/connector.err")"
    adm --json connector list | grep -q '"status": "active"'
}
wait_for 30 connector_active || fail "the connector did not come up within 30 s: $(tail -n 20 "$tmp/connector.err")"
grep -q '^CapEff:[[:space:]]*0000000000000000$' /proc/"$connector"/status || fail "the connector has capabilities: $(grep ^Cap /proc/"$connector"/status)"
check_mode /var/lib/postern-connector/connector-key.pem "600 postern-connector:postern-connector"
step "connector registered and up as user postern-connector (no capabilities)"

# A request through both: an app on loopback, published, reached at the edge's public listener.
mkdir "$tmp/www"
echo "hello through the package" >"$tmp/www/index.html"
/usr/bin/python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$tmp/www" >"$tmp/app.out" 2>&1 &
pids+=($!)
wait_for 20 grep -qs ' port [0-9][0-9]* ' "$tmp/app.out" || fail "the test app did not start: $(cat "$tmp/app.out")"
app_port=$(sed -n 's/.* port \([0-9]*\) .*/\1/p' "$tmp/app.out" | head -n 1)
adm app publish hello --external-url https://hello.package-test.example \
    --internal-url "http://127.0.0.1:$app_port/" --group package-test >/dev/null ||
    fail "postern admin app publish failed"
fetch() {
    curl -fsS --max-time 10 --cacert "$tmp/ca.pem" \
        --resolve "hello.package-test.example:$port:127.0.0.1" \
        "https://hello.package-test.example:$port/" >"$tmp/body" 2>"$tmp/curl.err"
}
wait_for 20 fetch || fail "no answer through the edge and the connector: $(cat "$tmp/curl.err")"
grep -qx "hello through the package" "$tmp/body" || fail "unexpected answer through the edge: $(head -c 500 "$tmp/body")"
step "request through edge and connector answered"

# A backup of the running edge, owner-only, restores into a new directory.
adm backup --out "$tmp/backup.db" >/dev/null || fail "postern admin backup failed"
check_mode "$tmp/backup.db" "600 root:root"
/usr/bin/postern edge restore --from "$tmp/backup.db" --data "$tmp/restored" >/dev/null 2>"$tmp/restore.err" ||
    fail "postern edge restore failed: $(cat "$tmp/restore.err")"
[ -f "$tmp/restored/state.db" ] || fail "the restored data directory has no state.db"
step "backup and restore"

stop connector "$connector"
stop edge "$edge"
step "connector and edge stopped on SIGTERM"

# --- Purge ---------------------------------------------------------------------------------

start=$SECONDS
dpkg_waiting --purge postern 2>"$tmp/purge.err" || fail "dpkg --purge postern failed: $(cat "$tmp/purge.err")"
rm -f "$marker"
step "purged in $((SECONDS - start)) s"
[ -z "$(status)" ] || [ "$(status)" = not-installed ] || fail "postern is $(status) after the purge, not gone"
for user in postern postern-connector; do
    ! getent passwd "$user" >/dev/null || fail "user $user is still there after the purge"
    ! getent group "$user" >/dev/null || fail "group $user is still there after the purge"
done
for f in /usr/bin/postern /usr/bin/postern-connector "$unit_dir/postern-edge.service" \
    "$unit_dir/postern-connector.service" /etc/postern /var/lib/postern /var/lib/postern-connector \
    /var/log/postern /usr/share/doc/postern /usr/share/man/man1/postern.1.gz; do
    [ ! -e "$f" ] || fail "$f is still there after the purge"
done

step "OK"
