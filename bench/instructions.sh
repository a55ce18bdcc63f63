#!/usr/bin/env bash
# User-space instructions and heap allocations per request: tollgate-proxy next to nginx as a
# plain reverse proxy, both in front of the demo backend's GET /bench. Counted, not timed, so the
# numbers do not depend on what else the machine is doing.
#
# Method: run the server under `valgrind --tool=callgrind`, send N_LONG requests one after another
# on one keep-alive connection (checking that every answer is 200), stop the server with SIGTERM
# so callgrind writes its totals, and read the total instructions (Ir). Repeat with N_SHORT
# requests. Start-up, the first connection and shutdown are in both runs, so
#     instructions/request = (Ir[N_LONG] - Ir[N_SHORT]) / (N_LONG - N_SHORT).
# One exception to "start-up cancels": the rate limiter's clock (quanta) calibrates itself by
# spinning for a fixed wall time, a different number of instructions every run (~20 M under
# valgrind, +/- several M). Callgrind does not count inside CALLGRIND_EXCLUDE (default:
# once_cell::imp::initialize_or_wait, where that calibration runs; empty counts everything).
# The same two runs under `valgrind --tool=dhat` give heap blocks and bytes per request.
#
#   bench/instructions.sh
#   PROXY_BIN=/path/to/tollgate-proxy bench/instructions.sh    # measure that binary, build nothing
#   N_LONG=5000 KEEP=1 bench/instructions.sh
#   FLOOR=1 bench/instructions.sh    # also the engine alone (bench/floor: hyper + tokio, no policy)
#   ALLOC_SITES=1 bench/instructions.sh   # also: tollgate's allocator calls per request by call site
#
# Env: PROXY_BIN, BACKEND_BIN (default: built with cargo build --release --locked in this repo;
# BACKEND_BIN defaults to tollgate-demo-backend beside PROXY_BIN), N_LONG (2000), N_SHORT (100),
# KEEP (0: 1 keeps the raw outputs), TOP (15: functions in the profile; 0 skips it),
# ALLOC_SITES (0: 1 adds two callgrind runs of tollgate that split allocator calls by call site),
# FLOOR (0: 1 also measures bench/floor, built with cargo build --release in bench/floor; or
# FLOOR_BIN=that binary),
# READY_TIMEOUT (120 s for a server under valgrind to listen), DHAT (1: 0 skips the dhat runs),
# DHAT_BIN (the tollgate-proxy binary for the dhat runs, see below), DHAT_SYSALLOC (0),
# PROXY_SRC, SYSALLOC_DIR, CALLGRIND_EXCLUDE (see below), BENCH_RUST_LOG (warn), BACKEND_PORT (19000), NGINX_PORT (19080),
# TOLLGATE_PORT (19180), TOLLGATE_ADMIN_PORT (19901): a default port that is taken is replaced by
# the next free one.
#
# dhat sees only the C library's malloc and free. tollgate-proxy links mimalloc as its global
# allocator, whose heap dhat cannot see; the allocator calls per request are therefore counted in
# the callgrind runs (calls into mi_malloc_aligned & co. or malloc & co.), and bytes per request
# need a build of the same source with the system allocator: DHAT_BIN=that binary, or
# DHAT_SYSALLOC=1 to have this script build one from PROXY_SRC (default: this repo) with the
# `#[global_allocator]` lines removed, in SYSALLOC_DIR (default: <target dir>/bench-sysalloc).
# Rust asks for the same allocations whichever allocator answers them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

N_LONG="${N_LONG:-2000}"
N_SHORT="${N_SHORT:-100}"
KEEP="${KEEP:-0}"
TOP="${TOP:-15}"
READY_TIMEOUT="${READY_TIMEOUT:-120}"
STOP_TIMEOUT="${STOP_TIMEOUT:-120}"
DHAT="${DHAT:-1}"
DHAT_SYSALLOC="${DHAT_SYSALLOC:-0}"
FLOOR="${FLOOR:-0}"
ALLOC_SITES="${ALLOC_SITES:-0}"
# A function callgrind does not count in (with all it calls), for tollgate-proxy: one-time start-up
# work whose instruction count depends on wall time, so it would not cancel between the runs. The
# rate limiter's clock (quanta) calibrates itself in a once_cell initializer, spinning on
# clock_gettime for a fixed time: ~20 M instructions under valgrind, +/- several M from run to
# run. once_cell's slow path (`initialize_or_wait`, non-generic, cold) runs every once_cell
# initializer, each exactly once per process, so leaving all of them out changes nothing else.
# Empty: count everything.
CALLGRIND_EXCLUDE="${CALLGRIND_EXCLUDE-once_cell::imp::initialize_or_wait}"
RUST_LOG_LEVEL="${BENCH_RUST_LOG:-warn}"
[[ "$N_LONG" =~ ^[0-9]+$ && "$N_SHORT" =~ ^[0-9]+$ ]] || die "N_LONG and N_SHORT must be numbers"
((N_SHORT > 0 && N_LONG > N_SHORT)) || die "need N_LONG > N_SHORT > 0 (got $N_LONG and $N_SHORT)"
N_DIFF=$((N_LONG - N_SHORT))
# The client gives up on a run after this long: valgrind runs ~50x slower than native.
CLIENT_TIMEOUT=$((120 + N_LONG / 10))

