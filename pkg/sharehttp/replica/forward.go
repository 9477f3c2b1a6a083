package replica

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/klog/v2"

	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

const (
	// DefaultDialTimeout bounds the connection to the owner of a session:
	// an owner that is unreachable (its pod gone, its node partitioned
	// away) while its Lease still holds costs a page no more than this.
	DefaultDialTimeout = 3 * time.Second
	// DefaultHandshakeTimeout bounds the owner's answer to a forwarded
	// upgrade, which checks the link against the API server first.
	DefaultHandshakeTimeout = 10 * time.Second
	// closeAnswerTimeout is how long a forwarder that ends a page itself
	// waits for the page's close frame, as the owner would (the wire
	// protocol's close timeout).
	closeAnswerTimeout = 2 * time.Second
)

// Statuses a forwarder ends a page with itself, when the owner cannot.
var (
	// ownerUnreachable: the owner did not answer the forward in time.
	ownerUnreachable = wire.Status{Reason: wire.ReasonUnavailable,
		Message: "The share server that runs this session cannot be reached right now. Reconnect in a moment."}
	// ownerGone: the owner's connection broke off without a status, as
	// when its process dies.
	ownerGone = wire.Status{Reason: wire.ReasonUnavailable,
		Message: "The share server that ran this session stopped. Reconnect to go on."}
	// forwarderStopping: this replica stops; the session goes on at its
	// owner, for the page to resume through another replica.
	forwarderStopping = wire.Status{Reason: wire.ReasonServerShutdown,
		Message: "The share server is restarting. Reconnect in a moment."}
)

// ForwarderOptions configure a Forwarder.
type ForwarderOptions struct {
	// DialTimeout and HandshakeTimeout bound the connection to the owner
	// and its answer; zero means the defaults.
	DialTimeout      time.Duration
	HandshakeTimeout time.Duration
	// TLS, when set, reaches owners over TLS with it; otherwise over plain
	// HTTP, as the Ingress reaches the listener.
	TLS *tls.Config
}

// Forwarder passes a page's WebSocket on to the replica that owns its
// session: a reverse proxy of the upgrade over the pod network, which
// copies the bytes both ways without re-framing them. It adds the page's
// client address, proven by PeerAuth, and nothing else.
//
// When the owner cannot be reached, or its connection breaks off between
// two messages without a status, the forwarder sends the page an
// Unavailable status itself, so that the page offers to reconnect rather
// than wait.
type Forwarder struct {
	auth  *PeerAuth
	proxy *httputil.ReverseProxy

	mu      sync.Mutex
	relays  map[*relay]struct{}
	closing bool
	idle    chan struct{} // closed when the last relay ends while closing
}

// target is where a request goes, in its context.
type target struct {
	owner  Identity
	client netip.Addr
}

type targetKey struct{}

// NewForwarder returns a Forwarder that proves client addresses with auth.
func NewForwarder(auth *PeerAuth, o ForwarderOptions) *Forwarder {
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	scheme := "http"
	if o.TLS != nil {
		scheme = "https"
	}
	f := &Forwarder{auth: auth, relays: map[*relay]struct{}{}}
	f.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			t := pr.In.Context().Value(targetKey{}).(target)
			pr.SetURL(&url.URL{Scheme: scheme, Host: t.owner.Address})
			// The owner checks the page's Origin against the Host the
			// page asked for, as for a page that reached it directly.
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Del(HeaderClient)
			pr.Out.Header.Del(HeaderProof)
			if err := auth.Sign(pr.Out, t.client); err != nil {
				// Forward checked for a key; without one the owner
				// takes the request for this replica's own.
				klog.V(2).InfoS("Forwarding a page without its client address", "err", err)
			}
		},
		Transport: &http.Transport{
			// Never through a proxy of the environment: peers talk over
			// the pod network.
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       o.TLS,
			TLSHandshakeTimeout:   o.DialTimeout,
			ResponseHeaderTimeout: o.HandshakeTimeout,
			// Every forward is an upgrade, which takes its connection
			// for good; none is kept idle.
			DisableKeepAlives: true,
		},
		ModifyResponse: f.relayUpgrade,
		ErrorHandler:   f.unreachable,
		// Terminal output goes as it comes.
		FlushInterval: -1,
	}
	return f
}

// Forward passes r, a page's WebSocket handshake that this replica has
// checked as far as a forwarder does (the handshake, the Origin, the
// request rate and the token's existence), to owner, with the page's
// client address.
func (f *Forwarder) Forward(w http.ResponseWriter, r *http.Request, owner Identity, client netip.Addr) {
	if f.auth.keys.KeyRing().Empty() {
		f.unreachable(w, r, ErrNoPeerKey)
		return
	}
	ctx := context.WithValue(r.Context(), targetKey{}, target{owner: owner, client: client})
	f.proxy.ServeHTTP(w, r.WithContext(ctx))
}

// relayUpgrade puts a relay between the page and an owner that upgraded.
func (f *Forwarder) relayUpgrade(resp *http.Response) error {
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// The owner refused (a policy, a limit): its answer goes back as
		// it is.
		forwardsTotal.WithLabelValues("refused").Inc()
		return nil
	}
	backend, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		return errors.New("the owner's upgraded connection is not writable")
	}
	rl := &relay{backend: backend, forwarder: f, pageClosed: make(chan struct{})}
	f.mu.Lock()
	if f.closing {
		f.mu.Unlock()
		backend.Close()
		return errors.New("the share listener is stopping")
	}
	f.relays[rl] = struct{}{}
	f.mu.Unlock()
	resp.Body = rl
	forwardsTotal.WithLabelValues("upgraded").Inc()
	return nil
}

