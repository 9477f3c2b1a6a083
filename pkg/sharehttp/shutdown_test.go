package sharehttp

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/apimachinery/pkg/types"
)

// A listener that stops (a rolling update) tells each open session so, with
// close code 1001, and the page offers to reconnect.
func TestShutdownEndsSessionsWithServerShutdown(t *testing.T) {
	f := newLinkFixture(t, nil)
	addr, stop := f.serve(t)
	conns := []*websocket.Conn{}
	for range 2 {
		conns = append(conns, dialSession(t, addr, f.token))
	}
	// The pages of a link share one command.
	<-f.exec.started
	for deadline := time.Now().Add(10 * time.Second); f.server.pageCount(types.NamespacedName{}) < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions open, want 2", f.server.pageCount(types.NamespacedName{}))
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for i, conn := range conns {
		status, code := readUntilClosed(t, conn, 10*time.Second)
		if code != closeGoingAway || status == nil || status.Reason != "ServerShutdown" {
			t.Errorf("session %d ended with %d %+v, want 1001 ServerShutdown", i, code, status)
		}
	}
}

// A client that sends its request headers a byte at a time holds the HTTP
// server's shutdown for seconds; open sessions must not wait for it to
// learn that the listener is going.
func TestShutdownClosesSessionsWithoutWaitingForSlowClients(t *testing.T) {
	f := newLinkFixture(t, nil)
	addr, stop := f.serve(t)
	conn := dialSession(t, addr, f.token)
	<-f.exec.started
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	go func() {
		w := bufio.NewWriter(slow)
		for _, b := range []byte("GET /s/" + f.token + " HTTP/1.1\r\nHost: " + addr + "\r\nX-Slow: " + strings.Repeat("a", 100)) {
			if w.WriteByte(b) != nil || w.Flush() != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	time.Sleep(200 * time.Millisecond)
	stopped := make(chan error, 1)
	start := time.Now()
	go func() { stopped <- stop() }()
	status, code := readUntilClosed(t, conn, 10*time.Second)
	if took := time.Since(start); took > time.Second {
		t.Errorf("the session was closed %s after the listener began to stop, want within 1s", took.Round(time.Millisecond))
	}
	if code != closeGoingAway || status == nil || status.Reason != "ServerShutdown" {
		t.Errorf("the session ended with %d %+v, want 1001 ServerShutdown", code, status)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}
