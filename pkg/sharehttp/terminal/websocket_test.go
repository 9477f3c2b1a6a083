package terminal

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// serveSessions serves WebSocket sessions that run(s) drives; each handler
// returns only once its session is done.
func serveSessions(t *testing.T, wsOpts WebSocketOptions, opts Options, run func(*Session)) (string, <-chan *Session) {
	t.Helper()
	ended := make(chan *Session, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		s := New(r.Context(), NewWebSocketConn(ws, wsOpts), opts)
		run(s)
		<-s.Done()
		ended <- s
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http"), ended
}

func dial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	page, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { page.Close() })
	return page
}

func send(t *testing.T, page *websocket.Conn, b []byte) {
	t.Helper()
	if err := page.WriteMessage(websocket.BinaryMessage, b); err != nil {
		t.Fatal(err)
	}
}

// readAll reads the page's messages until the close, and returns the
// output, the status and the close code.
func readAll(t *testing.T, page *websocket.Conn, ack bool) (string, *wire.Status, int) {
	t.Helper()
	var out bytes.Buffer
	var status *wire.Status
	_ = page.SetReadDeadline(time.Now().Add(waitLong))
	for {
		mt, b, err := page.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("the connection ended without a close: %v", err)
			}
			return out.String(), status, ce.Code
		}
		if mt != websocket.BinaryMessage {
			t.Fatalf("message type %d", mt)
		}
		m, err := wire.DecodeServer(b)
		if err != nil {
			t.Fatal(err)
		}
		if status != nil {
			t.Fatalf("a message after the status: %q", b)
		}
		switch m.Op {
		case wire.OpData:
			out.Write(m.Data)
			if ack {
				send(t, page, wire.EncodeAck(uint32(len(m.Data))))
			}
		case wire.OpStatus:
			status = m.Status
		}
	}
}

func waitEnded(t *testing.T, ended <-chan *Session) *Session {
	t.Helper()
	select {
	case s := <-ended:
		return s
	case <-time.After(waitLong):
		t.Fatal("the session did not end")
		return nil
	}
}

