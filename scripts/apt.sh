# Sourced by scripts/test.sh and bench/run.sh; expects the caller's `log` and `die`.

# ensure_apt_packages package:command...  installs (idempotently) each package whose command is
# missing, running `apt-get update` only when the first install attempt fails.
ensure_apt_packages() {
    local missing=() spec
    for spec in "$@"; do
        command -v "${spec#*:}" >/dev/null 2>&1 || missing+=("${spec%%:*}")
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install them yourself"
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || die "missing ${missing[*]}: run as root or install them"
        sudo=(sudo)
    fi
    log "installing ${missing[*]} (apt-get)"
    # RUNLEVEL=1: packaged services (nginx on port 80, redis) are not started; we run our own.
    local env=(env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1)
    "${sudo[@]}" "${env[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || { "${sudo[@]}" apt-get update -q \
            && "${sudo[@]}" "${env[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; }
}
