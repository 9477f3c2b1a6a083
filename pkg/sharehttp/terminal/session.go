package terminal

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/tools/remotecommand"

	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// Close codes, as in package wire.
const (
	// CloseNormal is wire.CloseNormal.
	CloseNormal = wire.CloseNormal
	// CloseGoingAway is wire.CloseGoingAway.
	CloseGoingAway = wire.CloseGoingAway
	// ClosePolicy is wire.ClosePolicy.
	ClosePolicy = wire.ClosePolicy
	// CloseServerError is wire.CloseServerError.
	CloseServerError = wire.CloseServerError
)

// ErrClosed is returned by the streams of a closed session.
var ErrClosed = errors.New("terminal session closed")

// Conn is a message connection to the page.
type Conn interface {
	// ReadMessage returns the next message from the page. One goroutine
	// calls it. An error wrapping wire.ErrInvalid means the page broke the
	// protocol at the transport level (a text message, one too large);
	// any other error means the connection ended.
	ReadMessage() ([]byte, error)
	// WriteMessage sends one message to the page. Calls may be concurrent;
	// the Conn serializes them. p may be reused once it returns.
	WriteMessage(p []byte) error
	// WriteClose sends the close with a code and a short text. Nothing is
	// written after it; ReadMessage goes on until the page answers the
	// close or the connection ends.
	WriteClose(code int, text string) error
	// Close releases the connection at once: a blocked ReadMessage or
	// WriteMessage returns.
	Close() error
}

// Options configure a Session. Zero values take the defaults.
type Options struct {
	// FlowWindow is the most output, in bytes, that may be sent to the page
	// and not yet acknowledged; Stdout blocks while more would be. Default
	// 256 KiB.
	FlowWindow int
	// MaxChunk bounds the output carried by one data message. Default 32
	// KiB; never more than FlowWindow or wire.MaxServerMessage-1.
	MaxChunk int
	// InputBuffer bounds typed input the command has not read yet; past it
	// the session stops reading the connection. Default 1 MiB.
	InputBuffer int
	// Input, when set, is given the page's typed input as it comes, in
	// place of Stdin, which then has none: no goroutine has to copy Stdin
	// to where the input goes. While its Write blocks, the session does not
	// read the connection, as while InputBuffer is full; its errors are
	// ignored, the input it could not take dropped.
	Input io.Writer
	// IdleTimeout ends a session with neither input nor output for this
	// long, with the status wire.ReasonIdle. Zero disables it.
	IdleTimeout time.Duration
	// CloseTimeout is how long Close waits for the page to answer the close
	// before it drops the connection. Default 2 s.
	CloseTimeout time.Duration
}

func (o *Options) defaults() {
	if o.FlowWindow <= 0 {
		o.FlowWindow = 256 << 10
	}
	if o.MaxChunk <= 0 {
		o.MaxChunk = 32 << 10
	}
	o.MaxChunk = min(o.MaxChunk, o.FlowWindow, wire.MaxServerMessage-1)
	if o.InputBuffer <= 0 {
		o.InputBuffer = 1 << 20
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = 2 * time.Second
	}
}

// Session is one browser terminal. Stdin, Stdout and the Session itself (a
// remotecommand.TerminalSizeQueue) feed a remotecommand stream. It reads
// the connection from New until the page goes, the context ends or Close.
type Session struct {
	conn Conn
	opts Options

	input *InputBuffer

	// sizes holds the latest size not yet taken by Next.
	sizes     chan remotecommand.TerminalSize
	firstSize chan struct{} // closed when the first resize arrived
	initial   remotecommand.TerminalSize

	// resizeMu orders the calls of onResize: the latest size is the last
	// one it is given.
	resizeMu sync.Mutex
	onResize func(remotecommand.TerminalSize)
	lastSize *remotecommand.TerminalSize

	mu      sync.Mutex
	cond    *sync.Cond // signalled when unacked shrinks or closed is set
	unacked int
	closed  bool
	status  *wire.Status

	writeMu sync.Mutex // serializes Stdout writes

	// sendMu is held around every message sent to the page, from the
	// check that the session is open to the end of the write, and around
	// the status and the close: so the status is the last message.
	sendMu sync.Mutex

	activity          atomic.Int64 // unix nanoseconds of the last input or output
	bytesIn, bytesOut atomic.Int64

	closing    chan struct{} // closed when the session starts to end
	readDone   chan struct{} // closed when the read loop has returned
	done       chan struct{} // closed when the connection is released
	stopCtx    func() bool
	closeTimer *time.Timer
	idleTimer  *time.Timer
}

var _ remotecommand.TerminalSizeQueue = (*Session)(nil)

