package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/internal/testenv"
	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// apiProxy stands between one client and the kube-apiserver, as the network
// of one pod does: the test sees the requests that change state, can hold
// one of them, and can cut the client off at once, as when its process is
// killed or its node is partitioned away. It authenticates upstream as the
// client's identity, so RBAC applies unchanged.
type apiProxy struct {
	t    *testing.T
	ln   net.Listener
	srv  *http.Server
	host string

	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
	writes []proxiedWrite
	// hold, when set, names requests that are held, unanswered, until the
	// client is cut off; each held request is announced on held.
	hold func(*http.Request) bool
	held chan string
}

// proxiedWrite is a request that changes state, as the proxy passed it on.
type proxiedWrite struct {
	at           time.Time
	method, path string
	code         int
}

// newAPIProxy starts a proxy to cp's kube-apiserver acting as user in
// groups. It stops when the test ends.
func newAPIProxy(t *testing.T, cp *testenv.ControlPlane, user string, groups ...string) *apiProxy {
	t.Helper()
	upstreamConfig, err := cp.UserConfig(user, groups...)
	if err != nil {
		t.Fatal(err)
	}
	transport, err := rest.TransportFor(upstreamConfig)
	if err != nil {
		t.Fatal(err)
	}
	upstream, err := url.Parse(cp.Host())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := cp.ServingCertFor([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	tlsCert, err := cert.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{tlsCert}, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	p := &apiProxy{t: t, ln: ln, host: "https://" + ln.Addr().String(), conns: map[net.Conn]struct{}{}, held: make(chan string, 16)}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(upstream)
			r.Out.Host = upstream.Host
		},
		Transport:     transport,
		FlushInterval: -1,
		ErrorLog:      nil,
	}
	p.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p.mu.Lock()
			cut, hold := p.cut, p.hold
			p.mu.Unlock()
			if cut {
				panic(http.ErrAbortHandler)
			}
			if hold != nil && hold(r) {
				p.held <- r.Method + " " + r.URL.Path
				<-r.Context().Done()
				panic(http.ErrAbortHandler)
			}
			rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
			rp.ServeHTTP(rec, r)
			if isWrite(r) {
				p.mu.Lock()
				p.writes = append(p.writes, proxiedWrite{at: time.Now(), method: r.Method, path: r.URL.Path, code: rec.code})
				p.mu.Unlock()
			}
		}),
		ConnState: func(c net.Conn, state http.ConnState) {
			p.mu.Lock()
			defer p.mu.Unlock()
			switch state {
			case http.StateNew:
				if p.cut {
					c.Close()
					return
				}
				p.conns[c] = struct{}{}
			case http.StateClosed, http.StateHijacked:
				delete(p.conns, c)
			}
		},
	}
	go func() { _ = p.srv.Serve(ln) }()
	t.Cleanup(p.close)
	return p
}

func isWrite(r *http.Request) bool {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// kubeconfig writes a kubeconfig that reaches the kube-apiserver through the
// proxy.
func (p *apiProxy) kubeconfig(t *testing.T, cp *testenv.ControlPlane) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "proxied.kubeconfig")
	cfg := &rest.Config{Host: p.host, TLSClientConfig: rest.TLSClientConfig{CAData: cp.ServingCA().CertPEM}}
	if err := testenv.WriteKubeconfig(path, cfg, ""); err != nil {
		t.Fatal(err)
	}
	return path
}

// cutOff drops every connection of the client and refuses new ones, as if
// its process had been killed: requests in flight get no answer.
func (p *apiProxy) cutOff() {
	p.mu.Lock()
	p.cut = true
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	_ = p.ln.Close()
	for c := range conns {
		_ = c.Close()
	}
}

func (p *apiProxy) close() {
	p.cutOff()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.srv.Shutdown(ctx)
}

// setHold holds the requests that match until the client is cut off.
func (p *apiProxy) setHold(match func(*http.Request) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold = match
}

// writesTo returns the writes whose path matches, in order.
func (p *apiProxy) writesTo(path *regexp.Regexp) []proxiedWrite {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []proxiedWrite
	for _, w := range p.writes {
		if path == nil || path.MatchString(w.path) {
			out = append(out, w)
		}
	}
	return out
}

