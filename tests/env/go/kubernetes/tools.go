//go:build tools

// Blank imports keep the control-plane commands in go.mod/go.sum so
// tests/env/build-peers can build them with -mod=readonly.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
