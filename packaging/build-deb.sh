#!/usr/bin/env bash
# Makes the Debian package (target/debian/postern_VERSION-1_ARCH.deb) from the binaries already
# built with PROFILE: the man pages and shell completions come from that `postern` binary, then
# cargo-deb packages it all as [package.metadata.deb] in crates/postern/Cargo.toml says.
#
#   cargo build --release --locked -p postern --bins && packaging/build-deb.sh
#   packaging/build-deb.sh dev --fast        # from target/debug, for tests
#
# Needs cargo-deb (`cargo install --locked cargo-deb --version 3.8.0`). Prints the .deb's path.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${1:-release}"
[ $# -gt 0 ] && shift
case "$profile" in
    dev | debug) profile=dev dir=debug ;;
    *) dir="$profile" ;;
esac

target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
out="$target_dir/$dir"
for bin in postern postern-connector; do
    if [ ! -x "$out/$bin" ]; then
        echo "packaging/build-deb.sh: $out/$bin is missing; build it first (cargo build --locked -p postern --bins$([ "$profile" = dev ] || echo " --profile $profile"))" >&2
        exit 1
    fi
done

# Man pages (gzipped, as Debian installs them) and completions, from the binary being packaged.
rm -rf "$out/postern-man" "$out/postern-completions"
mkdir -p "$out/postern-man" "$out/postern-completions"
"$out/postern" man --out "$out/postern-man" >/dev/null
gzip -9n "$out/postern-man"/*.1
"$out/postern" completions bash >"$out/postern-completions/postern.bash"
"$out/postern" completions zsh >"$out/postern-completions/_postern"
"$out/postern" completions fish >"$out/postern-completions/postern.fish"

cargo deb -p postern --locked --no-build --profile "$profile" -o "$target_dir/debian/" "$@"