// leasePath matches writes to the controller's leader election Lease.
var leasePath = regexp.MustCompile(`^/apis/coordination\.k8s\.io/v1/namespaces/kubeopencode-system/leases(/kubeopencode-controller)?$`)

// kill stops a controller that may have lost its connection, and may
// therefore return an error, and waits for it.
func (r *runningController) kill(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case _, ok := <-r.done:
		if ok {
			close(r.done)
		}
	case <-time.After(30 * time.Second):
		t.Error("the controller did not stop within 30s")
	}
}

// eventCount returns how many times the Events of an object with a reason
// were emitted, as far as the API server knows: one per Event, or the count
// of its series.
func eventCount(ctx context.Context, t *testing.T, c client.Client, agent types.NamespacedName, reason string) (int, []eventsv1.Event) {
	t.Helper()
	list := &eventsv1.EventList{}
	if err := c.List(ctx, list, client.InNamespace(agent.Namespace)); err != nil {
		t.Fatal(err)
	}
	n := 0
	var matched []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Name != agent.Name || e.Regarding.Kind != "Agent" || e.Reason != reason {
			continue
		}
		matched = append(matched, e)
		switch {
		case e.Series != nil:
			n += int(e.Series.Count)
		case e.DeprecatedCount > 1:
			n += int(e.DeprecatedCount)
		default:
			n++
		}
	}
	return n, matched
}

// session is a browser-less terminal client for many concurrent sessions: it
// never fails the test by itself, and keeps only what the checks need.
type session struct {
	conn *websocket.Conn
	// ack, when false, makes the client render nothing: it sends no acks.
	ack bool

	mu     sync.Mutex
	tail   []byte // the end of the output
	status *wire.Status
	code   int
	err    error
	closed chan struct{}

	bytesOut atomic.Int64
	// counter is the last n of the lines "n=<n>" seen, gaps counts lines
	// whose n did not follow the previous one.
	counter, gaps atomic.Int64
	partial       []byte
}

// openSession dials a terminal as a page would and sends its size.
func openSession(ctx context.Context, hostPort, token string, header http.Header) (*session, int, error) {
	if header == nil {
		header = http.Header{}
	}
	if header.Get("Origin") == "" {
		header.Set("Origin", "http://"+hostPort)
	}
	dialer := websocket.Dialer{HandshakeTimeout: 30 * time.Second}
	conn, resp, err := dialer.DialContext(ctx, "ws://"+hostPort+"/s/"+token+"/terminal", header)
	if err != nil {
		if resp != nil {
			return nil, resp.StatusCode, err
		}
		return nil, 0, err
	}
	s := &session{conn: conn, ack: true, closed: make(chan struct{})}
	go s.readLoop()
	if err := s.send(wire.EncodeResize(wire.Size{Cols: 120, Rows: 40})); err != nil {
		conn.Close()
		return nil, 0, err
	}
	return s, http.StatusSwitchingProtocols, nil
}

var counterLine = regexp.MustCompile(`n=(\d+)\r?\n`)

func (s *session) readLoop() {
	defer close(s.closed)
	for {
		_, b, err := s.conn.ReadMessage()
		if err != nil {
			s.mu.Lock()
			s.err = err
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				s.code = ce.Code
			}
			s.mu.Unlock()
			return
		}
		if len(b) == 0 {
			continue
		}
		switch b[0] {
		case wire.OpData:
			data := b[1:]
			s.bytesOut.Add(int64(len(data)))
			s.mu.Lock()
			s.tail = append(s.tail, data...)
			if len(s.tail) > 4096 {
				s.tail = append([]byte(nil), s.tail[len(s.tail)-2048:]...)
			}
			s.countLines(data)
			s.mu.Unlock()
			if s.ack {
				_ = s.send(wire.EncodeAck(uint32(len(data))))
			}
		case wire.OpStatus:
			st := &wire.Status{}
			_ = json.Unmarshal(b[1:], st)
			s.mu.Lock()
			s.status = st
			s.mu.Unlock()
		}
	}
}

