package replica

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/utils/clock"

	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// testOwner is the replica that owns a session: it upgrades, tells the
// page the client address it was forwarded, echoes the page's messages,
// and ends as the test says.
type testOwner struct {
	t      *testing.T
	auth   *PeerAuth
	srv    *httptest.Server
	refuse bool

	mu    sync.Mutex
	conns []*ownerConn
	gone  chan struct{} // signalled when a page's connection to the owner drops
}

// ownerConn is the owner's side of one page, whose writes the echo and
// the test take turns at.
type ownerConn struct {
	*websocket.Conn
	mu sync.Mutex
}

func (c *ownerConn) write(kind int, msg []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.WriteMessage(kind, msg)
}

func newTestOwner(t *testing.T, auth *PeerAuth) *testOwner {
	return newTestOwnerOn(t, auth, false)
}

// newTestOwnerOn is newTestOwner serving HTTPS when useTLS is set, with
// httptest's certificate for example.com and 127.0.0.1.
func newTestOwnerOn(t *testing.T, auth *PeerAuth, useTLS bool) *testOwner {
	o := &testOwner{t: t, auth: auth, gone: make(chan struct{}, 8)}
	upgrader := websocket.Upgrader{CheckOrigin: func(r *http.Request) bool {
		return r.Header.Get("Origin") == "http://"+r.Host
	}}
	o.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client, forwarded, err := o.auth.Verify(r)
		if err != nil || !forwarded {
			http.Error(w, "no proven client", http.StatusForbidden)
			return
		}
		if o.refuse {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"reason":"TooManyViewers"}`))
			return
		}
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		oc := &ownerConn{Conn: conn}
		o.mu.Lock()
		o.conns = append(o.conns, oc)
		o.mu.Unlock()
		oc.write(websocket.BinaryMessage, wire.EncodeData([]byte("client="+client.String())))
		for {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				o.gone <- struct{}{}
				return
			}
			oc.write(websocket.BinaryMessage, msg)
		}
	}))
	if useTLS {
		o.srv.StartTLS()
	} else {
		o.srv.Start()
	}
	t.Cleanup(o.srv.Close)
	return o
}

func (o *testOwner) identity() Identity {
	return Identity{Name: "owner", Address: o.srv.Listener.Addr().String()}
}

// lastConn is the owner's side of the last page.
func (o *testOwner) lastConn() *ownerConn {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.conns[len(o.conns)-1]
}

// forwardingReplica is a replica that forwards every page to owner, with
// the page's address as the client address.
func forwardingReplica(t *testing.T, f *Forwarder, owner Identity) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		f.Forward(w, r, owner, netip.MustParseAddr(host))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// page is a page's connection and what it was told.
type page struct {
	conn     *websocket.Conn
	messages chan []byte
	code     int
	closed   chan struct{}
}

func openPage(t *testing.T, srv *httptest.Server) *page {
	t.Helper()
	host := strings.TrimPrefix(srv.URL, "http://")
	conn, resp, err := websocket.DefaultDialer.Dial("ws://"+host+"/s/token/terminal", http.Header{"Origin": {"http://" + host}})
	if err != nil {
		t.Fatalf("opening the page: %v (%v)", err, resp)
	}
	p := &page{conn: conn, messages: make(chan []byte, 16), closed: make(chan struct{})}
	go func() {
		defer close(p.closed)
		for {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					p.code = ce.Code
				}
				return
			}
			p.messages <- msg
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return p
}

func (p *page) next(t *testing.T) []byte {
	t.Helper()
	select {
	case m := <-p.messages:
		return m
	case <-p.closed:
		t.Fatalf("the page closed (%d) before the next message", p.code)
	case <-time.After(10 * time.Second):
		t.Fatal("no message")
	}
	return nil
}

// ended waits for the page to be closed and returns its status and code.
func (p *page) ended(t *testing.T) (*wire.Status, int) {
	t.Helper()
	var status *wire.Status
	for {
		select {
		case m := <-p.messages:
			if m[0] == wire.OpStatus {
				status = &wire.Status{}
				if err := json.Unmarshal(m[1:], status); err != nil {
					t.Fatal(err)
				}
			}
		case <-p.closed:
			for len(p.messages) > 0 {
				if m := <-p.messages; m[0] == wire.OpStatus {
					status = &wire.Status{}
					_ = json.Unmarshal(m[1:], status)
				}
			}
			return status, p.code
		case <-time.After(10 * time.Second):
			t.Fatal("the page was not closed")
		}
	}
}

func newTestForwarder(o ForwarderOptions) (*Forwarder, *PeerAuth) {
	auth := NewPeerAuth(testPeerKeys("1", 1), clock.RealClock{})
	return NewForwarder(auth, o), auth
}

func TestForwarderCarriesThePage(t *testing.T) {
	f, auth := newTestForwarder(ForwarderOptions{})
	owner := newTestOwner(t, auth)
	p := openPage(t, forwardingReplica(t, f, owner.identity()))
	if got := string(p.next(t)); got != "\x00client=127.0.0.1" {
		t.Fatalf("the owner was forwarded %q", got)
	}
	for _, msg := range [][]byte{wire.EncodeData([]byte("ls\r")), wire.EncodeResize(wire.Size{Cols: 80, Rows: 24}), wire.EncodeData(make([]byte, 70000))} {
		if err := p.conn.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
		if got := p.next(t); string(got) != string(msg) {
			t.Fatalf("echoed %d bytes, want %d", len(got), len(msg))
		}
	}
	// The owner's own end of the session reaches the page as it is.
	conn := owner.lastConn()
	conn.write(websocket.BinaryMessage, wire.EncodeStatus(wire.Status{Reason: wire.ReasonRevoked}))
	conn.write(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, wire.ReasonRevoked))
	status, code := p.ended(t)
	if status == nil || status.Reason != wire.ReasonRevoked || code != websocket.ClosePolicyViolation {
		t.Fatalf("the page was told %+v, %d; want the owner's Revoked, 1008", status, code)
	}
}

// With TLS, the forwarder reaches the owner at its address, but checks the
// certificate against the public host the replicas share.
func TestForwarderReachesOwnersOverTLS(t *testing.T) {
	auth := NewPeerAuth(testPeerKeys("1", 1), clock.RealClock{})
	owner := newTestOwnerOn(t, auth, true)
	roots := x509.NewCertPool()
	roots.AddCert(owner.srv.Certificate())
	for _, tc := range []struct {
		serverName string
		carried    bool
	}{{"example.com", true}, {"share.example.org", false}} {
		t.Run(tc.serverName, func(t *testing.T) {
			f := NewForwarder(auth, ForwarderOptions{TLS: &tls.Config{RootCAs: roots, ServerName: tc.serverName, MinVersion: tls.VersionTLS12}})
			p := openPage(t, forwardingReplica(t, f, owner.identity()))
			got := p.next(t)
			if carried := string(got) == "\x00client=127.0.0.1"; carried != tc.carried {
				t.Fatalf("the page got %q first; carried to the owner %v, want %v", got, carried, tc.carried)
			}
			if !tc.carried {
				// Told so by the forwarder, as for an owner it cannot reach.
				var status wire.Status
				if got[0] != wire.OpStatus || json.Unmarshal(got[1:], &status) != nil || status.Reason != wire.ReasonUnavailable {
					t.Fatalf("the page was told %q, want an Unavailable status", got)
				}
			}
		})
	}
}

func TestForwarderEndsPagesWithAStatus(t *testing.T) {
	for _, tc := range []struct {
		name       string
		end        func(t *testing.T, f *Forwarder, owner *testOwner)
		wantReason string
		wantCode   int
		ownerLost  bool
	}{
		{name: "the owner dies between messages",
			end: func(t *testing.T, _ *Forwarder, owner *testOwner) {
				// As SIGKILL would: the connection goes without a close.
				owner.lastConn().NetConn().Close()
			},
			wantReason: wire.ReasonUnavailable, wantCode: websocket.CloseInternalServerErr},
		{name: "the forwarding replica stops",
			end: func(t *testing.T, f *Forwarder, _ *testOwner) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				f.Close(ctx)
				if n := f.Forwarded(); n != 0 {
					t.Errorf("%d pages still forwarded after Close", n)
				}
			},
			wantReason: wire.ReasonServerShutdown, wantCode: websocket.CloseGoingAway, ownerLost: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, auth := newTestForwarder(ForwarderOptions{})
			owner := newTestOwner(t, auth)
			p := openPage(t, forwardingReplica(t, f, owner.identity()))
			p.next(t)
			tc.end(t, f, owner)
			status, code := p.ended(t)
			if status == nil || status.Reason != tc.wantReason || code != tc.wantCode {
				t.Fatalf("the page was told %+v, %d; want %s, %d", status, code, tc.wantReason, tc.wantCode)
			}
			if tc.ownerLost {
				select {
				case <-owner.gone:
				case <-time.After(10 * time.Second):
					t.Fatal("the owner kept the page's connection")
				}
			}
		})
	}
}

func TestForwarderAnswersWhenTheOwnerCannot(t *testing.T) {
	// An owner whose port takes connections but never answers, as a
	// process that hangs would.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	// An owner whose port is closed, as a pod that is gone.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	for _, tc := range []struct {
		name  string
		owner Identity
	}{
		{name: "the owner does not answer", owner: Identity{Name: "hung", Address: silent.Addr().String()}},
		{name: "the owner's port is closed", owner: Identity{Name: "gone", Address: closedAddr}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := newTestForwarder(ForwarderOptions{DialTimeout: 200 * time.Millisecond, HandshakeTimeout: 200 * time.Millisecond})
			p := openPage(t, forwardingReplica(t, f, tc.owner))
			status, code := p.ended(t)
			if status == nil || status.Reason != wire.ReasonUnavailable || code != websocket.CloseInternalServerErr {
				t.Fatalf("the page was told %+v, %d; want Unavailable, 1011", status, code)
			}
		})
	}
}

func TestForwarderPassesRefusalsOn(t *testing.T) {
	f, auth := newTestForwarder(ForwarderOptions{})
	owner := newTestOwner(t, auth)
	owner.refuse = true
	srv := forwardingReplica(t, f, owner.identity())
	host := strings.TrimPrefix(srv.URL, "http://")
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+host+"/s/token/terminal", http.Header{"Origin": {"http://" + host}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("dial: %v, %v; want the owner's 429", err, resp)
	}
}
