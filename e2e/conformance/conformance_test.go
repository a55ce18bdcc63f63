// Package conformance runs the upstream Gateway API conformance suite, unmodified, against
// the cluster in KUBECONFIG. Flags are the suite's own (see run.sh for the ones Tollgate
// passes): `go test -run TestConformance -args -gateway-class=... -supported-features=...`.
package conformance

import (
	"testing"

	"sigs.k8s.io/gateway-api/conformance"
)

func TestConformance(t *testing.T) {
	conformance.RunConformance(t)
}
