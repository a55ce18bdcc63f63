#!/usr/bin/env bash
# Tests of the Helm chart (charts/tollgate). Exits non-zero on any failure; the last line is
# `chart-test: N passed, M failed`.
#
# Always (no cluster needed):
#   - `helm lint --strict` with the default values and with ci/all-on-values.yaml;
#   - values.schema.json refuses a misspelt key and a wrong value;
#   - `helm template` output equals the golden files in charts/tollgate/tests/golden/
#     (UPDATE_GOLDEN=1 rewrites them; review the diff);
#   - every flag the templates pass exists in the binaries' --help, and the pod specs are hardened.
# Against the local control plane (skipped with TOLLGATE_SKIP_E2E=1):
#   - both renderings pass `kubectl apply --dry-run=server`;
#   - the chart's operator ServiceAccount and RBAC are created for real, and with a token for
#     that ServiceAccount: `kubectl auth can-i` says yes to exactly the granted verbs, real
#     requests for ungranted ones are refused, the proxy's ServiceAccount can do nothing;
#   - the whole operator e2e suite (operator/tests/e2e.rs) runs with the operator under that
#     identity (CHART_TEST_SUITE=0 skips this part, for a quick run).
# A control plane this script started is stopped again; one already up is reused and left up.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CHART=charts/tollgate
GOLDEN=$CHART/tests/golden
ALL_ON=$CHART/ci/all-on-values.yaml
# Release and namespace of the renderings (golden files) and of the RBAC test.
RELEASE=tollgate
NAMESPACE=tollgate-system
WORK=$(mktemp -d /tmp/tollgate-chart-test.XXXXXX)

