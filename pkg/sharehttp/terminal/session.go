package terminal

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// Close codes.
const (
	CloseNormal      = 1000
	CloseGoingAway   = 1001
	CloseProtocol    = 1002
	ClosePolicy      = 1008
	CloseServerError = 1011
)

// ErrClosed is returned by the streams of a closed session.
var ErrClosed = errors.New("terminal session closed")

// Conn is a message connection to the page.
type Conn interface {
	// ReadMessage returns the next message from the page.
	ReadMessage() ([]byte, error)
	// WriteMessage sends one message to the page. Calls may be concurrent.
	WriteMessage(p []byte) error
	// Close sends a close with the code and text, then closes the connection.
	Close(code int, text string) error
}

// Options configure a session.
type Options struct {
	// FlowWindow is how many output bytes may be unacknowledged by the page
	// before output waits.
	FlowWindow int
	// InputBuffer bounds typed input not yet read by the command.
	InputBuffer int
	// IdleTimeout ends a session with neither input nor output for this long;
	// zero disables it.
	IdleTimeout time.Duration
	// MaxChunk bounds the output carried by one message.
	MaxChunk int
}

func (o *Options) defaults() {
	if o.FlowWindow <= 0 {
		o.FlowWindow = 256 << 10
	}
	if o.InputBuffer <= 0 {
		o.InputBuffer = 1 << 20
	}
	if o.MaxChunk <= 0 {
		o.MaxChunk = 32 << 10
	}
}

// Session is one browser terminal. Its Stdin, Stdout and Next feed a
// remotecommand stream; its reader runs until the page goes or Close.
type Session struct {
	conn Conn
	opts Options

	input     *inputBuffer
	sizes     chan remotecommand.TerminalSize
	firstSize chan struct{}
	gotSize   bool

	mu       sync.Mutex
	cond     *sync.Cond
	unacked  int
	closed   bool
	done     chan struct{}
	status   *wire.Status
	activity atomic.Int64

	bytesIn, bytesOut atomic.Int64
}

var _ remotecommand.TerminalSizeQueue = &Session{}

// New starts a session on conn.
func New(conn Conn, opts Options) *Session {
	opts.defaults()
	s := &Session{
		conn:      conn,
		opts:      opts,
		input:     newInputBuffer(opts.InputBuffer),
		sizes:     make(chan remotecommand.TerminalSize, 1),
		firstSize: make(chan struct{}),
		done:      make(chan struct{}),
	}
	s.cond = sync.NewCond(&s.mu)
	s.touch()
	go s.readLoop()
	if opts.IdleTimeout > 0 {
		go s.idleLoop()
	}
	return s
}

func (s *Session) touch() { s.activity.Store(time.Now().UnixNano()) }

func (s *Session) readLoop() {
	for {
		b, err := s.conn.ReadMessage()
		if errors.Is(err, ErrTextMessage) || errors.Is(err, websocket.ErrReadLimit) {
			s.shutdown(&wire.Status{Reason: "ProtocolError", Message: "The page sent a message the server does not understand: " + err.Error()}, ClosePolicy)
			return
		}
		if err != nil {
			// The page went, or the connection failed: nothing to tell it.
			s.shutdown(nil, CloseNormal)
			return
		}
		m, err := wire.DecodeClient(b)
		if err == nil && !s.gotSize && m.Op != wire.OpResize {
			err = errors.New("the first message must be a resize")
		}
		if err != nil {
			s.shutdown(&wire.Status{Reason: "ProtocolError", Message: "The page sent a message the server does not understand: " + err.Error()}, ClosePolicy)
			return
		}
		switch m.Op {
		case wire.OpData:
			if len(m.Data) == 0 {
				continue
			}
			s.touch()
			s.bytesIn.Add(int64(len(m.Data)))
			if _, err := s.input.Write(m.Data); err != nil {
				return
			}
		case wire.OpResize:
			s.pushSize(remotecommand.TerminalSize{Width: m.Size.Cols, Height: m.Size.Rows})
			if !s.gotSize {
				s.gotSize = true
				close(s.firstSize)
			}
		case wire.OpAck:
			s.mu.Lock()
			s.unacked = max(0, s.unacked-int(m.Ack))
			s.cond.Broadcast()
			s.mu.Unlock()
		}
	}
}

