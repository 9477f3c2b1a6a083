package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/streaming/pkg/httpstream"

	"github.com/kubeopencode/share/pkg/sharehttp/podexec"
	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// A terminal is one interactive session under test, whatever carries it:
// the share WebSocket, a direct exec, the in-process floor or WeTTY. Output
// goes to the sink given when it was opened; write sends typed input.
type terminal interface {
	write(p []byte) error
	close()
	// done is closed when the session has ended.
	done() <-chan struct{}
}

// sink receives a session's output. It is called from one goroutine.
type sink func(p []byte)

// meter counts output and remembers when its first and last bytes came.
type meter struct {
	mu          sync.Mutex
	n           int64
	first, last time.Time
	// want is the byte count after which full is closed.
	want int64
	full chan struct{}
}

func newMeter(want int64) *meter { return &meter{want: want, full: make(chan struct{})} }

func (m *meter) add(p []byte) {
	now := time.Now()
	m.mu.Lock()
	if m.n == 0 {
		m.first = now
	}
	before := m.n
	m.n += int64(len(p))
	m.last = now
	if before < m.want && m.n >= m.want {
		close(m.full)
	}
	m.mu.Unlock()
}

// rate returns bytes per second from the first to the last byte.
func (m *meter) rate() (int64, float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.last.Sub(m.first).Seconds()
	if d <= 0 {
		return m.n, 0
	}
	return m.n, float64(m.n) / d
}

// readyMarker is what the benchmark's terminal commands print once the
// terminal is in raw mode without echo, so that a typed byte comes back once,
// from cat.
const readyMarker = "R"

// Commands of the sessions under test. The echo command ends after k typed
// bytes: a session ends by itself when its command exits, whereas a page
// that goes away leaves the shared session waiting a while for it to come
// back (and a later page would join it).
func echoCommand(k int) []string {
	// dd writes each byte as it reads it (head would hold its output in
	// stdio's line buffer on a terminal).
	return []string{"sh", "-c", "stty raw -echo; printf " + readyMarker + "; exec dd bs=1 count=" + strconv.Itoa(k) + " status=none"}
}

// idleCommand is the command of idle sessions: an echo that never ends.
func idleCommand() []string { return echoCommand(1 << 30) }

func catCommand(path string) []string {
	return []string{"sh", "-c", "stty raw -echo; exec cat " + path}
}

// Acks go as the page sends them (pkg/sharehttp/web/static/share.js): once
// 16 KiB are rendered, or 20 ms after the first unacknowledged output.
const (
	ackBatch = 16 << 10
	ackDelay = 20 * time.Millisecond
)

// wsTerminal is a client of the share listener's terminal WebSocket, speaking
// docs/wire-protocol.md as the page does: resize first, data, and acks in
// batches. The in-process floor speaks the same.
type wsTerminal struct {
	conn   *websocket.Conn
	wmu    sync.Mutex
	out    sink
	ended  chan struct{}
	code   atomic.Int64
	status atomic.Pointer[wire.Status]

	amu      sync.Mutex
	pending  uint32
	ackTimer *time.Timer
	messages atomic.Int64
}

// ack acknowledges n rendered bytes, batched as the page batches them.
func (t *wsTerminal) ack(n int) {
	t.amu.Lock()
	defer t.amu.Unlock()
	t.pending += uint32(n)
	if t.pending >= ackBatch {
		t.flushAckLocked()
		return
	}
	if t.ackTimer == nil {
		t.ackTimer = time.AfterFunc(ackDelay, func() {
			t.amu.Lock()
			defer t.amu.Unlock()
			t.flushAckLocked()
		})
	}
}

func (t *wsTerminal) flushAckLocked() {
	if t.ackTimer != nil {
		t.ackTimer.Stop()
		t.ackTimer = nil
	}
	if t.pending == 0 {
		return
	}
	// A failed ack is no reason to stop reading: the server may have closed
	// its side with output still on its way.
	_ = t.send(wire.EncodeAck(t.pending))
	t.pending = 0
}

// dialWS opens url (ws://host/s/<token>/terminal) with the page's Origin.
// It returns the HTTP status when the server refuses the upgrade.
func dialWS(ctx context.Context, url, origin string, out sink) (*wsTerminal, int, error) {
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 64 << 10, WriteBufferSize: 4 << 10}
	conn, resp, err := d.DialContext(ctx, url, http.Header{"Origin": []string{origin}})
	if err != nil {
		if resp != nil {
			return nil, resp.StatusCode, err
		}
		return nil, 0, err
	}
	t := &wsTerminal{conn: conn, out: out, ended: make(chan struct{})}
	if err := t.send(wire.EncodeResize(wire.Size{Cols: 120, Rows: 40})); err != nil {
		conn.Close()
		return nil, 0, err
	}
	go t.readLoop()
	return t, http.StatusSwitchingProtocols, nil
}

