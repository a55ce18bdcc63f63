#!/usr/bin/env bash
# What ingress -> sidecar mutual TLS costs per request on keep-alive connections (issue 12),
# counted with callgrind like bench/instructions.sh (user-space instructions; not timed, so the
# machine's load does not matter):
#
#   plain    the ingress proxy forwards to the app's port directly (no sidecar);
#   mtls     the same table, but the backend's pod is sidecar-injected: the ingress forwards
#            over mutual TLS to a tollgate-proxy sidecar (--sidecar-app-port), which forwards to
#            the app on loopback;
#   sidecar  the sidecar's own instructions per request in the mtls set-up.
#
# The extra CPU per request of sidecar mode = (mtls - plain) on the ingress + sidecar. Each is
# (Ir[N_LONG] - Ir[N_SHORT]) / (N_LONG - N_SHORT), so start-up and the TLS handshakes (one
# client connection, one ingress -> sidecar connection) cancel out.
#
# The ingress serves a fixed table from its last-known-good file (--from-operator at a closed
# port, --state-dir): the table names the app's endpoint and, for mtls, the workload identity and
# sidecar port, as the operator writes them for injected pods. Certificates: an openssl-made CA
# and two SPIFFE identities (the ingress's, the workload's), as the operator's CA would issue.
#
#   bench/sidecar-mtls.sh
#   PROXY_BIN=/path/to/tollgate-proxy bench/sidecar-mtls.sh
#
# Env: PROXY_BIN, BACKEND_BIN (as bench/instructions.sh), N_LONG (2000), N_SHORT (100), KEEP (0),
# READY_TIMEOUT (120 s).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
# shellcheck source=scripts/apt.sh
source "$ROOT/scripts/apt.sh"
ensure_apt_packages valgrind:valgrind openssl:openssl curl:curl python3:python3

N_LONG="${N_LONG:-2000}"
N_SHORT="${N_SHORT:-100}"
KEEP="${KEEP:-0}"
READY_TIMEOUT="${READY_TIMEOUT:-120}"
((N_SHORT > 0 && N_LONG > N_SHORT)) || die "need N_LONG > N_SHORT > 0"
N_DIFF=$((N_LONG - N_SHORT))
# As bench/instructions.sh: the clock calibration in a once_cell initializer spins for a fixed
# wall time, so it would not cancel between the runs.
EXCLUDE="once_cell::imp::initialize_or_wait"
TRUST_DOMAIN="bench.local"
INGRESS_ID="spiffe://$TRUST_DOMAIN/ns/tollgate-system/sa/tollgate-proxy"
WORKLOAD_ID="spiffe://$TRUST_DOMAIN/ns/bench/sa/api"

bench_binaries 1

OUT="$(mktemp -d -t tollgate-sidecar-mtls.XXXXXX)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ "$KEEP" == 1 ]]; then log "raw outputs kept in $OUT"; else rm -rf "$OUT"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pick_port BACKEND_PORT 19400
pick_port SIDECAR_PORT 19443
pick_port SIDECAR_ADMIN 19402
pick_port INGRESS_PORT 19480
pick_port INGRESS_ADMIN 19481
pick_port CLOSED_PORT 19499

# --- identities --------------------------------------------------------------------------------
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$OUT/ca.key" 2>/dev/null
openssl req -x509 -new -key "$OUT/ca.key" -subj "/CN=bench workload CA" -days 2 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$OUT/ca.crt" 2>/dev/null
# identity DIR SPIFFE-ID: cert.pem, key.pem, bundle.pem as --identity-dir reads them.
identity() {
    local dir="$1" id="$2"
    mkdir -p "$dir"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/key.pem" 2>/dev/null
    openssl req -new -key "$dir/key.pem" -subj "/" -out "$dir/csr.pem" 2>/dev/null
    printf 'subjectAltName=URI:%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' "$id" >"$dir/ext"
    openssl x509 -req -in "$dir/csr.pem" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" -CAcreateserial \
        -days 1 -extfile "$dir/ext" -out "$dir/cert.pem" 2>/dev/null
    cp "$OUT/ca.crt" "$dir/bundle.pem"
    rm -f "$dir/csr.pem" "$dir/ext"
}
identity "$OUT/ingress-id" "$INGRESS_ID"
identity "$OUT/sidecar-id" "$WORKLOAD_ID"

