package sharehttp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// gatedExecutor runs a command that waits for its gate, then prints lines
// numbered from 1 to lines and echoes its input until the gate's second
// signal, and exits.
type gatedExecutor struct {
	gate  chan struct{}
	lines int
}

func (e *gatedExecutor) Exec(ctx context.Context, _, _, _ string, _ []string, opts remotecommand.StreamOptions) error {
	select {
	case <-e.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	var b bytes.Buffer
	for i := 1; i <= e.lines; i++ {
		fmt.Fprintf(&b, "line %d\r\n", i)
		if b.Len() > 4096 || i == e.lines {
			if _, err := opts.Stdout.Write(b.Bytes()); err != nil {
				return err
			}
			b.Reset()
		}
	}
	go func() { _, _ = io.Copy(opts.Stdout, opts.Stdin) }()
	select {
	case <-e.gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// page reads a session to its end, acknowledging output after delay.
type page struct {
	conn   *websocket.Conn
	mu     sync.Mutex // held for writes
	outMu  sync.Mutex // held for out
	out    bytes.Buffer
	status *wire.Status
	done   chan struct{}
	// viewers is the last count of pages the server announced.
	viewers atomic.Int32
}

func readPage(conn *websocket.Conn, delay time.Duration) *page {
	p := &page{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			_, m, err := conn.ReadMessage()
			if err != nil {
				return
			}
			switch m[0] {
			case wire.OpData:
				time.Sleep(delay)
				p.outMu.Lock()
				p.out.Write(m[1:])
				p.outMu.Unlock()
				_ = p.send(wire.EncodeAck(uint32(len(m) - 1)))
			case wire.OpStatus:
				p.status = &wire.Status{}
				_ = json.Unmarshal(m[1:], p.status)
			case wire.OpPresence:
				presence := &wire.Presence{}
				_ = json.Unmarshal(m[1:], presence)
				p.viewers.Store(int32(presence.Viewers))
			}
		}
	}()
	return p
}

// output returns what the page has received so far.
func (p *page) output() []byte {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	return bytes.Clone(p.out.Bytes())
}

func (p *page) send(m []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conn.WriteMessage(websocket.BinaryMessage, m)
}

// TestSharedSessionDeliversEverythingToEveryPage runs one command for a
// fast and a slow page: both get its whole output, in order, then its exit,
// and what either types reaches the command once.
func TestSharedSessionDeliversEverythingToEveryPage(t *testing.T) {
	f := newLinkFixture(t, nil)
	exec := &gatedExecutor{gate: make(chan struct{}), lines: 50000}
	f.server.exec = exec
	addr, _ := f.serve(t)
	fast := readPage(dialSession(t, addr, f.token), 0)
	slow := readPage(dialSession(t, addr, f.token), time.Millisecond)
	// Both pages are on the session before the command prints.
	for deadline := time.Now().Add(10 * time.Second); fast.viewers.Load() < 2 || slow.viewers.Load() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the two pages did not join")
		}
	}
	exec.gate <- struct{}{}
	for _, p := range []*page{fast, slow} {
		if err := p.send(wire.EncodeData([]byte("typed\n"))); err != nil {
			t.Fatal(err)
		}
	}
	// The command ends only once both pages have its echo of both inputs:
	// how long the output before it takes to reach the slow page depends
	// on the machine, not on what is tested.
	for deadline := time.Now().Add(60 * time.Second); bytes.Count(fast.output(), []byte("typed\n")) < 2 || bytes.Count(slow.output(), []byte("typed\n")) < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the input typed on the two pages was not echoed to both within 60 s")
		}
	}
	exec.gate <- struct{}{}
	var want bytes.Buffer
	for i := 1; i <= exec.lines; i++ {
		fmt.Fprintf(&want, "line %d\r\n", i)
	}
	for name, p := range map[string]*page{"fast": fast, "slow": slow} {
		select {
		case <-p.done:
		case <-time.After(60 * time.Second):
			t.Fatalf("the %s page was not closed", name)
		}
		out := p.output()
		if !bytes.HasPrefix(out, want.Bytes()) {
			t.Errorf("the %s page got %d bytes that are not the command's output from its start", name, len(out))
		}
		if echoed := bytes.Count(out[min(len(out), want.Len()):], []byte("typed\n")); echoed != 2 {
			t.Errorf("the %s page saw the input echoed %d times, want 2 (once per page)", name, echoed)
		}
		if p.status == nil || p.status.Reason != "Exited" {
			t.Errorf("the %s page ended with %+v, want Exited", name, p.status)
		}
	}
}
