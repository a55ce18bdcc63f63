//go:build tools

// Pins the suite's echo server, which localpods runs for every echo pod: `go build
// sigs.k8s.io/gateway-api/conformance/echo-basic` builds the release's own.
package conformance

import _ "sigs.k8s.io/gateway-api/conformance/echo-basic"
