package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	logsapi "k8s.io/component-base/logs/api/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/internal/testenv"
	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// system is the whole product on a control plane: the controller and the
// aggregated API server with its share listener, each as its ServiceAccount
// with the shipped RBAC, behind a real APIService.
type system struct {
	t       *testing.T
	cp      *testenv.ControlPlane
	admin   client.Client
	user    *rest.Config
	shareLn string // host:port of the share listener
	apiPort int    // the aggregated API server's secure port
	apiCA   []byte // the CA of its serving certificate
	// api is the aggregated API server, which a test may restart; ctl the
	// controller, and controllerKubeconfig its identity.
	api                  *aggregatedServer
	ctl                  *runningController
	controllerKubeconfig string
}

const systemMaxSessionsPerAgent = 2

// systemConfig varies the system a test starts.
type systemConfig struct {
	// cp is the control plane; nil means the shared one.
	cp *testenv.ControlPlane
	// listenerArgs are flags of the aggregated API server after the
	// defaults, which they override.
	listenerArgs []string
}

func startSystem(t *testing.T) *system {
	t.Helper()
	return startSystemWith(t, systemConfig{})
}

func startSystemWith(t *testing.T, cfg systemConfig) *system {
	t.Helper()
	logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged
	cp := cfg.cp
	if cp == nil {
		cp = shared.cp
	}
	scheme := clientscheme.Scheme
	admin, err := client.New(cp.Config(), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ensureNamespace(t, admin, "kubeopencode-system")
	for _, f := range []string{"apiserver/serviceaccount.yaml", "apiserver/rbac.yaml", "apiserver/roles.yaml", "controller/serviceaccount.yaml", "controller/rbac.yaml"} {
		applyYAML(t, admin, filepath.Join(shared.root, "artifacts", f))
	}
	kubeconfigFor := func(name, user string) string {
		cfg, err := cp.UserConfig(user, "system:serviceaccounts", "system:serviceaccounts:kubeopencode-system", "system:authenticated")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), name+".kubeconfig")
		if err := testenv.WriteKubeconfig(path, cfg, ""); err != nil {
			t.Fatal(err)
		}
		return path
	}
	controllerKubeconfig := kubeconfigFor("controller", controllerUser)
	ctl := startController(t, controllerKubeconfig)

	args := append([]string{
		"--share-max-sessions-per-agent=" + fmt.Sprint(systemMaxSessionsPerAgent),
		"--share-requests-per-second=50",
		"--share-request-burst=100",
		"--share-ping-interval=2s",
	}, cfg.listenerArgs...)
	api, apiCA := serveAggregatedAPIOn(t, cp, admin, kubeconfigFor("apiserver", apiServerUser), &aggregatedServer{shareAddr: "127.0.0.1:0", args: args})
	user, err := cp.UserConfig("sharer", "system:authenticated")
	if err != nil {
		t.Fatal(err)
	}
	return &system{t: t, cp: cp, admin: admin, user: user, shareLn: api.shareAddr, apiPort: api.port, apiCA: apiCA,
		api: api, ctl: ctl, controllerKubeconfig: controllerKubeconfig}
}

