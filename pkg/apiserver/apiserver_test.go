package apiserver

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	"github.com/kubeopencode/share/pkg/share/sharetest"
)

const sharePath = "/apis/subresources.kubeopencode.io/v1alpha1/namespaces/default/agents/team-agent/share"

// newTestHandler builds the server over a fake cluster holding one Agent and
// returns its full handler chain. Requests with "Authorization: Bearer alice"
// are alice's; all others are anonymous, as the delegating authenticator
// makes them.
func newTestHandler(t *testing.T) http.Handler {
	t.Helper()
	scheme := clientscheme.Scheme
	agent := &kubeopencodev1alpha1.Agent{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "team-agent", UID: "uid-1"},
		Spec:       kubeopencodev1alpha1.AgentSpec{Image: "busybox"},
	}

	generic := NewGenericConfig()
	generic.ExternalAddress = "127.0.0.1:8443"
	generic.LoopbackClientConfig = &rest.Config{Host: "https://127.0.0.1:8443"}
	generic.Authentication.Authenticator = authenticator.RequestFunc(func(req *http.Request) (*authenticator.Response, bool, error) {
		if req.Header.Get("Authorization") == "Bearer alice" {
			return &authenticator.Response{User: &user.DefaultInfo{Name: "alice", Groups: []string{user.AllAuthenticated}}}, true, nil
		}
		return &authenticator.Response{User: &user.DefaultInfo{Name: user.Anonymous, Groups: []string{user.AllUnauthenticated}}}, true, nil
	})
	generic.Authorization.Authorizer = authorizerfactory.NewAlwaysAllowAuthorizer()
	c := &Config{
		GenericConfig: generic,
		Extra: ExtraConfig{
			Client:           fake.NewClientBuilder().WithScheme(scheme).WithObjects(agent).Build(),
			PublicURL:        "https://share.example.com",
			MaxShareDuration: 48 * time.Hour,
			Clock:            clocktesting.NewFakePassiveClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)),
			Keys:             sharetest.Keys(),
		},
	}
	s, err := c.Complete().New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.GenericAPIServer.Destroy)
	// PrepareRun installs the health checks and OpenAPI documents; the
	// handler is served without starting a listener.
	s.GenericAPIServer.PrepareRun()
	return s.GenericAPIServer.Handler
}

func do(t *testing.T, h http.Handler, method, path, body string, authenticated bool) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if authenticated {
		req.Header.Set("Authorization", "Bearer alice")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	out, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(out)
}

func TestShareRequests(t *testing.T) {
	h := newTestHandler(t)
	tests := []struct {
		name     string
		method   string
		path     string
		body     string
		code     int
		contains []string
	}{
		{name: "create", method: http.MethodPost, path: sharePath, body: `{"spec":{"expiresIn":"24h","allowedIPs":["10.0.0.0/8"]}}`, code: http.StatusCreated,
			contains: []string{`"kind":"AgentShare"`, `"token":"`, `"path":"/s/`, `"url":"https://share.example.com/s/`, `"expiresAt":"2026-05-02T12:00:00Z"`}},
		{name: "create with kind and name", method: http.MethodPost, path: sharePath,
			body: `{"apiVersion":"subresources.kubeopencode.io/v1alpha1","kind":"AgentShare","metadata":{"name":"team-agent"},"spec":{}}`, code: http.StatusCreated,
			contains: []string{`"expiresAt":"2026-05-03T12:00:00Z"`}},
		{name: "show", method: http.MethodGet, path: sharePath, code: http.StatusOK, contains: []string{`"token":"`}},
		{name: "unknown field", method: http.MethodPost, path: sharePath, body: `{"spec":{"allowedIps":["10.0.0.0/8"]}}`, code: http.StatusBadRequest,
			contains: []string{`unknown field \"spec.allowedIps\"`}},
		{name: "duplicate field", method: http.MethodPost, path: sharePath, body: `{"spec":{"rotate":false,"rotate":true}}`, code: http.StatusBadRequest,
			contains: []string{`duplicate field \"spec.rotate\"`}},
		{name: "unknown field ignored on request", method: http.MethodPost, path: sharePath + "?fieldValidation=Ignore", body: `{"spec":{"allowedIps":["10.0.0.0/8"]}}`, code: http.StatusCreated},
		{name: "unparsable expiry", method: http.MethodPost, path: sharePath, body: `{"spec":{"expiresAt":"tomorrow"}}`, code: http.StatusBadRequest, contains: []string{`tomorrow`}},
		{name: "unparsable duration", method: http.MethodPost, path: sharePath, body: `{"spec":{"expiresIn":"a while"}}`, code: http.StatusBadRequest, contains: []string{`a while`}},
		{name: "bad CIDR", method: http.MethodPost, path: sharePath, body: `{"spec":{"allowedIPs":["10.0.0.0/33"]}}`, code: http.StatusUnprocessableEntity,
			contains: []string{`"reason":"Invalid"`, `"field":"spec.allowedIPs[0]"`}},
		{name: "past expiry", method: http.MethodPost, path: sharePath, body: `{"spec":{"expiresAt":"2020-01-01T00:00:00Z"}}`, code: http.StatusUnprocessableEntity,
			contains: []string{`"field":"spec.expiresAt"`}},
		{name: "both expiries", method: http.MethodPost, path: sharePath, body: `{"spec":{"expiresAt":"2026-05-01T13:00:00Z","expiresIn":"1h"}}`, code: http.StatusUnprocessableEntity,
			contains: []string{`"field":"spec.expiresIn"`}},
		{name: "over the cap", method: http.MethodPost, path: sharePath, body: `{"spec":{"expiresIn":"72h"}}`, code: http.StatusUnprocessableEntity,
			contains: []string{`"field":"spec.expiresIn"`}},
		{name: "another namespace in the body", method: http.MethodPost, path: sharePath, body: `{"metadata":{"namespace":"other"}}`, code: http.StatusBadRequest},
		{name: "unknown agent", method: http.MethodPost, path: strings.Replace(sharePath, "team-agent", "nope", 1), body: `{}`, code: http.StatusNotFound,
			contains: []string{`agents.kubeopencode.io \"nope\" not found`}},
		{name: "unknown agent show", method: http.MethodGet, path: strings.Replace(sharePath, "team-agent", "nope", 1), code: http.StatusNotFound},
		{name: "disable", method: http.MethodDelete, path: sharePath, code: http.StatusOK, contains: []string{`"reason":"Disabled"`}},
		{name: "show disabled", method: http.MethodGet, path: sharePath, code: http.StatusOK, contains: []string{`"active":false`}},
		{name: "no verbs on the parent", method: http.MethodGet, path: "/apis/subresources.kubeopencode.io/v1alpha1/namespaces/default/agents/team-agent", code: http.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, h, tc.method, tc.path, tc.body, true)
			if code != tc.code {
				t.Fatalf("%s %s: %d, want %d: %s", tc.method, tc.path, code, tc.code, body)
			}
			for _, s := range tc.contains {
				if !strings.Contains(body, s) {
					t.Errorf("answer lacks %s: %s", s, body)
				}
			}
			if tc.name == "show disabled" && strings.Contains(body, `"token"`) {
				t.Errorf("a disabled link shows a token: %s", body)
			}
		})
	}
}