# --- the table -----------------------------------------------------------------------------------
# state DIR WORKLOAD(0|1): <DIR>/table.json, the last-known-good file the ingress serves.
state() {
    local dir="$1" workload=""
    mkdir -p "$dir"
    if [[ "$2" == 1 ]]; then
        workload=", \"workload\": {\"identity\": \"$WORKLOAD_ID\", \"sidecarPort\": $SIDECAR_PORT}"
    fi
    cat >"$dir/table.json" <<EOF
{"version": 1, "table": {
  "products": [{"id": "bench/api", "displayName": "api", "hostnames": [],
    "subscriptionRequired": false, "keyLocation": {"header": "x-subscription-key"},
    "backend": {"kind": "service", "namespace": "bench", "name": "api", "port": 80,
                "endpoints": ["127.0.0.1:$BACKEND_PORT"]$workload},
    "timeouts": {"connectMs": 5000, "requestMs": 30000}, "policies": [],
    "routes": [{"name": "all", "path": "/", "pathMatch": "Prefix", "methods": []}]}],
  "plans": [], "subscriptions": [], "policies": []}}
EOF
}
state "$OUT/state-plain" 0
state "$OUT/state-mtls" 1
echo "not-used" >"$OUT/token"

# --- processes -----------------------------------------------------------------------------------
wait_ready() { # URL WHAT PID
    local deadline=$((SECONDS + READY_TIMEOUT)) code=""
    while ((SECONDS < deadline)); do
        kill -0 "$3" 2>/dev/null || die "$2 exited during start-up; see $OUT"
        code="$(curl -s -o /dev/null -m 30 -w '%{http_code}' "$1" || true)"
        [[ "$code" == 200 ]] && return 0
        sleep 0.5
    done
    die "$2 did not answer 200 on $1 within ${READY_TIMEOUT}s (last: ${code:-none}); see $OUT"
}

stop() { # PID: SIGTERM, then wait (valgrind writes its output on exit)
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local keep=() p
    for p in "${PIDS[@]}"; do [[ "$p" != "$1" ]] && keep+=("$p"); done
    PIDS=("${keep[@]}")
}

"$BACKEND_BIN" --listen "127.0.0.1:$BACKEND_PORT" --threads 1 >"$OUT/backend.log" 2>&1 &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
wait_ready "http://127.0.0.1:$BACKEND_PORT/bench" "the demo backend" "$BACKEND_PID"

# sidecar [VALGRIND-ARGS...]: start the sidecar (under valgrind when args are given); sets SIDECAR_PID.
sidecar() {
    TOKIO_WORKER_THREADS=1 RUST_LOG=warn "$@" "$PROXY_BIN" --sidecar-app-port "$BACKEND_PORT" \
        --sidecar-listen "127.0.0.1:$SIDECAR_PORT" --admin-listen "127.0.0.1:$SIDECAR_ADMIN" \
        --allowed-identities "$INGRESS_ID" --trust-domain "$TRUST_DOMAIN" \
        --identity-dir "$OUT/sidecar-id" >>"$OUT/sidecar.log" 2>&1 &
    SIDECAR_PID=$!
    PIDS+=("$SIDECAR_PID")
    wait_ready "http://127.0.0.1:$SIDECAR_ADMIN/readyz" "the sidecar" "$SIDECAR_PID"
}