# shellcheck source=scripts/apt.sh
source "$ROOT/scripts/apt.sh"
ensure_apt_packages valgrind:valgrind nginx:nginx curl:curl python3:python3

bench_binaries 1

OUT="$(mktemp -d -t tollgate-instructions.XXXXXX)"
PIDS=()
cleanup() {
    local pid i
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ "$KEEP" == 1 ]]; then
        log "raw outputs kept in $OUT"
    else
        rm -rf "$OUT"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log "raw outputs in $OUT$([[ "$KEEP" == 1 ]] || echo ' (removed at exit; KEEP=1 keeps them)')"

pick_port BACKEND_PORT 19000
pick_port NGINX_PORT 19080
pick_port TOLLGATE_PORT 19180
pick_port TOLLGATE_ADMIN_PORT 19901
pick_port FLOOR_PORT 19280
if [[ "$FLOOR" == 1 ]]; then floor_binary; fi
# shellcheck disable=SC2153 # BACKEND_PORT is set by pick_port
bench_manifests "$OUT/manifests" "$BACKEND_PORT"

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ "$p" != "$1" ]] && keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# wait_listening PID WHAT PORT...: until every PORT listens on 127.0.0.1 (checked in /proc, so the
# server handles no extra connection), at most READY_TIMEOUT seconds.
wait_listening() {
    local pid="$1" what="$2" deadline=$((SECONDS + READY_TIMEOUT)) port ok
    shift 2
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || die "$what exited during start-up; see $OUT"
        ok=1
        for port in "$@"; do port_listening "$port" || ok=0; done
        ((ok)) && return 0
        sleep 0.2
    done
    die "$what did not listen on port(s) $* within ${READY_TIMEOUT}s; see $OUT"
}

# wait_ready URL WHAT: until URL answers 200 (one request when the server is ready, as it is by
# the time it listens), at most READY_TIMEOUT seconds.
wait_ready() {
    local deadline=$((SECONDS + READY_TIMEOUT)) code=""
    while ((SECONDS < deadline)); do
        code="$(curl -s -o /dev/null -m 30 -w '%{http_code}' "$1" || true)"
        [[ "$code" == 200 ]] && return 0
        sleep 1
    done
    die "$2 did not answer 200 on $1 within ${READY_TIMEOUT}s (last: ${code:-none}); see $OUT"
}

# stop_server PID WHAT: SIGTERM (tollgate-proxy drains and exits; nginx with master_process off
# exits), then wait for valgrind to write its output, at most STOP_TIMEOUT seconds.
stop_server() {
    local pid="$1" what="$2" deadline=$((SECONDS + STOP_TIMEOUT)) rc=0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        forget_pid "$pid"
        die "$what did not exit within ${STOP_TIMEOUT}s of SIGTERM; its valgrind output is incomplete"
    fi
    wait "$pid" || rc=$?
    forget_pid "$pid"
    ((rc == 0)) || log "warning: $what exited with status $rc after SIGTERM; see $OUT"
}

# The backend runs natively (not under valgrind) for all runs.
"$BACKEND_BIN" --listen "127.0.0.1:$BACKEND_PORT" --threads 1 >"$OUT/backend.log" 2>&1 &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
wait_listening "$BACKEND_PID" "the demo backend" "$BACKEND_PORT"
wait_ready "http://127.0.0.1:$BACKEND_PORT/bench" "the demo backend"

tollgate_args "$OUT/manifests" "$TOLLGATE_PORT" "$TOLLGATE_ADMIN_PORT"
nginx_conf "$OUT/nginx" "$NGINX_PORT" "$BACKEND_PORT" plain off