// New starts a session on conn. When ctx ends first, the session closes
// with CloseGoingAway and the status wire.ReasonClosed.
func New(ctx context.Context, conn Conn, opts Options) *Session {
	opts.defaults()
	s := &Session{
		conn:      conn,
		opts:      opts,
		input:     NewInputBuffer(opts.InputBuffer),
		sizes:     make(chan remotecommand.TerminalSize, 1),
		firstSize: make(chan struct{}),
		closing:   make(chan struct{}),
		readDone:  make(chan struct{}),
		done:      make(chan struct{}),
	}
	s.cond = sync.NewCond(&s.mu)
	if opts.Input != nil {
		s.input = NewInputBuffer(0)
		s.input.Close()
	}
	s.touch()
	s.stopCtx = context.AfterFunc(ctx, func() {
		s.Close(CloseGoingAway, wire.Status{Reason: wire.ReasonClosed, Message: "The server ended the session."})
	})
	if opts.IdleTimeout > 0 {
		// A timer rather than a goroutine: most sessions sit idle.
		s.mu.Lock()
		s.idleTimer = time.AfterFunc(opts.IdleTimeout, s.checkIdle)
		s.mu.Unlock()
	}
	go s.readLoop()
	return s
}

func (s *Session) touch() { s.activity.Store(time.Now().UnixNano()) }

func protocolError(err error) *wire.Status {
	return &wire.Status{Reason: wire.ReasonProtocolError, Message: "The page sent a message the server does not understand: " + err.Error()}
}

// readLoop reads the page until the connection ends, then releases it. A
// broken message ends the session, but reading goes on so that the page's
// answer to the close is seen.
func (s *Session) readLoop() {
	defer s.release()
	defer close(s.readDone)
	gotSize := false
	for {
		b, err := s.conn.ReadMessage()
		if err != nil {
			if errors.Is(err, wire.ErrInvalid) {
				s.shutdown(protocolError(err), ClosePolicy)
			} else {
				// The page went or the connection failed: nothing to tell.
				s.shutdown(nil, CloseNormal)
			}
			return
		}
		if s.isClosed() {
			continue // draining until the page answers the close
		}
		m, err := wire.DecodeClient(b)
		if err == nil && !gotSize && m.Op != wire.OpResize {
			err = errors.New("the first message must be a resize")
		}
		if err == nil && m.Op == wire.OpAck {
			err = s.ack(m.Ack)
		}
		if err != nil {
			s.shutdown(protocolError(err), ClosePolicy)
			continue
		}
		switch m.Op {
		case wire.OpData:
			if len(m.Data) == 0 {
				continue
			}
			s.touch()
			s.bytesIn.Add(int64(len(m.Data)))
			if s.opts.Input != nil {
				_, _ = s.opts.Input.Write(m.Data)
				continue
			}
			// Blocks while the input buffer is full; returns at once once
			// the session is closed.
			_, _ = s.input.Write(m.Data)
		case wire.OpResize:
			size := remotecommand.TerminalSize{Width: m.Size.Cols, Height: m.Size.Rows}
			s.resized(size)
			if !gotSize {
				gotSize = true
				s.initial = size
				close(s.firstSize)
			}
		}
	}
}

// ack credits n rendered bytes. Acknowledging more than was sent is a
// protocol error.
func (s *Session) ack(n uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if int64(n) > int64(s.unacked) {
		return errors.New("acknowledged more output than was sent")
	}
	s.unacked -= int(n)
	s.cond.Broadcast()
	return nil
}

// pushSize queues a size, replacing one not yet taken: only the latest
// matters. Only the read loop calls it.
func (s *Session) pushSize(size remotecommand.TerminalSize) {
	select {
	case <-s.sizes:
	default:
	}
	s.sizes <- size
}

// checkIdle ends the session once it has had neither input nor output for
// IdleTimeout, and otherwise looks again when it could first be.
func (s *Session) checkIdle() {
	idle := time.Since(time.Unix(0, s.activity.Load()))
	if idle >= s.opts.IdleTimeout {
		s.Close(CloseNormal, wire.Status{Reason: wire.ReasonIdle, Message: "The session ended after a period without activity."})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.idleTimer.Reset(s.opts.IdleTimeout - idle)
	}
}

// resized hands a size from the page to OnResize's function, or queues it
// for Next. Only the read loop calls it.
func (s *Session) resized(size remotecommand.TerminalSize) {
	s.resizeMu.Lock()
	defer s.resizeMu.Unlock()
	s.lastSize = &size
	if s.onResize != nil {
		s.onResize(size)
		return
	}
	s.pushSize(size)
}

// OnResize has f called with every terminal size the page sends from now
// on, starting with the latest one it sent, in order, instead of queueing
// them for Next. f must not block: the session's read loop calls it.
func (s *Session) OnResize(f func(remotecommand.TerminalSize)) {
	s.resizeMu.Lock()
	defer s.resizeMu.Unlock()
	s.onResize = f
	if s.lastSize != nil {
		f(*s.lastSize)
	}
}

// WaitForSize waits for the page's first message, its terminal size, and
// returns it. Start the command after it: the size also stays queued as the
// first that Next returns.
func (s *Session) WaitForSize(ctx context.Context) (remotecommand.TerminalSize, error) {
	select {
	case <-s.firstSize:
		return s.initial, nil
	case <-s.closing:
		// The page may have sent its size and gone at once.
		select {
		case <-s.firstSize:
			return s.initial, nil
		default:
		}
		return remotecommand.TerminalSize{}, ErrClosed
	case <-ctx.Done():
		return remotecommand.TerminalSize{}, ctx.Err()
	}
}

