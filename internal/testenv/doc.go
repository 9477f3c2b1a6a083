// Package testenv runs a real Kubernetes control plane on loopback for the
// integration tests, `make dev` and the bench: etcd, kube-apiserver with RBAC and
// the aggregation layer, kube-controller-manager and kube-scheduler, built
// from their Go modules by hack/build-control-plane.sh into _output/bin (or
// found in $KUBEOPENCODE_CONTROL_PLANE_BIN), plus in-process stand-in
// kubelets from package standin, so that pods run, exec works and garbage
// collection happens as in a cluster.
//
// Start and Stop run one for a program; RunControlPlane runs one for a test
// and stops it in t.Cleanup. Every component binds to 127.0.0.1 on a free
// port and writes its log to <Dir>/<component>.log; the control plane's own
// CAs sign every certificate: ServingCA the kube-apiserver's (and, through
// ServingCertFor, aggregated servers'), ClientCA the users' (Config,
// UserConfig), FrontProxyCA the front proxy's, and two more the kubelets'
// serving and client certificates.
//
// On it, InstallProject, StartController and StartAggregatedAPIServer run
// the project's own servers as processes, each as its ServiceAccount, the
// way `make dev` and the bench assemble the system; StartProcess runs any
// other child that must die with its parent.
//
// It binds to loopback only and is never shipped.
package testenv
