//go:build tools

// Package tools pins the main packages that e2e/control-plane.sh builds.
// Nothing imports this package; `go build` of each path below does the work.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
