#!/usr/bin/env bash
# Side-by-side benchmark: the demo backend directly; nginx and haproxy as plain reverse proxies in
# front of it; nginx and haproxy configured with the same policy as the gateway's bench route (key
# lookup -> 401, a per-key rate limit that never trips, header changes); and tollgate-proxy (key
# auth + plan check + rate limit + quota + header policy) in front of it, all under the same wrk
# load. Prints requests/s, p50 and p99 for each and the ratios.
#
#   bench/run.sh                          # 15 s per target, 32 connections, all six targets
#   DURATION=5s CONNECTIONS=64 bench/run.sh
#   SCENARIOS="nginx-policy tollgate" bench/run.sh
#   SCENARIOS="nginx floor tollgate" bench/run.sh   # floor: the HTTP engine alone, see below
#
# Env: DURATION (15s), CONNECTIONS (32), WRK_THREADS (1), WARMUP (3s), BENCH_REDIS (0: 1 adds a
# Redis-backed quota run, see the end of this file), SCENARIOS
# ("direct nginx nginx-policy haproxy haproxy-policy tollgate"; "floor" on request only: it builds
# bench/floor, or takes FLOOR_BIN), SERVER_CPU (0), LOAD_CPU (1),
# PROXY_BIN / BACKEND_BIN (binaries to measure instead of building them), BACKEND_PORT (19000),
# NGINX_PORT (19080), HAPROXY_PORT (19480), TOLLGATE_PORT (19180), TOLLGATE_ADMIN_PORT (19901);
# a default port that is taken is replaced by the next free one, a port set in the environment
# must be free. Raw outputs go to bench/results/<timestamp>/ (gitignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

DURATION="${DURATION:-15s}"
CONNECTIONS="${CONNECTIONS:-32}"
WRK_THREADS="${WRK_THREADS:-1}"
WARMUP="${WARMUP:-3s}"
ALL_SCENARIOS="direct nginx nginx-policy haproxy haproxy-policy tollgate floor"
SCENARIOS="${SCENARIOS:-direct nginx nginx-policy haproxy haproxy-policy tollgate}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
LUA="$BENCH_LUA"

for s in $SCENARIOS; do
    [[ " $ALL_SCENARIOS " == *" $s "* ]] || die "unknown scenario '$s' (${ALL_SCENARIOS// /, })"
done
has_scenario() { [[ " $SCENARIOS " == *" $1 "* ]]; }

# --- tools -------------------------------------------------------------------------------------

# shellcheck source=scripts/apt.sh
source "$ROOT/scripts/apt.sh"

# package:command pairs
tools=(nginx:nginx wrk:wrk curl:curl util-linux:taskset)
if has_scenario haproxy || has_scenario haproxy-policy; then tools+=(haproxy:haproxy); fi
ensure_apt_packages "${tools[@]}"

NCPU="$(nproc)"
if ((NCPU < 2)); then
    log "warning: only $NCPU CPU; load generator and server will share it and the numbers mean little"
    SERVER_CPU=0
    LOAD_CPU=0
fi

need_proxy=0
if has_scenario tollgate || [[ "${BENCH_JWT:-0}" == 1 || "${BENCH_REDIS:-0}" == 1 ]]; then need_proxy=1; fi
bench_binaries "$need_proxy"
if has_scenario floor; then floor_binary; fi

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS="$ROOT/bench/results/$STAMP"
mkdir -p "$RESULTS"
WORK="$(mktemp -d -t tollgate-bench.XXXXXX)"

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pick_port BACKEND_PORT 19000
pick_port NGINX_PORT 19080
pick_port TOLLGATE_PORT 19180
pick_port TOLLGATE_ADMIN_PORT 19901
pick_port HAPROXY_PORT 19480
pick_port FLOOR_PORT 19280
# The committed manifests name 127.0.0.1:19000; the gateway reads a copy pointed at BACKEND_PORT.
# shellcheck disable=SC2153 # BACKEND_PORT is set by pick_port
bench_manifests "$WORK/manifests" "$BACKEND_PORT"

