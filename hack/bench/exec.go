package main

import (
	"context"
	"io"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/streaming/pkg/httpstream"

	"github.com/kubeopencode/share/pkg/sharehttp/podexec"
)

// This file is the harness's one use of package podexec: the listener's
// own exec client (the exec holder of figure 3 holds streams with it) and
// the URLs of pods/exec it builds (figure 1's direct path uses them with
// kubectl's executor). When podexec moves these, only this file follows.

// executor runs a command in a pod's container with the streams of opts;
// podexec's client and kubectlExecutor both are one.
type executor interface {
	Exec(ctx context.Context, namespace, pod, container string, command []string, opts remotecommand.StreamOptions) error
}

// newListenerExecutor returns the share listener's own exec client, as the
// listener makes it.
func newListenerExecutor(config *rest.Config) (executor, error) {
	return podexec.NewClient(config)
}

// agentContainer is the container of an Agent's pod that sessions exec into.
const agentContainer = podexec.AgentContainer

// kubectlExecutor execs as kubectl exec does: client-go's WebSocket
// executor, falling back to its SPDY executor when the upgrade fails. It is
// the direct path of figures 1 and 2, what a user with credentials gets; the
// share listener has an exec client of its own (podexec.Client), whose
// URLs it uses.
type kubectlExecutor struct {
	config *rest.Config
	urls   *podexec.Client
}

func newKubectlExecutor(config *rest.Config) (*kubectlExecutor, error) {
	urls, err := podexec.NewClient(config)
	if err != nil {
		return nil, err
	}
	return &kubectlExecutor{config: config, urls: urls}, nil
}

// Exec implements executor.
func (e *kubectlExecutor) Exec(ctx context.Context, namespace, pod, container string, command []string, opts remotecommand.StreamOptions) error {
	u := e.urls.URL(namespace, pod, container, command, opts)
	ws, err := remotecommand.NewWebSocketExecutor(e.config, "GET", u.String())
	if err != nil {
		return err
	}
	spdy, err := remotecommand.NewSPDYExecutor(e.config, "POST", u)
	if err != nil {
		return err
	}
	exec, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return err
	}
	return exec.StreamWithContext(ctx, opts)
}

// execTerminal is an exec through the kube-apiserver with a TTY: the direct
// path with kubectlExecutor, or the exec-holder's stream with the share
// listener's own executor.
type execTerminal struct {
	cancel context.CancelFunc
	stdin  *io.PipeWriter
	ended  chan struct{}
	err    error
}

// onceSize hands the terminal size over once, then waits for the end.
type onceSize struct {
	sent bool
	ctx  context.Context
}

func (q *onceSize) Next() *remotecommand.TerminalSize {
	if !q.sent {
		q.sent = true
		return &remotecommand.TerminalSize{Width: 120, Height: 40}
	}
	<-q.ctx.Done()
	return nil
}

type sinkWriter sink

func (w sinkWriter) Write(p []byte) (int, error) { w(p); return len(p), nil }

// startExec opens an exec with a TTY running command, its output going to
// out; the terminal ends when the exec does.
func startExec(ctx context.Context, ex executor, namespace, pod string, command []string, out sink) *execTerminal {
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	t := &execTerminal{cancel: cancel, stdin: pw, ended: make(chan struct{})}
	go func() {
		defer close(t.ended)
		t.err = ex.Exec(ctx, namespace, pod, agentContainer, command, remotecommand.StreamOptions{
			Stdin:             pr,
			Stdout:            sinkWriter(out),
			Tty:               true,
			TerminalSizeQueue: &onceSize{ctx: ctx},
		})
		// The stdin copy ends with EOF rather than an error.
		_ = pw.Close()
	}()
	return t
}

func (t *execTerminal) write(p []byte) error {
	_, err := t.stdin.Write(p)
	return err
}

func (t *execTerminal) close() {
	_ = t.stdin.Close()
	t.cancel()
}

func (t *execTerminal) done() <-chan struct{} { return t.ended }
