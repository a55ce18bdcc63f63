#!/usr/bin/env bash
# The operator e2e suite (operator/tests/e2e.rs) against Tollgate installed by its Helm chart on a
# kind cluster: creates the cluster, builds the image, loads it, installs the chart (sidecar
# injector on), deploys the demo API behind mutual TLS, runs the suite with
# TOLLGATE_E2E_TARGET=kind, then sidecar mode with real pods (e2e/kind/sidecar.sh), deletes the
# cluster; then the Gateway API conformance suite on a kind cluster of its own
# (e2e/kind/conformance.sh; KIND_CONFORMANCE=0 leaves it out).
#
#   e2e/kind/run.sh                    everything, then delete the cluster
#   KEEP_CLUSTER=1 e2e/kind/run.sh     leave the cluster up for a look (kind delete cluster --name ...)
#
# Needs: docker (a running engine), kind, kubectl, openssl, cargo; Helm is e2e/helm.sh's (built
# once from its Go module). Environment: CLUSTER (default tollgate-e2e), IMAGE (default
# tollgate:e2e), DEMO_IMAGE (default tollgate-demo-backend:e2e), TLS_SIDECAR_IMAGE (default
# nginxinc/nginx-unprivileged:1.27-alpine: terminates mutual TLS in front of the demo API).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
CLUSTER=${CLUSTER:-tollgate-e2e}
IMAGE=${IMAGE:-tollgate:e2e}
DEMO_IMAGE=${DEMO_IMAGE:-tollgate-demo-backend:e2e}
TLS_SIDECAR_IMAGE=${TLS_SIDECAR_IMAGE:-docker.io/nginxinc/nginx-unprivileged:1.27-alpine}
RELEASE=tollgate
RELEASE_NS=tollgate-system
BACKEND_NS=tollgate-demo
BACKEND_HOST=demo-backend.$BACKEND_NS.svc
WORK=$(mktemp -d /tmp/tollgate-kind.XXXXXX)
export KUBECONFIG=$WORK/kubeconfig

