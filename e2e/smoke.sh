#!/usr/bin/env bash
# Smoke test of the local control plane (e2e/control-plane.sh): brings up a
# private instance, checks what the operator's tests will rely on, tears it down.
# Exits non-zero if any check fails. The last line is "smoke: N passed, M failed".
#
# Uses its own state dir (TOLLGATE_STATE, default /tmp/tollgate-cp-smoke.<pid>),
# so it does not disturb a control plane you already have running.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CP="$SCRIPT_DIR/control-plane.sh"
PRIVATE_STATE=
if [[ -z "${TOLLGATE_STATE:-}" ]]; then
	TOLLGATE_STATE=/tmp/tollgate-cp-smoke.$$
	PRIVATE_STATE=1
fi
export TOLLGATE_STATE

PASSED=0
FAILED=0
T0=$(date +%s%N)
stamp() { local t; t=$(($(date +%s%N) - T0)); printf '[%3d.%ds]' $((t / 1000000000)) $((t / 100000000 % 10)); }
ok() {
	PASSED=$((PASSED + 1))
	echo "ok   $(stamp) $*"
}
fail() {
	FAILED=$((FAILED + 1))
	echo "FAIL $(stamp) $*"
}
# check NAME CMD...: run CMD quietly; on failure show its output.
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then ok "$name"; else
		fail "$name"
		printf '%s\n' "$out" | sed 's/^/       /' | tail -n 15
	fi
}