// unreachable answers a page whose owner did not answer the forward in
// time: the WebSocket opens and closes at once with an Unavailable
// status, which the page shows with Reconnect.
func (f *Forwarder) unreachable(w http.ResponseWriter, r *http.Request, err error) {
	forwardsTotal.WithLabelValues("unreachable").Inc()
	klog.V(2).InfoS("Could not forward a page to the owner of its session", "err", err)
	upgrader := websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		// The Origin was checked before the forward.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	_ = conn.SetWriteDeadline(time.Now().Add(closeAnswerTimeout))
	_ = conn.WriteMessage(websocket.BinaryMessage, wire.EncodeStatus(ownerUnreachable))
	_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInternalServerErr, ownerUnreachable.Reason))
	// Wait for the page's answer, so that the status is not lost to a
	// reset.
	_ = conn.SetReadDeadline(time.Now().Add(closeAnswerTimeout))
	for {
		if _, _, err := conn.NextReader(); err != nil {
			return
		}
	}
}

// Close ends every forwarded page with ServerShutdown, for the page to
// resume its session through another replica, and waits until they have
// gone or ctx ends. Pages forwarded afterwards are refused.
func (f *Forwarder) Close(ctx context.Context) {
	f.mu.Lock()
	f.closing = true
	relays := make([]*relay, 0, len(f.relays))
	for rl := range f.relays {
		relays = append(relays, rl)
	}
	var idle chan struct{}
	if len(f.relays) > 0 {
		f.idle = make(chan struct{})
		idle = f.idle
	}
	f.mu.Unlock()
	for _, rl := range relays {
		rl.abort(forwarderStopping, websocket.CloseGoingAway)
	}
	if idle == nil {
		return
	}
	select {
	case <-idle:
	case <-ctx.Done():
	}
}

// Forwarded returns the number of pages forwarded now.
func (f *Forwarder) Forwarded() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.relays)
}

func (f *Forwarder) untrack(rl *relay) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.relays, rl)
	if len(f.relays) == 0 && f.idle != nil {
		close(f.idle)
		f.idle = nil
	}
}

// errPageEnded ends the copy of a forwarded page's connection in both
// directions: the reverse proxy takes an EOF from the owner for half a
// close, and would hold the page's connection until the page closed it,
// which a client that is not a browser may never do. Like the owner, the
// forwarder closes it once the close handshake is over.
var errPageEnded = errors.New("the forwarded session ended")

// relay is the owner's side of a forwarded page's connection as the reverse
// proxy copies it: reads bring the owner's frames for the page, writes take
// the page's frames to the owner. It follows the frame boundaries both ways,
// so that when the owner's connection breaks off between two messages
// without a close, it can end the page with a status of its own.
type relay struct {
	backend   io.ReadWriteCloser
	forwarder *Forwarder

	// Read side only.
	down    frameScanner
	pending []byte // the status and close frames still to send
	sent    bool   // they went; the page's close answer is awaited

	// Write side only.
	up frameScanner

	mu sync.Mutex
	// ending is set once the relay ends the page itself: the owner's
	// connection is gone or is being closed, and what the page sends is
	// dropped. status is what the page is told; code the close code.
	ending     bool
	status     *wire.Status
	code       int
	pageClosed chan struct{} // closed when the page sent its close frame
	closeOnce  sync.Once
	untrack    sync.Once
}

// Read brings the owner's bytes for the page, then, if the owner's
// connection broke off between two messages without a close frame, a
// status and a close frame of the relay's own.
func (r *relay) Read(p []byte) (int, error) {
	if r.sent {
		timer := time.NewTimer(closeAnswerTimeout)
		defer timer.Stop()
		select {
		case <-r.pageClosed:
		case <-timer.C:
		}
		return 0, errPageEnded
	}
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		r.sent = len(r.pending) == 0
		return n, nil
	}
	n, err := r.backend.Read(p)
	r.down.scan(p[:n])
	if err == nil || n > 0 {
		return n, nil
	}
	if r.down.closed || !r.down.betweenMessages() {
		// The owner closed properly, or broke off mid-message, where
		// nothing more may be said: the page sees the end as it is.
		return 0, errPageEnded
	}
	r.mu.Lock()
	r.ending = true
	status, code := r.status, r.code
	if status == nil {
		status, code = &ownerGone, websocket.CloseInternalServerErr
	}
	r.mu.Unlock()
	r.pending = append(serverFrame(opBinary, wire.EncodeStatus(*status)), closeFrame(code, status.Reason)...)
	return r.Read(p)
}

// Write takes the page's bytes to the owner. Once the owner's connection
// has failed they are dropped, but for the page's close frame, which lets
// the status go out before the connection closes.
func (r *relay) Write(p []byte) (int, error) {
	r.up.scan(p)
	if r.up.closed {
		r.closeOnce.Do(func() { close(r.pageClosed) })
	}
	r.mu.Lock()
	ending := r.ending
	r.mu.Unlock()
	if ending {
		return len(p), nil
	}
	if _, err := r.backend.Write(p); err != nil {
		// The read side learns of it and ends the page.
		r.mu.Lock()
		r.ending = true
		r.mu.Unlock()
		r.backend.Close()
	}
	return len(p), nil
}

// abort ends the page with status: the owner's connection is closed, and
// the read side says why.
func (r *relay) abort(status wire.Status, code int) {
	r.mu.Lock()
	if r.status == nil {
		r.status, r.code = &status, code
	}
	r.ending = true
	r.mu.Unlock()
	r.backend.Close()
}

// Close closes the owner's connection, once the proxy is done with it.
func (r *relay) Close() error {
	err := r.backend.Close()
	r.untrack.Do(func() { r.forwarder.untrack(r) })
	return err
}