# ingress STATE-DIR [VALGRIND-ARGS...]: start the ingress; sets INGRESS_PID.
ingress() {
    local state_dir="$1"
    shift
    TOKIO_WORKER_THREADS=1 RUST_LOG=warn "$@" "$PROXY_BIN" \
        --from-operator "http://127.0.0.1:$CLOSED_PORT" --token-file "$OUT/token" \
        --state-dir "$state_dir" --listen "127.0.0.1:$INGRESS_PORT" \
        --admin-listen "127.0.0.1:$INGRESS_ADMIN" --identity-dir "$OUT/ingress-id" \
        >>"$OUT/ingress.log" 2>&1 &
    INGRESS_PID=$!
    PIDS+=("$INGRESS_PID")
    wait_ready "http://127.0.0.1:$INGRESS_ADMIN/readyz" "the ingress" "$INGRESS_PID"
}

load() { # N: N keep-alive GETs through the ingress, every answer 200
    timeout $((120 + $1 / 10)) python3 "$ROOT/bench/keepalive-get.py" "$INGRESS_PORT" /bench "$1" "X-Bench: 1" \
        >>"$OUT/client.txt" 2>&1 || die "the client did not get $1 answers of 200: $(tail -1 "$OUT/client.txt")"
}

callgrind() { # NAME -> valgrind args
    echo valgrind --tool=callgrind "--log-file=$OUT/$1.valgrind.log" "--callgrind-out-file=$OUT/$1.out" \
        "--toggle-collect=$EXCLUDE" --collect-atstart=yes
}

total() { python3 "$ROOT/bench/callgrind-profile.py" totals "$1"; }
per_request() { awk -v a="$1" -v b="$2" -v n="$N_DIFF" 'BEGIN { printf "%.0f", (a - b) / n }'; }

# The ingress under callgrind, plain then mtls (the sidecar running natively for mtls).
for variant in plain mtls; do
    if [[ "$variant" == mtls ]]; then sidecar; fi
    for n in "$N_LONG" "$N_SHORT"; do
        log "ingress ($variant) under callgrind: $n requests"
        # shellcheck disable=SC2046 # word splitting of the valgrind command is intended
        ingress "$OUT/state-$variant" $(callgrind "ingress-$variant.$n")
        load "$n"
        stop "$INGRESS_PID"
    done
    if [[ "$variant" == mtls ]]; then stop "$SIDECAR_PID"; fi
done
# The sidecar under callgrind, the ingress running natively.
for n in "$N_LONG" "$N_SHORT"; do
    log "sidecar under callgrind: $n requests"
    # shellcheck disable=SC2046
    sidecar $(callgrind "sidecar.$n")
    ingress "$OUT/state-mtls"
    load "$n"
    stop "$INGRESS_PID"
    stop "$SIDECAR_PID"
done

PLAIN="$(per_request "$(total "$OUT/ingress-plain.$N_LONG.out")" "$(total "$OUT/ingress-plain.$N_SHORT.out")")"
MTLS="$(per_request "$(total "$OUT/ingress-mtls.$N_LONG.out")" "$(total "$OUT/ingress-mtls.$N_SHORT.out")")"
SIDE="$(per_request "$(total "$OUT/sidecar.$N_LONG.out")" "$(total "$OUT/sidecar.$N_SHORT.out")")"
{
    echo
    echo "Per request ($N_LONG-request run minus $N_SHORT-request run, one keep-alive client connection):"
    printf '  %-44s %10s\n' "ingress -> app, plaintext" "$PLAIN"
    printf '  %-44s %10s\n' "ingress -> sidecar, mutual TLS" "$MTLS"
    printf '  %-44s %10s\n' "sidecar (mutual TLS in, plaintext to the app)" "$SIDE"
    printf '  %-44s %10s\n' "extra on the ingress for mutual TLS" "$((MTLS - PLAIN))"
    printf '  %-44s %10s\n' "extra in all (ingress extra + sidecar)" "$((MTLS - PLAIN + SIDE))"
    echo "user-space instructions (callgrind Ir); once_cell initializers not counted (see bench/instructions.sh)."
    echo "The ingress's 'operator unreachable' retries run in both runs of a pair and are not per request."
} | tee "$OUT/report.txt"
