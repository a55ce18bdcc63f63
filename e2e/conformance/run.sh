#!/usr/bin/env bash
# The upstream Gateway API conformance suite (sigs.k8s.io/gateway-api/conformance, the release
# in go.mod), unmodified, against Tollgate on the local control plane: the operator and one
# proxy run as local processes, localpods runs the suite's echo pods (see localpods/main.go),
# and the suite writes its report to e2e/conformance/report.yaml (GATEWAY-HTTP profile, the
# extended features inferred from the GatewayClass's status.supportedFeatures).
#
#   e2e/conformance/run.sh                 the whole suite; exit status = the suite's
#   e2e/conformance/run.sh -run-test NAME  one test (any of the suite's flags may follow)
#   CONFORMANCE_GATE=1 e2e/conformance/run.sh
#                  what `make test` runs: the tests in not-passing.txt skipped (each line there
#                  says why it does not pass yet), every other one must pass; the report goes
#                  to the work dir, not over the published one
#
# Must run as root (network namespaces for the pods, ports 80 and 443 for the Gateways). It uses its own
# control plane state (TOLLGATE_STATE, default /tmp/tollgate-conformance) with the deployment
# and replicaset controllers added, and stops everything it started on exit.
#
# Environment:
#   TOLLGATE_STATE         control plane state dir   (default /tmp/tollgate-conformance)
#   CONFORMANCE_REPORT     where the report goes     (default e2e/conformance/report.yaml)
#   CONFORMANCE_KEEP=1     leave the control plane up afterwards (to inspect it)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE_ROOT=${TOLLGATE_CACHE:-${HOME:?HOME is not set}/.cache/tollgate}
VERSION=$(awk '$1 == "sigs.k8s.io/gateway-api/conformance" { print $2; exit }' "$HERE/go.mod")
BIN="$CACHE_ROOT/conformance-$VERSION"
export TOLLGATE_STATE=${TOLLGATE_STATE:-/tmp/tollgate-conformance}
export TOLLGATE_EXTRA_CONTROLLERS=deployment-controller,replicaset-controller
REPORT=${CONFORMANCE_REPORT:-$HERE/report.yaml}
WORK="$TOLLGATE_STATE/conformance"
gate=()
if [[ ${CONFORMANCE_GATE:-0} == 1 ]]; then
	REPORT=${CONFORMANCE_REPORT:-$WORK/report.yaml}
	gate=(-skip-tests="$(sed -e 's/#.*//' "$HERE/not-passing.txt" | awk 'NF { print $1 }' | paste -sd, -)")
fi
# Each Gateway of the class gets an address of its own from this pool (the operator's
# --gateway-address-pool, written to its status.addresses), and the proxy (--gateway-sockets)
# listens there on each of its listeners' ports: all of 127/8 is local, so no alias is needed.
# The proxy's own listeners (which serve no Gateway then) stay on 127.0.0.1.
GATEWAY_POOL=127.0.10.0/24
GATEWAY_ADDRESS=127.0.0.1
CLASS=tollgate

log() { printf '[conformance] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root: pods get network namespaces, the Gateway listens on ports 80 and 443"
command -v ip >/dev/null || die "the ip command (iproute2) is needed"
for port in 80 443; do
	if (exec 3<>"/dev/tcp/$GATEWAY_ADDRESS/$port") 2>/dev/null; then
		die "$GATEWAY_ADDRESS:$port is in use (a local nginx?); the Gateway listens there"
	fi
done

log "building echo-basic and localpods ($VERSION) into $BIN"
mkdir -p "$BIN"
(cd "$HERE" && CGO_ENABLED=0 go build -trimpath -o "$BIN/echo-basic" sigs.k8s.io/gateway-api/conformance/echo-basic &&
	CGO_ENABLED=0 go build -trimpath -o "$BIN/localpods" ./localpods)
log "building tollgate-operator and tollgate-proxy"
(cd "$ROOT" && cargo build -q -p tollgate-operator -p tollgate-proxy)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

# A fresh cluster every run: nothing of an earlier one can pass or fail a test.
"$ROOT/e2e/control-plane.sh" down >/dev/null 2>&1 || true
KUBECONFIG=$("$ROOT/e2e/control-plane.sh" up)
export KUBECONFIG
kctl() { "$ROOT/e2e/control-plane.sh" kubectl "$@"; }

pids=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	local status=$?
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	if [[ ${CONFORMANCE_KEEP:-0} != 1 ]]; then
		"$ROOT/e2e/control-plane.sh" down >/dev/null 2>&1 || true
	else
		log "control plane left up: KUBECONFIG=$KUBECONFIG; logs in $WORK"
	fi
	exit "$status"
}
trap cleanup EXIT INT TERM
rm -rf "$WORK"
mkdir -p "$WORK"

