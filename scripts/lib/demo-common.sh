# shellcheck shell=bash
# shellcheck disable=SC2034 # the colours are used by the sourcing scripts
# Sourced by scripts/demo.sh and scripts/demo-cluster.sh: what both walk-throughs share.
# The caller sets DEMO_NAME (the prefix of its error messages) before sourcing.

# Colours only on a terminal, so CI logs and files stay plain text.
if [[ -t 1 ]]; then
    B=$'\033[1m' DIM=$'\033[2m' G=$'\033[32m' R=$'\033[31m' C=$'\033[36m' N=$'\033[0m'
else
    B="" DIM="" G="" R="" C="" N=""
fi
say() { printf '%s\n' "$*"; }
die() { printf '%s%s: %s%s\n' "$R" "${DEMO_NAME:-demo}" "$*" "$N" >&2; exit 1; }

command -v curl >/dev/null 2>&1 || die "curl is needed (Debian/Ubuntu: apt-get install curl)"
command -v cargo >/dev/null 2>&1 || die "cargo is needed: install Rust with rustup (https://rustup.rs)"

# True when something already listens on HOST:PORT.
port_in_use() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

# The demo keys, straight from examples/weather/secrets.yaml (public, demo only).
secret_key() { # secret-name field
    awk -v s="$1" -v f="$2" '
        /^---/ { name = "" }
        $1 == "name:" && !name { name = $2 }
        name == s && $1 == f ":" { print $2; exit }
    ' examples/weather/secrets.yaml
}
