package sharehttp

import (
	"context"
	"fmt"
	"net/url"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/streaming/pkg/httpstream"
)

// AgentContainer is the name of an Agent pod's main container.
const AgentContainer = "agent"

// Executor runs a command in a pod's container with a terminal.
type Executor interface {
	Exec(ctx context.Context, namespace, pod, container string, command []string, opts remotecommand.StreamOptions) error
}

// PodExecutor runs commands through the API server's pods/exec, as the share
// server's own ServiceAccount: the browser holds no Kubernetes credential.
type PodExecutor struct {
	config *rest.Config
	client rest.Interface
}

// NewPodExecutor returns a PodExecutor acting with config.
func NewPodExecutor(config *rest.Config) (*PodExecutor, error) {
	cs, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, err
	}
	return &PodExecutor{config: config, client: cs.CoreV1().RESTClient()}, nil
}

// Exec streams a TTY session. It tries the WebSocket exec protocol first,
// with a client of its own (streamWebSocket), and falls back to client-go's
// SPDY executor when the API server or a proxy cannot upgrade to it, as
// kubectl exec does.
func (e *PodExecutor) Exec(ctx context.Context, namespace, pod, container string, command []string, opts remotecommand.StreamOptions) error {
	u := e.URL(namespace, pod, container, command, opts)
	err := streamWebSocket(ctx, e.config, u.String(), opts)
	if !httpstream.IsUpgradeFailure(err) && !httpstream.IsHTTPSProxyError(err) {
		return err
	}
	// The SPDY executor is made only when it is needed: making one builds
	// a TLS configuration (the CA bundle parsed into a pool of its own),
	// which the stream would hold for its whole life for nothing.
	spdy, err := remotecommand.NewSPDYExecutor(e.config, "POST", u)
	if err != nil {
		return fmt.Errorf("spdy executor: %w", err)
	}
	return spdy.StreamWithContext(ctx, opts)
}

// URL is the pods/exec URL that runs command in a pod's container, asking
// for the streams that opts has.
func (e *PodExecutor) URL(namespace, pod, container string, command []string, opts remotecommand.StreamOptions) *url.URL {
	return e.client.Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: container,
			Command:   command,
			Stdin:     opts.Stdin != nil,
			Stdout:    opts.Stdout != nil,
			Stderr:    opts.Stderr != nil,
			TTY:       opts.Tty,
		}, scheme.ParameterCodec).URL()
}
