package terminal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const waitLong = 5 * time.Second

// memConn is an in-memory Conn; the test plays the page through it.
type memConn struct {
	toServer chan []byte
	toPage   chan []byte

	// silent pages do not answer the close.
	silent bool

	mu        sync.Mutex
	closeSent bool
	code      int
	text      string
	answered  chan struct{} // closed when the page answers the close
	released  chan struct{} // closed by Close
	once      sync.Once
	closeOnce sync.Once
}

func newMemConn() *memConn {
	return &memConn{
		toServer: make(chan []byte, 64),
		toPage:   make(chan []byte, 4096),
		answered: make(chan struct{}),
		released: make(chan struct{}),
	}
}

var errPageClosed = errors.New("the page closed the connection")

func (c *memConn) ReadMessage() ([]byte, error) {
	select {
	case b := <-c.toServer:
		if e, ok := readError(b); ok {
			return nil, e
		}
		return b, nil
	case <-c.answered:
		return nil, errPageClosed
	case <-c.released:
		return nil, io.ErrClosedPipe
	}
}

// A message whose first byte is 0xee stands for a read error.
func readError(b []byte) (error, bool) {
	if len(b) > 0 && b[0] == 0xee {
		if string(b[1:]) == "invalid" {
			return fmt.Errorf("%w: text message", wire.ErrInvalid), true
		}
		return io.ErrUnexpectedEOF, true
	}
	return nil, false
}

func (c *memConn) WriteMessage(p []byte) error {
	c.mu.Lock()
	sent := c.closeSent
	c.mu.Unlock()
	if sent {
		return errors.New("write after close")
	}
	select {
	case c.toPage <- append([]byte(nil), p...):
		return nil
	case <-c.released:
		return io.ErrClosedPipe
	}
}

func (c *memConn) WriteClose(code int, text string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeSent {
		return errors.New("close sent twice")
	}
	c.closeSent, c.code, c.text = true, code, text
	if !c.silent {
		c.closeOnce.Do(func() { close(c.answered) })
	}
	return nil
}

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.released) })
	return nil
}

func (c *memConn) closeCode() (int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code, c.text
}

// next returns the next message the page got.
func (c *memConn) next(t *testing.T) []byte {
	t.Helper()
	select {
	case b := <-c.toPage:
		return b
	case <-time.After(waitLong):
		t.Fatal("no message to the page")
		return nil
	}
}

// nextStatus returns the status the page got, skipping output.
func (c *memConn) nextStatus(t *testing.T) *wire.Status {
	t.Helper()
	for {
		m, err := wire.DecodeServer(c.next(t))
		if err != nil {
			t.Fatal(err)
		}
		if m.Op == wire.OpStatus {
			return m.Status
		}
	}
}

func (c *memConn) noMessage(t *testing.T) {
	t.Helper()
	select {
	case b := <-c.toPage:
		t.Fatalf("unexpected message to the page: %q", b)
	case <-time.After(100 * time.Millisecond):
	}
}

// started returns a session whose handshake is done.
func started(t *testing.T, opts Options) (*Session, *memConn) {
	t.Helper()
	c := newMemConn()
	s := New(t.Context(), c, opts)
	t.Cleanup(func() { s.Close(CloseNormal, wire.Status{Reason: "TestOver"}) })
	c.toServer <- wire.EncodeResize(wire.Size{Cols: 80, Rows: 24})
	if _, err := s.WaitForSize(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s, c
}

func assertEnded(t *testing.T, s *Session, c *memConn, wantReason string, wantCode int) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(waitLong):
		t.Fatal("the session did not end")
	}
	if wantReason == "" {
		if st := s.Status(); st != nil {
			t.Errorf("Status() = %+v, want none", st)
		}
	} else {
		if st := s.Status(); st == nil || st.Reason != wantReason {
			t.Errorf("Status() = %+v, want reason %s", st, wantReason)
		}
		if st := c.nextStatus(t); st.Reason != wantReason {
			t.Errorf("the page got status %+v, want reason %s", st, wantReason)
		}
		if code, text := c.closeCode(); code != wantCode || text != wantReason {
			t.Errorf("close %d %q, want %d %q", code, text, wantCode, wantReason)
		}
	}
	assertStreamsEnded(t, s)
}

