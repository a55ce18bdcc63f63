#!/usr/bin/env bash
# The upstream Gateway API conformance suite (sigs.k8s.io/gateway-api/conformance, the release
# pinned in e2e/conformance/go.mod), unmodified, against Tollgate installed by its Helm chart on
# a kind cluster of its own, with real pods, kubelet, CNI and kube-proxy: the suite's echo pods
# are real containers, and the proxies are the chart's Deployment. e2e/kind/run.sh runs it after
# the operator suite; it can also run alone.
#
#   e2e/kind/conformance.sh                 the GATEWAY-HTTP profile, then delete the cluster
#   KEEP_CLUSTER=1 e2e/kind/conformance.sh  leave the cluster up for a look
#
# How the suite (a process on this host) reaches the Gateways: kind maps 127.0.0.1:80 and :443
# of this host to the node ports of the proxies' Service (30080, 30443), and the operator reports
# 127.0.0.1 as every Gateway's address (operator.gatewayAddresses). That is the chart's one
# shared address for every Gateway, so the tests that need an address per Gateway cannot pass
# and are skipped, with the reason printed: HTTPRouteMultipleGateways and
# HTTPRouteListenerPortMatching (the operator does not claim GatewayPort8080 without an address
# pool either, so the suite does not run its tests). The local run (e2e/conformance/run.sh)
# gives each Gateway its own address and runs them; everything else is the same suite with the
# same flags, and the tests listed in e2e/conformance/not-passing.txt are skipped as there.
#
# Needs: docker (a running engine), kind, kubectl, go (the suite, and Helm through e2e/helm.sh,
# are built from their Go modules); host ports 127.0.0.1:80 and :443 free. Environment: CLUSTER (default
# tollgate-conformance), IMAGE (default tollgate:e2e; built from the Dockerfile when docker does
# not have it), REPORT (default: the work dir; the published report stays the local run's).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
CLUSTER=${CLUSTER:-tollgate-conformance}
IMAGE=${IMAGE:-tollgate:e2e}
RELEASE=tollgate
RELEASE_NS=tollgate-system
CLASS=tollgate
WORK=$(mktemp -d /tmp/tollgate-kind-conformance.XXXXXX)
REPORT=${REPORT:-$WORK/report.yaml}
export KUBECONFIG=$WORK/kubeconfig
# Tests that need an address per Gateway (see the header), skipped here only.
SHARED_ADDRESS_SKIPS=(HTTPRouteMultipleGateways HTTPRouteListenerPortMatching)

log() { printf '\n[kind/conformance] %s\n' "$*" >&2; }
die() {
	log "error: $*"
	kubectl -n "$RELEASE_NS" get pods -o wide >&2 || true
	kubectl -n "$RELEASE_NS" logs deployment/"$RELEASE"-operator --tail=50 >&2 || true
	exit 1
}

for tool in docker kind kubectl go; do
	command -v "$tool" >/dev/null || die "$tool is required"
done
docker info >/dev/null 2>&1 || die "docker cannot reach an engine"
for port in 80 443; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		die "127.0.0.1:$port is in use; kind maps it to the Gateways"
	fi
done
HELM=$(e2e/helm.sh path)
CRDS=$(e2e/gateway-api-crds.sh | tail -n 1)

cleanup() {
	local rc=$?
	if [[ "${KEEP_CLUSTER:-0}" == 1 ]]; then
		log "cluster $CLUSTER kept (KUBECONFIG=$KUBECONFIG); delete it with: kind delete cluster --name $CLUSTER"
	else
		kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
	fi
	log "suite log and report in $WORK"
	exit "$rc"
}
trap cleanup EXIT

log "creating kind cluster $CLUSTER (127.0.0.1:80 and :443 to node ports 30080 and 30443)"
kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 120s --config - <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    extraPortMappings:
      - {containerPort: 30080, hostPort: 80, listenAddress: 127.0.0.1}
      - {containerPort: 30443, hostPort: 443, listenAddress: 127.0.0.1}
EOF

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
	log "building $IMAGE (Dockerfile)"
	docker build -t "$IMAGE" --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" .
fi
kind load docker-image --name "$CLUSTER" "$IMAGE"

log "installing the Gateway API CRDs, then the chart"
kubectl apply --server-side -f "$CRDS" >/dev/null
kubectl wait --for condition=Established --timeout=60s crd --all >/dev/null
# The proxies serve every Gateway on their one Service: HTTP listeners on port 80, HTTPS
# listeners (certificates from the Gateways' Secrets, no default certificate) on 443.
"$HELM" install "$RELEASE" charts/tollgate --namespace "$RELEASE_NS" --create-namespace \
	--set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
	--set proxy.replicas=1 \
	--set proxy.service.type=NodePort --set proxy.service.nodePort=30080 \
	--set proxy.tls.enabled=true --set proxy.service.httpsNodePort=30443 \
	--set operator.gatewayHttps=true --set 'operator.gatewayAddresses={127.0.0.1}' \
	--wait --timeout 5m

# shellcheck source=e2e/conformance/suite-args.sh
source e2e/conformance/suite-args.sh
gateway_class kubectl "$CLASS" 120s || die "GatewayClass $CLASS was not accepted"

skips=("${SHARED_ADDRESS_SKIPS[@]}")
while read -r test _; do
	skips+=("$test")
done < <(sed -e 's/#.*//' e2e/conformance/not-passing.txt | awk 'NF')
log "skipped: ${SHARED_ADDRESS_SKIPS[*]} (one address for every Gateway on kind)$([[ ${#skips[@]} -gt ${#SHARED_ADDRESS_SKIPS[@]} ]] && echo "; from not-passing.txt: ${skips[*]:${#SHARED_ADDRESS_SKIPS[@]}}")"

log "running the suite (log: $WORK/suite.log; report: $REPORT)"
set +e
suite_args "$CLASS" "$REPORT"
(cd e2e/conformance && go test -v -count=1 -timeout 60m -run TestConformance . -args \
	"${SUITE_ARGS[@]}" -skip-tests="$(
		IFS=,
		echo "${skips[*]}"
	)") 2>&1 | tee "$WORK/suite.log"
status=${PIPESTATUS[0]}
set -e
grep -E '^\s*--- (PASS|FAIL|SKIP)' "$WORK/suite.log" | sed 's/^ *//' | sort | uniq -c | sort -rn | head -n 5 >&2 || true
((status == 0)) || die "the suite failed (exit $status); see $WORK/suite.log"
log "passed"