cleanup() {
	local rc=$?
	"$CP" down >/dev/null 2>&1 || true
	[[ -z "$PRIVATE_STATE" ]] || rm -f "$TOLLGATE_STATE.lock"
	exit "$rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------- up --
start=$(date +%s.%N)
up_out=$("$CP" up)
up_secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
KUBECONFIG=$(tail -n 1 <<<"$up_out")
export KUBECONFIG
eval "$("$CP" env)"
if [[ -f "$KUBECONFIG" ]]; then ok "up in ${up_secs}s; kubeconfig is the last line: $KUBECONFIG"; else
	fail "up did not print a kubeconfig path as its last line (got: $up_out)"
	exit 1
fi

again=$("$CP" up 2>/dev/null | tail -n 1)
if [[ "$again" == "$KUBECONFIG" ]]; then ok "up again is idempotent"; else fail "second up printed '$again'"; fi
check "status says up" "$CP" status
check "namespace default exists" kubectl get namespace default

if command -v ps >/dev/null; then
	rss=0
	for f in "$TOLLGATE_STATE"/*.pid; do
		r=$(ps -o rss= -p "$(cat "$f")" 2>/dev/null || echo 0)
		rss=$((rss + r))
	done
	echo "info $(stamp) resident memory of the control plane processes: $((rss / 1024)) MiB"
fi

# ----------------------------------------------------- CRD + CEL rule --
kubectl apply -f - >/dev/null <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.tollgate.dev
spec:
  group: smoke.tollgate.dev
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              x-kubernetes-validations:
                - rule: "self.min <= self.max"
                  message: "spec.min must not be greater than spec.max"
              properties:
                min: {type: integer}
                max: {type: integer}
            status:
              type: object
              x-kubernetes-preserve-unknown-fields: true
EOF
check "CRD becomes Established" kubectl wait --for=condition=Established --timeout=60s crd/widgets.smoke.tollgate.dev

widget() { # widget NAME MIN MAX
	printf 'apiVersion: smoke.tollgate.dev/v1\nkind: Widget\nmetadata: {name: %s, namespace: default}\nspec: {min: %s, max: %s}\n' "$@"
}
# Discovery may lag Established by a moment: retry the first create briefly.
for _ in $(seq 1 25); do
	widget good 1 5 | kubectl apply --server-side --field-manager=smoke -f - >/dev/null 2>&1 && break
	sleep 0.2
done
check "a valid Widget is accepted (server-side apply)" kubectl get widget good

if out=$(widget bad 9 1 | kubectl apply --server-side --field-manager=smoke -f - 2>&1); then
	fail "an invalid Widget was accepted"
elif [[ "$out" == *"spec.min must not be greater than spec.max"* ]]; then
	ok "an invalid Widget is refused with the CEL rule's message"
else
	fail "an invalid Widget was refused, but not with the rule's message: $out"
fi

managers=$(kubectl get widget good -o jsonpath='{.metadata.managedFields[*].manager}')
if [[ " $managers " == *" smoke "* ]]; then ok "server-side apply records the field manager"; else
	fail "managedFields has no 'smoke' manager: $managers"
fi
if out=$(widget good 1 7 | kubectl apply --server-side --field-manager=intruder -f - 2>&1); then
	fail "server-side apply by a second manager did not conflict"
elif [[ "$out" == *onflict* ]]; then
	ok "server-side apply reports a field conflict to a second manager"
else
	fail "unexpected error from conflicting apply: $out"
fi
check "status subresource can be patched" \
	kubectl patch widget good --subresource=status --type=merge -p '{"status":{"ready":true}}'

# ------------------------------------ ServiceAccount tokens + TokenReview --
check "create namespace smoke" kubectl create namespace smoke
check "create ServiceAccount smoke/proxy" kubectl -n smoke create serviceaccount proxy
if token=$(kubectl -n smoke create token proxy --audience=tollgate-smoke --duration=10m) && [[ -n "$token" ]]; then
	ok "kubectl create token (TokenRequest) with an audience"
else
	fail "kubectl create token failed"
fi

token_review() { # token_review TOKEN AUDIENCE -> prints the TokenReview as YAML
	kubectl create -o yaml -f - <<EOF
apiVersion: authentication.k8s.io/v1
kind: TokenReview
spec:
  token: "$1"
  audiences: ["$2"]
EOF
}
review=$(token_review "$token" tollgate-smoke 2>&1 || true)
if grep -q "authenticated: true" <<<"$review" &&
	grep -q "username: system:serviceaccount:smoke:proxy" <<<"$review"; then
	ok "TokenReview authenticates the token as system:serviceaccount:smoke:proxy"
else
	fail "TokenReview did not authenticate the token: $(grep -v 'token:' <<<"$review")"
fi
review=$(token_review "$token" some-other-audience 2>&1 || true)
if grep -q "authenticated: true" <<<"$review"; then fail "TokenReview accepted the token for the wrong audience"; else
	ok "TokenReview refuses the token for another audience"
fi
review=$(token_review "not-a-token" tollgate-smoke 2>&1 || true)
if grep -q "authenticated: true" <<<"$review"; then fail "TokenReview accepted a garbage token"; else
	ok "TokenReview refuses a garbage token"
fi

# A token for the API server's own audience works as a bearer credential.
api_token=$(kubectl -n smoke create token proxy --duration=10m || true)
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
whoami=$(kubectl --kubeconfig=/dev/null --server="$server" \
	--certificate-authority="$TOLLGATE_STATE/pki/ca.crt" --token="$api_token" \
	auth whoami -o jsonpath='{.status.userInfo.username}' 2>&1 || true)
if [[ "$whoami" == system:serviceaccount:smoke:proxy ]]; then
	ok "the API server accepts the ServiceAccount token as a bearer token"
else
	fail "bearer token not accepted: $whoami"
fi

# ------------------------------------------------ RBAC + impersonation --
as=(--as=system:serviceaccount:smoke:proxy)
answer=$(kubectl -n smoke auth can-i list secrets "${as[@]}" 2>/dev/null || true)
if [[ "$answer" == no ]]; then ok "auth can-i under impersonation: unprivileged SA may not list secrets"; else
	fail "can-i list secrets for an unprivileged SA said '$answer'"
fi
check "create Role smoke/lease-holder" \
	kubectl -n smoke create role lease-holder --verb=get,create,update --resource=leases.coordination.k8s.io
check "create RoleBinding smoke/proxy-leases" \
	kubectl -n smoke create rolebinding proxy-leases --role=lease-holder --serviceaccount=smoke:proxy
answer=$(kubectl -n smoke auth can-i update leases.coordination.k8s.io "${as[@]}" 2>/dev/null || true)
if [[ "$answer" == yes ]]; then ok "RBAC: a RoleBinding grants the SA leases"; else
	fail "can-i update leases after the RoleBinding said '$answer'"
fi

# -------------------------------------------------------------- Leases --
lease() { # lease HOLDER
	printf 'apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: smoke-leader, namespace: smoke}\nspec: {holderIdentity: %s, leaseDurationSeconds: 15}\n' "$1"
}
if out=$(lease replica-a | kubectl create "${as[@]}" -f - 2>&1); then ok "a Lease can be created as the SA"; else
	fail "creating a Lease as the SA: $out"
fi
if out=$(lease replica-b | kubectl replace "${as[@]}" -f - 2>&1); then ok "the SA can take over the Lease (update)"; else
	fail "updating the Lease as the SA: $out"
fi
holder=$(kubectl -n smoke get lease smoke-leader -o jsonpath='{.spec.holderIdentity}' 2>&1 || true)
if [[ "$holder" == replica-b ]]; then ok "Lease holder reads back"; else fail "Lease holder is '$holder'"; fi

# -------------------------- garbage collection and namespace deletion --
# (these need kube-controller-manager: the operator's generated key Secrets
# are owned by their Subscription and must go with it)
owned_secret() { # owned_secret NAME NAMESPACE OWNER_APIVERSION OWNER_KIND OWNER_NAME
	local uid
	uid=$(kubectl -n "$2" get "$4" "$5" -o jsonpath='{.metadata.uid}') || return 1
	kubectl create -f - <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: $1
  namespace: $2
  ownerReferences:
    - {apiVersion: $3, kind: $4, name: $5, uid: "$uid"}
stringData: {primary: not-a-real-key}
EOF
}
if [[ "${TOLLGATE_CONTROLLER_MANAGER:-1}" == 0 ]]; then
	echo "info $(stamp) TOLLGATE_CONTROLLER_MANAGER=0: skipping garbage collection and namespace deletion"
else
	check "namespace smoke gets its default ServiceAccount" \
		kubectl -n smoke wait --for=create serviceaccount/default --timeout=30s
	kubectl -n smoke create configmap owner >/dev/null || true
	check "create a Secret owned by a ConfigMap" owned_secret cm-keys smoke v1 ConfigMap owner
	kubectl -n smoke delete configmap owner >/dev/null || true
	check "the owned Secret is garbage-collected with its ConfigMap owner" \
		kubectl -n smoke wait --for=delete secret/cm-keys --timeout=60s
	check "deleting a namespace completes" kubectl delete namespace smoke --wait=true --timeout=60s

	# The garbage collector learns new resource types (a CRD created after it
	# started) on its discovery sync, every 30 s: allow for that plus backoff.
	check "create a Secret owned by a Widget" owned_secret good-keys default smoke.tollgate.dev/v1 Widget good
	kubectl delete widget good --wait=true >/dev/null || true
	check "the owned Secret is garbage-collected with its custom-resource owner" \
		kubectl -n default wait --for=delete secret/good-keys --timeout=150s
fi

# --------------------------------------------------------------- down --
"$CP" down 2>/dev/null
if [[ ! -e "$TOLLGATE_STATE" ]] && ! "$CP" status >/dev/null && ! kubectl get --raw /readyz >/dev/null 2>&1; then
	ok "down stops everything and removes the state dir"
else
	fail "down left $TOLLGATE_STATE behind or the control plane running"
fi

echo "smoke: $PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