// pushSize queues a size, replacing one not yet taken: only the latest
// matters.
func (s *Session) pushSize(size remotecommand.TerminalSize) {
	for {
		select {
		case s.sizes <- size:
			return
		default:
		}
		select {
		case <-s.sizes:
		default:
		}
	}
}

func (s *Session) idleLoop() {
	t := time.NewTimer(s.opts.IdleTimeout)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			idle := time.Since(time.Unix(0, s.activity.Load()))
			if idle >= s.opts.IdleTimeout {
				s.Close(CloseNormal, wire.Status{Reason: "Idle", Message: "The session ended after a period without activity."})
				return
			}
			t.Reset(s.opts.IdleTimeout - idle)
		}
	}
}

// WaitForSize waits for the page's first message, its terminal size.
func (s *Session) WaitForSize(ctx context.Context) (remotecommand.TerminalSize, error) {
	select {
	case <-s.firstSize:
		// Leave the size queued: Next hands it to the command as its first.
		return s.peekSize(), nil
	case <-s.done:
		return remotecommand.TerminalSize{}, ErrClosed
	case <-ctx.Done():
		return remotecommand.TerminalSize{}, ctx.Err()
	}
}

func (s *Session) peekSize() remotecommand.TerminalSize {
	select {
	case size := <-s.sizes:
		s.pushSize(size)
		return size
	default:
		return remotecommand.TerminalSize{}
	}
}

// Next returns the next terminal size, or nil once the session is closed.
func (s *Session) Next() *remotecommand.TerminalSize {
	select {
	case size := <-s.sizes:
		return &size
	case <-s.done:
		return nil
	}
}

// Stdin returns the typed input. It ends with EOF when the session closes.
func (s *Session) Stdin() io.Reader { return s.input }

// Stdout returns the writer of terminal output to the page.
func (s *Session) Stdout() io.Writer { return stdout{s} }

type stdout struct{ s *Session }

// Write sends p to the page in messages of at most MaxChunk bytes, each
// waiting while the page has FlowWindow bytes or more unacknowledged.
func (w stdout) Write(p []byte) (int, error) {
	s := w.s
	written := 0
	for len(p) > 0 {
		n := min(len(p), s.opts.MaxChunk)
		s.mu.Lock()
		for s.unacked >= s.opts.FlowWindow && !s.closed {
			s.cond.Wait()
		}
		if s.closed {
			s.mu.Unlock()
			return written, ErrClosed
		}
		s.unacked += n
		s.mu.Unlock()
		if err := s.conn.WriteMessage(wire.EncodeData(p[:n])); err != nil {
			s.shutdown(nil, CloseNormal)
			return written, err
		}
		s.touch()
		s.bytesOut.Add(int64(n))
		written += n
		p = p[n:]
	}
	return written, nil
}

// Close tells the page why the session ends, then closes the connection with
// code. Later calls do nothing.
func (s *Session) Close(code int, status wire.Status) {
	s.shutdown(&status, code)
}

func (s *Session) shutdown(status *wire.Status, code int) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.status = status
	s.cond.Broadcast()
	s.mu.Unlock()
	s.input.Close()
	text := ""
	if status != nil {
		_ = s.conn.WriteMessage(wire.EncodeStatus(*status))
		text = status.Reason
	}
	_ = s.conn.Close(code, text)
	close(s.done)
}

// SendPresence tells the page how many people are on the session. It is
// best effort: a page that has gone misses it.
func (s *Session) SendPresence(viewers int) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if !closed {
		_ = s.conn.WriteMessage(wire.EncodePresence(wire.Presence{Viewers: viewers}))
	}
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Status returns the status the session was closed with, nil when the page
// closed it or the connection failed.
func (s *Session) Status() *wire.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// BytesIn returns the input bytes received from the page.
func (s *Session) BytesIn() int64 { return s.bytesIn.Load() }

// BytesOut returns the output bytes sent to the page.
func (s *Session) BytesOut() int64 { return s.bytesOut.Load() }