func TestOverWebSocket(t *testing.T) {
	const window = 4 << 10
	url, ended := serveSessions(t, WebSocketOptions{PingInterval: 20 * time.Millisecond, PongTimeout: waitLong}, Options{FlowWindow: window, MaxChunk: 1000}, func(s *Session) {
		if _, err := s.WaitForSize(t.Context()); err != nil {
			return
		}
		// A command that echoes a line upper-cased, then floods output.
		buf := make([]byte, 64)
		n, _ := s.Stdin().Read(buf)
		_, _ = s.Stdout().Write([]byte(strings.ToUpper(string(buf[:n]))))
		if size := s.Next(); size == nil || size.Width != 132 {
			return
		}
		_, _ = s.Stdout().Write(bytes.Repeat([]byte("y\r\n"), 100_000))
		code := 0
		s.Close(CloseNormal, wire.Status{Reason: wire.ReasonExited, ExitCode: &code})
	})
	page := dial(t, url)
	var pings atomic.Int32
	page.SetPingHandler(func(data string) error {
		pings.Add(1)
		return page.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	send(t, page, wire.EncodeResize(wire.Size{Cols: 80, Rows: 24}))
	send(t, page, wire.EncodeResize(wire.Size{Cols: 132, Rows: 43}))
	// Let a few pings come; the page sees them once it reads.
	time.Sleep(100 * time.Millisecond)
	send(t, page, wire.EncodeData([]byte("hello")))

	out, status, code := readAll(t, page, true)
	if want := "HELLO" + strings.Repeat("y\r\n", 100_000); out != want {
		t.Errorf("the page got %d bytes of output, want %d", len(out), len(want))
	}
	if status == nil || status.Reason != wire.ReasonExited || status.ExitCode == nil || *status.ExitCode != 0 {
		t.Errorf("status %+v", status)
	}
	if code != websocket.CloseNormalClosure {
		t.Errorf("close code %d", code)
	}
	s := waitEnded(t, ended)
	if s.BytesIn() != 5 || s.BytesOut() != int64(len(out)) {
		t.Errorf("bytes in %d, out %d", s.BytesIn(), s.BytesOut())
	}
	if pings.Load() == 0 {
		t.Error("the server never pinged")
	}
}

func TestWebSocketFlowControl(t *testing.T) {
	const window = 4 << 10
	wrote := make(chan error, 1)
	sessions := make(chan *Session, 1)
	url, ended := serveSessions(t, WebSocketOptions{}, Options{FlowWindow: window, MaxChunk: 1 << 10}, func(s *Session) {
		sessions <- s
		if _, err := s.WaitForSize(t.Context()); err != nil {
			return
		}
		_, err := s.Stdout().Write(make([]byte, 3*window))
		wrote <- err
	})
	page := dial(t, url)
	send(t, page, wire.EncodeResize(wire.Size{Cols: 80, Rows: 24}))
	s := <-sessions
	// The page reads but does not acknowledge: the server stops at the
	// window.
	got := 0
	for got < window {
		_, b, err := page.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		got += len(b) - 1
	}
	select {
	case err := <-wrote:
		t.Fatalf("the write returned (%v) past the window", err)
	case <-time.After(100 * time.Millisecond):
	}
	if u := s.Unacknowledged(); u != window {
		t.Errorf("%d bytes unacknowledged, want %d", u, window)
	}
	// Acknowledging lets the rest through.
	send(t, page, wire.EncodeAck(uint32(got)))
	for got < 3*window {
		_, b, err := page.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		got += len(b) - 1
		send(t, page, wire.EncodeAck(uint32(len(b)-1)))
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	// Close waits for the page's answer, which comes as the page reads.
	go s.Close(CloseNormal, wire.Status{Reason: wire.ReasonClosed})
	if _, status, code := readAll(t, page, false); status == nil || status.Reason != wire.ReasonClosed || code != CloseNormal {
		t.Errorf("status %+v, code %d", status, code)
	}
	waitEnded(t, ended)
}

func TestWebSocketProtocolViolations(t *testing.T) {
	tests := []struct {
		name       string
		mt         int
		msg        []byte
		wantStatus bool
		wantCode   int
	}{
		{name: "text message", mt: websocket.TextMessage, msg: []byte(`{"cols":80,"rows":24}`), wantStatus: true, wantCode: ClosePolicy},
		{name: "resize past the bounds", mt: websocket.BinaryMessage, msg: append([]byte{wire.OpResize}, `{"cols":1001,"rows":24}`...), wantStatus: true, wantCode: ClosePolicy},
		// The WebSocket library closes at once, before a status can go.
		{name: "message past the read limit", mt: websocket.BinaryMessage, msg: append([]byte{wire.OpData}, make([]byte, wire.MaxClientMessage)...), wantCode: websocket.CloseMessageTooBig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url, ended := serveSessions(t, WebSocketOptions{}, Options{}, func(*Session) {})
			page := dial(t, url)
			if err := page.WriteMessage(tc.mt, tc.msg); err != nil {
				t.Fatal(err)
			}
			_, status, code := readAll(t, page, false)
			if tc.wantStatus && (status == nil || status.Reason != wire.ReasonProtocolError) || !tc.wantStatus && status != nil {
				t.Errorf("status %+v, want one: %v", status, tc.wantStatus)
			}
			if code != tc.wantCode {
				t.Errorf("close code %d, want %d", code, tc.wantCode)
			}
			if s := waitEnded(t, ended); s.Status() == nil || s.Status().Reason != wire.ReasonProtocolError {
				t.Errorf("session status %+v", s.Status())
			}
		})
	}
}

func TestWebSocketPageGoes(t *testing.T) {
	url, ended := serveSessions(t, WebSocketOptions{}, Options{}, func(*Session) {})
	page := dial(t, url)
	send(t, page, wire.EncodeResize(wire.Size{Cols: 80, Rows: 24}))
	_ = page.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(time.Second))
	if s := waitEnded(t, ended); s.Status() != nil {
		t.Errorf("status %+v after the page went", s.Status())
	}
}

func TestUnansweredPingsEndTheSession(t *testing.T) {
	url, ended := serveSessions(t, WebSocketOptions{PingInterval: 20 * time.Millisecond, PongTimeout: 100 * time.Millisecond}, Options{CloseTimeout: 100 * time.Millisecond}, func(*Session) {})
	// The page connects and then never reads, so it never answers a ping.
	dial(t, url)
	waitEnded(t, ended)
}