// assertStreamsEnded checks that the streams of an ended session end.
func assertStreamsEnded(t *testing.T, s *Session) {
	t.Helper()
	if n, err := s.Stdin().Read(make([]byte, 8)); err != io.EOF {
		t.Errorf("Stdin after the end: %d, %v; want EOF", n, err)
	}
	if _, err := s.Stdout().Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Stdout after the end: %v; want ErrClosed", err)
	}
	if got := s.Next(); got != nil {
		t.Errorf("Next after the end = %+v", got)
	}
}

func TestHandshake(t *testing.T) {
	tests := []struct {
		name       string
		first      []byte
		wantSize   remotecommand.TerminalSize
		wantErr    error
		wantReason string
	}{
		{name: "resize", first: wire.EncodeResize(wire.Size{Cols: 100, Rows: 30}), wantSize: remotecommand.TerminalSize{Width: 100, Height: 30}},
		{name: "data first", first: wire.EncodeData([]byte("ls\r")), wantErr: ErrClosed, wantReason: wire.ReasonProtocolError},
		{name: "ack first", first: wire.EncodeAck(0), wantErr: ErrClosed, wantReason: wire.ReasonProtocolError},
		{name: "empty message", first: []byte{}, wantErr: ErrClosed, wantReason: wire.ReasonProtocolError},
		{name: "unknown opcode", first: []byte{0x42}, wantErr: ErrClosed, wantReason: wire.ReasonProtocolError},
		{name: "size zero", first: append([]byte{wire.OpResize}, `{"cols":0,"rows":0}`...), wantErr: ErrClosed, wantReason: wire.ReasonProtocolError},
		{name: "transport violation", first: []byte("\xeeinvalid"), wantErr: ErrClosed, wantReason: wire.ReasonProtocolError},
		{name: "page gone", first: []byte("\xee"), wantErr: ErrClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newMemConn()
			s := New(t.Context(), c, Options{})
			defer s.Close(CloseNormal, wire.Status{Reason: "TestOver"})
			c.toServer <- tc.first
			size, err := s.WaitForSize(t.Context())
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("WaitForSize() error = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				assertEnded(t, s, c, tc.wantReason, ClosePolicy)
				return
			}
			if size != tc.wantSize {
				t.Errorf("WaitForSize() = %+v, want %+v", size, tc.wantSize)
			}
			// The command gets the same size first.
			if got := s.Next(); got == nil || *got != tc.wantSize {
				t.Errorf("first Next() = %+v, want %+v", got, tc.wantSize)
			}
			c.noMessage(t)
		})
	}
}

func TestWaitForSizeHonoursContext(t *testing.T) {
	c := newMemConn()
	s := New(t.Context(), c, Options{})
	defer s.Close(CloseNormal, wire.Status{Reason: "TestOver"})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.WaitForSize(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitForSize() error = %v, want DeadlineExceeded", err)
	}
}

