package podexec

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
)

// TestClientFallsBackToSPDY checks that the SPDY executor, made only when
// needed, is still tried when the WebSocket upgrade fails, and only then.
func TestClientFallsBackToSPDY(t *testing.T) {
	tests := []struct {
		name string
		// webSocket is how the server answers the WebSocket upgrade.
		webSocket int
		want      []string
	}{
		{name: "an upgrade refused falls back to SPDY", webSocket: http.StatusBadRequest, want: []string{"GET websocket", "POST SPDY/3.1"}},
		{name: "any other failure does not", webSocket: http.StatusOK, want: []string{"GET websocket"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var seen []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				seen = append(seen, r.Method+" "+r.Header.Get("Upgrade"))
				mu.Unlock()
				if !strings.HasSuffix(r.URL.Path, "/namespaces/team/pods/agent-pod/exec") {
					t.Errorf("request for %s", r.URL.Path)
				}
				if r.Method == http.MethodGet {
					if tt.webSocket == http.StatusOK {
						// Not a WebSocket answer at all: the connection drops.
						hj, _ := w.(http.Hijacker)
						conn, _, _ := hj.Hijack()
						_ = conn.Close()
						return
					}
					w.WriteHeader(tt.webSocket)
					return
				}
				w.WriteHeader(http.StatusForbidden)
			}))
			defer srv.Close()
			ex, err := NewClient(&rest.Config{Host: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			err = ex.Exec(context.Background(), "team", "agent-pod", AgentContainer, []string{"sh"}, remotecommand.StreamOptions{
				Stdout: &strings.Builder{}, Tty: true,
			})
			if err == nil {
				t.Fatal("Exec succeeded against a server that serves no exec")
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(seen, tt.want) {
				t.Errorf("the server saw %q, want %q", seen, tt.want)
			}
		})
	}
}