# measure TOOL TARGET N [BIN]: one run; leaves $OUT/TARGET.TOOL.N.{out,valgrind.log,log,client.txt}
measure() {
    local tool="$1" target="$2" n="$3" bin="${4:-$PROXY_BIN}" name="$2.$1.$3" vg pid port
    vg=(valgrind "--tool=$tool" "--log-file=$OUT/$name.valgrind.log")
    case "$tool" in
        callgrind)
            vg+=("--callgrind-out-file=$OUT/$name.out")
            if [[ "$target" == tollgate && -n "$CALLGRIND_EXCLUDE" ]]; then vg+=("--toggle-collect=$CALLGRIND_EXCLUDE" --collect-atstart=yes); fi
            ;;
        dhat) vg+=("--dhat-out-file=$OUT/$name.out") ;;
        sites)
            # Callgrind again, with each allocator entry point split by its 16 callers: two more
            # runs, so that the counted runs above are not changed by the extra bookkeeping.
            vg=(valgrind --tool=callgrind "--log-file=$OUT/$name.valgrind.log" "--callgrind-out-file=$OUT/$name.out")
            local entry
            for entry in mi_malloc_aligned mi_zalloc_aligned mi_realloc_aligned malloc calloc realloc; do
                vg+=("--separate-callers16=$entry")
            done
            if [[ -n "$CALLGRIND_EXCLUDE" ]]; then vg+=("--toggle-collect=$CALLGRIND_EXCLUDE" --collect-atstart=yes); fi
            ;;
    esac
    log "$target under $tool: $n requests"
    case "$target" in
        tollgate)
            echo "TOKIO_WORKER_THREADS=1 RUST_LOG=$RUST_LOG_LEVEL ${vg[*]} $bin ${TOLLGATE_ARGS[*]}" >"$OUT/$name.cmd"
            TOKIO_WORKER_THREADS=1 RUST_LOG="$RUST_LOG_LEVEL" "${vg[@]}" "$bin" "${TOLLGATE_ARGS[@]}" \
                >"$OUT/$name.log" 2>&1 &
            pid=$!
            PIDS+=("$pid")
            port="$TOLLGATE_PORT"
            wait_listening "$pid" "tollgate-proxy" "$TOLLGATE_PORT" "$TOLLGATE_ADMIN_PORT"
            wait_ready "http://127.0.0.1:$TOLLGATE_ADMIN_PORT/readyz" "tollgate-proxy's /readyz"
            ;;
        floor)
            echo "${vg[*]} $FLOOR_BIN 127.0.0.1:$FLOOR_PORT 127.0.0.1:$BACKEND_PORT" >"$OUT/$name.cmd"
            "${vg[@]}" "$FLOOR_BIN" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$BACKEND_PORT" >"$OUT/$name.log" 2>&1 &
            pid=$!
            PIDS+=("$pid")
            port="$FLOOR_PORT"
            wait_listening "$pid" "tollgate-floor" "$FLOOR_PORT"
            ;;
        nginx)
            echo "${vg[*]} nginx -p $OUT/nginx -c $OUT/nginx/nginx.conf -e $OUT/nginx/logs/error.log" >"$OUT/$name.cmd"
            "${vg[@]}" nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" -e "$OUT/nginx/logs/error.log" \
                >"$OUT/$name.log" 2>&1 &
            pid=$!
            PIDS+=("$pid")
            port="$NGINX_PORT"
            wait_listening "$pid" "nginx" "$NGINX_PORT"
            ;;
    esac
    timeout "$CLIENT_TIMEOUT" python3 "$ROOT/bench/keepalive-get.py" "$port" /bench "$n" "$KEY_HEADER: $KEY" \
        >"$OUT/$name.client.txt" 2>&1 \
        || die "$target: the client did not get $n answers of 200 on one connection: $(tail -1 "$OUT/$name.client.txt")"
    stop_server "$pid" "$target"
}

callgrind_total() { # file
    local t
    t="$(python3 "$ROOT/bench/callgrind-profile.py" totals "$1")"
    [[ "$t" =~ ^[0-9]+$ ]] || die "no totals in $1"
    echo "$t"
}

dhat_total() { # valgrind log -> "bytes blocks" from dhat's "Total: X bytes in Y blocks"
    local line
    line="$(grep -m1 'Total:' "$1" | tr -d ',')" || die "no 'Total:' line in $1"
    awk '{ for (i = 1; i <= NF; i++) if ($i == "Total:") { print $(i + 1), $(i + 4); exit } }' <<<"$line"
}