func TestDataBothWays(t *testing.T) {
	s, c := started(t, Options{})
	c.toServer <- wire.EncodeData([]byte("echo hi\r"))
	c.toServer <- wire.EncodeData(nil) // ignored
	c.toServer <- wire.EncodeData([]byte{0x03})
	var got []byte
	buf := make([]byte, 64)
	for len(got) < 9 {
		n, err := s.Stdin().Read(buf)
		if err != nil {
			t.Fatalf("Stdin: %v", err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "echo hi\r\x03" {
		t.Errorf("Stdin read %q", got)
	}
	if n, err := s.Stdout().Write([]byte("hi\r\n")); n != 4 || err != nil {
		t.Fatalf("Stdout: %d, %v", n, err)
	}
	if got := c.next(t); string(got) != "\x00hi\r\n" {
		t.Errorf("page got %q", got)
	}
	if s.BytesIn() != 9 || s.BytesOut() != 4 {
		t.Errorf("bytes in %d, out %d; want 9, 4", s.BytesIn(), s.BytesOut())
	}
}

// TestInputToAWriter checks that with Options.Input the page's input goes
// to the writer, in order and from the read loop, that Stdin has none, and
// that the connection is not read while the writer blocks.
func TestInputToAWriter(t *testing.T) {
	input := &gatedWriter{open: make(chan struct{})}
	s, c := started(t, Options{Input: input})
	c.toServer <- wire.EncodeData([]byte("echo hi\r"))
	c.toServer <- wire.EncodeData([]byte{0x03})
	// The writer holds the first input: the ack behind it is not read.
	c.toServer <- wire.EncodeAck(1)
	c.noMessage(t)
	if s.isClosed() {
		t.Fatal("the session ended while its input waited")
	}
	close(input.open)
	// The ack of output never sent is read now, and ends the session.
	assertEnded(t, s, c, wire.ReasonProtocolError, ClosePolicy)
	if got := input.String(); got != "echo hi\r\x03" {
		t.Errorf("the writer got %q, want the input in order", got)
	}
	if s.BytesIn() != 9 {
		t.Errorf("bytes in %d, want 9", s.BytesIn())
	}
}

// gatedWriter takes writes once open is closed.
type gatedWriter struct {
	open chan struct{}
	mu   sync.Mutex
	bytes.Buffer
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	<-w.open
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.Buffer.Write(p)
}

func (w *gatedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.Buffer.String()
}

func TestResizeQueueKeepsTheLatest(t *testing.T) {
	s, c := started(t, Options{})
	if got := s.Next(); *got != (remotecommand.TerminalSize{Width: 80, Height: 24}) {
		t.Fatalf("first Next() = %+v", got)
	}
	for _, cols := range []uint16{81, 82, 83, 132} {
		c.toServer <- wire.EncodeResize(wire.Size{Cols: cols, Rows: 43})
	}
	// Sizes not yet taken collapse to the latest; Next never returns a
	// size older than one it returned.
	deadline := time.Now().Add(waitLong)
	last := uint16(0)
	for last != 132 {
		got := s.Next()
		if got == nil || got.Width < last || time.Now().After(deadline) {
			t.Fatalf("Next() = %+v after width %d", got, last)
		}
		last = got.Width
	}
	// Next blocks until another size comes.
	next := make(chan *remotecommand.TerminalSize, 1)
	go func() { next <- s.Next() }()
	select {
	case got := <-next:
		t.Fatalf("Next() = %+v without a new size", got)
	case <-time.After(50 * time.Millisecond):
	}
	c.toServer <- wire.EncodeResize(wire.Size{Cols: 10, Rows: 5})
	if got := <-next; *got != (remotecommand.TerminalSize{Width: 10, Height: 5}) {
		t.Errorf("Next() = %+v", got)
	}
}

func TestFlowControl(t *testing.T) {
	type step struct {
		ack      uint32 // page acknowledges this many bytes first
		wantPage string // then gets this message ("" for none)
	}
	tests := []struct {
		name   string
		opts   Options
		write  string
		steps  []step
		closes bool // the session closes while the write waits
	}{
		{
			name: "waits for the window, goes on with acks", opts: Options{FlowWindow: 8, MaxChunk: 4}, write: "0123456789abcdef",
			steps: []step{{wantPage: "0123"}, {wantPage: "4567"}, {}, {ack: 3}, {ack: 1, wantPage: "89ab"}, {ack: 8, wantPage: "cdef"}},
		},
		{
			name: "a chunk waits until it fits whole", opts: Options{FlowWindow: 10, MaxChunk: 6}, write: "0123456789ab",
			steps: []step{{wantPage: "012345"}, {}, {ack: 1}, {ack: 1, wantPage: "6789ab"}},
		},
		{
			name: "chunks are never larger than the window", opts: Options{FlowWindow: 3, MaxChunk: 100}, write: "abcdef",
			steps: []step{{wantPage: "abc"}, {}, {ack: 3, wantPage: "def"}},
		},
		{
			name: "close ends a waiting write", opts: Options{FlowWindow: 4, MaxChunk: 4}, write: "01234567",
			steps: []step{{wantPage: "0123"}, {}}, closes: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, c := started(t, tc.opts)
			wrote := make(chan error, 1)
			go func() { _, err := s.Stdout().Write([]byte(tc.write)); wrote <- err }()
			for i, st := range tc.steps {
				if st.ack > 0 {
					c.toServer <- wire.EncodeAck(st.ack)
				}
				if st.wantPage == "" {
					c.noMessage(t)
					continue
				}
				if got := string(c.next(t)); got != "\x00"+st.wantPage {
					t.Fatalf("step %d: page got %q, want %q", i, got, st.wantPage)
				}
				if u := s.Unacknowledged(); u > s.opts.FlowWindow {
					t.Fatalf("step %d: %d bytes unacknowledged, window %d", i, u, s.opts.FlowWindow)
				}
			}
			if tc.closes {
				select {
				case err := <-wrote:
					t.Fatalf("the write returned %v while waiting for the window", err)
				default:
				}
				s.Close(ClosePolicy, wire.Status{Reason: wire.ReasonRevoked})
				if err := <-wrote; !errors.Is(err, ErrClosed) {
					t.Fatalf("the waiting write ended with %v, want ErrClosed", err)
				}
				return
			}
			if err := <-wrote; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestFlowControlUnderLoad(t *testing.T) {
	const window, chunk, writes = 1 << 10, 777, 300
	s, c := started(t, Options{FlowWindow: window, MaxChunk: 100})
	wrote := make(chan error, 1)
	go func() {
		b := make([]byte, chunk)
		for range writes {
			if _, err := s.Stdout().Write(b); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	// The page acknowledges in batches, as xterm.js renders; the server
	// never has more than the window in flight.
	received, inFlight := 0, 0
	for received < chunk*writes {
		n := len(c.next(t)) - 1
		received += n
		inFlight += n
		if inFlight > window {
			t.Fatalf("%d bytes in flight, window %d", inFlight, window)
		}
		if inFlight >= 300 {
			c.toServer <- wire.EncodeAck(uint32(inFlight))
			inFlight = 0
		}
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

func TestMalformedMessagesEndTheSession(t *testing.T) {
	tests := []struct {
		name    string
		msg     []byte
		written int // output sent before the message
	}{
		{name: "unknown opcode", msg: []byte{0x09, 1, 2}},
		{name: "status from the page", msg: append([]byte{wire.OpStatus}, `{"reason":"Exited"}`...)},
		{name: "bad resize", msg: append([]byte{wire.OpResize}, `{"cols":80}`...)},
		{name: "huge resize", msg: wire.EncodeResize(wire.Size{Cols: 80, Rows: 1001})},
		{name: "short ack", msg: []byte{wire.OpAck, 1}},
		{name: "ack of more than was sent", msg: wire.EncodeAck(5), written: 4},
		{name: "empty", msg: []byte{}},
		{name: "transport violation", msg: []byte("\xeeinvalid")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, c := started(t, Options{})
			if tc.written > 0 {
				if _, err := s.Stdout().Write(make([]byte, tc.written)); err != nil {
					t.Fatal(err)
				}
				c.next(t)
			}
			c.toServer <- tc.msg
			assertEnded(t, s, c, wire.ReasonProtocolError, ClosePolicy)
		})
	}
}

func TestClose(t *testing.T) {
	code := 3
	exited := wire.Status{Reason: wire.ReasonExited, Message: "The session ended with exit code 3.", ExitCode: &code}
	tests := []struct {
		name     string
		silent   bool
		status   wire.Status
		code     int
		closers  int
		maxDelay time.Duration
	}{
		{name: "exit", status: exited, code: CloseNormal, closers: 1, maxDelay: time.Second},
		{name: "revoked, concurrently", status: wire.Status{Reason: wire.ReasonRevoked}, code: ClosePolicy, closers: 5, maxDelay: time.Second},
		{name: "a page that never answers the close", silent: true, status: exited, code: CloseNormal, closers: 2, maxDelay: 2 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newMemConn()
			c.silent = tc.silent
			s := New(t.Context(), c, Options{CloseTimeout: 200 * time.Millisecond})
			c.toServer <- wire.EncodeResize(wire.Size{Cols: 80, Rows: 24})
			if _, err := s.WaitForSize(t.Context()); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			var wg sync.WaitGroup
			for range tc.closers {
				wg.Go(func() { s.Close(tc.code, tc.status) })
			}
			wg.Wait()
			if d := time.Since(start); d > tc.maxDelay {
				t.Errorf("Close took %s", d)
			}
			if tc.silent && time.Since(start) < 200*time.Millisecond {
				t.Errorf("Close did not wait for the page's answer")
			}
			select {
			case <-c.released:
			default:
				t.Error("Close returned before the connection was released")
			}
			m, err := wire.DecodeServer(c.next(t))
			if err != nil || m.Op != wire.OpStatus {
				t.Fatalf("the page got %+v, %v; want a status", m, err)
			}
			if diff := cmp.Diff(&tc.status, m.Status); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
			c.noMessage(t)
			assertStreamsEnded(t, s)
			if code, text := c.closeCode(); code != tc.code || text != tc.status.Reason {
				t.Errorf("close %d %q, want %d %q", code, text, tc.code, tc.status.Reason)
			}
		})
	}
}

// TestStatusIsTheLastMessage closes a session while output, presence and
// sync messages are being sent: whatever was sent, the status comes last,
// once.
func TestStatusIsTheLastMessage(t *testing.T) {
	for round := range 20 {
		c := newMemConn()
		s := New(t.Context(), c, Options{FlowWindow: 1 << 30})
		c.toServer <- wire.EncodeResize(wire.Size{Cols: 80, Rows: 24})
		if _, err := s.WaitForSize(t.Context()); err != nil {
			t.Fatal(err)
		}
		var got [][]byte
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for {
				select {
				case b := <-c.toPage:
					got = append(got, b)
				case <-s.Done():
					for {
						select {
						case b := <-c.toPage:
							got = append(got, b)
						default:
							return
						}
					}
				}
			}
		}()
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				for {
					if _, err := s.Stdout().Write([]byte("output")); err != nil {
						return
					}
				}
			})
		}
		wg.Go(func() {
			for {
				select {
				case <-s.Done():
					return
				default:
					s.SendPresence(2)
				}
			}
		})
		wg.Go(func() {
			for s.SendSync(wire.Sync{Session: "s", Offset: 1}) == nil {
			}
		})
		time.Sleep(time.Duration(round%5) * time.Millisecond)
		s.Close(CloseGoingAway, wire.Status{Reason: wire.ReasonServerShutdown})
		wg.Wait()
		<-drained
		statuses := 0
		for _, b := range got {
			if b[0] == wire.OpStatus {
				statuses++
			}
		}
		if statuses != 1 || got[len(got)-1][0] != wire.OpStatus {
			t.Fatalf("round %d: %d statuses in %d messages, the last %q; want one status, last", round, statuses, len(got), got[len(got)-1])
		}
	}
}

func TestPageGoesFirst(t *testing.T) {
	s, c := started(t, Options{})
	c.toServer <- []byte("\xee")
	assertEnded(t, s, c, "", 0)
}

func TestContextEndsTheSession(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	c := newMemConn()
	s := New(ctx, c, Options{})
	cancel()
	assertEnded(t, s, c, wire.ReasonClosed, CloseGoingAway)
}

func TestIdleTimeout(t *testing.T) {
	s, c := started(t, Options{IdleTimeout: 100 * time.Millisecond})
	assertEnded(t, s, c, wire.ReasonIdle, CloseNormal)
}