PASSED=0
FAILED=0
FAILURES=()
log() { printf '[chart-test] %s\n' "$*" >&2; }
pass() { PASSED=$((PASSED + 1)); log "ok: $*"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$*"); log "FAILED: $*"; }
# check DESCRIPTION COMMAND...: pass when the command succeeds (its output goes to $WORK/last.log).
check() {
	local what=$1
	shift
	if "$@" >"$WORK/last.log" 2>&1; then pass "$what"; else
		fail "$what"
		sed 's/^/    /' "$WORK/last.log" | tail -n 30 >&2
	fi
}
# refuse DESCRIPTION COMMAND...: pass when the command fails.
refuse() {
	local what=$1
	shift
	if "$@" >"$WORK/last.log" 2>&1; then
		fail "$what (it succeeded)"
		sed 's/^/    /' "$WORK/last.log" | tail -n 10 >&2
	else pass "$what"; fi
}

HELM=$(e2e/helm.sh path)
# The Kubernetes version `helm template` renders for: the local control plane's.
KUBE_VERSION=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' e2e/tools/go.mod)

render() { # OUT [helm args...]
	local out=$1
	shift
	"$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" "$@" >"$out"
}

# refuse_with PATTERN DESCRIPTION COMMAND...: pass when the command fails saying PATTERN.
refuse_with() {
	local pattern=$1 what=$2
	shift 2
	if "$@" >"$WORK/last.log" 2>&1; then
		fail "$what (it succeeded)"
	elif grep -q -- "$pattern" "$WORK/last.log"; then
		pass "$what"
	else
		fail "$what (failed, but not saying: $pattern)"
		sed 's/^/    /' "$WORK/last.log" | tail -n 10 >&2
	fi
}

# ------------------------------------------------------------------ lint, schema, golden --

check "helm lint --strict (default values)" "$HELM" lint --strict "$CHART"
check "helm lint --strict (all-on values)" "$HELM" lint --strict "$CHART" -f "$ALL_ON"
refuse_with "additional properties 'replica' not allowed" "the schema refuses a misspelt key (operator.replica)" \
	render "$WORK/x.yaml" --set operator.replica=3
refuse_with "additional properties 'proxies' not allowed" "the schema refuses an unknown top-level key (proxies)" \
	render "$WORK/x.yaml" --set proxies.replicas=3
refuse_with "/proxy/service/type" "the schema refuses a wrong Service type" \
	render "$WORK/x.yaml" --set proxy.service.type=Ingress
refuse_with "/proxy/replicas': got string, want integer" "the schema refuses a string where a number goes" \
	render "$WORK/x.yaml" --set-string proxy.replicas=two
refuse_with "operator.gatewayHttps needs proxy.tls.enabled" "gateway HTTPS listeners need the proxies' TLS listener" \
	render "$WORK/x.yaml" --set operator.gatewayHttps=true
gateway_https_without_secret() {
	render "$WORK/gw-https.yaml" --set operator.gatewayHttps=true --set proxy.tls.enabled=true &&
		grep -q -- "--tls-listen=" "$WORK/gw-https.yaml" &&
		! grep -q -- "--tls-dir" "$WORK/gw-https.yaml" &&
		grep -q -- "--gateway-https" "$WORK/gw-https.yaml"
}
check "with operator.gatewayHttps, proxy.tls needs no Secret: --tls-listen without --tls-dir" \
	gateway_https_without_secret
refuse_with "operator.serviceAccount.name is required" "serviceAccount.create=false needs a name" \
	render "$WORK/x.yaml" --set operator.serviceAccount.create=false
refuse_with "/operator/watchNamespaces/0" "the schema refuses a namespace name Kubernetes would refuse" \
	render "$WORK/x.yaml" --set "operator.watchNamespaces={Team_A}"
refuse_with "needs admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy (Kubernetes 1.30 or later)" \
	"the Secret admission policy is refused for Kubernetes before 1.30, saying how to opt out" \
	"$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version 1.29.0
check "with operator.secretWritePolicy.enabled=false it renders for Kubernetes 1.29, without the policy" \
	bash -c 'out=$("$@") && ! grep -q ValidatingAdmissionPolicy <<<"$out"' _ \
	"$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version 1.29.0 --set operator.secretWritePolicy.enabled=false

check "every value in values.yaml is documented in charts/tollgate/README.md" \
	python3 - "$CHART/values.yaml" "$CHART/README.md" <<'PY'
import sys, yaml
values, readme = yaml.safe_load(open(sys.argv[1])), open(sys.argv[2]).read()
missing = []
def walk(node, path):
    for key, value in node.items():
        p = f"{path}.{key}" if path else key
        if f"`{p}`" in readme:
            continue  # documented here; its children go with it
        if isinstance(value, dict) and value:
            walk(value, p)
        else:
            missing.append(p)
walk(values, "")
for m in missing: print("not in README.md:", m)
sys.exit(1 if missing else 0)
PY

mkdir -p "$GOLDEN"
for variant in default all-on; do
	args=()
	[[ $variant == all-on ]] && args=(-f "$ALL_ON")
	if ! render "$WORK/$variant.yaml" "${args[@]}" 2>"$WORK/render.log"; then
		fail "helm template ($variant)"
		cat "$WORK/render.log" >&2
		continue
	fi
	pass "helm template ($variant)"
	# The webhook certificate the chart generates (genCA) is new in every rendering: the golden
	# files hold a placeholder for PEM blobs (base64 of "-----BEGIN").
	sed -E 's/^( *(tls\.crt|tls\.key|ca\.crt|caBundle): )LS0t[A-Za-z0-9+\/=]+$/\1<generated>/' \
		"$WORK/$variant.yaml" >"$WORK/$variant.golden.yaml"
	if [[ "${UPDATE_GOLDEN:-0}" == 1 ]]; then
		cp "$WORK/$variant.golden.yaml" "$GOLDEN/$variant.yaml"
		log "updated $GOLDEN/$variant.yaml"
	fi
	if diff -u "$GOLDEN/$variant.yaml" "$WORK/$variant.golden.yaml" >"$WORK/golden.diff" 2>&1; then
		pass "rendering equals $GOLDEN/$variant.yaml"
	else
		fail "rendering differs from $GOLDEN/$variant.yaml (UPDATE_GOLDEN=1 $0 rewrites it; review the diff)"
		head -n 60 "$WORK/golden.diff" >&2
	fi
done

# ----------------------------------------------- flags exist, pod specs are hardened --

# The binaries' --help is the truth about flags (cargo build is a no-op when they are current).
if cargo build -q --locked -p tollgate-operator -p tollgate-proxy --bins 2>"$WORK/build.log"; then
	target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
	"$target/debug/tollgate-operator" --help >"$WORK/tollgate-operator.help"
	"$target/debug/tollgate-proxy" --help >"$WORK/tollgate-proxy.help"
	for variant in default all-on; do
		check "flags and env in the $variant rendering exist in the binaries, pods are hardened" \
			python3 - "$WORK/$variant.yaml" "$WORK" <<'PY'
import re, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
work = sys.argv[2]
problems = []
deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
assert len(deployments) == 2, f"expected 2 Deployments, got {list(deployments)}"
for name, d in deployments.items():
    pod = d["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True: problems.append(f"{name}: pod runAsNonRoot")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault": problems.append(f"{name}: pod seccomp")
    for c in pod["containers"]:
        binary = c["command"][0].rsplit("/", 1)[-1]
        help_text = open(f"{work}/{binary}.help").read()
        for arg in c.get("args", []):
            flag = arg.split("=", 1)[0]
            if not re.search(r"(^|\s)" + re.escape(flag) + r"(\s|$|\s<)", help_text):
                problems.append(f"{name}: {binary} has no flag {flag}")
        for env in c.get("env", []):
            # RUST_LOG is read by tracing's EnvFilter, not by clap.
            if env["name"] != "RUST_LOG" and f"env: {env['name']}=" not in help_text:
                problems.append(f"{name}: {binary} reads no variable {env['name']}")
        sc = c.get("securityContext", {})
        for key, want in [("allowPrivilegeEscalation", False), ("readOnlyRootFilesystem", True),
                          ("runAsNonRoot", True), ("privileged", False)]:
            if sc.get(key) is not want: problems.append(f"{name}/{c['name']}: {key} is not {want}")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]: problems.append(f"{name}/{c['name']}: capabilities not dropped")
        if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault": problems.append(f"{name}/{c['name']}: seccomp")
        for probe in ["livenessProbe", "readinessProbe"]:
            if probe not in c: problems.append(f"{name}/{c['name']}: no {probe}")
        if "limits" not in c.get("resources", {}) or "requests" not in c["resources"]:
            problems.append(f"{name}/{c['name']}: no resource requests and limits")
    if d["metadata"]["labels"]["app.kubernetes.io/component"] == "proxy":
        if pod.get("automountServiceAccountToken") is not False: problems.append(f"{name}: the proxy mounts an API token")
        tokens = [s["serviceAccountToken"] for v in pod["volumes"] if "projected" in v
                  for s in v["projected"]["sources"] if "serviceAccountToken" in s]
        if len(tokens) != 1 or not tokens[0].get("audience"): problems.append(f"{name}: no audience-bound projected token")
# The proxy's ServiceAccount is bound to nothing.
proxy_sa = next(d["spec"]["template"]["spec"]["serviceAccountName"] for d in deployments.values()
                if d["metadata"]["labels"]["app.kubernetes.io/component"] == "proxy")
for b in docs:
    if b["kind"] in ("RoleBinding", "ClusterRoleBinding"):
        if any(s.get("name") == proxy_sa for s in b.get("subjects", [])):
            problems.append(f"{b['kind']} {b['metadata']['name']} binds the proxy's ServiceAccount")
for p in problems: print(p)
sys.exit(1 if problems else 0)
PY
	done
else
	fail "cargo build of the binaries (needed to read their --help)"
	tail -n 20 "$WORK/build.log" >&2
fi

# ------------------------------------------------------------------- control plane --

control_plane_tests() {
	local kubeconfig was_up=0
	e2e/control-plane.sh status >/dev/null 2>&1 && was_up=1
	kubeconfig=$(e2e/control-plane.sh up | tail -n 1) || { fail "e2e/control-plane.sh up"; return; }
	# shellcheck disable=SC2064 # expand now: the values are fixed
	trap "cleanup_cluster '$kubeconfig' $was_up" EXIT
	eval "$(e2e/control-plane.sh env)"
	export KUBECONFIG=$kubeconfig
	local k=kubectl

	# The CRDs, as `helm install` applies the chart's crds/ first (server-side: they are large).
	check "apply the chart's CRDs" $k apply --server-side --force-conflicts -f "$CHART/crds/tollgate.dev.yaml"
	check "the CRDs are Established" $k wait --for=condition=Established --timeout=60s -f "$CHART/crds/tollgate.dev.yaml"
	# The Gateway API CRDs too, so the RBAC checks below on its kinds (BackendTLSPolicies) are
	# answered: `kubectl auth can-i` says "no" to a kind the API server does not serve.
	local gateway_crds
	gateway_crds=$(e2e/gateway-api-crds.sh | tail -n 1) || { fail "e2e/gateway-api-crds.sh"; return; }
	check "apply the Gateway API CRDs" $k apply --server-side --force-conflicts -f "$gateway_crds"
	check "the Gateway API CRDs are Established" $k wait --for=condition=Established --timeout=60s \
		crd/backendtlspolicies.gateway.networking.k8s.io crd/httproutes.gateway.networking.k8s.io
	$k create namespace "$NAMESPACE" --dry-run=client -o yaml | $k apply -f - >/dev/null
	# all-on-values.yaml limits the operator to namespaces `weather` and `weather-eu`: its Roles go
	# there; its dashboard ConfigMap goes to `monitoring`.
	local n
	for n in weather weather-eu monitoring; do
		$k create namespace "$n" --dry-run=client -o yaml | $k apply -f - >/dev/null
	done
	check "kubectl apply --dry-run=server (default rendering)" \
		$k apply --dry-run=server -f "$WORK/default.yaml"
	# ServiceMonitors and the PrometheusRule need the Prometheus Operator's CRDs, which this
	# control plane does not have: they are left out of the dry run (helm lint, the golden file
	# and proxy/tests/chart_metrics.rs still cover them).
	python3 - "$WORK/all-on.yaml" >"$WORK/all-on-core.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] not in ("ServiceMonitor", "PrometheusRule")]
print(yaml.safe_dump_all(docs), end="")
PY
	check "kubectl apply --dry-run=server (all-on rendering, without ServiceMonitors and PrometheusRule)" \
		$k apply --dry-run=server -f "$WORK/all-on-core.yaml"

	# A real `helm install` and `helm uninstall` (default values; no kubelet here, so the pods are
	# stored but never run): Helm's own handling of crds/ and of every object.
	check "helm install (default values) into namespace tollgate-install" \
		"$HELM" install tollgate-install "$CHART" --namespace tollgate-install --create-namespace
	check "the installed release has its two Deployments" \
		$k -n tollgate-install get deployment tollgate-install-operator tollgate-install-proxy
	check "helm uninstall" "$HELM" uninstall tollgate-install --namespace tollgate-install --wait
	$k delete namespace tollgate-install --wait=false >/dev/null 2>&1 || true

	# The sidecar injector is off by default and its grants come with it: none in the default RBAC.
	"$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" \
		--show-only templates/rbac.yaml >"$WORK/rbac-default.yaml"
	check "default RBAC: no grant on pods or networkpolicies, only list/watch on namespaces (the injector is off)" python3 -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
res = {r for d in docs for rule in d.get("rules") or [] for r in rule.get("resources", [])}
names = [d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"]
assert not res & {"pods", "networkpolicies"}, res
ns_verbs = {v for d in docs for rule in d.get("rules") or [] if "namespaces" in rule.get("resources", []) for v in rule["verbs"]}
assert ns_verbs == {"list", "watch"}, ns_verbs
assert not any(n.endswith("-injector") for n in names), names
' "$WORK/rbac-default.yaml"
	# The chart's ServiceAccounts and RBAC, for real, with the injector on and the operator CA copied
	# into injected namespaces (their grants included).
	"$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" \
		--set sidecar.injector.enabled=true \
		--set sidecar.operatorCAConfigMap=tollgate-operator-ca \
		--set operator.distributeTLS.secretName=tollgate-distribute-tls \
		--show-only templates/serviceaccounts.yaml --show-only templates/rbac.yaml \
		--show-only templates/secret-policy.yaml >"$WORK/rbac.yaml"
	check "create the chart's ServiceAccounts, RBAC and Secret admission policy" $k apply -f "$WORK/rbac.yaml"
	local sa=tollgate-operator proxy_sa=tollgate-proxy token
	token=$($k -n "$NAMESPACE" create token "$sa" --duration=3h) || { fail "kubectl create token $sa"; return; }
	local server ca
	server=$($k config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
	ca=$($k config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
	write_kubeconfig "$WORK/operator.kubeconfig" "$server" "$ca" "$sa" "$token"
	token=$($k -n "$NAMESPACE" create token "$proxy_sa" --duration=1h) || { fail "kubectl create token $proxy_sa"; return; }
	write_kubeconfig "$WORK/proxy.kubeconfig" "$server" "$ca" "$proxy_sa" "$token"

	local op=("$k" --kubeconfig "$WORK/operator.kubeconfig") px=("$k" --kubeconfig "$WORK/proxy.kubeconfig")
	# What the operator may do: exactly the table in operator/README.md.
	local yes=(
		"list products.tollgate.dev -A" "watch plans.tollgate.dev -A" "list subscriptions.tollgate.dev -A"
		"watch apipolicies.tollgate.dev -A" "patch subscriptions.tollgate.dev -n default"
		"patch products.tollgate.dev --subresource=status -n default"
		"patch subscriptions.tollgate.dev --subresource=status -n default"
		"list secrets -A" "watch secrets -A" "create secrets -n default" "patch secrets -n default"
		"list services -A" "watch services -A" "list endpointslices.discovery.k8s.io -A"
		"watch endpointslices.discovery.k8s.io -A"
		"create events.events.k8s.io -n default" "patch events.events.k8s.io -n default"
		"get leases.coordination.k8s.io -n $NAMESPACE" "create leases.coordination.k8s.io -n $NAMESPACE"
		"update leases.coordination.k8s.io -n $NAMESPACE" "create tokenreviews.authentication.k8s.io"
		"list pods -A" "watch pods -A" "create networkpolicies.networking.k8s.io -n default"
		"patch networkpolicies.networking.k8s.io -n default" "get namespaces" "list namespaces"
		"watch namespaces"
		"get secrets/tollgate-workload-ca -n $NAMESPACE" "create secrets -n $NAMESPACE"
		"get configmaps/tollgate-trust-bundle -n $NAMESPACE" "patch configmaps/tollgate-trust-bundle -n $NAMESPACE"
		"create configmaps -n $NAMESPACE"
		"create configmaps -n default" "patch configmaps/tollgate-operator-ca -n default"
		"list configmaps -A" "watch configmaps -A"
		"list backendtlspolicies.gateway.networking.k8s.io -A"
		"watch backendtlspolicies.gateway.networking.k8s.io -A"
		"patch backendtlspolicies.gateway.networking.k8s.io --subresource=status -n default"
	)
	# A sample of what it may not.
	local no=(
		"get secrets -n default" "update secrets -n default" "delete secrets -n default"
		"get products.tollgate.dev -n default" "create products.tollgate.dev -n default"
		"patch products.tollgate.dev -n default" "delete subscriptions.tollgate.dev -n default"
		"update subscriptions.tollgate.dev --subresource=status -n default"
		"create leases.coordination.k8s.io -n default" "delete leases.coordination.k8s.io -n $NAMESPACE"
		"get services -n default" "patch services -n default" "get endpointslices.discovery.k8s.io -n default"
		"create pods -n default" "get configmaps -n default" "patch namespaces"
		"create serviceaccounts --subresource=token -n default" "create clusterrolebindings" "create events -n default"
		"update subscriptions.tollgate.dev --subresource=finalizers -n default"
		"get pods -n default" "patch pods -n default" "delete networkpolicies.networking.k8s.io -n default"
		"get networkpolicies.networking.k8s.io -n default" "delete namespaces"
		"update mutatingwebhookconfigurations.admissionregistration.k8s.io"
		"get secrets -n $NAMESPACE" "update secrets/tollgate-workload-ca -n $NAMESPACE"
		"delete secrets/tollgate-workload-ca -n $NAMESPACE" "get configmaps -n $NAMESPACE"
		"patch configmaps -n $NAMESPACE" "patch configmaps -n default"
		"patch configmaps/another -n default" "delete configmaps/tollgate-operator-ca -n default"
		"get backendtlspolicies.gateway.networking.k8s.io -n default"
		"patch backendtlspolicies.gateway.networking.k8s.io -n default"
		"update backendtlspolicies.gateway.networking.k8s.io --subresource=status -n default"
	)
	local verb
	for verb in "${yes[@]}"; do
		# shellcheck disable=SC2086 # the words are separate arguments
		check "operator may: $verb" "${op[@]}" auth can-i $verb
	done
	for verb in "${no[@]}"; do
		# shellcheck disable=SC2086
		refuse "operator may not: $verb" "${op[@]}" auth can-i $verb
	done
	# The proxy's ServiceAccount gets nothing from the chart.
	for verb in "list secrets -A" "create tokenreviews.authentication.k8s.io" "list products.tollgate.dev -A" \
		"get leases.coordination.k8s.io -n $NAMESPACE" "get configmaps -n $NAMESPACE"; do
		# shellcheck disable=SC2086
		refuse "proxy may not: $verb" "${px[@]}" auth can-i $verb
	done
	# Real requests, refused by the API server (403, not 404: RBAC is checked before existence).
	forbidden() { # DESCRIPTION COMMAND...
		local what=$1
		shift
		if "$@" >"$WORK/req.log" 2>&1; then
			fail "$what: the request succeeded"
		elif grep -qi 'forbidden' "$WORK/req.log"; then
			pass "$what: Forbidden"
		else
			fail "$what: failed, but not with Forbidden: $(head -c 300 "$WORK/req.log")"
		fi
	}
	forbidden "operator deletes a Subscription" "${op[@]}" -n default delete subscriptions.tollgate.dev anything
	forbidden "operator reads a Secret by name" "${op[@]}" -n default get secret anything
	forbidden "operator reads a ConfigMap by name" "${op[@]}" -n default get configmap anything
	forbidden "operator creates a Lease outside its namespace" "${op[@]}" -n default create -f - <<'EOF'
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: not-mine}
EOF
	forbidden "proxy lists Secrets" "${px[@]}" -n "$NAMESPACE" get secrets
	forbidden "proxy lists Products" "${px[@]}" get products.tollgate.dev -A
	# And one granted request really works.
	check "operator lists Secrets in every namespace" "${op[@]}" get secrets -A -o name

	secret_policy_tests "$k" "${op[@]}"
	namespaced_rbac_tests "$k" "$server" "$ca"

	if [[ "${CHART_TEST_SUITE:-1}" == 0 ]]; then
		log "operator e2e suite under the chart's identity: skipped (CHART_TEST_SUITE=0)"
		return
	fi
	log "operator e2e suite with the operator under the chart's ServiceAccount $NAMESPACE/$sa"
	# The suite's own files go under $WORK (removed with it unless the run fails).
	mkdir -p "$WORK/e2e-tmp"
	if TMPDIR="$WORK/e2e-tmp" TOLLGATE_E2E=1 TOLLGATE_E2E_OPERATOR_KUBECONFIG="$WORK/operator.kubeconfig" \
		TOLLGATE_E2E_OPERATOR_NAMESPACE="$NAMESPACE" \
		cargo test --locked -p tollgate-operator --test e2e -- --nocapture >"$WORK/suite.log" 2>&1; then
		grep -E '^test result:|MEASURED' "$WORK/suite.log" >&2 || true
		if grep -q 'SKIPPED' "$WORK/suite.log"; then
			fail "the operator e2e suite skipped tests"
		else
			pass "the whole operator e2e suite passes with the operator under the chart's RBAC"
		fi
	else
		fail "the operator e2e suite under the chart's RBAC (log: $WORK/suite.log)"
		grep -E 'panicked|FAILED|failures:|^test ' "$WORK/suite.log" | head -n 40 >&2
		KEEP_WORK=1
	fi
}

# The chart's ValidatingAdmissionPolicy, on the real API server: acting as the operator's
# ServiceAccount, writing a Tollgate key Secret is allowed, writing any other Secret is refused
# with the policy's message. Namespace $POLICY_NS; the Subscription is the key Secret's owner.
POLICY_NS=tg-policy-test
POLICY_MESSAGE="may write only the key Secrets it generates"
POLICY_OLD_MESSAGE="may change only the key Secrets it generated"
secret_policy_tests() { # KUBECTL OPERATOR-KUBECTL...
	local k=$1
	shift
	local op=("$@")
	$k create namespace "$POLICY_NS" --dry-run=client -o yaml | $k apply -f - >/dev/null
	# A policy is enforced a moment after it is created: poll with a server-side dry run (admission
	# runs on dry runs, nothing is stored) until a plain Secret is refused.
	local start=$SECONDS active=0
	while ((SECONDS - start < 30)); do
		if ! "${op[@]}" -n "$POLICY_NS" create secret generic probe --from-literal=a=b \
			--dry-run=server >"$WORK/req.log" 2>&1 && grep -q "$POLICY_MESSAGE" "$WORK/req.log"; then
			active=1
			break
		fi
		sleep 0.2
	done
	if ((active)); then pass "the Secret admission policy is in force (within $((SECONDS - start + 1)) s)"; else
		fail "the Secret admission policy refused no write within 30 s: $(head -c 300 "$WORK/req.log")"
		return
	fi

	# refused_by_policy DESCRIPTION PATTERN COMMAND...: the request fails with the policy's message.
	refused_by_policy() {
		local what=$1 pattern=$2
		shift 2
		if "$@" >"$WORK/req.log" 2>&1; then
			fail "$what: the request succeeded"
		elif grep -q "ValidatingAdmissionPolicy 'tollgate-operator-secrets'" "$WORK/req.log" &&
			grep -q "$pattern" "$WORK/req.log"; then
			pass "$what: refused by the policy"
			printf '    %s\n' "$(head -c 400 "$WORK/req.log")" >&2
		else
			fail "$what: failed, but not with the policy's message: $(head -c 300 "$WORK/req.log")"
		fi
	}
	local uid
	$k -n "$POLICY_NS" apply -f - >/dev/null <<'YAML' || { fail "create Subscription acme"; return; }
apiVersion: tollgate.dev/v1alpha1
kind: Subscription
metadata: {name: acme}
spec: {plan: free, subscriber: {name: Acme}}
YAML
	uid=$($k -n "$POLICY_NS" get subscriptions.tollgate.dev acme -o jsonpath='{.metadata.uid}')
	# key_secret NAME TYPE OWNER: a Secret as key_secrets.rs writes it, with parts varied
	# (OWNER `-`: no owner reference).
	key_secret() {
		local owner="" annotations=""
		[[ $3 == - ]] || owner="ownerReferences: [{apiVersion: tollgate.dev/v1alpha1, kind: Subscription, name: $3, uid: $uid, controller: true}]"
		# Without it the API server's own validation refuses the type before admission runs.
		[[ $2 != kubernetes.io/service-account-token ]] || annotations="annotations: {kubernetes.io/service-account.name: default}"
		cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: $1
  labels: {tollgate.dev/keys: "true"}
  $owner
  $annotations
type: $2
stringData: {primaryKey: tg_a, secondaryKey: tg_b}
YAML
	}
	# apply_secret NAME MORE-METADATA [MORE-FIELDS]: a server-side apply, a PATCH as key_secrets.rs
	# sends (`kubectl patch` would GET first, which the operator may not).
	apply_secret() {
		printf 'apiVersion: v1\nkind: Secret\nmetadata: {name: %s%s}\n' "$1" "$2" >"$WORK/x.yaml"
		[[ -z ${3:-} ]] || printf '%s\n' "$3" >>"$WORK/x.yaml"
		"${op[@]}" -n "$POLICY_NS" apply --server-side --force-conflicts --field-manager=tollgate-operator -f "$WORK/x.yaml"
	}
	key_secret acme-keys Opaque acme >"$WORK/acme-keys.yaml"
	check "operator creates a Tollgate key Secret (acme-keys)" \
		"${op[@]}" -n "$POLICY_NS" create -f "$WORK/acme-keys.yaml"
	check "operator rotates a key in it (patch)" apply_secret acme-keys "" "stringData: {primaryKey: tg_c}"
	refused_by_policy "operator creates a plain Secret" "$POLICY_MESSAGE" \
		"${op[@]}" -n "$POLICY_NS" create secret generic db-password --from-literal=password=hunter2
	key_secret other-keys Opaque - >"$WORK/x.yaml"
	refused_by_policy "operator creates a labelled Secret no Subscription owns" "$POLICY_MESSAGE" \
		"${op[@]}" -n "$POLICY_NS" create -f "$WORK/x.yaml"
	key_secret globex-keys Opaque acme >"$WORK/x.yaml"
	refused_by_policy "operator creates a key Secret named for another Subscription" "$POLICY_MESSAGE" \
		"${op[@]}" -n "$POLICY_NS" create -f "$WORK/x.yaml"
	key_secret token-keys kubernetes.io/service-account-token token >"$WORK/x.yaml"
	refused_by_policy "operator creates a service-account-token Secret dressed as a key Secret" "$POLICY_MESSAGE" \
		"${op[@]}" -n "$POLICY_NS" create -f "$WORK/x.yaml"
	refused_by_policy "operator relabels a key Secret" "$POLICY_MESSAGE" \
		apply_secret acme-keys ', labels: {tollgate.dev/keys: "false"}'
	# Another Secret, written by an administrator (the policy matches only the operator).
	check "an administrator still creates any Secret" \
		$k -n "$POLICY_NS" create secret generic db-password --from-literal=password=hunter2
	refused_by_policy "operator patches an existing unrelated Secret" "$POLICY_OLD_MESSAGE" \
		apply_secret db-password "" "stringData: {password: owned}"
	refused_by_policy "operator takes over an unrelated Secret by labelling it" "$POLICY_OLD_MESSAGE" \
		apply_secret db-password ', labels: {tollgate.dev/keys: "true"}'
	check "the unrelated Secret is unchanged" \
		test "$($k -n "$POLICY_NS" get secret db-password -o jsonpath='{.data.password}' | base64 -d)" = hunter2
	# The workload CA's own root (ca.rs): that name and type, created in the release namespace only.
	ca_secret() { # NAME TYPE
		printf 'apiVersion: v1\nkind: Secret\nmetadata: {name: %s}\ntype: %s\nstringData: {tls.crt: not-a-cert, tls.key: not-a-key}\n' "$1" "$2"
	}
	ca_secret tollgate-workload-ca kubernetes.io/tls >"$WORK/x.yaml"
	if $k -n "$NAMESPACE" get secret tollgate-workload-ca >/dev/null 2>&1; then
		pass "the workload CA Secret exists already (an earlier run): creation not retried"
	else
		check "operator creates its workload CA Secret in the release namespace" \
			"${op[@]}" -n "$NAMESPACE" create -f "$WORK/x.yaml"
		# Not a usable CA: the suite's operators would wait on it; they make a real one.
		$k -n "$NAMESPACE" delete secret tollgate-workload-ca >/dev/null 2>&1 || true
	fi
	refused_by_policy "operator creates the workload CA Secret in another namespace" "$POLICY_MESSAGE" \
		"${op[@]}" -n "$POLICY_NS" create -f "$WORK/x.yaml"
	ca_secret tollgate-other-ca kubernetes.io/tls >"$WORK/x.yaml"
	refused_by_policy "operator creates another TLS Secret in the release namespace" "$POLICY_MESSAGE" \
		"${op[@]}" -n "$NAMESPACE" create -f "$WORK/x.yaml"
	ca_secret tollgate-workload-ca Opaque >"$WORK/x.yaml"
	refused_by_policy "operator creates an Opaque Secret named like the CA" "$POLICY_MESSAGE" \
		"${op[@]}" -n "$NAMESPACE" create -f "$WORK/x.yaml"
}

# Namespaced mode (operator.watchNamespaces): a second release, `tgns` in namespace $NS_RELEASE,
# watching $NS_A and $NS_B. Its ServiceAccount gets Roles there and nothing cluster-wide but
# TokenReviews and GatewayClasses. (operator/tests/e2e.rs `operator_watches_only_its_namespaces` runs the operator
# itself under Roles only.)
NS_RELEASE=tg-ns-release NS_A=tg-ns-a NS_B=tg-ns-b
namespaced_rbac_tests() { # KUBECTL SERVER CA_DATA
	local k=$1 n token
	for n in "$NS_RELEASE" "$NS_A" "$NS_B"; do
		$k create namespace "$n" --dry-run=client -o yaml | $k apply -f - >/dev/null
	done
	"$HELM" template tgns "$CHART" --namespace "$NS_RELEASE" --kube-version "$KUBE_VERSION" \
		--set "operator.watchNamespaces={$NS_A,$NS_B}" --set sidecar.injector.enabled=true \
		--show-only templates/serviceaccounts.yaml --show-only templates/rbac.yaml \
		--show-only templates/secret-policy.yaml >"$WORK/rbac-ns.yaml"
	check "namespaced mode: no operator ClusterRole, only the TokenReview, GatewayClass and namespace-read ones" python3 -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cluster = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole")
roles = sorted((d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "Role")
print(cluster, roles)
assert cluster == ["tgns-tollgate-gatewayclasses", "tgns-tollgate-injector", "tgns-tollgate-tokenreview"], cluster
assert roles == [("tg-ns-a", "tgns-tollgate-operator"), ("tg-ns-b", "tgns-tollgate-operator"),
                 ("tg-ns-release", "tgns-tollgate-leader")], roles
' "$WORK/rbac-ns.yaml"
	check "namespaced mode: create the ServiceAccounts, Roles and policy" $k apply -f "$WORK/rbac-ns.yaml"
	token=$($k -n "$NS_RELEASE" create token tgns-tollgate-operator --duration=1h) ||
		{ fail "kubectl create token tgns-tollgate-operator"; return; }
	write_kubeconfig "$WORK/ns-operator.kubeconfig" "$2" "$3" tgns-tollgate-operator "$token"
	local nop=("$k" --kubeconfig "$WORK/ns-operator.kubeconfig") verb
	for verb in "list secrets -n $NS_A" "watch products.tollgate.dev -n $NS_B" "create secrets -n $NS_B" \
		"create secrets -n $NS_RELEASE" "get secrets/tollgate-workload-ca -n $NS_RELEASE" \
		"patch subscriptions.tollgate.dev --subresource=status -n $NS_A" "create events.events.k8s.io -n $NS_A" \
		"update leases.coordination.k8s.io -n $NS_RELEASE" "create tokenreviews.authentication.k8s.io"; do
		# shellcheck disable=SC2086
		check "namespaced operator may: $verb" "${nop[@]}" auth can-i $verb
	done
	for verb in "list secrets -A" "list secrets -n default" "list products.tollgate.dev -A" "list pods -A" \
		"get secrets -n $NS_RELEASE" "watch services -n default" "create events.events.k8s.io -n default"; do
		# shellcheck disable=SC2086
		refuse "namespaced operator may not: $verb" "${nop[@]}" auth can-i $verb
	done
}

write_kubeconfig() { # OUT SERVER CA_DATA USER TOKEN
	umask 077
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tollgate-e2e
  cluster: {server: "$2", certificate-authority-data: "$3"}
users:
- name: $4
  user: {token: "$5"}
contexts:
- name: $4
  context: {cluster: tollgate-e2e, user: $4, namespace: $NAMESPACE}
current-context: $4
EOF
}

cleanup_cluster() { # KUBECONFIG WAS_UP
	kubectl --kubeconfig "$1" delete --ignore-not-found --wait=false -f "$WORK/rbac.yaml" >/dev/null 2>&1 || true
	kubectl --kubeconfig "$1" delete --ignore-not-found --wait=false -f "$WORK/rbac-ns.yaml" >/dev/null 2>&1 || true
	kubectl --kubeconfig "$1" delete namespace --ignore-not-found --wait=false "$NAMESPACE" weather weather-eu monitoring \
		"$POLICY_NS" "$NS_RELEASE" "$NS_A" "$NS_B" >/dev/null 2>&1 || true
	(($2)) || e2e/control-plane.sh down || true
	finish_work
}

KEEP_WORK=0
finish_work() { if ((KEEP_WORK)); then log "kept $WORK for a look"; else rm -rf "$WORK"; fi; }

if [[ "${TOLLGATE_SKIP_E2E:-0}" == 1 ]]; then
	log "control-plane tests: skipped (TOLLGATE_SKIP_E2E=1)"
	trap finish_work EXIT
else
	control_plane_tests
fi

if ((FAILED)); then
	log "failures:"
	printf '  %s\n' "${FAILURES[@]}" >&2
fi
echo "chart-test: $PASSED passed, $FAILED failed"
((FAILED == 0))