func (t *wsTerminal) send(b []byte) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	return t.conn.WriteMessage(websocket.BinaryMessage, b)
}

func (t *wsTerminal) readLoop() {
	defer close(t.ended)
	var buf bytes.Buffer
	for {
		_, r, err := t.conn.NextReader()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				t.code.Store(int64(ce.Code))
			}
			return
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return
		}
		b := buf.Bytes()
		if len(b) == 0 {
			continue
		}
		switch b[0] {
		case wire.OpData:
			t.messages.Add(1)
			t.out(b[1:])
			t.ack(len(b) - 1)
		case wire.OpStatus:
			st := &wire.Status{}
			if json.Unmarshal(b[1:], st) == nil {
				t.status.Store(st)
			}
		}
	}
}

func (t *wsTerminal) write(p []byte) error { return t.send(wire.EncodeData(p)) }

func (t *wsTerminal) close() {
	t.wmu.Lock()
	_ = t.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	t.wmu.Unlock()
	_ = t.conn.Close()
}

func (t *wsTerminal) done() <-chan struct{} { return t.ended }

// kubectlExecutor execs as kubectl exec does: client-go's WebSocket
// executor, falling back to its SPDY executor when the upgrade fails. It is
// the direct path of figures 1 and 2, what a user with credentials gets; the
// share listener has an exec client of its own (podexec.Client), whose
// URLs it uses.
type kubectlExecutor struct {
	config *rest.Config
	urls   *podexec.Client
}

func newKubectlExecutor(config *rest.Config) (*kubectlExecutor, error) {
	urls, err := podexec.NewClient(config)
	if err != nil {
		return nil, err
	}
	return &kubectlExecutor{config: config, urls: urls}, nil
}

// Exec implements podexec.Executor.
func (e *kubectlExecutor) Exec(ctx context.Context, namespace, pod, container string, command []string, opts remotecommand.StreamOptions) error {
	u := e.urls.URL(namespace, pod, container, command, opts)
	ws, err := remotecommand.NewWebSocketExecutor(e.config, "GET", u.String())
	if err != nil {
		return err
	}
	spdy, err := remotecommand.NewSPDYExecutor(e.config, "POST", u)
	if err != nil {
		return err
	}
	exec, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return err
	}
	return exec.StreamWithContext(ctx, opts)
}

// execTerminal is an exec through the kube-apiserver with a TTY: the direct
// path with kubectlExecutor, or the exec-holder's stream with the share
// listener's own executor.
type execTerminal struct {
	cancel context.CancelFunc
	stdin  *io.PipeWriter
	ended  chan struct{}
	err    error
}

// onceSize hands the terminal size over once, then waits for the end.
type onceSize struct {
	sent bool
	ctx  context.Context
}

func (q *onceSize) Next() *remotecommand.TerminalSize {
	if !q.sent {
		q.sent = true
		return &remotecommand.TerminalSize{Width: 120, Height: 40}
	}
	<-q.ctx.Done()
	return nil
}

type sinkWriter sink

func (w sinkWriter) Write(p []byte) (int, error) { w(p); return len(p), nil }

func startExec(ctx context.Context, ex podexec.Executor, namespace, pod string, command []string, out sink) *execTerminal {
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	t := &execTerminal{cancel: cancel, stdin: pw, ended: make(chan struct{})}
	go func() {
		defer close(t.ended)
		t.err = ex.Exec(ctx, namespace, pod, podexec.AgentContainer, command, remotecommand.StreamOptions{
			Stdin:             pr,
			Stdout:            sinkWriter(out),
			Tty:               true,
			TerminalSizeQueue: &onceSize{ctx: ctx},
		})
		// The stdin copy ends with EOF rather than an error.
		_ = pw.Close()
	}()
	return t
}

func (t *execTerminal) write(p []byte) error {
	_, err := t.stdin.Write(p)
	return err
}

func (t *execTerminal) close() {
	_ = t.stdin.Close()
	t.cancel()
}

func (t *execTerminal) done() <-chan struct{} { return t.ended }

