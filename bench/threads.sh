#!/usr/bin/env bash
# Multi-core scaling: tollgate-proxy with --threads 1 and --threads 2, beside nginx with
# worker_processes 1 and 2, in front of the demo backend, everything sharing the machine's cores
# (no pinning: the load generator and the backend run on the same cores as the server, so this
# measures how a server shares a small machine, not its ceiling). Runs alternate between the
# targets, ROUNDS times; the table has the median requests/s of each and the 2-thread/1-thread ratio.
#
#   bench/threads.sh
#   ROUNDS=5 DURATION=10s bench/threads.sh
#
# Env: DURATION (10s), CONNECTIONS (64), WRK_THREADS (2), WARMUP (2s), ROUNDS (3), PROXY_BIN /
# BACKEND_BIN (binaries to measure instead of building them), BACKEND_PORT (19000), NGINX_PORT
# (19080), TOLLGATE_PORT (19180), TOLLGATE_ADMIN_PORT (19901). Raw outputs go to
# bench/results/threads-<timestamp>/ (gitignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
WRK_THREADS="${WRK_THREADS:-2}"
WARMUP="${WARMUP:-2s}"
ROUNDS="${ROUNDS:-3}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number (got $ROUNDS)"

# shellcheck source=scripts/apt.sh
source "$ROOT/scripts/apt.sh"
ensure_apt_packages nginx:nginx wrk:wrk curl:curl
bench_binaries 1
(($(nproc) >= 2)) || log "warning: only $(nproc) CPU; two threads cannot scale here"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS="$ROOT/bench/results/threads-$STAMP"
WORK="$(mktemp -d -t tollgate-threads.XXXXXX)"
mkdir -p "$RESULTS"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pick_port BACKEND_PORT 19000
pick_port NGINX_PORT 19080
pick_port TOLLGATE_PORT 19180
pick_port TOLLGATE_ADMIN_PORT 19901
bench_manifests "$WORK/manifests" "$BACKEND_PORT"

wait_http() { # url what
    local i code=""
    for ((i = 0; i < 200; i++)); do
        code="$(curl -s -o /dev/null -w '%{http_code}' -H "$KEY_HEADER: $KEY" "$1" || true)"
        [[ "$code" == 200 ]] && return 0
        sleep 0.1
    done
    die "$2 did not answer 200 on $1 (last: ${code:-none})"
}

stop() { # pid
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# The backend has two threads so that it is not what limits the two-thread runs.
"$BACKEND_BIN" --listen "127.0.0.1:$BACKEND_PORT" --threads 2 >"$RESULTS/backend.log" 2>&1 &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
wait_http "http://127.0.0.1:$BACKEND_PORT/bench" "the demo backend"

measure() { # name url -> requests/s on stdout; wrk output kept
    local name="$1" url="$2" out
    wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$BENCH_LUA" "$url" >/dev/null
    out="$RESULTS/$name.wrk.txt"
    wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$BENCH_LUA" "$url" >"$out"
    if grep -q 'Non-2xx\|Socket errors' "$out"; then
        die "$name: refused requests or socket errors; see $out"
    fi
    awk '/^Requests\/sec:/ { print $2 }' "$out"
}

run_tollgate() { # threads round
    local n="$1" pid rps
    tollgate_args "$WORK/manifests" "$TOLLGATE_PORT" "$TOLLGATE_ADMIN_PORT"
    local args=() a
    for a in "${TOLLGATE_ARGS[@]}"; do args+=("$a"); done
    # tollgate_args asks for one thread; this run asks for n.
    for i in "${!args[@]}"; do [[ "${args[$i]}" == --threads ]] && args[i + 1]="$n"; done
    RUST_LOG=warn "$PROXY_BIN" "${args[@]}" >"$RESULTS/tollgate-$n.$2.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$TOLLGATE_PORT/bench" "tollgate-proxy --threads $n"
    rps="$(measure "tollgate-$n.$2" "http://127.0.0.1:$TOLLGATE_PORT/bench")"
    stop "$pid"
    echo "$rps"
}

run_nginx() { # workers round
    local n="$1" pid rps dir="$WORK/nginx-$1"
    nginx_conf "$dir" "$NGINX_PORT" "$BACKEND_PORT" plain on
    sed -i "s/^worker_processes 1;/worker_processes $n;/" "$dir/nginx.conf"
    grep -q "^worker_processes $n;" "$dir/nginx.conf" || die "could not set worker_processes in $dir/nginx.conf"
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" >"$RESULTS/nginx-$n.$2.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$NGINX_PORT/bench" "nginx with $n workers"
    rps="$(measure "nginx-$n.$2" "http://127.0.0.1:$NGINX_PORT/bench")"
    stop "$pid"
    echo "$rps"
}

declare -A RUNS
for ((r = 1; r <= ROUNDS; r++)); do
    for n in 1 2; do
        log "round $r: tollgate-proxy --threads $n"
        RUNS[tollgate-$n]+=" $(run_tollgate "$n" "$r")"
        log "round $r: nginx worker_processes $n"
        RUNS[nginx-$n]+=" $(run_nginx "$n" "$r")"
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

{
    echo "date: $STAMP; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $(nproc) CPUs, nothing pinned"
    echo "load: wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION (after $WARMUP warm-up); backend --threads 2; $ROUNDS alternating rounds"
    echo
    printf '%-10s %14s %14s %8s   %s\n' target "1 thread req/s" "2 threads req/s" "2/1" "runs (1 | 2)"
    for t in tollgate nginx; do
        one="$(median <<<"${RUNS[$t-1]}")"
        two="$(median <<<"${RUNS[$t-2]}")"
        printf '%-10s %14.0f %14.0f %8s   %s |%s\n' "$t" "$one" "$two" \
            "$(awk -v a="$two" -v b="$one" 'BEGIN { printf "x%.2f", (b ? a / b : 0) }')" "${RUNS[$t-1]}" "${RUNS[$t-2]}"
    done
    echo
    echo "nginx: worker_processes 1 or 2; tollgate-proxy: --threads 1 or 2. raw output: $RESULTS"
} | tee "$RESULTS/summary.txt"