// Next returns the next terminal size, blocking until the page sends one,
// or nil once the session is closed. It implements
// remotecommand.TerminalSizeQueue.
func (s *Session) Next() *remotecommand.TerminalSize {
	select {
	case <-s.closing:
		return nil
	default:
	}
	select {
	case size := <-s.sizes:
		return &size
	case <-s.closing:
		return nil
	}
}

// Stdin returns what the page types, unless Options.Input takes it. Reads
// end with io.EOF once the session is closed and the buffered input is read.
func (s *Session) Stdin() io.Reader { return s.input }

// Stdout returns the writer of terminal output to the page. Its Write
// sends p in data messages of at most Options.MaxChunk bytes, each once it
// fits in the flow-control window, and so blocks while the page has not
// acknowledged enough; it returns ErrClosed once the session is closed.
func (s *Session) Stdout() io.Writer { return stdout{s} }

type stdout struct{ s *Session }

// messageBuffers hold a data message while it is written, so that an idle
// session holds no buffer.
var messageBuffers = sync.Pool{New: func() any { return new([]byte) }}

func (w stdout) Write(p []byte) (int, error) {
	s := w.s
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	buf := messageBuffers.Get().(*[]byte)
	defer messageBuffers.Put(buf)
	written := 0
	for len(p) > 0 {
		n := min(len(p), s.opts.MaxChunk)
		s.mu.Lock()
		for s.unacked+n > s.opts.FlowWindow && !s.closed {
			s.cond.Wait()
		}
		if s.closed {
			s.mu.Unlock()
			return written, ErrClosed
		}
		s.unacked += n
		s.mu.Unlock()
		*buf = wire.AppendData((*buf)[:0], p[:n])
		if err := s.send(*buf); err != nil {
			if !errors.Is(err, ErrClosed) {
				s.shutdown(nil, CloseNormal)
			}
			return written, err
		}
		s.touch()
		s.bytesOut.Add(int64(n))
		written += n
		p = p[n:]
	}
	return written, nil
}

// send writes one message to the page unless the session is closed.
func (s *Session) send(b []byte) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.isClosed() {
		return ErrClosed
	}
	return s.conn.WriteMessage(b)
}

// Unacknowledged returns the output bytes sent and not yet acknowledged by
// the page. It never exceeds Options.FlowWindow.
func (s *Session) Unacknowledged() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unacked
}

// Close ends the session: it sends the status, then the close with code,
// and waits until the page answers or Options.CloseTimeout passes. Stdin
// and Stdout end. Only the first close, by any path, counts; every call
// returns once the connection is released.
func (s *Session) Close(code int, status wire.Status) {
	s.shutdown(&status, code)
	<-s.done
}

func (s *Session) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// shutdown starts the end of the session, once. It does not wait.
func (s *Session) shutdown(status *wire.Status, code int) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.status = status
	close(s.closing)
	s.closeTimer = time.AfterFunc(s.opts.CloseTimeout, func() { _ = s.conn.Close() })
	s.cond.Broadcast()
	s.mu.Unlock()
	s.input.Close()
	text := ""
	// A message being sent goes first (its write deadline, or the close
	// timer, bounds the wait); none follows.
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if status != nil {
		_ = s.conn.WriteMessage(wire.EncodeStatus(*status))
		text = status.Reason
	}
	if err := s.conn.WriteClose(code, text); err != nil {
		// Nobody will answer a close that was not sent.
		_ = s.conn.Close()
	}
}

// release runs once the read loop has returned.
func (s *Session) release() {
	s.shutdown(nil, CloseNormal) // when the page went first
	s.mu.Lock()
	s.closeTimer.Stop()
	if s.idleTimer != nil {
		s.idleTimer.Stop()
	}
	s.mu.Unlock()
	_ = s.conn.Close()
	s.stopCtx()
	close(s.done)
}

// SendSync tells the page where the output that follows starts.
func (s *Session) SendSync(sync wire.Sync) error {
	return s.send(wire.EncodeSync(sync))
}

// SendPresence tells the page how many people are on the session. It is
// best effort: a page that has gone misses it.
func (s *Session) SendPresence(viewers int) {
	_ = s.send(wire.EncodePresence(wire.Presence{Viewers: viewers}))
}

// Done is closed when the session has ended and its connection is
// released.
func (s *Session) Done() <-chan struct{} { return s.done }

// Status returns the status the session was closed with, or nil when the
// page went first or the connection failed.
func (s *Session) Status() *wire.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// BytesIn returns the input bytes received from the page.
func (s *Session) BytesIn() int64 { return s.bytesIn.Load() }

// BytesOut returns the output bytes sent to the page.
func (s *Session) BytesOut() int64 { return s.bytesOut.Load() }
