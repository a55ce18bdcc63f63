#!/usr/bin/env bash
# Sidecar mode with real pods, kubelet and CNI (issue 12's kind scenario). e2e/kind/run.sh runs it
# after the operator suite, on the same cluster, with the chart installed with
# sidecar.injector.enabled=true. The local control plane (no kubelet) proves the same chain with
# the stored sidecar command run as a local process (operator/tests/e2e.rs,
# an_injected_pods_stored_sidecar_admits_only_the_gateway); this is the part only real pods prove:
#
#  1. a Deployment of the demo API in a namespace labelled tollgate.dev/inject=enabled comes up
#     with the tollgate-proxy sidecar, both containers ready (the sidecar's /readyz needs the
#     certificate it got from the operator with its projected token);
#  2. a subscribed call through the ingress proxy reaches the API (ingress → sidecar over mTLS →
#     app), an unsubscribed one gets 401;
#  3. from another pod, a direct call to the sidecar port without a client certificate fails the
#     TLS handshake (curl exit 35 or 56), and never reaches the app;
#  4. once the Product says sidecarCallers: FullPipeline, the same direct call gets 401 without a
#     key and 200 with it.
#
# Environment (set by run.sh): KUBECONFIG, RELEASE, RELEASE_NS, DEMO_IMAGE; CURL_IMAGE (default
# curlimages/curl) for the in-cluster caller.
set -euo pipefail

: "${KUBECONFIG:?}" "${RELEASE:?}" "${RELEASE_NS:?}" "${DEMO_IMAGE:?}"
CURL_IMAGE=${CURL_IMAGE:-docker.io/curlimages/curl:8.11.1}
NS=tollgate-sidecar-e2e
HOST=demo-api.sidecar.test

log() { printf '\n[kind/sidecar] %s\n' "$*" >&2; }
die() {
	log "error: $*"
	kubectl -n "$NS" get pods -o wide >&2 || true
	kubectl -n "$NS" logs deployment/demo-api -c tollgate-proxy --tail=50 >&2 || true
	exit 1
}

log "the demo API in injected namespace $NS"
kubectl create namespace "$NS"
kubectl label namespace "$NS" tollgate.dev/inject=enabled
kubectl -n "$NS" apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: demo-api}
spec:
  replicas: 1
  selector: {matchLabels: {app: demo-api}}
  template:
    metadata:
      labels: {app: demo-api}
      annotations: {tollgate.dev/app-port: "9000"}
    spec:
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: api
          image: $DEMO_IMAGE
          imagePullPolicy: Never
          args: [--listen, "0.0.0.0:9000"]
          ports: [{name: http, containerPort: 9000}]
          securityContext: {runAsUser: 65532, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
---
apiVersion: v1
kind: Service
metadata: {name: demo-api}
spec:
  selector: {app: demo-api}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {name: demo-api}
spec:
  hostnames: [$HOST]
  backend: {service: {name: demo-api, port: 80}}
  routes: [{name: all, path: /}]
---
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {name: basic}
spec: {product: demo-api}
---
apiVersion: tollgate.dev/v1alpha1
kind: Subscription
metadata: {name: acme}
spec: {plan: basic, subscriber: {name: Acme}}
EOF
kubectl -n "$NS" rollout status deployment/demo-api --timeout=180s || die "the injected pod never became ready"
POD=$(kubectl -n "$NS" get pods -l app=demo-api -o jsonpath='{.items[0].metadata.name}')
CONTAINERS=$(kubectl -n "$NS" get pod "$POD" -o jsonpath='{.spec.containers[*].name}')
[[ " $CONTAINERS " == *" tollgate-proxy "* ]] || die "pod $POD has no sidecar: $CONTAINERS"
POD_IP=$(kubectl -n "$NS" get pod "$POD" -o jsonpath='{.status.podIP}')
kubectl -n "$NS" get networkpolicy "tollgate-sidecar-$(kubectl -n "$NS" get pod "$POD" -o jsonpath='{.metadata.labels.tollgate\.dev/workload}')" >/dev/null ||
	die "no NetworkPolicy for the injected workload"

KEY=""
for _ in $(seq 1 60); do
	KEY=$(kubectl -n "$NS" get secret acme-keys -o jsonpath='{.data.primaryKey}' 2>/dev/null | base64 -d || true)
	[[ -n "$KEY" ]] && break
	sleep 1
done
[[ -n "$KEY" ]] || die "the Subscription's key Secret acme-keys never appeared"

log "a subscribed call through the ingress proxy"
PROXY_SVC=$RELEASE-proxy
PROXY_PORT=$(kubectl -n "$RELEASE_NS" get svc "$PROXY_SVC" -o jsonpath='{.spec.ports[0].port}')
kubectl -n "$RELEASE_NS" port-forward "svc/$PROXY_SVC" 18480:"$PROXY_PORT" >/dev/null 2>&1 &
FORWARD=$!
trap 'kill $FORWARD 2>/dev/null || true' EXIT
code=000
for _ in $(seq 1 60); do
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST" -H "X-Subscription-Key: $KEY" \
		http://127.0.0.1:18480/weather/current || true)
	[[ "$code" == 200 ]] && break
	sleep 1
done
[[ "$code" == 200 ]] || die "ingress → sidecar → app answered $code, not 200"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST" http://127.0.0.1:18480/weather/current)
[[ "$code" == 401 ]] || die "a call without a key through the ingress answered $code, not 401"

# One curl from a pod in another namespace (not injected); prints the HTTP code, or the exit code
# prefixed with 'exit-' when the handshake fails.
direct() { # EXTRA-CURL-ARGS...
	kubectl -n "$RELEASE_NS" run "curl-$RANDOM" --rm -i --restart=Never --quiet --image="$CURL_IMAGE" \
		--command -- sh -c "curl -sk -o /dev/null -w '%{http_code}' $* https://$POD_IP:15443/weather/current; rc=\$?; [ \$rc = 0 ] || echo exit-\$rc" 2>/dev/null | tail -c 20
}

log "a direct call to the sidecar without a certificate (sidecarCallers: IngressOnly)"
out=$(direct)
[[ "$out" == *exit-35* || "$out" == *exit-56* ]] || die "a direct call without a certificate got '$out', not a refused handshake"

log "sidecarCallers: FullPipeline: direct callers go through the product's pipeline"
kubectl -n "$NS" patch product demo-api --type merge -p '{"spec":{"sidecarCallers":"FullPipeline"}}'
out=""
for _ in $(seq 1 30); do
	out=$(direct)
	[[ "$out" == *401* ]] && break
	sleep 2
done
[[ "$out" == *401* ]] || die "a direct call without a key got '$out', not 401"
out=$(direct -H "'X-Subscription-Key: $KEY'")
[[ "$out" == *200* ]] || die "a direct call with the key got '$out', not 200"

kubectl delete namespace "$NS" --wait=false >/dev/null
log "passed"
