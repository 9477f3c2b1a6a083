package sharehttp

import (
	"github.com/gorilla/websocket"
	"k8s.io/apimachinery/pkg/types"
	"testing"
	"time"
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
	for deadline := time.Now().Add(10 * time.Second); f.server.sessionCount(types.NamespacedName{}) < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions open, want 2", f.server.sessionCount(types.NamespacedName{}))
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
