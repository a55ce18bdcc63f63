#!/usr/bin/env bash
# The YourWeather demo on Kubernetes (`make demo-cluster`): on the local control plane the tests use
# (e2e/control-plane.sh: etcd + kube-apiserver on loopback, no kubelet), applies the CRDs and
# `kubectl apply -f examples/weather/`, runs tollgate-operator and a tollgate-proxy following it as
# local processes, and walks through the calls of `make demo` plus a suspension, a key rotation and
# `kubectl get tollgate`. Then stops what it started (also on failure) and exits.
#
#   scripts/demo-cluster.sh
#
# Env: DEMO_LISTEN (127.0.0.1:8180), DEMO_ADMIN_LISTEN (127.0.0.1:9911), DEMO_BACKEND_PORT (9100),
# DEMO_OPERATOR_PORT (9190; the table endpoint, metrics on the next port), DEMO_PROFILE (dev).
# A control plane already up is reused (and left up; only what this script created is removed).
# Exits non-zero if any check fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

case "${1:-}" in
    "") ;;
    -h | --help) sed -n '2,13s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "demo-cluster: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac

LISTEN="${DEMO_LISTEN:-127.0.0.1:8180}"
ADMIN="${DEMO_ADMIN_LISTEN:-127.0.0.1:9911}"
BACKEND_PORT="${DEMO_BACKEND_PORT:-9100}"
OPERATOR_PORT="${DEMO_OPERATOR_PORT:-9190}"
OPERATOR_METRICS="127.0.0.1:$((OPERATOR_PORT + 1))"
PROFILE="${DEMO_PROFILE:-dev}"
GW="http://$LISTEN"
NS=weather
SYSTEM_NS=tollgate-system
PROXY_SA=tollgate-demo-proxy
LEASE=tollgate-demo-cluster-leader
CRDS=charts/tollgate/crds/tollgate.dev.yaml

DEMO_NAME=demo-cluster
# shellcheck source=scripts/lib/demo-common.sh
source "$ROOT/scripts/lib/demo-common.sh"



for addr in "$LISTEN" "$ADMIN" "127.0.0.1:$BACKEND_PORT" "127.0.0.1:$OPERATOR_PORT" "$OPERATOR_METRICS"; do
    port_in_use "$addr" && die "$addr is already in use (an earlier demo still running?); see --help for the ports' variables"
done

# The demo keys of the subscriptions that bring their own (public, demo only).
ACME="$(secret_key acme-free-keys primaryKey)"
GLOBEX="$(secret_key globex-silver-keys primaryKey)"
GLOBEX2="$(secret_key globex-silver-keys secondaryKey)"
UMBRELLA="$(secret_key umbrella-silver-keys primaryKey)"
[[ -n "$ACME" && -n "$GLOBEX" && -n "$GLOBEX2" && -n "$UMBRELLA" ]] \
    || die "could not read the demo keys from examples/weather/secrets.yaml"

T0=$SECONDS
say "${B}==> Building tollgate-operator, tollgate-proxy and the demo backend ($PROFILE profile)${N}"
cargo build --profile "$PROFILE" -q -p tollgate-operator -p tollgate-proxy -p tollgate-demo-backend
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
PROFILE_DIR="$PROFILE"
[[ "$PROFILE" == dev || "$PROFILE" == test ]] && PROFILE_DIR=debug
BIN="$TARGET_DIR/$PROFILE_DIR"