per_request() { awk -v a="$1" -v b="$2" -v n="$N_DIFF" 'BEGIN { printf "%.1f", (a - b) / n }'; }

# --- DHAT's binary ----------------------------------------------------------------------------

build_sysalloc() {
    local src="${PROXY_SRC:-$ROOT}" dir target_dir
    [[ -f "$src/proxy/src/main.rs" ]] || die "PROXY_SRC=$src: no proxy/src/main.rs"
    target_dir="$(cd "$src" && cargo metadata --format-version 1 --no-deps \
        | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    dir="${SYSALLOC_DIR:-$target_dir/bench-sysalloc}"
    [[ -n "$dir" && "$dir" != / ]] || die "no directory for the system-allocator build"
    log "DHAT_SYSALLOC=1: building tollgate-proxy from $src with the system allocator in $dir"
    rm -rf "$dir/src"
    mkdir -p "$dir/src"
    # The working tree as it is (uncommitted changes included), without ignored files; mtimes
    # are kept so that a second build is incremental.
    (cd "$src" && git ls-files -z --cached --others --exclude-standard \
        | tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$dir/src"
    sed -i '/^#\[global_allocator\]$/,+1d' "$dir/src/proxy/src/main.rs"
    touch -r "$src/proxy/src/main.rs" "$dir/src/proxy/src/main.rs"
    if grep -q 'global_allocator' "$dir/src/proxy/src/main.rs"; then
        die "could not remove the #[global_allocator] from $dir/src/proxy/src/main.rs"
    fi
    (cd "$dir/src" && CARGO_TARGET_DIR="$dir/target" cargo build --release --locked -q -p tollgate-proxy)
    DHAT_BIN="$dir/target/release/tollgate-proxy"
    if grep -q 'mi_malloc_aligned' "$DHAT_BIN"; then
        die "$DHAT_BIN still links mimalloc (a stale build in $dir/target?); remove $dir and run again"
    fi
}

DHAT_NOTE=""
if [[ "$DHAT" == 1 && -z "${DHAT_BIN:-}" ]]; then
    if grep -q 'mi_malloc_aligned' "$PROXY_BIN"; then
        if [[ "$DHAT_SYSALLOC" == 1 ]]; then
            build_sysalloc
            DHAT_NOTE="dhat: a build of ${PROXY_SRC:-$ROOT} with the system allocator ($DHAT_BIN)"
        else
            DHAT_NOTE="dhat: skipped for tollgate: $PROXY_BIN uses mimalloc, which dhat cannot see (DHAT_SYSALLOC=1 or DHAT_BIN=a system-allocator build)"
        fi
    else
        DHAT_BIN="$PROXY_BIN"
        DHAT_NOTE="dhat: $PROXY_BIN (system allocator)"
    fi
elif [[ "$DHAT" == 1 ]]; then
    [[ -x "$DHAT_BIN" ]] || die "DHAT_BIN=$DHAT_BIN is not executable"
    grep -q 'mi_malloc_aligned' "$DHAT_BIN" && die "DHAT_BIN=$DHAT_BIN uses mimalloc: dhat cannot see its heap"
    DHAT_NOTE="dhat: DHAT_BIN=$DHAT_BIN"
fi

# --- runs ------------------------------------------------------------------------------------

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "tollgate-proxy: $PROXY_BIN"
    echo "backend: $BACKEND_BIN"
    echo "nginx: $(nginx -v 2>&1)"
    echo "valgrind: $(valgrind --version)"
    echo "requests: $N_LONG and $N_SHORT on one keep-alive connection each"
} >"$OUT/env.txt"

for target in tollgate nginx; do
    for n in "$N_LONG" "$N_SHORT"; do measure callgrind "$target" "$n"; done
done
if [[ "$FLOOR" == 1 ]]; then
    for n in "$N_LONG" "$N_SHORT"; do measure callgrind floor "$n"; done
fi
if [[ "$ALLOC_SITES" == 1 ]]; then
    for n in "$N_LONG" "$N_SHORT"; do measure sites tollgate "$n"; done
