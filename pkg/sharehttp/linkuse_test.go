package sharehttp

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/sharetest"
)

func TestValidUpgrade(t *testing.T) {
	valid := map[string]string{"Connection": "keep-alive, Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
	tests := []struct {
		name   string
		method string
		change map[string]string // "" deletes
		want   bool
	}{
		{name: "a browser's handshake", want: true},
		{name: "HEAD", method: http.MethodHead},
		{name: "no Connection upgrade", change: map[string]string{"Connection": "keep-alive"}},
		{name: "no Upgrade", change: map[string]string{"Upgrade": ""}},
		{name: "another version", change: map[string]string{"Sec-WebSocket-Version": "8"}},
		{name: "no key", change: map[string]string{"Sec-WebSocket-Key": ""}},
		{name: "a key not in base64", change: map[string]string{"Sec-WebSocket-Key": "not base64!"}},
		{name: "a key of 15 bytes", change: map[string]string{"Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAA"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			req := httptest.NewRequest(method, "/s/x/terminal", nil)
			for k, v := range valid {
				req.Header.Set(k, v)
			}
			for k, v := range tc.change {
				if v == "" {
					req.Header.Del(k)
				} else {
					req.Header.Set(k, v)
				}
			}
			if got := validUpgrade(req); got != tc.want {
				t.Errorf("validUpgrade = %v, want %v", got, tc.want)
			}
		})
	}
}

// limitLink makes the fixture's link a one-time link whose uses the
// listener counts on the fake API server.
func (f *linkFixture) limitLink(t *testing.T, maxUses int32) {
	t.Helper()
	agent := &v1alpha1.Agent{}
	if err := f.client.Get(t.Context(), client.ObjectKeyFromObject(f.agent), agent); err != nil {
		t.Fatal(err)
	}
	agent.Spec.Share.MaxUses = ptr.To(maxUses)
	if err := f.client.Update(t.Context(), agent); err != nil {
		t.Fatal(err)
	}
}

// uses returns the uses the link's Secret records.
func (f *linkFixture) uses(t *testing.T) int32 {
	t.Helper()
	secret := sharetest.Secret(f.agent, "", f.token)
	if err := f.client.Get(t.Context(), client.ObjectKeyFromObject(secret), secret); err != nil {
		t.Fatal(err)
	}
	return share.Uses(secret)
}

// A one-time link is spent only by a terminal that opens: neither a refused
// handshake, nor a refusal past the session limit, nor a connection that
// drops before its terminal starts uses it up.
func TestOneTimeLinkIsUsedOnlyByATerminalThatOpens(t *testing.T) {
	tests := []struct {
		name    string
		attempt func(t *testing.T, f *linkFixture, addr string) (code int)
	}{
		{
			name: "an upgrade without Sec-WebSocket-Key",
			attempt: func(t *testing.T, f *linkFixture, addr string) int {
				return rawHandshake(t, addr, f.token, map[string]string{"Sec-WebSocket-Key": ""})
			},
		},
		{
			name: "a handshake past the per-Agent session limit",
			attempt: func(t *testing.T, f *linkFixture, addr string) int {
				release, ok := f.server.slots.Acquire(types.NamespacedName{Namespace: f.agent.Namespace, Name: f.agent.Name})
				if !ok {
					t.Fatal("no slot")
				}
				defer release()
				return rawHandshake(t, addr, f.token, nil)
			},
		},
		{
			name: "a connection that drops before its terminal starts",
			attempt: func(t *testing.T, f *linkFixture, addr string) int {
				conn, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/s/"+f.token+"/terminal", nil)
				if err != nil {
					t.Fatalf("dialing: %v", err)
				}
				conn.Close()
				// The use comes back once the server has seen the close.
				deadline := time.Now().Add(10 * time.Second)
				for f.uses(t) != 0 {
					if time.Now().After(deadline) {
						t.Fatalf("the use was not given back: %d uses", f.uses(t))
					}
					time.Sleep(10 * time.Millisecond)
				}
				return resp.StatusCode
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newLinkFixture(t, func(o *Options) { o.MaxSessionsPerAgent = 1 })
			f.limitLink(t, 1)
			addr, _ := f.serve(t)
			code := tc.attempt(t, f, addr)
			t.Logf("the attempt answered %d", code)
			if n := f.uses(t); n != 0 {
				t.Fatalf("the attempt left %d uses", n)
			}
			// The person it was meant for opens it, once.
			dialSession(t, addr, f.token)
			<-f.exec.started
			if n := f.uses(t); n != 1 {
				t.Fatalf("%d uses after the terminal opened, want 1", n)
			}
			if code := rawHandshake(t, addr, f.token, nil); code != http.StatusGone {
				t.Fatalf("a second terminal answers %d, want 410", code)
			}
		})
	}
}

// rawHandshake sends a browser's WebSocket handshake for a link's terminal,
// changed by change ("" deletes a header), and returns the status.
func rawHandshake(t *testing.T, addr, token string, change map[string]string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/s/"+token+"/terminal", nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
		"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": "http://" + addr} {
		req.Header.Set(k, v)
	}
	for k, v := range change {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
