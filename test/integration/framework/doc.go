// Package framework runs a real Kubernetes control plane on loopback for the
// integration tests and for `make dev`: etcd, kube-apiserver with RBAC and the
// aggregation layer, kube-controller-manager and kube-scheduler, built from
// their Go modules by hack/build-control-plane.sh, plus the stand-in kubelet
// of package standin. It binds to loopback only and is never shipped.
package framework
