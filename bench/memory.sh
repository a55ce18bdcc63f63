#!/usr/bin/env bash
# Proxy memory per subscription: start tollgate-proxy --from-dir on generated manifests with 0 and
# with N subscriptions (each with its own key Secret, on one product and plan with a rate limit and
# a quota), wait until it serves, and report resident memory (VmRSS) and the growth per
# subscription. Also reports the time from start to /readyz (read + compile + index).
#
#   bench/memory.sh                 # N=100000 and N=1000000 (the design scale)
#   COUNTS="1000 50000" bench/memory.sh
#
# Env: COUNTS ("100000 1000000"), PROFILE (release), PORT (19280), ADMIN_PORT (19281).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
COUNTS="${COUNTS:-100000 1000000}"
PROFILE="${PROFILE:-release}"
PORT="${PORT:-19280}"
ADMIN_PORT="${ADMIN_PORT:-19281}"

cargo build -q --profile "$PROFILE" -p tollgate-proxy
dir="$PROFILE"; [[ "$PROFILE" == dev ]] && dir=debug
BIN="$ROOT/target/$dir/tollgate-proxy"
WORK="$(mktemp -d)"
PID=""
cleanup() { [[ -n "$PID" ]] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

generate() { # N DIR
    local n="$1" d="$2"
    mkdir -p "$d"
    cat > "$d/product.yaml" <<'EOF'
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {name: api, namespace: mem}
spec:
  backend: {url: "http://127.0.0.1:9"}
  routes: [{name: all, path: /}]
---
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {name: gold, namespace: mem}
spec:
  product: api
  rateLimit: {requests: 100, period: 1s}
  quota: {requests: 1000000, period: Month}
EOF
    awk -v n="$n" 'BEGIN {
        for (i = 0; i < n; i++) {
            printf "apiVersion: tollgate.dev/v1alpha1\nkind: Subscription\nmetadata: {name: s%d, namespace: mem}\nspec:\n  plan: gold\n  subscriber: {name: Sub %d}\n  keys: {secretRef: {name: s%d-keys}}\n---\n", i, i, i
            printf "apiVersion: v1\nkind: Secret\nmetadata: {name: s%d-keys, namespace: mem}\nstringData: {primaryKey: memory-bench-primary-key-%08d, secondaryKey: memory-bench-second-key-%08d}\n---\n", i, i, i
        }
    }' > "$d/subscriptions.yaml"
}

measure() { # N
    local n="$1" d="$WORK/n$1"
    generate "$n" "$d"
    local started; started=$(date +%s.%N)
    # As the image runs it (Dockerfile): mimalloc returns freed pages at once. The generated
    # subscriptions.yaml is one file far over the default 4 MiB limit (1M subscriptions: ~330 MB),
    # and the files are fresh, so no settle wait is counted in the time to ready.
    MIMALLOC_PURGE_DELAY="${MIMALLOC_PURGE_DELAY-0}" "$BIN" --from-dir "$d" --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
        --access-log off --threads 1 --settle-ms 0 --max-manifest-bytes 2000000000 >"$WORK/log-$n" 2>&1 &
    PID=$!
    # Up to 5 minutes: 1M subscriptions' YAML takes ~30 s to parse on a quiet 2-CPU machine.
    for _ in $(seq 1 3000); do
        curl -fs "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fs "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null || { cat "$WORK/log-$n"; exit 1; }
    local ready; ready=$(echo "$(date +%s.%N) - $started" | bc)
    sleep 1
    local rss; rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    echo "$n $rss $ready"
}

echo "subscriptions  rss_kib  ready_s  bytes_per_subscription(vs 0)"
read -r _ base _ < <(measure 0)
printf '%13d  %7d  %7s  -\n' 0 "$base" "-"
for n in $COUNTS; do
    read -r _ rss ready < <(measure "$n")
    printf '%13d  %7d  %7.2f  %d\n' "$n" "$rss" "$ready" $(( (rss - base) * 1024 / n ))
done