wait_http() { # url, expected status, what
    local i code
    for ((i = 0; i < 100; i++)); do
        code="$(curl -s -o /dev/null -w '%{http_code}' -H "$KEY_HEADER: $KEY" "$1" || true)"
        [[ "$code" == "$2" ]] && return 0
        sleep 0.1
    done
    die "$3 did not answer $2 on $1 (last: ${code:-none}); see $RESULTS"
}

# The policy targets must really enforce: a wrong key and no key get 401, the bench key gets 200
# with the header changes on the answer. Checked before measuring; any miss stops the run.
check_policy() { # name url
    local name="$1" url="$2" code headers
    code="$(curl -s -o /dev/null -w '%{http_code}' -H "$KEY_HEADER: not-the-bench-key" "$url" || true)"
    [[ "$code" == 401 ]] || die "$name: a wrong key got ${code:-no answer}, not 401: the policy is not enforced"
    code="$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)"
    [[ "$code" == 401 ]] || die "$name: no key got ${code:-no answer}, not 401: the policy is not enforced"
    headers="$(curl -s -D - -o /dev/null -H "$KEY_HEADER: $KEY" "$url" | tr -d '\r' || true)"
    grep -q '^HTTP/[0-9.]* 200' <<<"$headers" || die "$name: the bench key did not get 200: $headers"
    grep -qi '^x-request-id: ' <<<"$headers" || die "$name: no X-Request-Id on the answer"
    # nginx-light cannot drop its own Server header (see bench/lib.sh); the others must.
    if [[ "$name" != nginx-policy ]] && grep -qi '^server:' <<<"$headers"; then
        die "$name: the answer still has a Server header"
    fi
    echo "$name: wrong key 401, no key 401, bench key 200" >>"$RESULTS/policy-checks.txt"
    log "$name: enforces (wrong key 401, no key 401, bench key 200)"
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local keep=() p
    for p in "${PIDS[@]}"; do [[ "$p" != "$1" ]] && keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# busy jiffies and total jiffies of one CPU, from /proc/stat
cpu_sample() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# CPU ticks (user + system) used so far by a process and its children (nginx's worker).
proc_ticks() {
    local pids=("$1") total=0 c p stat kids fields
    for c in /proc/"$1"/task/*/children; do
        kids="$(cat "$c" 2>/dev/null)" || continue
        # shellcheck disable=SC2206 # a space-separated list of pids
        pids+=($kids)
    done
    for p in "${pids[@]}"; do
        stat="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
        read -r -a fields <<<"${stat##*) }" # after "(comm) ": state is fields[0], utime [11], stime [12]
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

percent() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b > 0 ? 100 * a / b : 0) }'; }

# --- one run ---------------------------------------------------------------------------------

run_wrk() { # name url server-pid
    local name="$1" url="$2" pid="$3"
    log "$name: warm-up $WARMUP"
    taskset -c "$LOAD_CPU" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$LUA" "$url" >/dev/null
    log "$name: wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency $url"
    local s0 s1 l0 l1 p0 p1 t0 t1
    read -r -a s0 <<<"$(cpu_sample "$SERVER_CPU")"
    read -r -a l0 <<<"$(cpu_sample "$LOAD_CPU")"
    p0="$(proc_ticks "$pid")"
    t0="$(date +%s%N)"
    taskset -c "$LOAD_CPU" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$LUA" "$url" \
        | tee "$RESULTS/$name.wrk.txt" >&2
    t1="$(date +%s%N)"
    p1="$(proc_ticks "$pid")"
    read -r -a s1 <<<"$(cpu_sample "$SERVER_CPU")"
    read -r -a l1 <<<"$(cpu_sample "$LOAD_CPU")"
    percent "$((s1[0] - s0[0]))" "$((s1[1] - s0[1]))" >"$RESULTS/$name.server-cpu.txt"
    percent "$((l1[0] - l0[0]))" "$((l1[1] - l0[1]))" >"$RESULTS/$name.load-cpu.txt"
    # The server process's own share of one CPU over the run (ticks are 1/CLK_TCK s).
    awk -v ticks="$((p1 - p0))" -v hz="$(getconf CLK_TCK)" -v ns="$((t1 - t0))" \
        'BEGIN { printf "%.0f", (ns > 0 ? 100 * (ticks / hz) / (ns / 1e9) : 0) }' >"$RESULTS/$name.proc-cpu.txt"
}

start_backend() { # cpu
    taskset -c "$1" "$BACKEND_BIN" --listen "127.0.0.1:$BACKEND_PORT" --threads 1 \
        >"$RESULTS/backend.log" 2>&1 &
    PIDS+=($!)
    BACKEND_PID=$!
    wait_http "http://127.0.0.1:$BACKEND_PORT/bench" 200 "the demo backend"
}

scenario_direct() {
    start_backend "$SERVER_CPU"
    run_wrk direct "http://127.0.0.1:$BACKEND_PORT/bench" "$BACKEND_PID"
    stop_pid "$BACKEND_PID"
}

# nginx and nginx-policy: one worker process (master_process on, so the CPU count includes the
# master, which does nothing under load). The configuration comes from nginx_conf in bench/lib.sh.
run_nginx() { # name variant
    local name="$1" variant="$2"
    start_backend "$LOAD_CPU"
    nginx_conf "$WORK/$name" "$NGINX_PORT" "$BACKEND_PORT" "$variant" on
    cp "$WORK/$name/nginx.conf" "$RESULTS/$name.conf"
    taskset -c "$SERVER_CPU" nginx -p "$WORK/$name" -c "$WORK/$name/nginx.conf" -e "$WORK/$name/logs/error.log" \
        >"$RESULTS/$name.log" 2>&1 &
    local nginx_pid=$!
    PIDS+=("$nginx_pid")
    wait_http "http://127.0.0.1:$NGINX_PORT/bench" 200 "$name"
    [[ "$variant" == policy ]] && check_policy "$name" "http://127.0.0.1:$NGINX_PORT/bench"
    run_wrk "$name" "http://127.0.0.1:$NGINX_PORT/bench" "$nginx_pid"
    cp "$WORK/$name/logs/error.log" "$RESULTS/$name.error.log" 2>/dev/null || true
    stop_pid "$nginx_pid"
    stop_pid "$BACKEND_PID"
}

# haproxy and haproxy-policy: one process, one thread (nbthread 1), in the foreground (-db). The
# configuration comes from haproxy_conf in bench/lib.sh.
run_haproxy() { # name variant
    local name="$1" variant="$2"
    start_backend "$LOAD_CPU"
    haproxy_conf "$WORK/$name" "$HAPROXY_PORT" "$BACKEND_PORT" "$variant"
    cp "$WORK/$name/haproxy.cfg" "$RESULTS/$name.cfg"
    haproxy -c -q -f "$WORK/$name/haproxy.cfg" >"$RESULTS/$name.check.log" 2>&1 \
        || die "$name: haproxy rejects its configuration; see $RESULTS/$name.check.log"
    taskset -c "$SERVER_CPU" haproxy -db -f "$WORK/$name/haproxy.cfg" >"$RESULTS/$name.log" 2>&1 &
    local haproxy_pid=$!
    PIDS+=("$haproxy_pid")
    wait_http "http://127.0.0.1:$HAPROXY_PORT/bench" 200 "$name"
    [[ "$variant" == policy ]] && check_policy "$name" "http://127.0.0.1:$HAPROXY_PORT/bench"
    run_wrk "$name" "http://127.0.0.1:$HAPROXY_PORT/bench" "$haproxy_pid"
    stop_pid "$haproxy_pid"
    stop_pid "$BACKEND_PID"
}

scenario_tollgate() {
    start_backend "$LOAD_CPU"
    # One worker thread, for fairness with nginx's one worker process. Prefer the proxy's own flag;
    # TOKIO_WORKER_THREADS is honoured by tokio's default multi-thread runtime either way.
    # nginx runs with access_log off; tollgate_args quiets the proxy's per-request log the same way.
    tollgate_args "$WORK/manifests" "$TOLLGATE_PORT" "$TOLLGATE_ADMIN_PORT"
    local args=("${TOLLGATE_ARGS[@]}")
    TOKIO_WORKER_THREADS=1 RUST_LOG="${BENCH_RUST_LOG:-warn}" taskset -c "$SERVER_CPU" "$PROXY_BIN" "${args[@]}" \
        >"$RESULTS/tollgate.log" 2>&1 &
    local proxy_pid=$!
    PIDS+=("$proxy_pid")
    echo "TOKIO_WORKER_THREADS=1 RUST_LOG=${BENCH_RUST_LOG:-warn} $PROXY_BIN ${args[*]}" >"$RESULTS/tollgate.cmd"
    wait_http "http://127.0.0.1:$TOLLGATE_ADMIN_PORT/readyz" 200 "tollgate-proxy's /readyz"
    wait_http "http://127.0.0.1:$TOLLGATE_PORT/bench" 200 "tollgate-proxy"
    check_policy tollgate "http://127.0.0.1:$TOLLGATE_PORT/bench"
    local threads
    threads="$(find "/proc/$proxy_pid/task" -mindepth 1 -maxdepth 1 | wc -l)"
    echo "tollgate-proxy threads (all kinds): $threads" >"$RESULTS/tollgate.threads"
    run_wrk tollgate "http://127.0.0.1:$TOLLGATE_PORT/bench" "$proxy_pid"
    curl -s "http://127.0.0.1:$TOLLGATE_ADMIN_PORT/metrics" >"$RESULTS/tollgate.metrics.txt" || true
    stop_pid "$proxy_pid"
    stop_pid "$BACKEND_PID"
}

# floor: bench/floor, the proxy's HTTP engine with nothing on it (hyper + tokio on one thread +
# mimalloc, one backend connection per client connection, no routing, headers, policy, logs or
# metrics). Not a product anyone would run: it says what hyper itself costs on this machine, so
# tollgate's ratio to nginx can be split into the engine's part and the gateway's. It enforces
# nothing, so it gets no check_policy.
scenario_floor() {
    start_backend "$LOAD_CPU"
    taskset -c "$SERVER_CPU" "$FLOOR_BIN" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$BACKEND_PORT" \
        >"$RESULTS/floor.log" 2>&1 &
    local floor_pid=$!
    PIDS+=("$floor_pid")
    wait_http "http://127.0.0.1:$FLOOR_PORT/bench" 200 "bench/floor"
    run_wrk floor "http://127.0.0.1:$FLOOR_PORT/bench" "$floor_pid"
    stop_pid "$floor_pid"
    stop_pid "$BACKEND_PID"
}

{
    echo "date: $STAMP"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1) x $NCPU"
    echo "kernel: $(uname -r)"
    echo "nginx: $(nginx -v 2>&1)"
    if command -v haproxy >/dev/null; then echo "haproxy: $(haproxy -v 2>&1 | head -1)"; fi
    echo "backend binary: $BACKEND_BIN"
    if [[ -n "$PROXY_BIN" ]]; then echo "tollgate-proxy binary: $PROXY_BIN"; fi
    if has_scenario floor; then echo "floor binary: $FLOOR_BIN"; fi
    echo "wrk: $(wrk -v 2>&1 | head -1)"
    echo "load: wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency (after $WARMUP warm-up), pinned to CPU $LOAD_CPU"
    echo "server under test pinned to CPU $SERVER_CPU; backend on CPU $LOAD_CPU except in 'direct'"
    echo "scenarios: $SCENARIOS"
} | tee "$RESULTS/env.txt" >&2

for s in $SCENARIOS; do
    case "$s" in
        direct) scenario_direct ;;
        nginx) run_nginx nginx plain ;;
        nginx-policy) run_nginx nginx-policy policy ;;
        haproxy) run_haproxy haproxy plain ;;
        haproxy-policy) run_haproxy haproxy-policy policy ;;
        tollgate) scenario_tollgate ;;
        floor) scenario_floor ;;
    esac
done

# --- report ----------------------------------------------------------------------------------

summary() { # name -> "rps p50ms p99ms non2xx errors servercpu loadcpu proccpu"
    local f="$RESULTS/$1.wrk.txt"
    awk -v scpu="$(cat "$RESULTS/$1.server-cpu.txt")" -v lcpu="$(cat "$RESULTS/$1.load-cpu.txt")" \
        -v pcpu="$(cat "$RESULTS/$1.proc-cpu.txt")" '
        function ms(v) {
            if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
            if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
            if (v ~ /m$/)  { sub(/m$/, "", v);  return v * 60000 }
            if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
            return v + 0
        }
        /^Requests\/sec:/ { rps = $2 }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ { gsub(",", ""); errs = $4 + $6 + $8 + $10 }
        END { printf "%s %s %s %d %d %s %s %s\n", rps, p50, p99, non2xx, errs, scpu, lcpu, pcpu }
    ' "$f"
}

TABLE="$RESULTS/summary.txt"
{
    echo
    printf '%-14s %11s %8s %8s %7s %6s %8s %8s %8s %12s\n' target "requests/s" "p50 ms" "p99 ms" non-2xx errors "CPU $SERVER_CPU" "CPU $LOAD_CPU" "server" "req/CPU-s"
    declare -A RPS P99 EFF
    for s in $SCENARIOS; do
        read -r rps p50 p99 non2xx errs scpu lcpu pcpu <<<"$(summary "$s")"
        RPS[$s]=$rps
        P99[$s]=$p99
        EFF[$s]=$(awk -v r="$rps" -v p="$pcpu" 'BEGIN { printf "%.0f", (p > 0 ? r * 100 / p : 0) }')
        printf '%-14s %11.0f %8.3f %8.3f %7d %6d %7s%% %7s%% %7s%% %12s\n' \
            "$s" "$rps" "$p50" "$p99" "$non2xx" "$errs" "$scpu" "$lcpu" "$pcpu" "${EFF[$s]}"
    done
    echo
    ratio() { # a b
        if [[ -n "${RPS[$1]:-}" && -n "${RPS[$2]:-}" ]]; then
            awk -v a="${RPS[$1]}" -v b="${RPS[$2]}" -v pa="${P99[$1]}" -v pb="${P99[$2]}" \
                -v ea="${EFF[$1]}" -v eb="${EFF[$2]}" -v l="$1/$2" \
                'BEGIN { printf "%-23s requests/s x%.2f   p99 %+.3f ms   req/CPU-s x%.2f\n", l, (b ? a / b : 0), pa - pb, (eb ? ea / eb : 0) }'
        fi
    }
    ratio tollgate nginx
    ratio tollgate nginx-policy
    ratio tollgate haproxy
    ratio tollgate haproxy-policy
    ratio tollgate direct
    ratio floor nginx
    ratio tollgate floor
    ratio nginx-policy nginx
    ratio haproxy-policy haproxy
    ratio haproxy nginx
    ratio nginx direct
    echo
    echo "CPU $SERVER_CPU / CPU $LOAD_CPU: how busy each CPU was during the run (everything on it). The server under test"
    echo "runs on CPU $SERVER_CPU: near 100% there means it was the bottleneck; near 100% on CPU $LOAD_CPU means the load side may be."
    echo "server: the server process's own CPU time over the run, as a share of one CPU; well below CPU $SERVER_CPU's"
    echo "figure means other processes took part of its core. req/CPU-s = requests/s per CPU-second the server used."
    echo "non-2xx and errors must be 0: anything else means requests were refused and the row is not comparable."
    echo "raw output: $RESULTS"
} | tee "$TABLE"

for s in $SCENARIOS; do
    read -r _ _ _ non2xx errs _ _ _ <<<"$(summary "$s")"
    if ((non2xx > 0 || errs > 0)); then
        die "$s: $non2xx non-2xx responses and $errs socket errors; see $RESULTS/$s.wrk.txt"
    fi
done

# --- optional: a JWT on every request (BENCH_JWT=1) ---------------------------------------------
# Owned by the JWT work (issue 3); everything above is untouched by it. Runs tollgate once more
# with an ApiPolicy `jwt` (inline JWKS, RS256, a required scope) added to the bench product, and
# wrk sending the same key plus one fixed, valid bearer token (exp in 2100): after the first
# request every verification is a cache hit. Compare its row with the key-only 'tollgate' row.
# The key pair was generated for this bench only; the private key is not kept anywhere.
if [[ "${BENCH_JWT:-0}" == 1 ]]; then
    JWT_TOKEN="eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImJlbmNoLTEifQ.eyJpc3MiOiJodHRwczovL2JlbmNoLnRvbGxnYXRlLmludmFsaWQiLCJhdWQiOiJiZW5jaCIsInN1YiI6IndyayIsInNjb3BlIjoiYmVuY2gucmVhZCIsImlhdCI6MTc2Mzg1NjAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.eVODTCtI7xov9qI8eN6-1AujtuXfBlmVFxr-784KQ8gVfg4LEuwc2WhzPRp4dv02Qsx-OcZuIceoNbxVtWaSpbTFCnT6mbbwNoEqDQkJjJ_gHUGQ4-RV5Su-_8Y5KEPKkd2sWmWOYrEBeyh6C_OEOhXHc6zbwvErPNdC1mbc8JNWetRftaKA3JP4CJBE4s09jy4BbpQOXwhtY-izzs-YRFll7iLQk45QY_R00NSU_m0aM8Arhqo4TfY1QtsXgRKbmxH7fwZoHGfQgiVYW0SrnRr4BVaLoeJQr-kVlyxWhXCeg7NmrQkxljNfsfbTONwvgmPoiQjYM0GV0z59Hhs6_w"
    [[ -x "$PROXY_BIN" ]] || { cargo build --release -q -p tollgate-proxy; }
    mkdir -p "$WORK/manifests-jwt"
    sed 's/policies: \[bench-headers\]/policies: [bench-headers, bench-jwt]/' "$WORK/manifests/bench.yaml" \
        >"$WORK/manifests-jwt/bench.yaml"
    grep -q 'policies: \[bench-headers, bench-jwt\]' "$WORK/manifests-jwt/bench.yaml" \
        || die "bench/manifests/bench.yaml no longer has 'policies: [bench-headers]'; update the BENCH_JWT section"
    cat >"$WORK/manifests-jwt/jwt.yaml" <<'JWT_EOF'
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {name: bench-jwt, namespace: bench}
spec:
  jwt:
    issuers:
      - issuer: https://bench.tollgate.invalid
        audiences: [bench]
        jwks: '{"keys":[{"kty":"RSA","kid":"bench-1","alg":"RS256","use":"sig","n":"zDoI_hzfqYc2ck2UAMSP3i4LvkMuMcDb9IqiIMt9_08GKKK7szslk2QDW-PuNsxO3o74Nd06g8kLiRH1-rzPloncpkd17zFMA2ukWanC3BwCAGUifMMr2JInIVgSHxPCWPYIqrPTvpU4bPQEfyzNTB2j9bKcpx98SRJGQaddq1VrBPwL9gvHCG3Sl-l2UHU9KZImAooGL1qwfw0HTaKfnbGC9LDtMFoCA1haEZT-KKrFsdur-ICZesLJpqWB4uYg1EzJpiZqIgz4iEP7dIPM7NCcujYymu5XZ2T84MX2T6VwMJq2bTgwo4PHgDnI0g2tstiO_iCM86Rnr8YvwRW1bQ","e":"AQAB"}]}'
    requiredScopes:
      - {methods: [GET], scopes: [bench.read]}
JWT_EOF
    cat >"$WORK/wrk-jwt.lua" <<LUA_EOF
wrk.headers["X-Subscription-Key"] = "$KEY"
wrk.headers["Authorization"] = "Bearer $JWT_TOKEN"
LUA_EOF
    start_backend "$LOAD_CPU"
    # The same flags as the key-only run (see scenario_tollgate).
    jwt_args=(--from-dir "$WORK/manifests-jwt" --listen "127.0.0.1:$TOLLGATE_PORT" --admin-listen "127.0.0.1:$TOLLGATE_ADMIN_PORT")
    jwt_help="$("$PROXY_BIN" --help 2>&1 || true)"
    grep -q -- '--threads' <<<"$jwt_help" && jwt_args+=(--threads 1)
    grep -q -- '--access-log' <<<"$jwt_help" && jwt_args+=(--access-log off)
    TOKIO_WORKER_THREADS=1 RUST_LOG="${BENCH_RUST_LOG:-warn}" taskset -c "$SERVER_CPU" "$PROXY_BIN" "${jwt_args[@]}" \
        >"$RESULTS/tollgate-jwt.log" 2>&1 &
    JWT_PROXY_PID=$!
    PIDS+=("$JWT_PROXY_PID")
    code=""
    for ((i = 0; i < 100; i++)); do
        code="$(curl -s -o /dev/null -w '%{http_code}' -H "$KEY_HEADER: $KEY" \
            -H "Authorization: Bearer $JWT_TOKEN" "http://127.0.0.1:$TOLLGATE_PORT/bench" || true)"
        [[ "$code" == 200 ]] && break
        sleep 0.1
    done
    [[ "$code" == 200 ]] || die "tollgate-proxy with the jwt policy did not answer 200 (last: ${code:-none}); see $RESULTS/tollgate-jwt.log"
    LUA="$WORK/wrk-jwt.lua" run_wrk tollgate-jwt "http://127.0.0.1:$TOLLGATE_PORT/bench" "$JWT_PROXY_PID"
    stop_pid "$JWT_PROXY_PID"
    stop_pid "$BACKEND_PID"
    read -r jrps jp50 jp99 jnon2xx jerrs _ _ jpcpu <<<"$(summary tollgate-jwt)"
    {
        echo
        printf 'tollgate-jwt %9.0f requests/s   p50 %.3f ms   p99 %.3f ms   server CPU %s%%   non-2xx %d   errors %d\n' \
            "$jrps" "$jp50" "$jp99" "$jpcpu" "$jnon2xx" "$jerrs"
        if [[ -f "$RESULTS/tollgate.wrk.txt" ]]; then
            read -r krps _ kp99 _ <<<"$(summary tollgate)"
            awk -v a="$jrps" -v b="$krps" -v pa="$jp99" -v pb="$kp99" \
                'BEGIN { printf "tollgate-jwt/tollgate requests/s x%.2f   p99 %+.3f ms\n", (b ? a / b : 0), pa - pb }'
        fi
    } | tee -a "$TABLE"
    ((jnon2xx == 0 && jerrs == 0)) || die "tollgate-jwt: $jnon2xx non-2xx responses and $jerrs socket errors; see $RESULTS/tollgate-jwt.wrk.txt"
fi

# --- optional: quotas counted in Redis (BENCH_REDIS=1) ------------------------------------------
# Owned by the shared-quota work (issue 6). Runs tollgate once more with the same manifests and
# `--redis` pointing at a private redis-server (no persistence) on the load CPU, so the plan's
# quota is counted in Redis through leases instead of in memory. Compare its row with the
# in-memory 'tollgate' row. The Redis counter is printed afterwards: it must be at least the
# requests wrk counted (units still leased are included until the proxy gives them back).
if [[ "${BENCH_REDIS:-0}" == 1 ]]; then
    ensure_apt_packages redis-server:redis-server
    [[ -x "$PROXY_BIN" ]] || { cargo build --release -q -p tollgate-proxy; }
    pick_port REDIS_PORT 19379
    taskset -c "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        >"$RESULTS/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    for ((i = 0; i < 100; i++)); do
        [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]] && break
        sleep 0.1
    done
    [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]] || die "redis-server did not start; see $RESULTS/redis.log"
    start_backend "$LOAD_CPU"
    redis_args=(--from-dir "$WORK/manifests" --listen "127.0.0.1:$TOLLGATE_PORT" --admin-listen "127.0.0.1:$TOLLGATE_ADMIN_PORT"
        --threads 1 --access-log off --redis "redis://127.0.0.1:$REDIS_PORT")
    TOKIO_WORKER_THREADS=1 RUST_LOG="${BENCH_RUST_LOG:-warn}" taskset -c "$SERVER_CPU" "$PROXY_BIN" "${redis_args[@]}" \
        >"$RESULTS/tollgate-redis.log" 2>&1 &
    REDIS_PROXY_PID=$!
    PIDS+=("$REDIS_PROXY_PID")
    echo "TOKIO_WORKER_THREADS=1 $PROXY_BIN ${redis_args[*]}" >"$RESULTS/tollgate-redis.cmd"
    wait_http "http://127.0.0.1:$TOLLGATE_ADMIN_PORT/readyz" 200 "tollgate-proxy (redis)'s /readyz"
    wait_http "http://127.0.0.1:$TOLLGATE_PORT/bench" 200 "tollgate-proxy (redis)"
    run_wrk tollgate-redis "http://127.0.0.1:$TOLLGATE_PORT/bench" "$REDIS_PROXY_PID"
    curl -s "http://127.0.0.1:$TOLLGATE_ADMIN_PORT/metrics" >"$RESULTS/tollgate-redis.metrics.txt" || true
    stop_pid "$REDIS_PROXY_PID" # graceful: gives its leases back
    stop_pid "$BACKEND_PID"
    redis_count="$(redis-cli -p "$REDIS_PORT" --scan --pattern 'tollgate:quota:*' \
        | while read -r k; do redis-cli -p "$REDIS_PORT" get "$k"; done | awk '{ s += $1 } END { print s + 0 }')"
    redis_errors="$(sed -n 's/^tollgate_redis_errors_total //p' "$RESULTS/tollgate-redis.metrics.txt")"
    stop_pid "$REDIS_PID"
    read -r rrps rp50 rp99 rnon2xx rerrs _ _ rpcpu <<<"$(summary tollgate-redis)"
    {
        echo
        printf 'tollgate-redis %7.0f requests/s   p50 %.3f ms   p99 %.3f ms   server CPU %s%%   non-2xx %d   errors %d\n' \
            "$rrps" "$rp50" "$rp99" "$rpcpu" "$rnon2xx" "$rerrs"
        echo "redis: requests counted (warm-up + run) $redis_count, redis errors ${redis_errors:-?}"
        if [[ -f "$RESULTS/tollgate.wrk.txt" ]]; then
            read -r krps _ kp99 _ <<<"$(summary tollgate)"
            awk -v a="$rrps" -v b="$krps" -v pa="$rp99" -v pb="$kp99" \
                'BEGIN { printf "tollgate-redis/tollgate requests/s x%.2f   p99 %+.3f ms\n", (b ? a / b : 0), pa - pb }'
        fi
    } | tee -a "$TABLE"
    ((rnon2xx == 0 && rerrs == 0)) || die "tollgate-redis: $rnon2xx non-2xx responses and $rerrs socket errors; see $RESULTS/tollgate-redis.wrk.txt"
fi