fi
IR_T_L="$(callgrind_total "$OUT/tollgate.callgrind.$N_LONG.out")"
IR_T_S="$(callgrind_total "$OUT/tollgate.callgrind.$N_SHORT.out")"
IR_N_L="$(callgrind_total "$OUT/nginx.callgrind.$N_LONG.out")"
IR_N_S="$(callgrind_total "$OUT/nginx.callgrind.$N_SHORT.out")"
read -r AC_T_L FR_T_L <<<"$(python3 "$ROOT/bench/callgrind-profile.py" allocs "$OUT/tollgate.callgrind.$N_LONG.out")"
read -r AC_T_S FR_T_S <<<"$(python3 "$ROOT/bench/callgrind-profile.py" allocs "$OUT/tollgate.callgrind.$N_SHORT.out")"
read -r AC_N_L FR_N_L <<<"$(python3 "$ROOT/bench/callgrind-profile.py" allocs "$OUT/nginx.callgrind.$N_LONG.out")"
read -r AC_N_S FR_N_S <<<"$(python3 "$ROOT/bench/callgrind-profile.py" allocs "$OUT/nginx.callgrind.$N_SHORT.out")"

DH_T_BYTES="—" DH_T_BLOCKS="—" DH_N_BYTES="—" DH_N_BLOCKS="—"
if [[ "$DHAT" == 1 ]]; then
    if [[ -n "${DHAT_BIN:-}" ]]; then
        for n in "$N_LONG" "$N_SHORT"; do measure dhat tollgate "$n" "$DHAT_BIN"; done
        read -r b_l k_l <<<"$(dhat_total "$OUT/tollgate.dhat.$N_LONG.valgrind.log")"
        read -r b_s k_s <<<"$(dhat_total "$OUT/tollgate.dhat.$N_SHORT.valgrind.log")"
        DH_T_BYTES="$(per_request "$b_l" "$b_s")"
        DH_T_BLOCKS="$(per_request "$k_l" "$k_s")"
    fi
    # nginx takes memory for a connection and a request in pools (posix_memalign/malloc) and
    # carves them up itself: dhat counts the pool blocks, not nginx's allocations inside them.
    for n in "$N_LONG" "$N_SHORT"; do measure dhat nginx "$n"; done
    read -r b_l k_l <<<"$(dhat_total "$OUT/nginx.dhat.$N_LONG.valgrind.log")"
    read -r b_s k_s <<<"$(dhat_total "$OUT/nginx.dhat.$N_SHORT.valgrind.log")"
    DH_N_BYTES="$(per_request "$b_l" "$b_s")"
    DH_N_BLOCKS="$(per_request "$k_l" "$k_s")"
fi

# --- report ----------------------------------------------------------------------------------

# dhat should see about as many blocks as there were allocator calls; far fewer means the binary's
# allocator is one dhat cannot see (mimalloc in a stripped binary, say).
if [[ "$DH_T_BLOCKS" != "—" ]] && awk -v d="$DH_T_BLOCKS" -v c="$(per_request "$AC_T_L" "$AC_T_S")" 'BEGIN { exit !(d < c / 2) }'; then
    DHAT_NOTE="$DHAT_NOTE; WARNING: dhat saw fewer than half the allocator calls: its allocator is probably invisible to dhat"
fi

