# shellcheck shell=bash
# What every run of the conformance suite sets up and passes (e2e/conformance/run.sh on the
# local control plane, e2e/kind/conformance.sh on kind), kept in one place so both run the same
# suite the same way. Sourced; needs ROOT (the checkout).
#
# suite_args CLASS REPORT: sets SUITE_ARGS, the suite's own flags (after `go test ... -args`):
# the GatewayClass, the GATEWAY-HTTP profile (extended features read from the class's
# status.supportedFeatures), the report's implementation fields and where it goes.
suite_args() {
	# shellcheck disable=SC2034 # read by the script that sources this
	SUITE_ARGS=(
		-gateway-class="$1"
		-conformance-profiles=GATEWAY-HTTP
		-organization=tollgate -project=tollgate -url=https://github.com/tollgate/tollgate
		-version="$(git -C "$ROOT" describe --always --dirty)" -contact=@tollgate/maintainers
		-report-output="$2"
	)
}

# gateway_class KUBECTL CLASS TIMEOUT: create our GatewayClass CLASS with KUBECTL (a command or
# function) and wait until the operator accepts it; fails (status 1) when it does not in TIMEOUT.
gateway_class() {
	"$1" apply -f - >/dev/null <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: $2}
spec: {controllerName: tollgate.dev/gateway-controller}
EOF
	"$1" wait --for condition=Accepted --timeout="$3" "gatewayclass/$2" >/dev/null
}
