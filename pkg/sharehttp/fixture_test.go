package sharehttp

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/sharetest"
	"github.com/kubeopencode/share/pkg/sharehttp/access"
	"github.com/kubeopencode/share/pkg/sharehttp/access/accesstest"
	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// linkFixture is a listener with one working link: a Ready Agent with its
// share enabled, its share Secret and a running pod.
type linkFixture struct {
	server *Server
	client client.Client
	token  string
	agent  *v1alpha1.Agent
	exec   *blockingExecutor
	// cacheLost makes the listener's caches stop following the cluster.
	cacheLost atomic.Bool
}

func newLinkFixture(t testing.TB, mutate func(*Options)) *linkFixture {
	t.Helper()
	agent := accesstest.ReadyAgent()
	token, err := share.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	secret := sharetest.Secret(agent, "", token)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "agent-pod", Labels: map[string]string{share.LabelAgent: "agent"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue},
		}},
	}
	c := fake.NewClientBuilder().WithScheme(access.NewScheme()).
		WithObjects(agent, secret, pod).
		WithIndex(&corev1.Secret{}, access.TokenHashIndex, func(obj client.Object) []string {
			return []string{share.TokenHash(string(obj.(*corev1.Secret).Data[share.SecretTokenKey]))}
		}).Build()
	opts := NewOptions()
	opts.RequestsPerSecond = 0
	if mutate != nil {
		mutate(opts)
	}
	if errs := opts.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	exec := &blockingExecutor{started: make(chan struct{}, 16)}
	f := &linkFixture{client: c, token: token, agent: agent, exec: exec}
	resolver := access.NewResolverFor(accesstest.NewCache(c, access.NewScheme()), c, sharetest.Keys(), clock.RealClock{}, func() bool { return !f.cacheLost.Load() })
	f.server = newServer(opts, resolver, exec, nil, clock.RealClock{})
	return f
}

// blockingExecutor runs a command that prints nothing and ends only when its
// context does.
type blockingExecutor struct {
	started chan struct{}
}

func (e *blockingExecutor) Exec(ctx context.Context, _, _, _ string, _ []string, _ remotecommand.StreamOptions) error {
	e.started <- struct{}{}
	<-ctx.Done()
	return ctx.Err()
}

// serve runs the listener on a loopback port until the returned stop is
// called, which waits for it to return.
func (f *linkFixture) serve(t testing.TB) (addr string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.server.serve(ctx, ln) }()
	var once bool
	stop = func() error {
		if once {
			return nil
		}
		once = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("the listener did not stop")
		}
	}
	t.Cleanup(func() { _ = stop() })
	return ln.Addr().String(), stop
}

// dialSession opens a terminal session and sends the page's size.
func dialSession(t testing.TB, addr, token string) *websocket.Conn {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/s/"+token+"/terminal", http.Header{"Origin": []string{"http://" + addr}})
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("dialing: %d %v", code, err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.WriteMessage(websocket.BinaryMessage, wire.EncodeResize(wire.Size{Cols: 80, Rows: 24})); err != nil {
		t.Fatal(err)
	}
	return conn
}

// readUntilClosed reads a session until the server closes it, and returns
// the status message and the close code.
func readUntilClosed(t *testing.T, conn *websocket.Conn, within time.Duration) (*wire.Status, int) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(within))
	var status *wire.Status
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return status, ce.Code
			}
			t.Fatalf("the session was not closed properly: %v (status %+v)", err, status)
		}
		if len(b) > 0 && b[0] == wire.OpStatus {
			status = &wire.Status{}
			if err := json.Unmarshal(b[1:], status); err != nil {
				t.Fatal(err)
			}
		}
	}
}