log "installing the Gateway API and Tollgate CRDs"
kctl apply --server-side -f "$("$ROOT/e2e/gateway-api-crds.sh")" >/dev/null
kctl apply --server-side -f "$ROOT/charts/tollgate/crds/tollgate.dev.yaml" >/dev/null
kctl wait --for condition=Established --timeout=60s crd --all >/dev/null

kctl create namespace tollgate-system >/dev/null
kctl -n tollgate-system create serviceaccount proxy >/dev/null
kctl -n tollgate-system create token proxy --audience tollgate --duration 24h >"$WORK/proxy.token"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
table_port=$(free_port)
metrics_port=$(free_port)
admin_port=$(free_port)

"$BIN/localpods" -echo-basic "$BIN/echo-basic" -work-dir "$WORK/pods" >"$WORK/localpods.log" 2>&1 &
pids+=($!)
RUST_LOG=info NO_COLOR=1 "$TARGET/debug/tollgate-operator" \
	--namespace tollgate-system --identity conformance \
	--metrics-listen "127.0.0.1:$metrics_port" \
	--distribute-listen "127.0.0.1:$table_port" \
	--gateway-address-pool "$GATEWAY_POOL" --gateway-https \
	--debounce-ms 50 >"$WORK/operator.log" 2>&1 &
pids+=($!)
NO_COLOR=1 "$TARGET/debug/tollgate-proxy" \
	--from-operator "http://127.0.0.1:$table_port" \
	--token-file "$WORK/proxy.token" --state-dir "$WORK/proxy-state" \
	--listen "$GATEWAY_ADDRESS:80" --tls-listen "$GATEWAY_ADDRESS:443" --admin-listen "127.0.0.1:$admin_port" \
	--gateway-sockets \
	--log-format text --access-log off >"$WORK/proxy.log" 2>&1 &
pids+=($!)

# shellcheck source=e2e/conformance/suite-args.sh
source "$HERE/suite-args.sh"
gateway_class kctl "$CLASS" 60s || die "GatewayClass $CLASS was not accepted; see $WORK/operator.log"

log "running the suite (logs: $WORK/suite.log; report: $REPORT)"
set +e
suite_args "$CLASS" "$REPORT"
(cd "$HERE" && go test -v -count=1 -timeout 60m -run TestConformance . -args \
	"${SUITE_ARGS[@]}" "${gate[@]}" "$@") 2>&1 | tee "$WORK/suite.log"
status=${PIPESTATUS[0]}
set -e
# After a full run, say where not-passing.txt and the report disagree, so the list never goes
# stale (the gate only checks the other direction: no unlisted test may fail).
if [[ ${CONFORMANCE_GATE:-0} != 1 && $# == 0 && -s $REPORT ]]; then
	python3 - "$REPORT" "$HERE/not-passing.txt" <<'PY' >&2
import sys, yaml
report = yaml.safe_load(open(sys.argv[1]))
failed = set()
for profile in report.get("profiles") or []:
    for level in ("core", "extended"):
        failed |= set((profile.get(level) or {}).get("failedTests") or [])
listed = {l.split("#")[0].split()[0] for l in open(sys.argv[2]) if l.split("#")[0].strip()}
for t in sorted(listed - failed):
    print(f"[conformance] {t} did not fail: remove it from not-passing.txt")
for t in sorted(failed - listed):
    print(f"[conformance] {t} failed and is not in not-passing.txt: fix it, or list it with why")
if listed == failed:
    print("[conformance] not-passing.txt lists exactly the tests that failed")
PY
fi
grep -E '^\s*--- (PASS|FAIL|SKIP)' "$WORK/suite.log" | sed 's/^ *//' | sort | uniq -c | sort -rn | head -n 5 >&2 || true
exit "$status"