// readyAgent creates an Agent in a new namespace where the user may edit,
// and waits until the controller reports it Ready.
func (s *system) readyAgent(t *testing.T, name string) types.NamespacedName {
	t.Helper()
	ns := s.newNamespace(t)
	agent := &kubeopencodev1alpha1.Agent{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: kubeopencodev1alpha1.AgentSpec{
			Image:    "example/agent:1.0",
			Terminal: &kubeopencodev1alpha1.TerminalSpec{Command: []string{"sh"}},
		},
	}
	if err := s.admin.Create(t.Context(), agent); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: ns, Name: name}
	s.waitFor(t, "the Agent to be Ready", func(ctx context.Context) (bool, error) {
		a := &kubeopencodev1alpha1.Agent{}
		if err := s.admin.Get(ctx, key, a); err != nil {
			return false, nil
		}
		for _, c := range a.Status.Conditions {
			if c.Type == kubeopencodev1alpha1.ConditionReady && c.Status == metav1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	return key
}

func bindEdit(t *testing.T, c client.Client, ns, user string) {
	t.Helper()
	rb := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "rbac.authorization.k8s.io/v1",
		"kind":       "RoleBinding",
		"metadata":   map[string]interface{}{"name": user + "-edit", "namespace": ns},
		"roleRef":    map[string]interface{}{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
		"subjects":   []interface{}{map[string]interface{}{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}},
	}}
	if err := c.Create(t.Context(), rb); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func (s *system) waitFor(t *testing.T, what string, cond func(context.Context) (bool, error)) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 2*time.Minute, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// shareCall calls the agents/share subresource as the user.
func (s *system) shareCall(t *testing.T, method string, agent types.NamespacedName, body string) *subresourcesv1alpha1.AgentShare {
	t.Helper()
	return s.shareLink(t, method, agent, "", body)
}

func (s *system) enable(t *testing.T, agent types.NamespacedName, body string) string {
	t.Helper()
	if body == "" {
		body = "{}"
	}
	got := s.shareCall(t, http.MethodPost, agent, body)
	if !share.ValidToken(got.Status.Token) {
		t.Fatalf("enable returned no token: %+v", got.Status)
	}
	return got.Status.Token
}

// get fetches a path of the share listener.
func (s *system) get(t *testing.T, path string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+s.shareLn+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// terminalClient is a browser-less client of the terminal WebSocket.
type terminalClient struct {
	t      *testing.T
	conn   *websocket.Conn
	mu     sync.Mutex
	output strings.Builder
	status *wire.Status
	// viewers is the last presence count the server sent.
	viewers int
	// sync is where the server said the output starts; offset is where it
	// has reached since.
	sync   *wire.Sync
	offset int64
	closed chan struct{}
	code   int
	// renderDelay is how long the page takes to render each data message
	// before it acknowledges it, as a slow browser would.
	renderDelay atomic.Int64
	// stalled makes the page stop acknowledging output, as a page that
	// froze would, while its connection stays up.
	stalled atomic.Bool
}

// dial opens /s/<token>/terminal; it returns the HTTP status on refusal.
func (s *system) dial(t *testing.T, token string, header http.Header) (*terminalClient, int) {
	t.Helper()
	return dialTerminal(t, s.shareLn, token, header)
}

// dialTerminal opens the terminal of a link on the share listener at
// host:port, with the Origin a browser on the page would send.
func dialTerminal(t *testing.T, hostPort, token string, header http.Header) (*terminalClient, int) {
	t.Helper()
	if header == nil {
		header = http.Header{}
	}
	if header.Get("Origin") == "" {
		header.Set("Origin", "http://"+hostPort)
	}
	return dialTerminalURL(t, "ws://"+hostPort+"/s/"+token+"/terminal", hostPort, header)
}

// dialTerminalURL opens a terminal WebSocket URL, with query parameters such
// as resume.
func dialTerminalURL(t *testing.T, url, hostPort string, header http.Header) (*terminalClient, int) {
	t.Helper()
	if header == nil {
		header = http.Header{}
	}
	if header.Get("Origin") == "" {
		header.Set("Origin", "http://"+hostPort)
	}
	conn, resp, err := websocket.DefaultDialer.DialContext(t.Context(), url, header)
	if err != nil {
		if resp == nil {
			t.Fatalf("dialing the terminal: %v", err)
		}
		return nil, resp.StatusCode
	}
	c := &terminalClient{t: t, conn: conn, closed: make(chan struct{})}
	t.Cleanup(func() { conn.Close() })
	go c.readLoop()
	return c, http.StatusSwitchingProtocols
}

func (c *terminalClient) readLoop() {
	defer close(c.closed)
	for {
		_, b, err := c.conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				c.mu.Lock()
				c.code = ce.Code
				c.mu.Unlock()
			}
			return
		}
		if len(b) == 0 {
			continue
		}
		if b[0] == wire.OpData {
			time.Sleep(time.Duration(c.renderDelay.Load()))
		}
		c.mu.Lock()
		switch b[0] {
		case wire.OpData:
			c.output.Write(b[1:])
			c.offset += int64(len(b) - 1)
			// Acknowledge at once, as a page that renders instantly would.
			if !c.stalled.Load() {
				_ = c.conn.WriteMessage(websocket.BinaryMessage, wire.EncodeAck(uint32(len(b)-1)))
			}
		case wire.OpSync:
			sy := &wire.Sync{}
			_ = json.Unmarshal(b[1:], sy)
			c.sync, c.offset = sy, sy.Offset
		case wire.OpPresence:
			p := &wire.Presence{}
			_ = json.Unmarshal(b[1:], p)
			c.viewers = p.Viewers
		case wire.OpStatus:
			st := &wire.Status{}
			_ = json.Unmarshal(b[1:], st)
			c.status = st
		}
		c.mu.Unlock()
	}
}

// text returns the output received so far.
func (c *terminalClient) text() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.output.String()
}