IR_T="$(per_request "$IR_T_L" "$IR_T_S")"
IR_N="$(per_request "$IR_N_L" "$IR_N_S")"
NOISE_T="$(python3 "$ROOT/bench/callgrind-profile.py" noise "$OUT/tollgate.callgrind.$N_LONG.out" "$OUT/tollgate.callgrind.$N_SHORT.out" "$N_DIFF")"
NOISE_N="$(python3 "$ROOT/bench/callgrind-profile.py" noise "$OUT/nginx.callgrind.$N_LONG.out" "$OUT/nginx.callgrind.$N_SHORT.out" "$N_DIFF")"
REPORT="$OUT/report.txt"
{
    echo
    echo "Per request, from (run with $N_LONG requests - run with $N_SHORT requests) / $N_DIFF; one keep-alive connection."
    echo
    printf '%-16s %14s %13s %13s %15s %15s\n' target "instructions" "alloc calls" "free calls" "dhat blocks" "dhat bytes"
    printf '%-16s %14.0f %13s %13s %15s %15s\n' tollgate "$IR_T" "$(per_request "$AC_T_L" "$AC_T_S")" \
        "$(per_request "$FR_T_L" "$FR_T_S")" "$DH_T_BLOCKS" "$DH_T_BYTES"
    printf '%-16s %14.0f %13s %13s %15s %15s\n' nginx "$IR_N" "$(per_request "$AC_N_L" "$AC_N_S")" \
        "$(per_request "$FR_N_L" "$FR_N_S")" "$DH_N_BLOCKS" "$DH_N_BYTES"
    if [[ "$FLOOR" == 1 ]]; then
        IR_F="$(per_request "$(callgrind_total "$OUT/floor.callgrind.$N_LONG.out")" "$(callgrind_total "$OUT/floor.callgrind.$N_SHORT.out")")"
        read -r AC_F_L FR_F_L <<<"$(python3 "$ROOT/bench/callgrind-profile.py" allocs "$OUT/floor.callgrind.$N_LONG.out")"
        read -r AC_F_S FR_F_S <<<"$(python3 "$ROOT/bench/callgrind-profile.py" allocs "$OUT/floor.callgrind.$N_SHORT.out")"
        printf '%-16s %14.0f %13s %13s %15s %15s\n' "floor (engine)" "$IR_F" "$(per_request "$AC_F_L" "$AC_F_S")" \
            "$(per_request "$FR_F_L" "$FR_F_S")" "—" "—"
    fi
    awk -v a="$IR_T" -v b="$IR_N" 'BEGIN { printf "%-16s %13sx%.2f\n", "tollgate/nginx", "", (b ? a / b : 0) }'
    if [[ "$FLOOR" == 1 ]]; then
        awk -v a="$IR_F" -v b="$IR_N" 'BEGIN { printf "%-16s %13sx%.2f\n", "floor/nginx", "", (b ? a / b : 0) }'
        awk -v a="$IR_T" -v b="$IR_F" 'BEGIN { printf "%-16s %13s%.0f\n", "tollgate-floor", "", a - b }'
    fi
    echo
    echo "instructions: user-space instructions executed (callgrind Ir), all threads; the kernel's work in system"
    echo "  calls is not counted. Totals: tollgate $IR_T_L and $IR_T_S, nginx $IR_N_L and $IR_N_S."
    if [[ -n "$CALLGRIND_EXCLUDE" ]]; then
        echo "  Not counted for tollgate: inside '$CALLGRIND_EXCLUDE' (one-time initializers, among them a clock"
        echo "  calibration that spins for a fixed wall time and so would not cancel; CALLGRIND_EXCLUDE= counts them)."
    fi
    echo "  Noise: functions that cost less in the longer run (start-up work that varies from run to run) add up"
    echo "  to $NOISE_T per request for tollgate and $NOISE_N for nginx; read the counts as +/- that much."
    echo "alloc / free calls: calls into the heap allocator (malloc family or mimalloc), from the callgrind runs."
    echo "  nginx allocates pools with posix_memalign/malloc and carves them up itself, so its count is pools."
    echo "dhat blocks / bytes: heap blocks and bytes allocated (dhat 'Total:'), system allocator only."
    [[ -n "$DHAT_NOTE" ]] && echo "  $DHAT_NOTE"
    echo "tollgate: ${TOLLGATE_ARGS[*]} (RUST_LOG=$RUST_LOG_LEVEL) = $PROXY_BIN"
    echo "nginx: master_process off, worker_processes 1, keep-alive upstream pool, access_log off ($OUT/nginx/nginx.conf)"
} | tee "$REPORT"

if [[ "$ALLOC_SITES" == 1 ]]; then
    {
        echo
        echo "tollgate's allocator calls per request by call site (callers nearest first):"
        python3 "$ROOT/bench/callgrind-profile.py" allocsites "$OUT/tollgate.sites.$N_LONG.out" \
            "$OUT/tollgate.sites.$N_SHORT.out" "$N_DIFF"
    } | tee -a "$REPORT"
fi
if [[ "$TOP" != 0 ]]; then
    if [[ "$FLOOR" == 1 ]]; then
        {
            echo
            echo "Where the engine alone (bench/floor) spends per request:"
            python3 "$ROOT/bench/callgrind-profile.py" profile "$OUT/floor.callgrind.$N_LONG.out" \
                "$OUT/floor.callgrind.$N_SHORT.out" "$N_DIFF" "$TOP"
        } | tee -a "$REPORT"
    fi
    {
        echo
        echo "Where tollgate's instructions per request go ($N_LONG-request run minus $N_SHORT-request run):"
        python3 "$ROOT/bench/callgrind-profile.py" profile "$OUT/tollgate.callgrind.$N_LONG.out" \
            "$OUT/tollgate.callgrind.$N_SHORT.out" "$N_DIFF" "$TOP"
        echo
        echo "The same for nginx:"
        python3 "$ROOT/bench/callgrind-profile.py" profile "$OUT/nginx.callgrind.$N_LONG.out" \
            "$OUT/nginx.callgrind.$N_SHORT.out" "$N_DIFF" "$TOP"
    } | tee -a "$REPORT"
fi
