//go:build tools

// Blank imports keep the commands in go.mod/go.sum so build-peers can build
// them with -mod=readonly.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
