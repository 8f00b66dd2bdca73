#!/usr/bin/env bash
# Installs what the build and the tests need, idempotently: Debian packages with apt-get (when
# one is missing), cargo-deny (when missing) and the Node peers from the committed lock file (when
# it changed).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# Building: webauthn-rs (passkeys) needs OpenSSL, which is built from source and linked
# statically (perl and make run its build). The tools installed with cargo below may link the
# host's OpenSSL: its headers and pkg-config.
command -v perl >/dev/null 2>&1 || need_apt+=(perl)
command -v make >/dev/null 2>&1 || need_apt+=(make)
pkg-config --exists openssl 2>/dev/null || need_apt+=(pkg-config libssl-dev)
# The tests read /proc and send signals with `kill` (procps).
command -v kill >/dev/null 2>&1 || need_apt+=(procps)
# Independent peers: the npm OpenID provider and Playwright run on Node; pages are tested in
# Debian's Chromium.
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
# The SIEM export test receives syslog with Debian's rsyslog, run unprivileged with its own config.
[ -x /usr/sbin/rsyslogd ] || need_apt+=(rsyslog)
# ...and over TLS, with its GnuTLS driver.
dpkg-query -W -f='${Status}' rsyslog-gnutls 2>/dev/null | grep -q "ok installed" || need_apt+=(rsyslog-gnutls)
# The outbound-only test builds network namespaces, veth pairs and a firewall (ip, ss, nft,
# sysctl).
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v ss >/dev/null 2>&1 || need_apt+=(iproute2)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v sysctl >/dev/null 2>&1 || need_apt+=(procps)
# The metrics tests check the exposition with promtool and scrape it with a real Prometheus.
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        # Waits for another dpkg (an unattended upgrade) rather than failing at once.
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need_apt[@]}"
    else
        echo "scripts/install-deps.sh: missing ${need_apt[*]}; install them (apt-get install ${need_apt[*]})" >&2
        exit 1
    fi
fi

# cargo-deny checks the dependency graph against deny.toml (CI runs it). A pinned version, built
# once: 0.20.2 builds with Rust 1.88 and later.
cargo_deny_version=0.20.2
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $cargo_deny_version" ]; then
    cargo install --locked cargo-deny --version "$cargo_deny_version"
fi

# The Node peers, from the committed lock file; reinstalled only when the lock file changes.
peers=crates/postern/tests/js
stamp="$peers/node_modules/.installed-from"
want=$(sha256sum "$peers/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    npm ci --prefix "$peers" --no-audit --no-fund --loglevel=error
    echo "$want" > "$stamp"
fi