log() { printf '\n[kind] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in docker kind kubectl openssl cargo; do
	command -v "$tool" >/dev/null || die "$tool is required"
done
docker info >/dev/null 2>&1 || die "docker cannot reach an engine"
HELM=$(e2e/helm.sh path)

cleanup() {
	local rc=$?
	if [[ "${KEEP_CLUSTER:-0}" == 1 ]]; then
		log "cluster $CLUSTER kept (KUBECONFIG=$KUBECONFIG); delete it with: kind delete cluster --name $CLUSTER"
	else
		kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT

log "creating kind cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 120s

log "building $IMAGE and $DEMO_IMAGE (Dockerfile)"
docker build -t "$IMAGE" --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" .
docker build -t "$DEMO_IMAGE" --target demo-backend .
kind load docker-image --name "$CLUSTER" "$IMAGE" "$DEMO_IMAGE"

log "installing the chart (release $RELEASE in $RELEASE_NS)"
# The suite mints proxy-style tokens for the audience tollgate-e2e; `Never`: the image is loaded.
"$HELM" install "$RELEASE" charts/tollgate --namespace "$RELEASE_NS" --create-namespace \
	--set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
	--set operator.tokenAudience=tollgate-e2e --set sidecar.injector.enabled=true \
	--wait --timeout 5m

log "deploying the demo API behind mutual TLS ($BACKEND_HOST:8443)"
# A CA; the backend's server certificate; the gateway's client certificate (the suite puts the
# CA and the client certificate into an ApiPolicy's backendTLS).
(
	cd "$WORK"
	openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -subj "/CN=tollgate-e2e-backend-ca" \
		-keyout ca.key -out ca.crt -addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign"
	sign() { # NAME SUBJECT EXTENSIONS
		openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "$2" -keyout "$1.key" -out "$1.csr"
		printf '%b\n' "$3" >"$1.ext"
		openssl x509 -req -sha256 -days 2 -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
			-out "$1.crt" -extfile "$1.ext"
	}
	sign server "/CN=$BACKEND_HOST" "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:$BACKEND_HOST"
	sign client "/CN=tollgate-gateway" "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth"
	mkdir -p gateway-tls
	cp ca.crt gateway-tls/ca.crt
	cp client.crt gateway-tls/tls.crt
	cp client.key gateway-tls/tls.key
) >/dev/null 2>&1 || die "certificate generation failed"
kubectl create namespace "$BACKEND_NS"
kubectl -n "$BACKEND_NS" create secret tls demo-backend-tls --cert="$WORK/server.crt" --key="$WORK/server.key"
kubectl -n "$BACKEND_NS" create secret generic demo-backend-client-ca --from-file=ca.crt="$WORK/ca.crt"
kubectl -n "$BACKEND_NS" apply -f - <<EOF
apiVersion: v1
kind: ConfigMap
metadata: {name: demo-backend-tls}
data:
  default.conf: |
    # Only callers with a client certificate from the e2e CA (the gateway) get through.
    server {
      listen 8443 ssl;
      ssl_certificate /tls/tls.crt;
      ssl_certificate_key /tls/tls.key;
      ssl_client_certificate /client-ca/ca.crt;
      ssl_verify_client on;
      location / { proxy_pass http://127.0.0.1:9000; }
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: demo-backend}
spec:
  replicas: 1
  selector: {matchLabels: {app: demo-backend}}
  template:
    metadata: {labels: {app: demo-backend}}
    spec:
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: api
          image: $DEMO_IMAGE
          imagePullPolicy: Never
          # Loopback only: the TLS sidecar is the one way in.
          args: [--listen, "127.0.0.1:9000"]
          securityContext: {runAsUser: 65532, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
        - name: tls
          image: $TLS_SIDECAR_IMAGE
          ports: [{name: https, containerPort: 8443}]
          readinessProbe: {tcpSocket: {port: https}}
          securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
          volumeMounts:
            - {name: conf, mountPath: /etc/nginx/conf.d}
            - {name: tls, mountPath: /tls, readOnly: true}
            - {name: client-ca, mountPath: /client-ca, readOnly: true}
      volumes:
        - {name: conf, configMap: {name: demo-backend-tls}}
        - {name: tls, secret: {secretName: demo-backend-tls}}
        - {name: client-ca, secret: {secretName: demo-backend-client-ca}}
---
apiVersion: v1
kind: Service
metadata: {name: demo-backend}
spec:
  selector: {app: demo-backend}
  ports: [{name: https, port: 8443, targetPort: https}]
EOF
kubectl -n "$BACKEND_NS" rollout status deployment/demo-backend --timeout=180s

log "running the operator e2e suite against the installed chart (TOLLGATE_E2E_TARGET=kind)"
# One test at a time: the installed operator is shared by every test namespace, and the tests
# delete its pods (failover) and scale it to zero (proxy outage).
TOLLGATE_E2E=1 TOLLGATE_E2E_TARGET=kind \
	TOLLGATE_E2E_RELEASE="$RELEASE" TOLLGATE_E2E_RELEASE_NAMESPACE="$RELEASE_NS" \
	TOLLGATE_E2E_BACKEND_URL="https://$BACKEND_HOST:8443" \
	TOLLGATE_E2E_BACKEND_SERVER_NAME="$BACKEND_HOST" \
	TOLLGATE_E2E_BACKEND_TLS_DIR="$WORK/gateway-tls" \
	cargo test -p tollgate-operator --test e2e -- --test-threads=1 --nocapture

log "sidecar mode with real pods"
RELEASE="$RELEASE" RELEASE_NS="$RELEASE_NS" DEMO_IMAGE="$DEMO_IMAGE" e2e/kind/sidecar.sh

if [[ "${KIND_CONFORMANCE:-1}" == 1 ]]; then
	log "the Gateway API conformance suite, on a kind cluster of its own"
	# The suite needs host ports 80 and 443 and a chart configured for Gateways; this cluster
	# is not that, so conformance.sh makes its own (with the image already built here).
	if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
	IMAGE="$IMAGE" e2e/kind/conformance.sh
fi
log "passed"