WORK="$(mktemp -d -t tollgate-demo-cluster.XXXXXX)"
PIDS=()
CP_STARTED=0
CREATED_NS=()
KUBECONFIG_PATH=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if ((CP_STARTED)); then
        e2e/control-plane.sh down >/dev/null 2>&1 || true
    elif [[ -n "$KUBECONFIG_PATH" ]]; then
        # A control plane that was already up stays; what this run made in it goes.
        kubectl delete subscription -n "$NS" hooli-gold --ignore-not-found --wait=false >/dev/null 2>&1 || true
        kubectl delete -n "$SYSTEM_NS" serviceaccount "$PROXY_SA" --ignore-not-found >/dev/null 2>&1 || true
        kubectl delete -n "$SYSTEM_NS" lease "$LEASE" --ignore-not-found >/dev/null 2>&1 || true
        if ((${#CREATED_NS[@]})); then
            kubectl delete namespace "${CREATED_NS[@]}" --ignore-not-found --wait=false >/dev/null 2>&1 || true
        fi
    fi
    if ((rc)); then
        for f in operator proxy; do
            [[ -f "$WORK/$f.log" ]] && { say "${DIM}last lines of the $f log:${N}"; tail -n 20 "$WORK/$f.log"; }
        done
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "${B}==> The local control plane (e2e/control-plane.sh; the first run builds it, which takes a while)${N}"
if e2e/control-plane.sh status >/dev/null 2>&1; then
    say "    reusing the one already up"
else
    CP_STARTED=1
fi
KUBECONFIG_PATH="$(e2e/control-plane.sh up | tail -n 1)" || die "e2e/control-plane.sh up failed"
eval "$(e2e/control-plane.sh env)"
export KUBECONFIG="$KUBECONFIG_PATH"

FAILED=()
ok() { say "${G}   ✔ $*${N}"; }
bad() { say "${R}   ✘ $*${N}"; FAILED+=("$*"); }
run() { # shows a command and runs it; its failure is fatal
    say "${C}\$ $*${N}"
    "$@" || die "failed: $*"
}

for ns in "$SYSTEM_NS" "$NS"; do
    # An earlier run's namespace may still be terminating: nothing can be created in it until gone.
    if [[ "$(kubectl get namespace "$ns" -o jsonpath='{.status.phase}' 2>/dev/null)" == Terminating ]]; then
        say "    waiting for namespace $ns (an earlier run's) to be deleted"
        kubectl wait --for=delete "namespace/$ns" --timeout=120s >/dev/null || die "namespace $ns is still terminating"
    fi
    kubectl get namespace "$ns" >/dev/null 2>&1 || CREATED_NS+=("$ns")
done
say
say "${B}==> The CRDs, the operator's namespace and the example${N}"
run kubectl apply --server-side --force-conflicts -f "$CRDS" >/dev/null
run kubectl wait --for=condition=Established --timeout=60s -f "$CRDS" >/dev/null
kubectl create namespace "$SYSTEM_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
run kubectl apply -f examples/weather/
# No kubelet here: the backend is a local process, so the Product points at it.
run kubectl -n "$NS" patch product weather --type merge \
    -p "{\"spec\":{\"backend\":{\"url\":\"http://127.0.0.1:$BACKEND_PORT\"}}}"
# A subscriber without keys of its own: the operator generates them into Secret hooli-gold-keys.
say "${C}\$ kubectl apply -f - <<< 'Subscription hooli-gold (plan gold, no keys: the operator generates them)'${N}"
kubectl apply -f - >/dev/null <<EOF || die "could not create Subscription hooli-gold"
apiVersion: tollgate.dev/v1alpha1
kind: Subscription
metadata: {name: hooli-gold, namespace: $NS}
spec:
  plan: gold
  subscriber: {name: Hooli, email: api@hooli.example}
  state: Active
EOF

say
say "${B}==> tollgate-operator and a tollgate-proxy following it (local processes)${N}"
kubectl -n "$SYSTEM_NS" create serviceaccount "$PROXY_SA" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# The proxy authenticates with a token of its ServiceAccount bound to the operator's audience
# (--token-audience, default `tollgate`), as the chart's projected token is.
say "${C}\$ kubectl -n $SYSTEM_NS create token $PROXY_SA --audience tollgate > token${N}"
(umask 077 && kubectl -n "$SYSTEM_NS" create token "$PROXY_SA" --audience tollgate --duration 1h >"$WORK/token") \
    || die "kubectl create token failed"

"$BIN/tollgate-demo-backend" --listen "127.0.0.1:$BACKEND_PORT" >"$WORK/backend.log" 2>&1 &
PIDS+=($!)
# The admin kubeconfig stands in for the chart's RBAC here (e2e/chart-test.sh proves that RBAC).
"$BIN/tollgate-operator" --watch-namespace "$NS" --namespace "$SYSTEM_NS" --lease-name "$LEASE" \
    --identity demo-cluster --metrics-listen "$OPERATOR_METRICS" \
    --distribute-listen "127.0.0.1:$OPERATOR_PORT" >"$WORK/operator.log" 2>&1 &
OPERATOR_PID=$!
PIDS+=("$OPERATOR_PID")
say "${C}\$ tollgate-operator --watch-namespace $NS --distribute-listen 127.0.0.1:$OPERATOR_PORT …${N}"
"$BIN/tollgate-proxy" --from-operator "http://127.0.0.1:$OPERATOR_PORT" --token-file "$WORK/token" \
    --listen "$LISTEN" --admin-listen "$ADMIN" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
say "${C}\$ tollgate-proxy --from-operator http://127.0.0.1:$OPERATOR_PORT --token-file token --listen $LISTEN --admin-listen $ADMIN${N}"

code_of() { curl -s -o /dev/null -w '%{http_code}' "$@" || true; }
ready=0
for ((i = 0; i < 600; i++)); do
    kill -0 "$OPERATOR_PID" 2>/dev/null || die "tollgate-operator exited during start-up"
    kill -0 "$PROXY_PID" 2>/dev/null || die "tollgate-proxy exited during start-up"
    if [[ "$(code_of "http://$ADMIN/readyz")" == 200 && "$(code_of "http://127.0.0.1:$BACKEND_PORT/healthz")" == 200 ]]; then
        ready=1
        break
    fi
    sleep 0.1
done
((ready)) || die "tollgate-proxy was not ready after 60 s"
run kubectl -n "$NS" wait --for=condition=Ready --timeout=60s product/weather subscription/acme-free >/dev/null
ok "ready after $((SECONDS - T0)) s: the proxy's /readyz answers 200, Product weather is Ready"

# poll_code WANT SECONDS curl-args...: until the call answers WANT (the table reaches the proxy
# a moment after a change in the cluster).
poll_code() {
    local want=$1 secs=$2 got="" i
    shift 2
    for ((i = 0; i < secs * 5; i++)); do
        got="$(code_of "$@")"
        [[ "$got" == "$want" ]] && { echo "$got"; return 0; }
        sleep 0.2
    done
    echo "$got"
}

STEP=0
# step "title" want curl-args...: shows the answer; asks again for up to 10 s while it differs
# (a change in the cluster reaches the proxy a moment later).
step() {
    local title=$1 want=$2 code i
    shift 2
    STEP=$((STEP + 1))
    say
    say "${B}${STEP}. ${title}${N}"
    say "${C}\$ curl -i $*${N}"
    for ((i = 0; i < 50; i++)); do
        code="$(curl -sS -o "$WORK/body" -D "$WORK/head" -w '%{http_code}' "$@" || true)"
        [[ "$code" == "$want" ]] && break
        sleep 0.2
    done
    tr -d '\r' <"$WORK/head" | grep -v -i '^date:' | sed '/^$/d' | head -n 12
    say "$(head -c 300 "$WORK/body")"
    if [[ "$code" == "$want" ]]; then ok "$code as expected"; else bad "$title: got $code, expected $want"; fi
}
header_absent() {
    if tr -d '\r' <"$WORK/head" | grep -qi "^$1:"; then bad "$1 reached the client"; else ok "no $1 header"; fi
}

say
say "${B}==> YourWeather through the cluster's table${N}"
step "Acme's key (Free plan): 200, fingerprints gone" 200 -H "X-Subscription-Key: $ACME" "$GW/weather/current?city=Utrecht"
header_absent Server
header_absent X-Powered-By
step "A browser preflight from the web app's origin: 204" 204 -X OPTIONS -H "Origin: http://localhost:3000" \
    -H "Access-Control-Request-Method: GET" -H "Access-Control-Request-Headers: x-subscription-key" "$GW/weather/current"
step "No key: 401" 401 "$GW/weather/current"
step "A key Tollgate does not know: 401" 401 -H "X-Subscription-Key: tg_demo_not_a_real_key_000000000000" "$GW/weather/current"
step "Acme (Free) on the weekly forecast: 403" 403 -H "X-Subscription-Key: $ACME" "$GW/weather/forecast/week"
step "Globex (Silver) on the same route: 200" 200 -H "X-Subscription-Key: $GLOBEX" "$GW/weather/forecast/week?city=Rotterdam"
step "Globex's secondary key: 200" 200 -H "X-Subscription-Key: $GLOBEX2" "$GW/weather/air-quality"
step "Umbrella's subscription is Suspended: 403" 403 -H "X-Subscription-Key: $UMBRELLA" "$GW/weather/current"
step "A path no route matches: 404" 404 -H "X-Subscription-Key: $ACME" "$GW/weather/tides"
step "A method the route does not allow: 405" 405 -X POST -H "X-Subscription-Key: $ACME" "$GW/weather/current"

STEP=$((STEP + 1))
say
say "${B}${STEP}. Acme's Free plan allows 10 calls a minute: a burst of 11 more ends in 429${N}"
codes=()
for ((i = 1; i <= 11; i++)); do codes+=("$(code_of -H "X-Subscription-Key: $ACME" "$GW/weather/current")"); done
say "${codes[*]}"
if [[ "${codes[10]}" == 429 ]]; then ok "the burst ends in 429"; else bad "burst: last call got ${codes[10]}, expected 429"; fi

STEP=$((STEP + 1))
say
say "${B}${STEP}. Suspend Globex in the cluster: its key gets 403 within seconds${N}"
run kubectl -n "$NS" patch subscription globex-silver --type merge -p '{"spec":{"state":"Suspended"}}'
t=$SECONDS
got="$(poll_code 403 15 -H "X-Subscription-Key: $GLOBEX" "$GW/weather/current")"
if [[ "$got" == 403 ]]; then ok "403 after $((SECONDS - t)) s"; else bad "suspension: Globex's key got $got after 15 s, expected 403"; fi

STEP=$((STEP + 1))
say
say "${B}${STEP}. Rotate Hooli's generated primary key: the old key 401, the new one 200${N}"
secret_primary() { kubectl -n "$NS" get secret hooli-gold-keys -o jsonpath='{.data.primaryKey}' 2>/dev/null | base64 -d 2>/dev/null || true; }
say "${C}\$ kubectl -n $NS get secret hooli-gold-keys -o jsonpath='{.data.primaryKey}' | base64 -d${N}"
OLD=""
for ((i = 0; i < 100 && ${#OLD} == 0; i++)); do OLD="$(secret_primary)"; [[ -n "$OLD" ]] || sleep 0.2; done
[[ -n "$OLD" ]] || die "the operator did not create Secret hooli-gold-keys"
say "    ${OLD:0:10}… (shown in part)"
got="$(poll_code 200 10 -H "X-Subscription-Key: $OLD" "$GW/weather/forecast/month")"
if [[ "$got" == 200 ]]; then ok "the generated key: 200"; else bad "generated key got $got, expected 200"; fi
run kubectl -n "$NS" annotate subscription hooli-gold tollgate.dev/rotate=primary
NEW="$OLD"
for ((i = 0; i < 75; i++)); do
    [[ "$NEW" == "$OLD" ]] || break
    sleep 0.2
    NEW="$(secret_primary)"
done
if [[ -n "$NEW" && "$NEW" != "$OLD" ]]; then
    ok "Secret hooli-gold-keys has a new primaryKey: ${NEW:0:10}…"
    got="$(poll_code 200 10 -H "X-Subscription-Key: $NEW" "$GW/weather/forecast/month")"
    if [[ "$got" == 200 ]]; then ok "the new key: 200"; else bad "rotation: the new key got $got, expected 200"; fi
    got="$(poll_code 401 10 -H "X-Subscription-Key: $OLD" "$GW/weather/forecast/month")"
    if [[ "$got" == 401 ]]; then ok "the old key: 401"; else bad "rotation: the old key got $got, expected 401"; fi
else
    bad "rotation: primaryKey in Secret hooli-gold-keys did not change within 15 s"
fi

STEP=$((STEP + 1))
say
say "${B}${STEP}. Everything Tollgate in the namespace, with its Ready columns${N}"
say "${C}\$ kubectl -n $NS get tollgate${N}"
kubectl -n "$NS" get tollgate | tee "$WORK/get.txt"
for obj in product.tollgate.dev/weather plan.tollgate.dev/free subscription.tollgate.dev/acme-free apipolicy.tollgate.dev/weather-hardening; do
    grep -q "^$obj " "$WORK/get.txt" || bad "kubectl get tollgate does not list $obj"
done
if [[ "$(grep -c READY "$WORK/get.txt")" -ge 3 ]] && grep -q '^product.tollgate.dev/weather .* True ' "$WORK/get.txt"; then
    ok "listed with their Ready columns; Product weather is Ready"
else
    bad "kubectl get tollgate shows no Ready column, or Product weather is not Ready"
fi

say
if ((${#FAILED[@]})); then
    say "${R}${B}The walk-through did not go as shown:${N}"
    printf '%s  - %s%s\n' "$R" "${FAILED[@]}" "$N"
    exit 1
fi
say "${G}${B}Every call answered as shown ($((SECONDS - T0)) s).${N}"