// wettyTerminal is a client of WeTTY: Socket.IO (Engine.IO protocol 4) over
// a WebSocket, with the events its page uses: input, resize, and commit for
// its flow control; output comes as data events of text.
type wettyTerminal struct {
	conn   *websocket.Conn
	wmu    sync.Mutex
	out    sink
	ended  chan struct{}
	opened chan struct{}
}

func dialWetty(ctx context.Context, hostPort string, out sink) (*wettyTerminal, error) {
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 64 << 10}
	conn, _, err := d.DialContext(ctx, "ws://"+hostPort+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		return nil, err
	}
	t := &wettyTerminal{conn: conn, out: out, ended: make(chan struct{}), opened: make(chan struct{})}
	// Engine.IO open packet, then connect to the default namespace.
	if _, b, err := conn.ReadMessage(); err != nil || len(b) == 0 || b[0] != '0' {
		conn.Close()
		return nil, fmt.Errorf("wetty: no Engine.IO open packet (%v)", err)
	}
	if err := t.sendText("40"); err != nil {
		conn.Close()
		return nil, err
	}
	go t.readLoop()
	select {
	case <-t.opened:
	case <-t.ended:
		return nil, errors.New("wetty closed the connection before the namespace opened")
	case <-time.After(30 * time.Second):
		conn.Close()
		return nil, errors.New("wetty: namespace not opened within 30s")
	}
	if err := t.emit("resize", map[string]int{"cols": 120, "rows": 40}); err != nil {
		conn.Close()
		return nil, err
	}
	return t, nil
}

func (t *wettyTerminal) sendText(s string) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	return t.conn.WriteMessage(websocket.TextMessage, []byte(s))
}

func (t *wettyTerminal) emit(event string, arg any) error {
	b, err := json.Marshal([]any{event, arg})
	if err != nil {
		return err
	}
	return t.sendText("42" + string(b))
}

func (t *wettyTerminal) readLoop() {
	defer close(t.ended)
	opened := false
	for {
		_, b, err := t.conn.ReadMessage()
		if err != nil {
			return
		}
		s := string(b)
		switch {
		case s == "2": // Engine.IO ping
			if t.sendText("3") != nil {
				return
			}
		case strings.HasPrefix(s, "40"):
			if !opened {
				opened = true
				close(t.opened)
			}
		case strings.HasPrefix(s, "41"): // namespace disconnect
			return
		case strings.HasPrefix(s, "42"):
			var ev []json.RawMessage
			if json.Unmarshal(b[2:], &ev) != nil || len(ev) == 0 {
				continue
			}
			var name string
			_ = json.Unmarshal(ev[0], &name)
			switch name {
			case "data":
				var data string
				if len(ev) < 2 || json.Unmarshal(ev[1], &data) != nil {
					continue
				}
				t.out([]byte(data))
				_ = t.emit("commit", len(data))
			case "logout":
				// WeTTY says so as the command exits, which may be before
				// the last output it holds back (up to 2 ms) is sent: keep
				// reading until the connection closes.
			}
		}
	}
}

func (t *wettyTerminal) write(p []byte) error { return t.emit("input", string(p)) }

func (t *wettyTerminal) close() { _ = t.conn.Close() }

func (t *wettyTerminal) done() <-chan struct{} { return t.ended }

// echoer turns a session's output into a stream of byte counts, for round
// trips: the sink passes each output's length to the channel.
type echoer struct {
	ch chan int
}

func newEchoer() *echoer { return &echoer{ch: make(chan int, 1024)} }

func (e *echoer) sink(p []byte) {
	if len(p) > 0 {
		e.ch <- len(p)
	}
}

// waitReady waits until the session has printed the ready marker, and
// nothing else is pending.
func (e *echoer) waitReady(t terminal, timeout time.Duration) error {
	select {
	case <-e.ch:
	case <-t.done():
		return errors.New("the session ended before it was ready")
	case <-time.After(timeout):
		return fmt.Errorf("the session was not ready within %s", timeout)
	}
	return nil
}

// roundTrips types one byte n times and measures each echo.
func roundTrips(t terminal, e *echoer, n int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	key := []byte{'k'}
	for i := range n {
		start := time.Now()
		if err := t.write(key); err != nil {
			return out, fmt.Errorf("round trip %d: %w", i, err)
		}
		select {
		case <-e.ch:
		case <-t.done():
			return out, fmt.Errorf("round trip %d: the session ended", i)
		case <-time.After(10 * time.Second):
			return out, fmt.Errorf("round trip %d: no echo within 10s", i)
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}
