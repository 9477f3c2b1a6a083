package terminal

import (
	"errors"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// WebSocketOptions configure the WebSocket transport.
type WebSocketOptions struct {
	// PingInterval is how often the server pings the page, so that proxies
	// and load balancers see traffic on an idle terminal.
	PingInterval time.Duration
	// PongTimeout is how long the page may stay silent (no pong, no
	// message) before the connection is taken for dead.
	PongTimeout time.Duration
	// WriteTimeout bounds each write, so a page that stops reading cannot
	// hold a session forever.
	WriteTimeout time.Duration
}

func (o *WebSocketOptions) defaults() {
	if o.PingInterval <= 0 {
		o.PingInterval = 20 * time.Second
	}
	if o.PongTimeout <= 0 {
		o.PongTimeout = 2 * o.PingInterval
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
}

// webSocketConn is a Conn over gorilla/websocket. Gorilla allows one writer
// at a time, so every write, pings included, holds mu.
type webSocketConn struct {
	c    *websocket.Conn
	opts WebSocketOptions

	mu       sync.Mutex
	stopOnce sync.Once
	stop     chan struct{}
}

// ErrTextMessage is returned for a text message: the protocol is binary.
var ErrTextMessage = errors.New("text messages are not part of the protocol")

// WebSocket returns a Conn over c. It limits the size of incoming messages,
// pings the page and drops a page that stops answering.
func WebSocket(c *websocket.Conn, opts WebSocketOptions) Conn {
	opts.defaults()
	w := &webSocketConn{c: c, opts: opts, stop: make(chan struct{})}
	c.SetReadLimit(wire.MaxClientMessage)
	_ = c.SetReadDeadline(time.Now().Add(opts.PongTimeout))
	c.SetPongHandler(func(string) error {
		return c.SetReadDeadline(time.Now().Add(opts.PongTimeout))
	})
	go w.pingLoop()
	return w
}

func (w *webSocketConn) pingLoop() {
	t := time.NewTicker(w.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.mu.Lock()
			err := w.c.WriteControl(websocket.PingMessage, nil, time.Now().Add(w.opts.WriteTimeout))
			w.mu.Unlock()
			if err != nil {
				// The read side sees the dead connection by its deadline.
				return
			}
		}
	}
}

func (w *webSocketConn) ReadMessage() ([]byte, error) {
	mt, p, err := w.c.ReadMessage()
	if err != nil {
		return nil, err
	}
	_ = w.c.SetReadDeadline(time.Now().Add(w.opts.PongTimeout))
	if mt != websocket.BinaryMessage {
		return nil, ErrTextMessage
	}
	return p, nil
}

func (w *webSocketConn) WriteMessage(p []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = w.c.SetWriteDeadline(time.Now().Add(w.opts.WriteTimeout))
	return w.c.WriteMessage(websocket.BinaryMessage, p)
}

func (w *webSocketConn) Close(code int, text string) error {
	w.stopOnce.Do(func() { close(w.stop) })
	w.mu.Lock()
	_ = w.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
	w.mu.Unlock()
	return w.c.Close()
}
