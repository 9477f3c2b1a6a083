package apiserver

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/registry/rest"
)

// upgradeHeaders are the ways a client asks to switch protocols: kubectl's
// SPDY executor, a WebSocket handshake as a browser sends it, and an Upgrade
// header that Connection does not name.
var upgradeHeaders = map[string]http.Header{
	"SPDY": {
		"Connection":                {"Upgrade"},
		"Upgrade":                   {"SPDY/3.1"},
		"X-Stream-Protocol-Version": {"v4.channel.k8s.io"},
	},
	"WebSocket": {
		"Connection":            {"keep-alive, Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
		"Sec-Websocket-Version": {"13"},
	},
	"Upgrade header alone": {
		"Upgrade": {"websocket"},
	},
}

// serve sends a request through the handler chain as alice, or anonymously,
// with the given headers.
func serve(t *testing.T, h http.Handler, method, path, body string, header http.Header, authenticated bool) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	if authenticated {
		req.Header.Set("Authorization", "Bearer alice")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	out, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(out)
}

func TestUpgradeRequestsRefused(t *testing.T) {
	h := newTestHandler(t)
	showToken := func(t *testing.T) string {
		t.Helper()
		code, body := do(t, h, http.MethodGet, sharePath, "", true)
		if code != http.StatusOK {
			t.Fatalf("show: %d %s", code, body)
		}
		var s struct {
			Status struct {
				Token string `json:"token"`
			} `json:"status"`
		}
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatal(err)
		}
		return s.Status.Token
	}

	tests := []struct {
		name   string
		method string
		path   string
		body   string
		// enabled is whether the link is enabled before the request.
		enabled bool
	}{
		{name: "enable", method: http.MethodPost, path: sharePath, body: `{}`},
		{name: "rotate", method: http.MethodPost, path: sharePath, body: `{"spec":{"rotate":true}}`, enabled: true},
		{name: "disable", method: http.MethodDelete, path: sharePath, enabled: true},
		{name: "show", method: http.MethodGet, path: sharePath, enabled: true},
		{name: "dry-run enable", method: http.MethodPost, path: sharePath + "?dryRun=All", body: `{}`},
		{name: "discovery", method: http.MethodGet, path: "/apis/subresources.kubeopencode.io/v1alpha1"},
		{name: "health", method: http.MethodGet, path: "/healthz"},
	}
	for _, tc := range tests {
		for kind, header := range upgradeHeaders {
			t.Run(tc.name+"/"+kind, func(t *testing.T) {
				if tc.enabled {
					if code, body := do(t, h, http.MethodPost, sharePath, `{}`, true); code != http.StatusCreated {
						t.Fatalf("enable: %d %s", code, body)
					}
				} else {
					if code, body := do(t, h, http.MethodDelete, sharePath, "", true); code != http.StatusOK {
						t.Fatalf("disable: %d %s", code, body)
					}
				}
				before := showToken(t)

				code, body := serve(t, h, tc.method, tc.path, tc.body, header, true)
				if code != http.StatusBadRequest {
					t.Errorf("%s %s with %s: %d, want 400: %s", tc.method, tc.path, kind, code, body)
				}
				status := &metav1.Status{}
				if err := json.Unmarshal([]byte(body), status); err != nil || status.Kind != "Status" || status.Reason != metav1.StatusReasonBadRequest || status.Code != http.StatusBadRequest {
					t.Errorf("the answer is not a BadRequest Status (%v): %s", err, body)
				}
				if before != "" && strings.Contains(body, before) {
					t.Errorf("the answer shows the token: %s", body)
				}
				if after := showToken(t); after != before {
					t.Errorf("the refused request changed the link's token from %q to %q", before, after)
				}
			})
		}
	}
}

// TestUpgradeRefusalAfterAuthentication checks that the refusal is inside the
// authentication filter: an anonymous caller learns no more than 401.
func TestUpgradeRefusalAfterAuthentication(t *testing.T) {
	h := newTestHandler(t)
	for kind, header := range upgradeHeaders {
		for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
			if code, body := serve(t, h, method, sharePath, `{}`, header, false); code != http.StatusUnauthorized {
				t.Errorf("anonymous %s with %s: %d, want 401: %s", method, kind, code, body)
			}
		}
	}
}

func TestWithUpgradeRefusal(t *testing.T) {
	tests := []struct {
		name    string
		header  http.Header
		refused bool
	}{
		{name: "plain request"},
		{name: "keep-alive", header: http.Header{"Connection": {"keep-alive"}}},
		{name: "close", header: http.Header{"Connection": {"close"}}},
		{name: "SPDY", header: http.Header{"Connection": {"Upgrade"}, "Upgrade": {"SPDY/3.1"}}, refused: true},
		{name: "WebSocket", header: http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}, refused: true},
		{name: "lower case token in a list", header: http.Header{"Connection": {"keep-alive, upgrade"}, "Upgrade": {"websocket"}}, refused: true},
		{name: "token in a second Connection header", header: http.Header{"Connection": {"keep-alive", "Upgrade"}}, refused: true},
		{name: "Connection without Upgrade", header: http.Header{"Connection": {"Upgrade"}}, refused: true},
		{name: "Upgrade without Connection", header: http.Header{"Upgrade": {"h2c"}}, refused: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			served := false
			h := WithUpgradeRefusal(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				served = true
				w.WriteHeader(http.StatusCreated)
			}), Codecs)
			req := httptest.NewRequest(http.MethodPost, sharePath, strings.NewReader(`{}`))
			for k, v := range tc.header {
				req.Header[k] = v
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if served == tc.refused {
				t.Errorf("the wrapped handler ran: %v, want %v", served, !tc.refused)
			}
			want := http.StatusCreated
			if tc.refused {
				want = http.StatusBadRequest
			}
			if rec.Code != want {
				t.Errorf("answered %d, want %d: %s", rec.Code, want, rec.Body)
			}
		})
	}
}

// TestNoStorageServesUpgrades guards WithUpgradeRefusal's premise. A storage
// that implements rest.Connecter gets a CONNECT route that only works over
// an upgraded connection, and a rest.Watcher can be watched over a
// WebSocket; either would be refused by the filter. Adding one is a decision
// to narrow the filter, not something to happen by a method's name.
func TestNoStorageServesUpgrades(t *testing.T) {
	storage := (&ExtraConfig{}).storage()
	if len(storage) == 0 {
		t.Fatal("no storage")
	}
	for path, s := range storage {
		if _, ok := s.(rest.Connecter); ok {
			t.Errorf("%s implements rest.Connecter", path)
		}
		if _, ok := s.(rest.Watcher); ok {
			t.Errorf("%s implements rest.Watcher", path)
		}
	}
}
