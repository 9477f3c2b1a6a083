package terminal

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// memConn is an in-memory Conn: the test plays the page.
type memConn struct {
	toServer chan []byte
	toPage   chan []byte
	closed   chan struct{}
	once     sync.Once
	code     int
	text     string
}

func newMemConn() *memConn {
	return &memConn{toServer: make(chan []byte, 64), toPage: make(chan []byte, 1024), closed: make(chan struct{})}
}

func (c *memConn) ReadMessage() ([]byte, error) {
	select {
	case b := <-c.toServer:
		return b, nil
	case <-c.closed:
		return nil, io.EOF
	}
}

func (c *memConn) WriteMessage(p []byte) error {
	select {
	case <-c.closed:
		return io.ErrClosedPipe
	default:
	}
	select {
	case c.toPage <- append([]byte(nil), p...):
		return nil
	case <-c.closed:
		return io.ErrClosedPipe
	}
}

func (c *memConn) Close(code int, text string) error {
	c.once.Do(func() { c.code, c.text = code, text; close(c.closed) })
	return nil
}

func (c *memConn) next(t *testing.T) []byte {
	t.Helper()
	select {
	case b := <-c.toPage:
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("no message to the page")
		return nil
	}
}

func TestHandshakeDataAndResize(t *testing.T) {
	c := newMemConn()
	s := New(c, Options{})
	defer s.Close(CloseNormal, wire.Status{Reason: "Test"})

	c.toServer <- wire.EncodeResize(wire.Size{Cols: 100, Rows: 30})
	size, err := s.WaitForSize(context.Background())
	if err != nil || size.Width != 100 || size.Height != 30 {
		t.Fatalf("WaitForSize() = %+v, %v", size, err)
	}
	if got := s.Next(); got == nil || *got != (remotecommand.TerminalSize{Width: 100, Height: 30}) {
		t.Fatalf("first Next() = %+v", got)
	}
	c.toServer <- wire.EncodeResize(wire.Size{Cols: 80, Rows: 24})
	c.toServer <- wire.EncodeResize(wire.Size{Cols: 132, Rows: 43})
	// Sizes not yet taken collapse to the latest.
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := s.Next()
		if *got == (remotecommand.TerminalSize{Width: 132, Height: 43}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never saw the latest size, last %+v", got)
		}
	}

	c.toServer <- wire.EncodeData([]byte("echo hi\r"))
	buf := make([]byte, 64)
	n, err := s.Stdin().Read(buf)
	if err != nil || string(buf[:n]) != "echo hi\r" {
		t.Fatalf("Stdin read %q, %v", buf[:n], err)
	}
	if _, err := s.Stdout().Write([]byte("hi\r\n")); err != nil {
		t.Fatal(err)
	}
	if got := c.next(t); string(got) != "\x00hi\r\n" {
		t.Fatalf("page got %q", got)
	}
	if s.BytesIn() != 8 || s.BytesOut() != 4 {
		t.Errorf("bytes in %d, out %d", s.BytesIn(), s.BytesOut())
	}
}

func TestFlowControlWindow(t *testing.T) {
	c := newMemConn()
	s := New(c, Options{FlowWindow: 8, MaxChunk: 4})
	defer s.Close(CloseNormal, wire.Status{Reason: "Test"})
	c.toServer <- wire.EncodeResize(wire.Size{Cols: 80, Rows: 24})
	if _, err := s.WaitForSize(context.Background()); err != nil {
		t.Fatal(err)
	}

	wrote := make(chan error, 1)
	go func() { _, err := s.Stdout().Write([]byte("0123456789ab")); wrote <- err }()
	// Two chunks fill the window; the third waits for an ack.
	if got := string(c.next(t)); got != "\x000123" {
		t.Fatalf("first chunk %q", got)
	}
	if got := string(c.next(t)); got != "\x004567" {
		t.Fatalf("second chunk %q", got)
	}
	select {
	case b := <-c.toPage:
		t.Fatalf("output past the window without an ack: %q", b)
	case err := <-wrote:
		t.Fatalf("write returned past the window: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	c.toServer <- wire.EncodeAck(4)
	if got := string(c.next(t)); got != "\x0089ab" {
		t.Fatalf("third chunk %q", got)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}

	// A write blocked on the window ends when the session closes.
	go func() { _, err := s.Stdout().Write([]byte("more output")); wrote <- err }()
	time.Sleep(50 * time.Millisecond)
	s.Close(ClosePolicy, wire.Status{Reason: "Revoked", Message: "gone"})
	if err := <-wrote; !errors.Is(err, ErrClosed) {
		t.Fatalf("blocked write ended with %v, want ErrClosed", err)
	}
}

func TestProtocolErrors(t *testing.T) {
	tests := []struct {
		name  string
		first []byte
	}{
		{name: "data before size", first: wire.EncodeData([]byte("ls\r"))},
		{name: "unknown opcode", first: []byte{0x42}},
		{name: "bad resize", first: append([]byte{wire.OpResize}, `{"cols":0,"rows":0}`...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newMemConn()
			s := New(c, Options{})
			c.toServer <- tc.first
			if _, err := s.WaitForSize(context.Background()); !errors.Is(err, ErrClosed) {
				t.Fatalf("WaitForSize() error = %v, want ErrClosed", err)
			}
			b := c.next(t)
			var st wire.Status
			if b[0] != wire.OpStatus || json.Unmarshal(b[1:], &st) != nil || st.Reason != "ProtocolError" {
				t.Fatalf("status %q", b)
			}
			if c.code != ClosePolicy {
				t.Errorf("close code %d, want %d", c.code, ClosePolicy)
			}
		})
	}
}

func TestCloseIsIdempotentAndEndsStreams(t *testing.T) {
	c := newMemConn()
	s := New(c, Options{})
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() { defer wg.Done(); s.Close(ClosePolicy, wire.Status{Reason: "Revoked"}) }()
	}
	wg.Wait()
	if s.Status() == nil || s.Status().Reason != "Revoked" || c.code != ClosePolicy {
		t.Fatalf("status %+v, code %d", s.Status(), c.code)
	}
	if n := len(c.toPage); n != 1 {
		t.Errorf("%d status messages, want 1", n)
	}
	if _, err := s.Stdin().Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("stdin after close: %v", err)
	}
	if got := s.Next(); got != nil {
		t.Errorf("Next after close = %+v", got)
	}
}