func (c *terminalClient) send(b []byte) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.conn.WriteMessage(websocket.BinaryMessage, b); err != nil {
		c.t.Fatalf("sending: %v", err)
	}
}

func (c *terminalClient) resize(cols, rows uint16) {
	c.send(wire.EncodeResize(wire.Size{Cols: cols, Rows: rows}))
}

func (c *terminalClient) typeText(s string) { c.send(wire.EncodeData([]byte(s))) }

func (c *terminalClient) waitForOutput(want string) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		out := c.output.String()
		c.mu.Unlock()
		if strings.Contains(out, want) {
			return
		}
		select {
		case <-c.closed:
			c.t.Fatalf("session closed (%d, %+v) before %q appeared; output:\n%s", c.code, c.status, want, out)
		case <-time.After(20 * time.Millisecond):
		}
	}
	c.t.Fatalf("timed out waiting for %q; output:\n%s", want, c.output.String())
}

// waitForPresence waits until the server says n pages share the session.
func (c *terminalClient) waitForPresence(n int) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		got := c.viewers
		c.mu.Unlock()
		if got == n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("the server never said %d viewers (last %d)", n, c.viewers)
}

// waitClosed waits for the server to close the session and returns the
// close code and status, and how long it took.
func (c *terminalClient) waitClosed(within time.Duration) (int, *wire.Status, time.Duration) {
	c.t.Helper()
	start := time.Now()
	select {
	case <-c.closed:
	case <-time.After(within):
		c.t.Fatalf("the session was not closed within %s", within)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code, c.status, time.Since(start)
}

func TestShareLink(t *testing.T) {
	s := startSystem(t)

	t.Run("a terminal session runs a real shell through the kube-apiserver", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, "")

		resp, body := s.get(t, "/s/"+token+"/info", nil)
		if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != fmt.Sprintf(`{"mode":"edit","name":"%s","namespace":"%s"}`, agent.Name, agent.Namespace) {
			t.Fatalf("/info: %d %s", resp.StatusCode, body)
		}
		for header, want := range map[string]string{
			"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Robots-Tag": "noindex, nofollow",
			"X-Content-Type-Options": "nosniff",
		} {
			if got := resp.Header.Get(header); got != want {
				t.Errorf("%s = %q, want %q", header, got, want)
			}
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("CSP %q", csp)
		}
		page, html := s.get(t, "/s/"+token, nil)
		if page.StatusCode != http.StatusOK || !strings.Contains(string(html), "/_share/static/vendor/xterm.js") {
			t.Fatalf("page: %d", page.StatusCode)
		}

		c, code := s.dial(t, token, nil)
		if c == nil {
			t.Fatalf("terminal refused: %d", code)
		}
		c.resize(100, 30)
		c.typeText("echo hel''lo-$((6*7))\r")
		c.waitForOutput("hello-42")
		c.typeText("stty size\r")
		c.waitForOutput("30 100")
		c.resize(132, 43)
		c.typeText("sleep 0.5; stty size\r")
		c.waitForOutput("43 132")
		c.typeText("exit 3\r")
		code, st, _ := c.waitClosed(30 * time.Second)
		if code != websocket.CloseNormalClosure || st == nil || st.Reason != "Exited" || st.ExitCode == nil || *st.ExitCode != 3 {
			t.Fatalf("closed with %d, %+v; want 1000 Exited with code 3", code, st)
		}
		s.waitForEvent(t, agent, "ShareSessionStarted")
		s.waitForEvent(t, agent, "ShareSessionEnded")
	})

	t.Run("disabling the share closes an open session within a second", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, "")
		c, _ := s.dial(t, token, nil)
		c.resize(80, 24)
		c.typeText("echo rea''dy\r")
		c.waitForOutput("ready")
		s.shareCall(t, http.MethodDelete, agent, "")
		code, st, took := c.waitClosed(5 * time.Second)
		if code != websocket.ClosePolicyViolation || st == nil || st.Reason != "Revoked" {
			t.Fatalf("closed with %d, %+v; want 1008 Revoked", code, st)
		}
		if took > time.Second {
			t.Errorf("the session outlived the disable by %s", took)
		}
		if resp, _ := s.get(t, "/s/"+token+"/info", nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("a disabled link answers %d", resp.StatusCode)
		}
	})

	t.Run("a rotated link refuses the old token and closes its sessions", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, "")
		c, _ := s.dial(t, token, nil)
		c.resize(80, 24)
		c.typeText("echo rea''dy\r")
		c.waitForOutput("ready")
		rotated := s.enable(t, agent, `{"spec":{"rotate":true}}`)
		if rotated == token {
			t.Fatal("rotation kept the token")
		}
		if code, st, _ := c.waitClosed(5 * time.Second); code != websocket.ClosePolicyViolation || st == nil || st.Reason != "Revoked" {
			t.Fatalf("closed with %d, %+v", code, st)
		}
		if resp, _ := s.get(t, "/s/"+token+"/info", nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("the old token answers %d", resp.StatusCode)
		}
		if resp, _ := s.get(t, "/s/"+rotated+"/info", nil); resp.StatusCode != http.StatusOK {
			t.Errorf("the new token answers %d", resp.StatusCode)
		}
	})

	t.Run("an expired link closes its session and is refused", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, `{"spec":{"expiresIn":"3s"}}`)
		c, code := s.dial(t, token, nil)
		if c == nil {
			t.Fatalf("terminal refused: %d", code)
		}
		c.resize(80, 24)
		code, st, _ := c.waitClosed(10 * time.Second)
		if code != websocket.ClosePolicyViolation || st == nil || st.Reason != share.ReasonExpired {
			t.Fatalf("closed with %d, %+v; want 1008 Expired", code, st)
		}
		resp, body := s.get(t, "/s/"+token+"/info", nil)
		if resp.StatusCode != http.StatusGone || !strings.Contains(string(body), `"reason":"Expired"`) {
			t.Errorf("an expired link answers %d %s", resp.StatusCode, body)
		}
		if _, code := s.dial(t, token, nil); code != http.StatusGone {
			t.Errorf("an expired terminal answers %d", code)
		}
	})

	t.Run("allowedIPs are enforced and X-Forwarded-For from an untrusted peer changes nothing", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, `{"spec":{"allowedIPs":["10.1.2.3"]}}`)
		forged := http.Header{"X-Forwarded-For": []string{"10.1.2.3"}}
		if resp, _ := s.get(t, "/s/"+token+"/info", forged); resp.StatusCode != http.StatusForbidden {
			t.Errorf("a client outside allowedIPs with a forged X-Forwarded-For answers %d", resp.StatusCode)
		}
		if _, code := s.dial(t, token, forged); code != http.StatusForbidden {
			t.Errorf("its terminal answers %d", code)
		}
		// Allowing the client's real address lets it in; excluding it again
		// closes the session.
		s.enable(t, agent, `{"spec":{"allowedIPs":["127.0.0.1"]}}`)
		c, code := s.dial(t, token, nil)
		if c == nil {
			t.Fatalf("an allowed client is refused: %d", code)
		}
		c.resize(80, 24)
		c.typeText("echo rea''dy\r")
		c.waitForOutput("ready")
		s.enable(t, agent, `{"spec":{"allowedIPs":["10.0.0.0/8"]}}`)
		if code, st, _ := c.waitClosed(5 * time.Second); code != websocket.ClosePolicyViolation || st == nil || st.Reason != "IPNotAllowed" {
			t.Fatalf("closed with %d, %+v; want 1008 IPNotAllowed", code, st)
		}
	})

	t.Run("a foreign Origin is refused", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, "")
		if _, code := s.dial(t, token, http.Header{"Origin": []string{"https://evil.example"}}); code != http.StatusForbidden {
			t.Errorf("a foreign origin answers %d", code)
		}
	})

	t.Run("sessions past the per-Agent limit get 429", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, "")
		for i := range systemMaxSessionsPerAgent {
			c, code := s.dial(t, token, nil)
			if c == nil {
				t.Fatalf("session %d refused: %d", i, code)
			}
			c.resize(80, 24)
		}
		_, code := s.dial(t, token, nil)
		if code != http.StatusTooManyRequests {
			t.Fatalf("session %d answers %d, want 429", systemMaxSessionsPerAgent+1, code)
		}
	})

	t.Run("pages of one link share one session and a late joiner sees what it missed", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, "")
		first, _ := s.dial(t, token, nil)
		first.resize(100, 30)
		first.typeText("echo before-''join\r")
		first.waitForOutput("before-join")
		second, code := s.dial(t, token, nil)
		if second == nil {
			t.Fatalf("the second page was refused: %d", code)
		}
		second.resize(80, 24)
		// The replay shows the second page what happened before it came.
		second.waitForOutput("before-join")
		first.waitForPresence(2)
		second.waitForPresence(2)
		// Input from either page reaches the one shell, and both see it.
		second.typeText("echo from-''second-$((6*7))\r")
		first.waitForOutput("from-second-42")
		second.waitForOutput("from-second-42")
		// The terminal takes the smaller of the two sizes.
		first.typeText("sleep 0.3; stty size\r")
		first.waitForOutput("24 80")
		// When one page leaves the other stays, and learns it is alone.
		second.conn.Close()
		first.waitForPresence(1)
		first.typeText("echo still-''here\r")
		first.waitForOutput("still-here")
		first.typeText("exit 5\r")
		if code, st, _ := first.waitClosed(30 * time.Second); code != websocket.CloseNormalClosure || st == nil || st.ExitCode == nil || *st.ExitCode != 5 {
			t.Fatalf("closed with %d, %+v; want Exited 5", code, st)
		}
	})

	t.Run("every page gets the whole output of a command that ends, before its status", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, "")
		first, _ := s.dial(t, token, nil)
		first.resize(80, 24)
		first.typeText("echo rea''dy\r")
		first.waitForOutput("ready")
		second, _ := s.dial(t, token, nil)
		second.resize(80, 24)
		second.waitForPresence(2)
		// The second page renders slowly (about 1 MB/s for the terminal's
		// small messages), so the command ends long before it has shown
		// everything: about 1.3 MB, far more than the flow window and the
		// output log.
		second.renderDelay.Store(int64(3 * time.Millisecond))
		first.typeText("seq 1 200000; echo last-''line; exit 4\r")
		for _, c := range []*terminalClient{first, second} {
			code, st, _ := c.waitClosed(60 * time.Second)
			if code != websocket.CloseNormalClosure || st == nil || st.ExitCode == nil || *st.ExitCode != 4 {
				t.Fatalf("closed with %d, %+v; want Exited 4", code, st)
			}
			out := c.text()
			if !strings.Contains(out, "\n199999\r\n200000\r\nlast-line") {
				t.Fatalf("the page's output ends %q, want it to end with the last lines", out[max(0, len(out)-200):])
			}
		}
	})

	t.Run("a page that stops taking output is dropped and the others' output goes on", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, "")
		working, _ := s.dial(t, token, nil)
		working.resize(80, 24)
		working.typeText("echo rea''dy\r")
		working.waitForOutput("ready")
		stalled, _ := s.dial(t, token, nil)
		stalled.stalled.Store(true)
		stalled.resize(80, 24)
		working.waitForPresence(2)
		// About 16 MB: the stalled page's flow window and the session's
		// output log fill long before the end.
		working.typeText("seq 1 2000000; echo seq-''done\r")
		code, st, _ := stalled.waitClosed(60 * time.Second)
		if code != websocket.CloseInternalServerErr || st == nil || st.Reason != "TooSlow" {
			t.Fatalf("the stalled page was closed with %d, %+v; want 1011 TooSlow", code, st)
		}
		working.waitForOutput("seq-done")
		working.waitForPresence(1)
		working.typeText("echo still-''here\r")
		working.waitForOutput("still-here")
	})

	t.Run("a dropped connection resumes its session with what it missed, in order, once", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, "")
		a, _ := s.dial(t, token, nil)
		a.resize(80, 24)
		a.typeText("echo pid-$$-''end\r")
		a.waitForOutput("-end")
		pid := regexp.MustCompile(`pid-(\d+)-end`).FindStringSubmatch(a.text())
		if pid == nil {
			t.Fatalf("no pid in %q", a.text())
		}
		a.typeText("sleep 1; echo after-''drop-1; echo after-''drop-2\r")
		a.waitForOutput("sleep 1;")
		// The network drops: no close frame, no status.
		a.mu.Lock()
		session, offset := a.sync.Session, a.offset
		a.mu.Unlock()
		_ = a.conn.UnderlyingConn().Close()
		time.Sleep(2500 * time.Millisecond) // the command writes while no page is there

		b, code := dialTerminalURL(t, fmt.Sprintf("ws://%s/s/%s/terminal?resume=%s:%d", s.shareLn, token, session, offset), s.shareLn, nil)
		if b == nil {
			t.Fatalf("resume refused: %d", code)
		}
		b.resize(80, 24)
		b.waitForOutput("after-drop-2")
		b.mu.Lock()
		got, sync := b.output.String(), b.sync
		b.mu.Unlock()
		if sync == nil || sync.Session != session || sync.Offset != offset {
			t.Fatalf("resumed at %+v, want session %s offset %d", sync, session, offset)
		}
		if strings.Count(got, "after-drop-1") != 1 || strings.Index(got, "after-drop-1") > strings.Index(got, "after-drop-2") {
			t.Fatalf("resumed output is not the missed output once and in order: %q", got)
		}
		if strings.Contains(got, "pid-"+pid[1]) {
			t.Fatalf("resumed output repeats what the page had seen: %q", got)
		}
		// The same process: no new shell was started.
		b.typeText("echo pid-$$-''end\r")
		b.waitForOutput("pid-" + pid[1] + "-end")
	})

	t.Run("a one-time link opens one terminal and then answers 410, whatever fetched its page before", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, `{"spec":{"maxUses":1}}`)
		// Link previews fetch the page and /info: they use nothing.
		for range 2 {
			if resp, _ := s.get(t, "/s/"+token, nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("page: %d", resp.StatusCode)
			}
			if resp, body := s.get(t, "/s/"+token+"/info", nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("info: %d %s", resp.StatusCode, body)
			}
		}
		c, code := s.dial(t, token, nil)
		if c == nil {
			t.Fatalf("the first terminal was refused: %d", code)
		}
		c.resize(80, 24)
		c.typeText("echo once-''only\r")
		c.waitForOutput("once-only")
		if _, code := s.dial(t, token, nil); code != http.StatusGone {
			t.Fatalf("a second terminal answers %d, want 410", code)
		}
		s.waitFor(t, "/info to say the link is used up", func(ctx context.Context) (bool, error) {
			resp, body := s.get(t, "/s/"+token+"/info", nil)
			return resp.StatusCode == http.StatusGone && strings.Contains(string(body), `"reason":"UsedUp"`), nil
		})
		shown := s.shareCall(t, http.MethodGet, agent, "")
		if shown.Status.Active || shown.Status.Reason != share.ReasonUsedUp || shown.Status.Uses != 1 || shown.Status.MaxUses == nil || *shown.Status.MaxUses != 1 {
			t.Errorf("the subresource shows %+v", shown.Status)
		}
		s.waitFor(t, "ShareReady=False/UsedUp", func(ctx context.Context) (bool, error) {
			a := &kubeopencodev1alpha1.Agent{}
			if err := s.admin.Get(ctx, agent, a); err != nil {
				return false, nil
			}
			for _, cond := range a.Status.Conditions {
				if cond.Type == kubeopencodev1alpha1.ConditionShareReady {
					return cond.Status == metav1.ConditionFalse && cond.Reason == share.ReasonUsedUp, nil
				}
			}
			return false, nil
		})
		// The session it opened goes on.
		c.typeText("echo still-''open\r")
		c.waitForOutput("still-open")
		// Rotating gives a new one-time link.
		rotated := s.enable(t, agent, `{"spec":{"maxUses":1,"rotate":true}}`)
		if c2, code := s.dial(t, rotated, nil); c2 == nil {
			t.Fatalf("the rotated link's first terminal answers %d", code)
		}
	})

	t.Run("a real browser renders the terminal and runs typed input", s.testBrowser)
	t.Run("two browsers on one link share the terminal, and the second sees what came before it", s.testTwoBrowsers)

	t.Run("the API server's metrics count sessions, refusals and bytes", func(t *testing.T) {
		body := s.metricsText(t)
		for _, want := range []string{
			`kubeopencode_share_active_sessions`,
			`kubeopencode_share_sessions_total{outcome="Exited"}`,
			`kubeopencode_share_sessions_total{outcome="Revoked"}`,
			`kubeopencode_share_refusals_total{reason="IPNotAllowed"}`,
			`kubeopencode_share_bytes_total{direction="out"}`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics has no %s", want)
			}
		}
	})

	t.Run("unknown and malformed tokens are not found", func(t *testing.T) {
		for _, path := range []string{"/s/" + strings.Repeat("A", 42) + "E/info", "/s/short/info", "/s/" + strings.Repeat("A", 42) + "E", "/s/../../etc/passwd"} {
			resp, body := s.get(t, path, nil)
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
			}
		}
	})
}

func (s *system) waitForEvent(t *testing.T, agent types.NamespacedName, reason string) {
	t.Helper()
	s.waitFor(t, "Event "+reason, func(ctx context.Context) (bool, error) {
		events := &corev1.EventList{}
		if err := s.admin.List(ctx, events, client.InNamespace(agent.Namespace)); err != nil {
			return false, nil
		}
		for _, e := range events.Items {
			if e.Reason == reason && e.InvolvedObject.Name == agent.Name {
				return true, nil
			}
		}
		return false, nil
	})
}
