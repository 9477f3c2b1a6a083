// Package standin is a stand-in kubelet for tests and local development: it
// registers a Node, keeps it alive, reports the pods bound to it Running and
// Ready, and serves the real exec streaming protocol, running each command as
// a local process (with a PTY when a terminal is asked for). The
// kube-apiserver reaches it as it would a kubelet, so `kubectl exec` and
// client-go's remotecommand work against it end to end. It binds to loopback
// only and never ships.
package standin