func TestAnonymousOnlyOnHealthPaths(t *testing.T) {
	h := newTestHandler(t)
	for _, path := range []string{"/readyz", "/livez", "/healthz"} {
		// The checks fail here, where the server has not run its post-start
		// hooks; what matters is that the anonymous request got through.
		if code, body := do(t, h, http.MethodGet, path, "", false); code == http.StatusUnauthorized || code == http.StatusForbidden {
			t.Errorf("anonymous GET %s: %d: %s", path, code, body)
		}
	}
	for _, path := range []string{sharePath, "/readyz/ping", "/apis", "/openapi/v2", "/version"} {
		if code, body := do(t, h, http.MethodGet, path, "", false); code != http.StatusUnauthorized {
			t.Errorf("anonymous GET %s: %d, want 401: %s", path, code, body)
		}
	}
	if code, body := do(t, h, http.MethodPost, sharePath, "{}", false); code != http.StatusUnauthorized {
		t.Errorf("anonymous POST: %d, want 401: %s", code, body)
	}
}

func TestDiscoveryAndOpenAPI(t *testing.T) {
	h := newTestHandler(t)

	code, body := do(t, h, http.MethodGet, "/apis/subresources.kubeopencode.io/v1alpha1", "", true)
	if code != http.StatusOK {
		t.Fatalf("discovery: %d %s", code, body)
	}
	var list metav1.APIResourceList
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatal(err)
	}
	verbs := map[string][]string{}
	for _, r := range list.APIResources {
		if !r.Namespaced {
			t.Errorf("%s is not namespaced", r.Name)
		}
		verbs[r.Name] = r.Verbs
	}
	want := map[string][]string{"agents": {}, "agents/share": {"create", "delete", "get"}}
	if diff := cmp.Diff(want, verbs); diff != "" {
		t.Errorf("resources and verbs (-want +got):\n%s", diff)
	}

	for _, path := range []string{"/openapi/v2", "/openapi/v3/apis/subresources.kubeopencode.io/v1alpha1"} {
		code, body := do(t, h, http.MethodGet, path, "", true)
		if code != http.StatusOK || !strings.Contains(body, "AgentShare") || !strings.Contains(body, "/agents/{name}/share") {
			t.Errorf("GET %s: %d, AgentShare and the share path expected: %.300s", path, code, body)
		}
	}
}

func TestWithStrictFieldValidation(t *testing.T) {
	tests := []struct {
		method, query, want string
	}{
		{method: http.MethodPost, want: "Strict"},
		{method: http.MethodPut, query: "dryRun=All", want: "Strict"},
		{method: http.MethodPatch, want: "Strict"},
		{method: http.MethodPost, query: "fieldValidation=Warn", want: "Warn"},
		{method: http.MethodGet, want: ""},
		{method: http.MethodDelete, want: ""},
	}
	for _, tc := range tests {
		var got string
		h := WithStrictFieldValidation(http.HandlerFunc(func(_ http.ResponseWriter, req *http.Request) {
			got = req.URL.Query().Get("fieldValidation")
		}))
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(tc.method, sharePath+"?"+tc.query, nil))
		if got != tc.want {
			t.Errorf("%s ?%s: fieldValidation %q, want %q", tc.method, tc.query, got, tc.want)
		}
	}
}
