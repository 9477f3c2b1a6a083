// Package standin is a stand-in kubelet for tests and local development. It
// registers a Node with InternalIP 127.0.0.1, keeps it alive (node Lease and
// Ready condition), reports the pods the scheduler binds to it Running and
// Ready without running their containers, finishes their deletion, and
// serves the kubelet's exec endpoint with the real streaming protocol
// (k8s.io/cri-streaming), running each command as a local process in a
// working folder per pod, on a PTY when a terminal is asked for. The
// kube-apiserver reaches it as it would a kubelet, so `kubectl exec` and
// client-go's remotecommand work against it end to end.
//
// It serves HTTPS on loopback only, to clients with a certificate from the
// CA it is given, and never ships.
package standin
