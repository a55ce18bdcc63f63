#!/usr/bin/env bash
# The YourWeather demo (`make demo`): builds Tollgate and the demo weather backend, starts both,
# runs a walk-through of curl calls that show 200, 204 (CORS), 401, 403, 404, 405 and 429 and the headers
# Tollgate removes, then keeps serving until Ctrl-C.
#
#   scripts/demo.sh              # walk-through, then serve in the foreground
#   scripts/demo.sh --no-wait    # walk-through, then stop (also: DEMO_EXIT=1)
#
# Env: DEMO_LISTEN (127.0.0.1:8080), DEMO_ADMIN_LISTEN (127.0.0.1:9901), DEMO_BACKEND_PORT (9000),
# DEMO_PROFILE (release; the Cargo profile to build and run).
# Exits non-zero if any call in the walk-through answers differently from what it shows.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

NO_WAIT="${DEMO_EXIT:-0}"
for arg in "$@"; do
    case "$arg" in
        --no-wait) NO_WAIT=1 ;;
        -h | --help) sed -n '2,12s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "demo: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done
[[ "$NO_WAIT" == 1 ]] || NO_WAIT=0

LISTEN="${DEMO_LISTEN:-127.0.0.1:8080}"
ADMIN="${DEMO_ADMIN_LISTEN:-127.0.0.1:9901}"
BACKEND_PORT="${DEMO_BACKEND_PORT:-9000}"
# Cargo profile: release for people; `make test` uses dev to reuse the test build.
PROFILE="${DEMO_PROFILE:-release}"
GW="http://$LISTEN"

DEMO_NAME=demo
# shellcheck source=scripts/lib/demo-common.sh
source "$ROOT/scripts/lib/demo-common.sh"

ACME="$(secret_key acme-free-keys primaryKey)"
GLOBEX="$(secret_key globex-silver-keys primaryKey)"
GLOBEX2="$(secret_key globex-silver-keys secondaryKey)"
UMBRELLA="$(secret_key umbrella-silver-keys primaryKey)"
[[ -n "$ACME" && -n "$GLOBEX" && -n "$GLOBEX2" && -n "$UMBRELLA" ]] \
    || { echo "demo: could not read the demo keys from examples/weather/secrets.yaml" >&2; exit 1; }



port_in_use "$LISTEN" && die "$LISTEN is already in use (an earlier demo still running?). Stop it, or set DEMO_LISTEN=127.0.0.1:PORT"
port_in_use "$ADMIN" && die "$ADMIN is already in use. Stop what uses it, or set DEMO_ADMIN_LISTEN=127.0.0.1:PORT"
port_in_use "127.0.0.1:$BACKEND_PORT" && die "127.0.0.1:$BACKEND_PORT (the demo backend's port) is already in use. Stop what uses it, or set DEMO_BACKEND_PORT"

say "${B}==> Building tollgate-proxy and the demo backend ($PROFILE profile; the first build takes a few minutes)${N}"
cargo build --profile "$PROFILE" -q -p tollgate-proxy -p tollgate-demo-backend
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
PROFILE_DIR="$PROFILE"
[[ "$PROFILE" == dev || "$PROFILE" == test ]] && PROFILE_DIR=debug
PROXY_BIN="$TARGET_DIR/$PROFILE_DIR/tollgate-proxy"
BACKEND_BIN="$TARGET_DIR/$PROFILE_DIR/tollgate-demo-backend"

WORK="$(mktemp -d -t tollgate-demo.XXXXXX)"
PIDS=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo; exit 0' INT
trap 'exit 143' TERM

