#!/usr/bin/env bash
# Scale check (issue 4): N Subscriptions with generated keys against a real API server.
# Prints the time until all are Ready, status writes, compile times, table snapshot size and
# the size and latency of the delta for one change. Not part of `make test` (minutes of load).
#
#   export KUBECONFIG=$(e2e/control-plane.sh up)
#   operator/scripts/scale.sh [N]      # default 10000; uses the pinned kubectl from the cache
set -euo pipefail
N=${1:-10000}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
: "${KUBECONFIG:?set KUBECONFIG, e.g. export KUBECONFIG=\$(e2e/control-plane.sh up)}"
# The pinned kubectl (cached by the control-plane script), against $KUBECONFIG.
K=("$(e2e/control-plane.sh build | tail -n 1)/kubectl")
NS=tg-scale-$N-$$
LOG=$(mktemp /tmp/tollgate-scale.XXXXXX.log)
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

cargo build -q -p tollgate-operator
"${K[@]}" apply --server-side -f charts/tollgate/crds/tollgate.dev.yaml >/dev/null
"${K[@]}" create namespace "$NS" >/dev/null
for f in product plans policy; do
	sed "s/namespace: weather/namespace: $NS/" "examples/weather/$f.yaml" | "${K[@]}" apply -f - >/dev/null
done
target/debug/tollgate-operator --metrics-listen 127.0.0.1:18090 --distribute-listen 127.0.0.1:18091 \
	--watch-namespace "$NS" --namespace "$NS" >"$LOG" 2>&1 &
OP=$!
trap 'kill -TERM $OP 2>/dev/null; "${K[@]}" delete namespace "$NS" --wait=false >/dev/null' EXIT

t0=$(now)
for i in $(seq 0 $((N - 1))); do
	printf -- '---\napiVersion: tollgate.dev/v1alpha1\nkind: Subscription\nmetadata: {name: s%05d, namespace: %s}\nspec: {plan: %s, subscriber: {name: S%d}}\n' \
		"$i" "$NS" "$(case $((i % 3)) in 0) echo free ;; 1) echo silver ;; *) echo gold ;; esac)" "$i"
done | "${K[@]}" create -f - >/dev/null
echo "created $N Subscriptions in $(since "$t0") s"
while :; do
	ready=$("${K[@]}" -n "$NS" get subscriptions \
		-o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)
	((ready >= N)) && break
	sleep 2
done
echo "all $N Ready $(since "$t0") s after the first create"
curl -s 127.0.0.1:18090/metrics |
	grep -E "^tollgate_operator_(compile_duration_seconds_(sum|count)|status_writes_total|key_operations_total|table_version)"
echo "operator RSS: $(ps -o rss= -p $OP) KiB"

"${K[@]}" -n "$NS" create serviceaccount proxy >/dev/null
TOKEN=$("${K[@]}" -n "$NS" create token proxy --audience tollgate)
curl -s -H "Authorization: Bearer $TOKEN" 127.0.0.1:18091/v1/table -o /tmp/tollgate-scale-table.json
V=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' /tmp/tollgate-scale-table.json)
echo "snapshot: $(wc -c </tmp/tollgate-scale-table.json) bytes ($(gzip -c /tmp/tollgate-scale-table.json | wc -c) gzipped), version $V"
curl -s -H "Authorization: Bearer $TOKEN" "127.0.0.1:18091/v1/table?since=$V&wait=20" -o /tmp/tollgate-scale-delta.json &
POLL=$!
sleep 1
t1=$(now)
"${K[@]}" -n "$NS" patch subscription s00042 --type merge -p '{"spec":{"state":"Suspended"}}' >/dev/null
wait "$POLL"
echo "one suspended Subscription reached a long-polling client in $(since "$t1") s as a $(wc -c </tmp/tollgate-scale-delta.json)-byte delta"
