package terminal

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// WebSocketOptions configure a WebSocketConn. Zero values take the
// defaults.
type WebSocketOptions struct {
	// PingInterval is how often the server pings the page, so that proxies
	// and load balancers see traffic on an idle terminal. Default 20 s.
	PingInterval time.Duration
	// PongTimeout is how long the page may stay silent — no pong, no
	// message — before the connection is taken for dead. Default, and
	// whenever it is not longer than PingInterval, twice PingInterval.
	PongTimeout time.Duration
	// WriteTimeout bounds each write, so that a page that stops reading
	// cannot hold a session. Default 10 s.
	WriteTimeout time.Duration
}

func (o *WebSocketOptions) defaults() {
	if o.PingInterval <= 0 {
		o.PingInterval = 20 * time.Second
	}
	if o.PongTimeout <= o.PingInterval {
		o.PongTimeout = 2 * o.PingInterval
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
}

// ErrTextMessage is returned by ReadMessage for a text message: the
// protocol is binary. It wraps wire.ErrInvalid.
var ErrTextMessage = fmt.Errorf("%w: text messages are not part of the protocol", wire.ErrInvalid)

// WebSocketConn is a Conn over a gorilla/websocket connection. It accepts
// binary messages of at most wire.MaxClientMessage bytes, bounds every
// write by a deadline, pings the page and drops it when it stops
// answering. Gorilla allows one writer at a time: data writes hold a mutex,
// and pings and the close use WriteControl, which gorilla allows
// concurrently.
type WebSocketConn struct {
	c    *websocket.Conn
	opts WebSocketOptions

	mu      sync.Mutex // held for WriteMessage
	closing atomic.Bool

	// pingMu is held around each ping and while pings are stopped, so
	// that none is sent after. A timer sends them rather than a goroutine
	// of its own: most sessions sit idle.
	pingMu    sync.Mutex
	pingTimer *time.Timer
	stopped   bool
}

var _ Conn = (*WebSocketConn)(nil)

// NewWebSocketConn adapts c, which must be fresh from an upgrade, and starts
// pinging the page. Close it to stop.
func NewWebSocketConn(c *websocket.Conn, opts WebSocketOptions) *WebSocketConn {
	opts.defaults()
	w := &WebSocketConn{c: c, opts: opts}
	c.SetReadLimit(wire.MaxClientMessage)
	w.extendReadDeadline()
	c.SetPongHandler(func(string) error {
		w.extendReadDeadline()
		return nil
	})
	w.pingMu.Lock()
	w.pingTimer = time.AfterFunc(opts.PingInterval, w.ping)
	w.pingMu.Unlock()
	return w
}

// extendReadDeadline gives the page another PongTimeout to be heard from,
// unless the close was sent: then the session's close timeout rules.
func (w *WebSocketConn) extendReadDeadline() {
	if !w.closing.Load() {
		_ = w.c.SetReadDeadline(time.Now().Add(w.opts.PongTimeout))
	}
}

func (w *WebSocketConn) ping() {
	w.pingMu.Lock()
	defer w.pingMu.Unlock()
	if w.stopped {
		return
	}
	if err := w.c.WriteControl(websocket.PingMessage, nil, time.Now().Add(w.opts.WriteTimeout)); err != nil {
		// The reader sees the dead connection by its deadline.
		return
	}
	w.pingTimer.Reset(w.opts.PingInterval)
}

// stopPinging returns once no ping is being sent and none will be.
func (w *WebSocketConn) stopPinging() {
	w.pingMu.Lock()
	defer w.pingMu.Unlock()
	w.stopped = true
	w.pingTimer.Stop()
}

// ReadMessage returns the next binary message. A text message is
// ErrTextMessage and one past the read limit wire.ErrTooLarge, both
// wrapping wire.ErrInvalid.
func (w *WebSocketConn) ReadMessage() ([]byte, error) {
	mt, p, err := w.c.ReadMessage()
	if errors.Is(err, websocket.ErrReadLimit) {
		return nil, fmt.Errorf("%w: more than %d bytes", wire.ErrTooLarge, wire.MaxClientMessage)
	}
	if err != nil {
		return nil, err
	}
	w.extendReadDeadline()
	if mt != websocket.BinaryMessage {
		return nil, ErrTextMessage
	}
	return p, nil
}

// WriteMessage sends p as one binary message within WriteTimeout.
func (w *WebSocketConn) WriteMessage(p []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.c.SetWriteDeadline(time.Now().Add(w.opts.WriteTimeout)); err != nil {
		return err
	}
	return w.c.WriteMessage(websocket.BinaryMessage, p)
}

// WriteClose stops the pings and sends the close frame. The text is cut to
// the 123 bytes a close frame carries.
func (w *WebSocketConn) WriteClose(code int, text string) error {
	w.closing.Store(true)
	w.stopPinging()
	if len(text) > 123 {
		text = text[:123]
	}
	return w.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(w.opts.WriteTimeout))
}

// Close stops the pings and closes the network connection at once.
func (w *WebSocketConn) Close() error {
	w.closing.Store(true)
	w.stopPinging()
	return w.c.Close()
}