MANIFESTS="examples/weather"
if [[ "$BACKEND_PORT" != 9000 ]]; then
    # Same manifests, pointed at the other port.
    mkdir -p "$WORK/manifests"
    cp examples/weather/*.yaml "$WORK/manifests/"
    sed -i "s|http://127.0.0.1:9000|http://127.0.0.1:$BACKEND_PORT|" "$WORK/manifests/product.yaml"
    MANIFESTS="$WORK/manifests"
fi

"$BACKEND_BIN" --listen "127.0.0.1:$BACKEND_PORT" >"$WORK/backend.log" 2>&1 &
PIDS+=($!)
# As the image runs it: the allocator returns freed pages at once (README, "Memory").
MIMALLOC_PURGE_DELAY="${MIMALLOC_PURGE_DELAY-0}" \
    "$PROXY_BIN" --from-dir "$MANIFESTS" --listen "$LISTEN" --admin-listen "$ADMIN" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
PIDS+=("$PROXY_PID")

say "${B}==> Starting: tollgate-proxy --from-dir $MANIFESTS --listen $LISTEN --admin-listen $ADMIN${N}"
ready=0
for ((i = 0; i < 300; i++)); do
    if ! kill -0 "$PROXY_PID" 2>/dev/null; then
        cat "$WORK/proxy.log" >&2
        die "tollgate-proxy exited during start-up (its log is above)"
    fi
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$ADMIN/readyz" || true)" == 200 ]] \
        && [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$BACKEND_PORT/healthz" || true)" == 200 ]]; then
        ready=1
        break
    fi
    sleep 0.1
done
((ready)) || { cat "$WORK/proxy.log" >&2; die "tollgate-proxy was not ready after 30 s (its log is above)"; }
say "    ready: http://$ADMIN/readyz answers 200"

FAILED=()
STEP=0

# step "what it shows" expected-status curl-args...  (prints the command, runs it, shows the answer)
step() {
    local title="$1" want="$2"
    shift 2
    STEP=$((STEP + 1))
    say
    say "${B}${STEP}. ${title}${N}"
    say "${C}\$ curl -i $(shell_words "$@")${N}"
    local code
    code="$(curl -sS -o "$WORK/body" -D "$WORK/head" -w '%{http_code}' "$@" || true)"
    tr -d '\r' <"$WORK/head" | grep -v -i '^date:' | sed '/^$/d'
    say "$(head -c 400 "$WORK/body")"
    check "$title" "$want" "$code"
}

# Arguments as a person would type them: quoted only when needed.
shell_words() {
    local out=() a
    for a in "$@"; do
        if [[ "$a" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
            out+=("$a")
        else
            out+=("'${a//\'/\'\\\'\'}'")
        fi
    done
    printf '%s' "${out[*]}"
}

check() { # what want got
    if [[ "$3" == "$2" ]]; then
        say "${G}   ✔ $3 as expected${N}"
    else
        say "${R}   ✘ got $3, expected $2${N}"
        FAILED+=("$1: got $3, expected $2")
    fi
}

header_absent() { # header (case-insensitive) must not be in the last response
    if tr -d '\r' <"$WORK/head" | grep -qi "^$1:"; then
        say "${R}   ✘ $1 reached the client${N}"
        FAILED+=("$1 header was not removed")
    else
        say "${G}   ✔ no $1 header${N}"
    fi
}

body_has() { # text that must be in the last response body
    if grep -qF -- "$1" "$WORK/body"; then
        say "${G}   ✔ body has $1${N}"
    else
        say "${R}   ✘ body lacks $1${N}"
        FAILED+=("body lacks $1")
    fi
}

header_is() { # header value
    local got
    got="$(tr -d '\r' <"$WORK/head" | awk -v h="$1" -F': ' 'tolower($1) == tolower(h) { print $2 }')"
    if [[ "$got" == "$2" ]]; then
        say "${G}   ✔ $1: $2${N}"
    else
        say "${R}   ✘ $1 is '${got}', expected '$2'${N}"
        FAILED+=("$1 was '${got}', expected '$2'")
    fi
}

say
say "${B}==> YourWeather walk-through${N}  ${DIM}(manifests: examples/weather; the keys are the demo keys in secrets.yaml)${N}"

step "The backend on its own: it tells the world what it runs on" 200 \
    "http://127.0.0.1:$BACKEND_PORT/weather/current?city=Utrecht"

step "Through Tollgate with Acme's key (Free plan): 200, fingerprints gone, key not forwarded" 200 \
    -H "X-Subscription-Key: $ACME" "$GW/weather/current?city=Utrecht"
header_absent Server
header_absent X-Powered-By
header_absent X-AspNet-Version
header_is X-Backend-Saw-Key no
body_has '"source":"YourWeather"'

step "A browser preflight from the web app's origin: answered by Tollgate, no key needed" 204 \
    -X OPTIONS -H "Origin: http://localhost:3000" -H "Access-Control-Request-Method: GET" \
    -H "Access-Control-Request-Headers: x-subscription-key" "$GW/weather/current"
header_is Access-Control-Allow-Origin "http://localhost:3000"

step "No key: 401" 401 "$GW/weather/current"

step "A key Tollgate does not know: 401" 401 \
    -H "X-Subscription-Key: tg_demo_not_a_real_key_000000000000" "$GW/weather/current"

step "Acme (Free) on the weekly forecast, which the Free plan does not include: 403" 403 \
    -H "X-Subscription-Key: $ACME" "$GW/weather/forecast/week"

step "Globex (Silver) on the same route: its plan includes it, 200" 200 \
    -H "X-Subscription-Key: $GLOBEX" "$GW/weather/forecast/week?city=Rotterdam"

step "Globex's secondary key works too (rotate without downtime): 200" 200 \
    -H "X-Subscription-Key: $GLOBEX2" "$GW/weather/air-quality"

step "Umbrella's subscription is Suspended: 403" 403 \
    -H "X-Subscription-Key: $UMBRELLA" "$GW/weather/current"

step "A path no route matches: 404" 404 \
    -H "X-Subscription-Key: $ACME" "$GW/weather/tides"

step "A method the route does not allow: 405 with Allow" 405 \
    -X POST -H "X-Subscription-Key: $ACME" "$GW/weather/current"

STEP=$((STEP + 1))
say
say "${B}${STEP}. Acme's Free plan allows 10 calls a minute: a burst of 11 more ends in 429${N}"
say "${C}\$ for i in \$(seq 11); do curl -s -o /dev/null -w '%{http_code} ' -H 'X-Subscription-Key: $ACME' $GW/weather/current; done${N}"
codes=()
for ((i = 1; i <= 11; i++)); do
    codes+=("$(curl -sS -o "$WORK/body" -D "$WORK/head" -w '%{http_code}' \
        -H "X-Subscription-Key: $ACME" "$GW/weather/current" || true)")
done
say "${codes[*]}"
check "first call of the burst" 200 "${codes[0]}"
check "last call of the burst" 429 "${codes[10]}"
say "${DIM}   the last answer:${N}"
tr -d '\r' <"$WORK/head" | grep -v -i '^date:' | sed '/^$/d'
say "$(head -c 400 "$WORK/body")"

say
say "${B}Metrics${N} ${DIM}(Prometheus text on the admin listener; no key material in any label)${N}"
say "${C}\$ curl -s http://$ADMIN/metrics | grep '^tollgate_requests'${N}"
curl -s "http://$ADMIN/metrics" | grep '^tollgate_requests' | head -n 12 || true

say
if ((${#FAILED[@]})); then
    say "${R}${B}The walk-through did not go as shown:${N}"
    printf '%s  - %s%s\n' "$R" "${FAILED[@]}" "$N"
    say "${DIM}proxy log:${N}"
    tail -n 30 "$WORK/proxy.log"
    exit 1
fi
say "${G}${B}Every call answered as shown.${N}"

if ((NO_WAIT)); then
    exit 0
fi

say
say "${B}Tollgate is serving YourWeather on $GW${N} (admin: http://$ADMIN/healthz, /readyz, /metrics)."
say "Try the calls above yourself, or edit the manifests in $MANIFESTS: the proxy applies a change about a second after the last write (the settle window, --settle-ms)."
say "Ctrl-C stops both processes. Tollgate's log follows:"
say
tail -n +1 -f "$WORK/proxy.log" &
PIDS+=($!)
wait "$PROXY_PID" || true
die "tollgate-proxy stopped"
