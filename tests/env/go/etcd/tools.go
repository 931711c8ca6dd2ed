//go:build tools

// Blank import keeps the etcd command in go.mod/go.sum so build-peers can
// build it with -mod=readonly.
package tools

import _ "go.etcd.io/etcd/server/v3"
