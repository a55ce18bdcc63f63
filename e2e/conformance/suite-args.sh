# shellcheck shell=bash
# The flags every run of the conformance suite passes (e2e/conformance/run.sh on the local
# control plane, e2e/kind/conformance.sh on kind), kept in one place so both run the same
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