func TestIdleTimeout(t *testing.T) {
	c := newMemConn()
	s := New(c, Options{IdleTimeout: 100 * time.Millisecond})
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("idle session not closed")
	}
	if s.Status() == nil || s.Status().Reason != "Idle" {
		t.Fatalf("status %+v", s.Status())
	}
}

func TestOverWebSocket(t *testing.T) {
	done := make(chan *Session, 1)
	upgrader := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		s := New(WebSocket(ws, WebSocketOptions{PingInterval: 50 * time.Millisecond, PongTimeout: 5 * time.Second}), Options{})
		if _, err := s.WaitForSize(r.Context()); err != nil {
			return
		}
		// Echo input back, upper-cased, as a command would.
		buf := make([]byte, 1024)
		n, _ := s.Stdin().Read(buf)
		_, _ = s.Stdout().Write([]byte(strings.ToUpper(string(buf[:n]))))
		code := 0
		s.Close(CloseNormal, wire.Status{Reason: "Exited", ExitCode: &code})
		done <- s
	}))
	defer srv.Close()

	page, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer page.Close()
	pings := 0
	page.SetPingHandler(func(string) error {
		pings++
		// The server may close while the pong is on its way.
		_ = page.WriteControl(websocket.PongMessage, nil, time.Now().Add(time.Second))
		return nil
	})
	if err := page.WriteMessage(websocket.BinaryMessage, wire.EncodeResize(wire.Size{Cols: 80, Rows: 24})); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond) // let a ping or two arrive
	if err := page.WriteMessage(websocket.BinaryMessage, wire.EncodeData([]byte("hello"))); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		mt, b, err := page.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != CloseNormal {
				t.Fatalf("close: %v", err)
			}
			break
		}
		if mt != websocket.BinaryMessage {
			t.Fatalf("message type %d", mt)
		}
		got = append(got, string(b))
	}
	if len(got) != 2 || got[0] != "\x00HELLO" || !strings.HasPrefix(got[1], "\x02{\"reason\":\"Exited\"") {
		t.Fatalf("page got %q", got)
	}
	if pings == 0 {
		t.Error("the server never pinged")
	}
	<-done
}

func TestWebSocketRejectsTextMessages(t *testing.T) {
	statuses := make(chan *wire.Status, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		s := New(WebSocket(ws, WebSocketOptions{}), Options{})
		<-s.Done()
		statuses <- s.Status()
	}))
	defer srv.Close()
	page, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer page.Close()
	_ = page.WriteMessage(websocket.TextMessage, []byte(`{"cols":80,"rows":24}`))
	if st := <-statuses; st == nil || st.Reason != "ProtocolError" {
		t.Fatalf("status %+v", st)
	}
}

func TestUnansweredPingsEndSession(t *testing.T) {
	ended := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		s := New(WebSocket(ws, WebSocketOptions{PingInterval: 20 * time.Millisecond, PongTimeout: 100 * time.Millisecond}), Options{})
		<-s.Done()
		close(ended)
	}))
	defer srv.Close()
	// The page connects and then never reads, so it never answers a ping.
	page, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer page.Close()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("a page that never answers pings kept its session")
	}
}
