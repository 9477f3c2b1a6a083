package sharehttp

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/kubeopencode/share/pkg/sharehttp/session"
	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// steppedExecutor writes each of its steps' output when the test lets it,
// one Write per chunk, and exits after the last. The last step waits for the
// page to resize its terminal to lastWidth instead: what the page sent
// before that resize has reached the server.
type steppedExecutor struct {
	steps     [][][]byte
	next      chan struct{}
	lastWidth uint16
	pause     time.Duration
}

func (e *steppedExecutor) Exec(ctx context.Context, _, _, _ string, _ []string, opts remotecommand.StreamOptions) error {
	for i, chunks := range e.steps {
		if i < len(e.steps)-1 {
			select {
			case <-e.next:
			case <-ctx.Done():
				return ctx.Err()
			}
		} else {
			for size := opts.TerminalSizeQueue.Next(); size == nil || size.Width != e.lastWidth; size = opts.TerminalSizeQueue.Next() {
				if size == nil {
					return ctx.Err()
				}
			}
		}
		for _, c := range chunks {
			if _, err := opts.Stdout.Write(c); err != nil {
				return err
			}
			time.Sleep(e.pause)
		}
	}
	return nil
}

// readData returns the next data message's output, skipping the other
// messages, or fails the test after within.
func readData(t *testing.T, conn *websocket.Conn, within time.Duration) []byte {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(within))
	for {
		_, m, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("no output within %s: %v", within, err)
		}
		if len(m) > 0 && m[0] == wire.OpData {
			return m[1:]
		}
	}
}

// TestOutputGathersWhileThePageIsBehind checks that output reaching a page
// that has not acknowledged what it was sent goes in one message rather
// than in the chunks the command wrote, and that a page which has taken its
// output gets the next chunk at once, without waiting for more.
func TestOutputGathersWhileThePageIsBehind(t *testing.T) {
	tuning := session.DefaultTuning()
	// Long enough that only gathered output can release what is held.
	tuning.CoalesceDelay = time.Hour
	coalesceBytes, coalesceBehind := tuning.CoalesceBytes, tuning.CoalesceBehind

	chunk := func(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
	var small [][]byte
	for range coalesceBytes / 1024 {
		small = append(small, chunk('b', 1024))
	}
	exec := &steppedExecutor{
		next:      make(chan struct{}),
		lastWidth: 100,
		pause:     time.Millisecond, // a PTY's pace: each chunk would go alone
		steps: [][][]byte{
			{chunk('a', 2*coalesceBehind)},
			small,
			{chunk('c', 10)},
		},
	}
	f := newLinkFixture(t, func(o *Options) { o.SessionTuning = tuning })
	f.server.exec = exec
	addr, _ := f.serve(t)
	conn := dialSession(t, addr, f.token)
	send := func(m []byte) {
		if err := conn.WriteMessage(websocket.BinaryMessage, m); err != nil {
			t.Fatal(err)
		}
	}

	// The page takes in the first output without acknowledging it.
	exec.next <- struct{}{}
	var got int
	for got < 2*coalesceBehind {
		got += len(readData(t, conn, 10*time.Second))
	}
	// The page is behind: the small chunks that follow come as one.
	exec.next <- struct{}{}
	if m := readData(t, conn, 10*time.Second); !bytes.Equal(m, bytes.Join(small, nil)) {
		t.Fatalf("a page behind got a message of %d bytes, want the %d chunks of %d bytes in one", len(m), len(small), len(small[0]))
	}
	// The page caught up and the output paused: output goes at once, held
	// by nothing. The resize after the ack starts the command's last
	// output.
	time.Sleep(10 * tuning.StreamGap)
	send(wire.EncodeAck(uint32(2*coalesceBehind + coalesceBytes)))
	send(wire.EncodeResize(wire.Size{Cols: exec.lastWidth, Rows: 24}))
	if m := readData(t, conn, 10*time.Second); string(m) != string(chunk('c', 10)) {
		t.Fatalf("a page that caught up got %q, want the next chunk alone", m)
	}
	status, _ := readUntilClosed(t, conn, 10*time.Second)
	if status == nil || status.Reason != "Exited" {
		t.Fatalf("the session ended with %+v, want Exited", status)
	}
}

// TestOutputGathersWhileItStreams checks that output which keeps coming in
// bulk gathers into full messages even for a page that acknowledges every
// message at once: the first piece goes alone, the ones after it wait for
// a message's worth.
func TestOutputGathersWhileItStreams(t *testing.T) {
	tuning := session.DefaultTuning()
	// Only gathered output or the command's end release what is held, and
	// the output streams however slowly the test machine runs it.
	tuning.CoalesceDelay, tuning.StreamGap = time.Hour, time.Hour

	pieceBytes := 2 << 10
	pieces := tuning.CoalesceBytes/pieceBytes + 1
	var output [][]byte
	for i := range pieces {
		output = append(output, bytes.Repeat([]byte{'a' + byte(i)}, pieceBytes))
	}
	exec := &steppedExecutor{
		lastWidth: 100,
		pause:     200 * time.Microsecond, // a PTY's pace: each piece would go alone
		steps:     [][][]byte{output},
	}
	f := newLinkFixture(t, func(o *Options) { o.SessionTuning = tuning })
	f.server.exec = exec
	addr, _ := f.serve(t)
	conn := dialSession(t, addr, f.token)
	if err := conn.WriteMessage(websocket.BinaryMessage, wire.EncodeResize(wire.Size{Cols: exec.lastWidth, Rows: 24})); err != nil {
		t.Fatal(err)
	}

	var got []byte
	var sizes []int
	for len(got) < pieces*pieceBytes {
		m := readData(t, conn, 10*time.Second)
		got = append(got, m...)
		sizes = append(sizes, len(m))
		// The page keeps up: it acknowledges each message as it comes.
		if err := conn.WriteMessage(websocket.BinaryMessage, wire.EncodeAck(uint32(len(m)))); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, bytes.Join(output, nil)) {
		t.Fatalf("the page got %d bytes of output, not the %d the command wrote, in order", len(got), pieces*pieceBytes)
	}
	// The first piece alone, a message's worth, and what was left when
	// the command ended.
	if len(sizes) > 3 {
		t.Fatalf("output streaming to a page that keeps up came in %d messages of %v bytes, want the %d pieces gathered into at most 3", len(sizes), sizes, pieces)
	}
	status, _ := readUntilClosed(t, conn, 10*time.Second)
	if status == nil || status.Reason != "Exited" {
		t.Fatalf("the session ended with %+v, want Exited", status)
	}
}
