//go:build tools

// Package containerd records the container runtime that the real test node
// runs, built by hack/build-control-plane.sh. It is a module of its own so
// that containerd's dependencies never meet the project's or Kubernetes'.
package containerd

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