// countLines follows the counter lines of the output; mu is held.
func (s *session) countLines(data []byte) {
	s.partial = append(s.partial, data...)
	last := 0
	for _, m := range counterLine.FindAllSubmatchIndex(s.partial, -1) {
		n, _ := strconv.ParseInt(string(s.partial[m[2]:m[3]]), 10, 64)
		if prev := s.counter.Load(); prev != 0 && n != prev+1 {
			s.gaps.Add(1)
		}
		s.counter.Store(n)
		last = m[1]
	}
	s.partial = s.partial[last:]
	if len(s.partial) > 256 {
		s.partial = s.partial[len(s.partial)-64:]
	}
}

var sendMu sync.Map // *websocket.Conn -> *sync.Mutex

func (s *session) send(b []byte) error {
	m, _ := sendMu.LoadOrStore(s.conn, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	defer mu.Unlock()
	_ = s.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return s.conn.WriteMessage(websocket.BinaryMessage, b)
}

func (s *session) typeText(text string) error { return s.send(wire.EncodeData([]byte(text))) }

// waitFor waits until the output's end contains want.
func (s *session) waitFor(ctx context.Context, want string) error {
	return wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if strings.Contains(string(s.tail), want) {
			return true, nil
		}
		select {
		case <-s.closed:
			return false, fmt.Errorf("closed (%d, %+v) before %q appeared", s.code, s.status, want)
		default:
		}
		return false, nil
	})
}

// isClosed reports whether the server closed the session.
func (s *session) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// waitClosed waits up to within for the session to be closed, and returns
// its close code and status.
func (s *session) waitClosed(within time.Duration) (code int, status *wire.Status, ok bool) {
	if !s.isClosed() {
		select {
		case <-s.closed:
		case <-time.After(within):
			return 0, nil, false
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.code, s.status, true
}

// close closes the session as a page that goes away does.
func (s *session) close() {
	m, _ := sendMu.LoadOrStore(s.conn, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	_ = s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	mu.Unlock()
	_ = s.conn.Close()
	sendMu.Delete(s.conn)
}

// settledGoroutines waits for the goroutine count to fall to at most limit,
// and returns the count it saw last.
func settledGoroutines(ctx context.Context, limit int, within time.Duration) int {
	n := runtime.NumGoroutine()
	_ = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, within, true, func(context.Context) (bool, error) {
		n = runtime.NumGoroutine()
		return n <= limit, nil
	})
	return n
}

// heapInUse returns the bytes of the heap in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// randomSuffix returns a short random name part.
func randomSuffix() string { return rand.String(6) }

// goroutineStacks returns the goroutines of the process grouped by stack,
// as pprof's debug=1 profile counts them.
func goroutineStacks() map[string]int {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	out := map[string]int{}
	for _, block := range strings.Split(b.String(), "\n\n") {
		first, rest, ok := strings.Cut(block, "\n")
		if !ok || !strings.Contains(first, " @ ") {
			continue
		}
		n, err := strconv.Atoi(strings.Fields(first)[0])
		if err != nil {
			continue
		}
		// The frames without their addresses name the stack.
		var frames []string
		for _, line := range strings.Split(rest, "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" {
				frames = append(frames, f[2])
			}
		}
		out[strings.Join(frames, " < ")] += n
	}
	return out
}

// goroutineGrowth returns the stacks that have more goroutines now than in
// before, most first.
func goroutineGrowth(before map[string]int) []string {
	type growth struct {
		stack string
		n     int
	}
	var grown []growth
	for stack, n := range goroutineStacks() {
		if d := n - before[stack]; d > 0 {
			grown = append(grown, growth{stack, d})
		}
	}
	sort.Slice(grown, func(i, j int) bool { return grown[i].n > grown[j].n })
	var out []string
	for _, g := range grown {
		stack := g.stack
		if len(stack) > 400 {
			stack = stack[:400] + "…"
		}
		out = append(out, fmt.Sprintf("+%d %s", g.n, stack))
	}
	return out
}
