package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	logsapi "k8s.io/component-base/logs/api/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	"github.com/kubeopencode/share/pkg/share"
)

// TestShareRefusesUpgrades tries agents/share as an attacker would with
// upgrade requests, through the kube-apiserver and directly to the
// aggregated API server.
//
// The kube-apiserver proxies a request whose Connection header names
// "upgrade" on a path of its own, and answers 503 when the aggregated server
// answers it with a success: a share enabled, rotated or disabled that way
// would be acted on while its caller is told that it failed. The server must
// refuse such a request with a Status before its storage runs, so that each
// request here is answered 400 BadRequest, as a Status, and neither the
// Agent nor its share Secret is written: nothing is enabled, rotated or
// disabled, and no token is shown.
//
// mallory may edit the namespace, so her requests pass authentication and
// authorization in both servers and reach the filter; what she must not get
// is a change that her client reports as a failure.
func TestShareRefusesUpgrades(t *testing.T) {
	logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged

	cp := shared.cp
	admin, err := client.New(cp.Config(), client.Options{Scheme: clientscheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	e := &apiEnv{t: t, cp: cp, admin: admin, nsA: newNamespace(t), dir: t.TempDir()}
	e.createObject(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubeopencode-system"}})
	for _, f := range []string{"serviceaccount.yaml", "rbac.yaml", "roles.yaml"} {
		e.createFromYAML(filepath.Join(shared.root, "artifacts", "apiserver", f))
	}
	serverKubeconfig := e.kubeconfig("server", e.userConfig(apiServerUser,
		"system:serviceaccounts", "system:serviceaccounts:kubeopencode-system", "system:authenticated"))
	e.port, e.caPEM = serveAggregatedAPI(t, admin, serverKubeconfig, nil, "--public-url="+apiPublicURL)

	const attacker = "mallory"
	e.users = map[string]*rest.Config{attacker: e.userConfig(attacker, "system:authenticated")}
	e.bind(e.nsA, attacker, "ClusterRole", "edit")
	e.waitFor("edit to grant create and delete on agents/share", func(ctx context.Context) (bool, error) {
		return e.allowed(ctx, attacker, e.nsA, "create", "agents", "share") && e.allowed(ctx, attacker, e.nsA, "delete", "agents", "share"), nil
	})
	const agentName = "target"
	e.createObject(apiTestAgent(e.nsA, agentName))
	path := apiSharePath(e.nsA, agentName)

	// Both routes use HTTP/1.1: HTTP/2 has no Connection or Upgrade header,
	// and Go's client refuses to send them over it.
	userTLS, err := rest.TLSConfigFor(e.users[attacker])
	if err != nil {
		t.Fatal(err)
	}
	userTLS.NextProtos = []string{"http/1.1"}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.caPEM)
	cert, err := tls.X509KeyPair(e.users[attacker].CertData, e.users[attacker].KeyData)
	if err != nil {
		t.Fatal(err)
	}
	routes := []struct {
		name string
		base string
		tls  *tls.Config
	}{
		{name: "through the kube-apiserver", base: strings.TrimSuffix(e.users[attacker].Host, "/"), tls: userTLS},
		{name: "directly", base: fmt.Sprintf("https://127.0.0.1:%d", e.port),
			tls: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}},
	}
	upgrades := []struct {
		name   string
		header http.Header
	}{
		// A WebSocket handshake, as kubectl's WebSocket executor opens an
		// exec.
		{name: "websocket", header: http.Header{
			"Connection":             {"Upgrade"},
			"Upgrade":                {"websocket"},
			"Sec-Websocket-Key":      {"dGhlIHNhbXBsZSBub25jZQ=="},
			"Sec-Websocket-Version":  {"13"},
			"Sec-Websocket-Protocol": {"v5.channel.k8s.io"},
		}},
		// kubectl's SPDY executor.
		{name: "SPDY", header: http.Header{
			"Connection":                {"Upgrade"},
			"Upgrade":                   {"SPDY/3.1"},
			"X-Stream-Protocol-Version": {"v4.channel.k8s.io"},
		}},
	}
	actions := []struct {
		name   string
		method string
		body   string
		// enabled is the state of the link before the request.
		enabled bool
	}{
		{name: "enable", method: http.MethodPost, body: `{"spec":{"expiresIn":"1h"}}`},
		{name: "rotate", method: http.MethodPost, body: `{"spec":{"rotate":true}}`, enabled: true},
		{name: "disable", method: http.MethodDelete, enabled: true},
		{name: "show", method: http.MethodGet, enabled: true},
	}

	for _, route := range routes {
		for _, up := range upgrades {
			for _, action := range actions {
				t.Run(route.name+"/"+up.name+"/"+action.name, func(t *testing.T) {
					// Set the link's state the ordinary way.
					if action.enabled {
						if code, out, err := e.request(attacker, http.MethodPost, path, `{}`); err != nil || code != http.StatusCreated {
							t.Fatalf("enabling: %d %v %s", code, err, out)
						}
					} else {
						if code, out, err := e.request(attacker, http.MethodDelete, path, ""); err != nil || code != http.StatusOK {
							t.Fatalf("disabling: %d %v %s", code, err, out)
						}
					}
					before := shareState(t, admin, e.nsA, agentName)

					code, body := upgradeRequest(t, route.tls, action.method, route.base+path, action.body, up.header)
					status := &metav1.Status{}
					if err := json.Unmarshal(body, status); err != nil || status.Kind != "Status" {
						t.Errorf("%s %s: answer %d is not a Status (%v): %.300s", action.method, up.name, code, err, body)
					}
					if code != http.StatusBadRequest || status.Code != http.StatusBadRequest || status.Reason != metav1.StatusReasonBadRequest {
						t.Errorf("%s %s: %d (Status %d %s), want 400 BadRequest: %.300s", action.method, up.name, code, status.Code, status.Reason, body)
					}
					if before.token != "" && strings.Contains(string(body), before.token) {
						t.Errorf("the answer shows the token")
					}
					if after := shareState(t, admin, e.nsA, agentName); after != before {
						t.Errorf("the refused request changed the share:\nbefore %+v\nafter  %+v", before, after)
					}
				})
			}
		}
	}
}

// shareSnapshot is what a change to a share writes: the Agent, whose
// spec.share says whether the link is on, and the share Secret with its
// token. Equal snapshots mean nothing was written.
type shareSnapshot struct {
	agentVersion  string
	enabled       bool
	secretVersion string // "" when there is no Secret
	token         string
}

func shareState(t *testing.T, c client.Client, ns, agent string) shareSnapshot {
	t.Helper()
	var s shareSnapshot
	a := &kubeopencodev1alpha1.Agent{}
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: agent}, a); err != nil {
		t.Fatal(err)
	}
	s.agentVersion = a.ResourceVersion
	s.enabled = a.Spec.Share != nil && a.Spec.Share.Enabled
	secret := &corev1.Secret{}
	err := c.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: share.SecretName(agent)}, secret)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		t.Fatal(err)
	default:
		s.secretVersion = secret.ResourceVersion
		s.token = string(secret.Data[share.SecretTokenKey])
	}
	return s
}

// upgradeRequest sends one request with the given upgrade headers over a
// connection of its own, which the kube-apiserver hijacks and closes, and
// returns the answer.
func upgradeRequest(t *testing.T, tlsConfig *tls.Config, method, url, body string, header http.Header) (int, []byte) {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return resp.StatusCode, out
}
