package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	logsapi "k8s.io/component-base/logs/api/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apiserverapp "github.com/kubeopencode/share/cmd/aggregated-apiserver/app"
	"github.com/kubeopencode/share/internal/testenv"
	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

const (
	// apiServerUser is the identity the aggregated API server runs as, bound
	// by artifacts/apiserver/rbac.yaml unchanged: the tests prove the shipped
	// RBAC is enough.
	apiServerUser = "system:serviceaccount:kubeopencode-system:kubeopencode-apiserver"
	// apiPublicURL is the server's --public-url.
	apiPublicURL = "https://share.example.test"
	// apiMaxShare is the server's --max-share-duration.
	apiMaxShare = 48 * time.Hour
)

// TestAggregatedAPIServer runs the aggregated API server in-process through
// its cobra command, registers it with a real APIService on a real control
// plane (etcd, kube-apiserver with the aggregation layer,
// kube-controller-manager for ClusterRole aggregation) and drives the
// agents/share subresource through the kube-apiserver with kubectl and with
// the users' own clients. The subtests share the control plane.
func TestAggregatedAPIServer(t *testing.T) {
	// The command applies the logging configuration each time it starts.
	logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged

	cp := shared.cp
	admin, err := client.New(cp.Config(), client.Options{Scheme: clientscheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	e := &apiEnv{t: t, cp: cp, admin: admin, nsA: newNamespace(t), nsB: newNamespace(t), dir: t.TempDir()}
	e.createObject(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubeopencode-system"}})
	for _, f := range []string{"serviceaccount.yaml", "rbac.yaml", "roles.yaml"} {
		e.createFromYAML(filepath.Join(shared.root, "artifacts", "apiserver", f))
	}

	// The server runs as its ServiceAccount would, with the shipped RBAC only.
	serverKubeconfig := e.kubeconfig("server", e.userConfig(apiServerUser,
		"system:serviceaccounts", "system:serviceaccounts:kubeopencode-system", "system:authenticated"))
	e.port, e.caPEM = serveAggregatedAPI(t, admin, serverKubeconfig, nil,
		"--public-url="+apiPublicURL,
		"--max-share-duration="+apiMaxShare.String(),
	)

	// Users. alice may edit team-a and nothing in team-b; victor may view
	// team-a; gina may only get agents/share in team-a. The roles are the
	// built-in ones, into which the shipped ClusterRoles aggregate.
	e.users = map[string]*rest.Config{}
	for _, u := range []string{"alice", "victor", "gina"} {
		e.users[u] = e.userConfig(u, "system:authenticated")
	}
	e.bind(e.nsA, "alice", "ClusterRole", "edit")
	e.bind(e.nsA, "victor", "ClusterRole", "view")
	e.createObject(&rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.nsA, Name: "share-viewer"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{subresourcesv1alpha1.GroupName}, Resources: []string{"agents/share"}, Verbs: []string{"get"},
		}},
	})
	e.bind(e.nsA, "gina", "Role", "share-viewer")
	// kube-controller-manager aggregates kubeopencode-share-editor into edit.
	e.waitFor("edit to grant create on agents/share", func(ctx context.Context) (bool, error) {
		return e.allowed(ctx, "alice", e.nsA, "create", "agents", "share"), nil
	})

	for _, ns := range []string{e.nsA, e.nsB} {
		e.createObject(apiTestAgent(ns, "team-agent"))
	}
	e.createObject(apiTestAgent(e.nsA, "race-agent"))

	t.Run("kubectl enables shows and disables a link", e.testKubectl)
	t.Run("RBAC governs the subresource", e.testRBAC)
	t.Run("bad input answers with its code and field path", e.testBadInput)
	t.Run("concurrent enables yield one token", e.testConcurrentEnables)
	t.Run("forged identity headers are refused", e.testForgedHeaders)
	t.Run("discovery OpenAPI and readyz are served", e.testDiscovery)
	t.Run("kubeoc shares shows rotates unshares and lists", e.testKubeoc)
}

func (e *apiEnv) testKubectl(t *testing.T) {
	path := apiSharePath(e.nsA, "team-agent")
	file := e.file("share.json", `{"spec":{"expiresIn":"24h","allowedIPs":["10.0.0.0/8","192.168.1.7"]}}`)

	out := e.kubectlOK(t, "alice", "create", "--raw", path, "-f", file)
	created := apiDecodeShare(t, out)
	token := created.Status.Token
	if !share.ValidToken(token) {
		t.Fatalf("create printed no token: %s", out)
	}
	if created.Status.Path != "/s/"+token || created.Status.URL != apiPublicURL+"/s/"+token {
		t.Errorf("path %q, url %q", created.Status.Path, created.Status.URL)
	}
	if created.Status.ExpiresAt == nil || time.Until(created.Status.ExpiresAt.Time) > 24*time.Hour || time.Until(created.Status.ExpiresAt.Time) < 23*time.Hour {
		t.Errorf("expiresAt %v, want about 24h from now", created.Status.ExpiresAt)
	}
	if got := e.secretToken(t, e.nsA, "team-agent"); got != token {
		t.Errorf("the share Secret holds %q, create returned %q", got, token)
	}
	agent := e.agent(t, e.nsA, "team-agent")
	if s := agent.Spec.Share; s == nil || !s.Enabled || len(s.AllowedIPs) != 2 || s.ExpiresAt == nil {
		t.Errorf("Agent spec.share = %+v", s)
	}

	shown := apiDecodeShare(t, e.kubectlOK(t, "alice", "get", "--raw", path))
	if shown.Status.Token != token {
		t.Errorf("get shows token %q, want %q", shown.Status.Token, token)
	}
	again := apiDecodeShare(t, e.kubectlOK(t, "alice", "create", "--raw", path, "-f", file))
	if again.Status.Token != token {
		t.Errorf("enabling an enabled link changed its token")
	}

	disabled := apiDecodeShare(t, e.kubectlOK(t, "alice", "delete", "--raw", path))
	if disabled.Status.Active || disabled.Status.Reason != share.ReasonDisabled || disabled.Status.Token != "" {
		t.Errorf("delete answered %+v", disabled.Status)
	}
	// The Secret is gone when the call returns.
	if got := e.secretToken(t, e.nsA, "team-agent"); got != "" {
		t.Errorf("the share Secret outlived the disable")
	}
	shown = apiDecodeShare(t, e.kubectlOK(t, "alice", "get", "--raw", path))
	if shown.Status.Token != "" || shown.Status.Active {
		t.Errorf("a disabled link shows %+v", shown.Status)
	}
	reenabled := apiDecodeShare(t, e.kubectlOK(t, "alice", "create", "--raw", path, "-f", file))
	if reenabled.Status.Token == token || !share.ValidToken(reenabled.Status.Token) {
		t.Errorf("re-enabling did not make a new token")
	}
}

func (e *apiEnv) testRBAC(t *testing.T) {
	file := e.file("empty.json", `{}`)
	enabled := apiDecodeShare(t, e.kubectlOK(t, "alice", "create", "--raw", apiSharePath(e.nsA, "team-agent"), "-f", file))
	token := enabled.Status.Token

	forbidden := func(user, ns string, args ...string) {
		t.Helper()
		out, stderr, err := e.kubectl(user, args...)
		if err == nil || !strings.Contains(stderr, "Forbidden") {
			t.Errorf("%s: kubectl %s in %s: err %v, stderr %q, want Forbidden", user, strings.Join(args, " "), ns, err, stderr)
		}
		if strings.Contains(out+stderr, token) {
			t.Errorf("%s: kubectl %s shows the token", user, strings.Join(args, " "))
		}
	}
	verbs := func(ns string) [][]string {
		p := apiSharePath(ns, "team-agent")
		return [][]string{{"create", "--raw", p, "-f", file}, {"get", "--raw", p}, {"delete", "--raw", p}}
	}

	// alice may edit team-a only.
	for _, args := range verbs(e.nsB) {
		forbidden("alice", e.nsB, args...)
	}
	// victor may view team-a, which does not include share links.
	for _, args := range verbs(e.nsA) {
		forbidden("victor", e.nsA, args...)
	}
	forbidden("victor", e.nsA, "get", "secret", share.SecretName("team-agent"), "-n", e.nsA)
	agents := e.kubectlOK(t, "victor", "get", "agents", "-n", e.nsA, "-o", "yaml")
	if !strings.Contains(agents, "apiVersion: kubeopencode.io/v1alpha1") || !strings.Contains(agents, "name: team-agent") {
		t.Errorf("victor's kubectl get agents did not list the Agents of the CRD:\n%s", agents)
	}
	if strings.Contains(agents, token) {
		t.Errorf("kubectl get agents -o yaml shows the token")
	}
	// gina may show but not enable or disable.
	shown := apiDecodeShare(t, e.kubectlOK(t, "gina", "get", "--raw", apiSharePath(e.nsA, "team-agent")))
	if shown.Status.Token != token {
		t.Errorf("gina sees token %q, want %q", shown.Status.Token, token)
	}
	for _, args := range [][]string{verbs(e.nsA)[0], verbs(e.nsA)[2]} {
		out, stderr, err := e.kubectl("gina", args...)
		if err == nil || !strings.Contains(stderr, "Forbidden") {
			t.Errorf("gina: kubectl %s: err %v, stdout %q, stderr %q, want Forbidden", strings.Join(args, " "), err, out, stderr)
		}
	}
	if got := e.secretToken(t, e.nsA, "team-agent"); got != token {
		t.Errorf("a forbidden request changed the link")
	}
}

func (e *apiEnv) testBadInput(t *testing.T) {
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	soon := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		name  string
		agent string
		body  string
		code  int
		field string
		text  string
	}{
		{name: "bad CIDR", body: `{"spec":{"allowedIPs":["10.0.0.0/8","10.0.0.0/33"]}}`, code: http.StatusUnprocessableEntity, field: "spec.allowedIPs[1]"},
		{name: "not an address", body: `{"spec":{"allowedIPs":["example.com"]}}`, code: http.StatusUnprocessableEntity, field: "spec.allowedIPs[0]"},
		{name: "past expiry", body: `{"spec":{"expiresAt":"` + past + `"}}`, code: http.StatusUnprocessableEntity, field: "spec.expiresAt"},
		{name: "both expiries", body: `{"spec":{"expiresAt":"` + soon + `","expiresIn":"1h"}}`, code: http.StatusUnprocessableEntity, field: "spec.expiresIn"},
		{name: "negative duration", body: `{"spec":{"expiresIn":"-1h"}}`, code: http.StatusUnprocessableEntity, field: "spec.expiresIn"},
		{name: "beyond the cap", body: `{"spec":{"expiresIn":"72h"}}`, code: http.StatusUnprocessableEntity, field: "spec.expiresIn"},
		{name: "name differs from the path", body: `{"metadata":{"name":"other"}}`, code: http.StatusUnprocessableEntity, field: "metadata.name"},
		{name: "unparsable expiry", body: `{"spec":{"expiresAt":"next tuesday"}}`, code: http.StatusBadRequest, text: "next tuesday"},
		{name: "unparsable duration", body: `{"spec":{"expiresIn":"a while"}}`, code: http.StatusBadRequest, text: "a while"},
		{name: "unknown field", body: `{"spec":{"allowedIps":["10.0.0.0/8"]}}`, code: http.StatusBadRequest, text: `unknown field "spec.allowedIps"`},
		{name: "not JSON", body: `allowedIPs: [`, code: http.StatusBadRequest},
		{name: "unknown Agent", agent: "nope", body: `{}`, code: http.StatusNotFound, text: `agents.kubeopencode.io "nope" not found`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			agent := tc.agent
			if agent == "" {
				agent = "team-agent"
			}
			code, status := e.post(t, "alice", apiSharePath(e.nsA, agent), tc.body)
			if code != tc.code || status.Code != int32(tc.code) {
				t.Fatalf("code %d (Status %d), want %d: %+v", code, status.Code, tc.code, status)
			}
			if tc.field != "" {
				var fields []string
				if status.Details != nil {
					for _, c := range status.Details.Causes {
						fields = append(fields, c.Field)
					}
				}
				if len(fields) != 1 || fields[0] != tc.field {
					t.Errorf("fields %v, want [%s]: %s", fields, tc.field, status.Message)
				}
			}
			if !strings.Contains(status.Message, tc.text) {
				t.Errorf("message %q lacks %q", status.Message, tc.text)
			}
		})
	}
	if e.agent(t, e.nsA, "nope") != nil {
		t.Errorf("a create on an unknown Agent made one")
	}
}

func (e *apiEnv) testConcurrentEnables(t *testing.T) {
	const n = 8
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		tokens = map[string]int{}
		errs   []string
	)
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			code, body, err := e.request("alice", http.MethodPost, apiSharePath(e.nsA, "race-agent"), `{}`)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || code != http.StatusCreated {
				errs = append(errs, fmt.Sprintf("%d %v %s", code, err, body))
				return
			}
			s := &subresourcesv1alpha1.AgentShare{}
			if err := json.Unmarshal(body, s); err != nil {
				errs = append(errs, err.Error())
				return
			}
			tokens[s.Status.Token]++
		}()
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("failed enables: %v", errs)
	}
	if len(tokens) != 1 {
		t.Fatalf("%d concurrent enables handed out %d tokens", n, len(tokens))
	}
	for token := range tokens {
		if got := e.secretToken(t, e.nsA, "race-agent"); got != token || !share.ValidToken(token) {
			t.Errorf("the Secret holds %q, every enable returned %q", got, token)
		}
	}
}

func (e *apiEnv) testForgedHeaders(t *testing.T) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.caPEM)
	direct := func(cfg *tls.Config, method, path, body string) (int, string) {
		t.Helper()
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		req, err := http.NewRequestWithContext(t.Context(), method, fmt.Sprintf("https://127.0.0.1:%d%s", e.port, path), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Remote-User", "admin")
		req.Header.Set("X-Remote-Group", "system:masters")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}

	noCert := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		if code, body := direct(noCert, method, apiSharePath(e.nsA, "team-agent"), `{}`); code != http.StatusUnauthorized {
			t.Errorf("%s with forged headers and no certificate: %d, want 401: %s", method, code, body)
		}
	}

	// A client certificate of the cluster's client CA is not a front-proxy
	// certificate: the headers are ignored and the request is alice's, who
	// may not touch team-b.
	aliceCert, err := tls.X509KeyPair(e.users["alice"].CertData, e.users["alice"].KeyData)
	if err != nil {
		t.Fatal(err)
	}
	asAlice := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{aliceCert}, MinVersion: tls.VersionTLS12}
	if code, body := direct(asAlice, http.MethodPost, apiSharePath(e.nsB, "team-agent"), `{}`); code != http.StatusForbidden || !strings.Contains(body, `User \"alice\"`) {
		t.Errorf("alice's certificate with forged headers: %d, want 403 for alice: %s", code, body)
	}
	if tok := e.secretToken(t, e.nsB, "team-agent"); tok != "" {
		t.Errorf("a forged request enabled a link")
	}
}

func (e *apiEnv) testDiscovery(t *testing.T) {
	// Through the kube-apiserver: discovery of the aggregated group.
	body := e.kubectlOK(t, "admin", "get", "--raw", "/apis/subresources.kubeopencode.io/v1alpha1")
	list := &metav1.APIResourceList{}
	if err := json.Unmarshal([]byte(body), list); err != nil {
		t.Fatal(err)
	}
	verbs := map[string]string{}
	for _, r := range list.APIResources {
		verbs[r.Name] = strings.Join(r.Verbs, ",")
	}
	if verbs["agents/share"] != "create,delete,get" || verbs["agents"] != "" {
		t.Errorf("discovery: %v", verbs)
	}
	// kubectl resolves agents to the CRD, not to the verb-less parent here.
	if got := e.kubectlOK(t, "admin", "get", "agents", "-n", e.nsA, "-o", "jsonpath={.items[*].apiVersion}"); !strings.HasPrefix(got, "kubeopencode.io/v1alpha1") {
		t.Errorf("kubectl get agents resolved to %q", got)
	}

	// OpenAPI v3 of the group through the kube-apiserver, and v2 merged into
	// the kube-apiserver's document once the aggregator has fetched it.
	e.waitFor("OpenAPI v3 of the group", func(context.Context) (bool, error) {
		out, _, err := e.kubectl("admin", "get", "--raw", "/openapi/v3/apis/subresources.kubeopencode.io/v1alpha1")
		return err == nil && strings.Contains(out, "io.kubeopencode.subresources.v1alpha1.AgentShare") && strings.Contains(out, "/agents/{name}/share"), nil
	})
	e.waitFor("OpenAPI v2 to include AgentShare", func(context.Context) (bool, error) {
		out, _, err := e.kubectl("admin", "get", "--raw", "/openapi/v2")
		return err == nil && strings.Contains(out, "io.kubeopencode.subresources.v1alpha1.AgentShare"), nil
	})

	// readyz, directly and without credentials, as a kubelet probe asks.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.caPEM)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	for _, p := range []string{"/readyz", "/livez"} {
		resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d%s", e.port, p))
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(out) != "ok" {
			t.Errorf("GET %s: %d %q", p, resp.StatusCode, out)
		}
	}
}

// apiEnv is the state the subtests share.
type apiEnv struct {
	t     *testing.T
	cp    *testenv.ControlPlane
	admin client.Client
	// nsA and nsB are the test's namespaces: alice may edit nsA only.
	nsA, nsB string
	users    map[string]*rest.Config
	// port is the aggregated API server's, on 127.0.0.1; caPEM signed its
	// serving certificate.
	port  int
	caPEM []byte
	// dir holds files for kubectl.
	dir string

	kubeconfigsMu sync.Mutex
	kubeconfigs   map[string]string
}

// aggregatedServer is the aggregated API server's command running
// in-process, which a test may stop and start again on the same ports, as a
// restarted pod would be.
type aggregatedServer struct {
	configure func(*apiserverapp.Options)
	args      []string
	// shareAddr, when not empty, is where the share listener serves;
	// "127.0.0.1:0" picks a port, which later starts keep.
	shareAddr string
	port      int

	cancel context.CancelFunc
	done   chan error
}

// start runs the server and waits until it accepts connections, on the
// ports of the previous start if there was one.
func (a *aggregatedServer) start(t *testing.T) {
	t.Helper()
	addr := "127.0.0.1:0"
	if a.port != 0 {
		addr = net.JoinHostPort("127.0.0.1", fmt.Sprint(a.port))
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	o := apiserverapp.NewOptions()
	o.SecureServing.Listener = ln
	// The share listener is off unless the test configures it.
	o.Share.Port = 0
	if a.shareAddr != "" {
		shareLn, err := net.Listen("tcp", a.shareAddr)
		if err != nil {
			ln.Close()
			t.Fatal(err)
		}
		a.shareAddr = shareLn.Addr().String()
		o.Share.Listener = shareLn
	}
	if a.configure != nil {
		a.configure(o)
	}
	cmd := apiserverapp.NewServerCommand(o)
	cmd.SetArgs(a.args)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	a.cancel, a.done = cancel, done
	a.port = ln.Addr().(*net.TCPAddr).Port
	// Wait until it serves, or fail with its error.
	err = wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		select {
		case err := <-done:
			done <- err
			return false, fmt.Errorf("the aggregated API server exited: %w", err)
		default:
		}
		c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// stop stops the server and waits for it to return. Stopping a stopped
// server does nothing.
func (a *aggregatedServer) stop(t *testing.T) {
	t.Helper()
	if a.cancel == nil {
		return
	}
	a.cancel()
	a.cancel = nil
	select {
	case err := <-a.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("aggregated API server: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("the aggregated API server did not stop")
	}
}

func (e *apiEnv) createObject(obj client.Object) {
	e.t.Helper()
	if err := e.admin.Create(e.t.Context(), obj); err != nil && !apierrors.IsAlreadyExists(err) {
		e.t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// createFromYAML creates the objects of a multi-document YAML file as they
// are.
func (e *apiEnv) createFromYAML(path string) {
	e.t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		e.t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return
			}
			e.t.Fatalf("decoding %s: %v", path, err)
		}
		if len(obj.Object) > 0 {
			e.createObject(obj)
		}
	}
}

func (e *apiEnv) bind(ns, user, kind, role string) {
	e.t.Helper()
	e.createObject(&rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user + "-" + role},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kind, Name: role},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	})
}

// allowed asks the kube-apiserver whether user may do verb on
// resource/subresource in the subresources group in ns.
func (e *apiEnv) allowed(ctx context.Context, user, ns, verb, resource, subresource string) bool {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   user,
		Groups: []string{"system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: ns, Verb: verb, Group: subresourcesv1alpha1.GroupName, Resource: resource, Subresource: subresource,
		},
	}}
	if err := e.admin.Create(ctx, sar); err != nil {
		return false
	}
	return sar.Status.Allowed
}

func (e *apiEnv) waitFor(what string, cond func(context.Context) (bool, error)) {
	e.t.Helper()
	if err := wait.PollUntilContextTimeout(e.t.Context(), 200*time.Millisecond, 90*time.Second, true, cond); err != nil {
		e.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// kubeconfig writes a kubeconfig file for a client configuration.
func (e *apiEnv) kubeconfig(name string, cfg *rest.Config) string {
	e.t.Helper()
	path := filepath.Join(e.t.TempDir(), name+".kubeconfig")
	if err := testenv.WriteKubeconfig(path, cfg, ""); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// userConfig returns the client configuration of a user of the cluster's
// client CA.
func (e *apiEnv) userConfig(user string, groups ...string) *rest.Config {
	e.t.Helper()
	cfg, err := e.cp.UserConfig(user, groups...)
	if err != nil {
		e.t.Fatal(err)
	}
	return cfg
}

// userKubeconfig returns the kubeconfig file of a user; "admin" is the
// control plane's administrator.
func (e *apiEnv) userKubeconfig(user string) string {
	e.kubeconfigsMu.Lock()
	defer e.kubeconfigsMu.Unlock()
	if e.kubeconfigs == nil {
		e.kubeconfigs = map[string]string{}
	}
	if path, ok := e.kubeconfigs[user]; ok {
		return path
	}
	if user == "admin" {
		return e.cp.KubeconfigPath()
	}
	path := e.kubeconfig(user, e.users[user])
	e.kubeconfigs[user] = path
	return path
}

// kubectl runs the control plane's kubectl as user.
func (e *apiEnv) kubectl(user string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(e.t.Context(), time.Minute)
	defer cancel()
	return e.cp.Kubectl(ctx, e.userKubeconfig(user), nil, args...)
}

func (e *apiEnv) kubectlOK(t *testing.T, user string, args ...string) string {
	t.Helper()
	out, stderr, err := e.kubectl(user, args...)
	if err != nil {
		t.Fatalf("%s: kubectl %s: %v\n%s", user, strings.Join(args, " "), err, stderr)
	}
	return out
}

// request sends a request through the kube-apiserver as user.
func (e *apiEnv) request(user, method, path, body string) (int, []byte, error) {
	cfg := e.users[user]
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(e.t.Context(), method, strings.TrimSuffix(cfg.Host, "/")+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// post creates on path as user and decodes the Status it answers.
func (e *apiEnv) post(t *testing.T, user, path, body string) (int, *metav1.Status) {
	t.Helper()
	code, out, err := e.request(user, http.MethodPost, path, body)
	if err != nil {
		t.Fatal(err)
	}
	status := &metav1.Status{}
	if err := json.Unmarshal(out, status); err != nil || status.Kind != "Status" {
		t.Fatalf("answer %d is not a Status: %s", code, out)
	}
	return code, status
}

func (e *apiEnv) secretToken(t *testing.T, ns, agent string) string {
	t.Helper()
	s := &corev1.Secret{}
	err := e.admin.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: share.SecretName(agent)}, s)
	if apierrors.IsNotFound(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(s.Data[share.SecretTokenKey])
}

// agent returns the Agent, or nil when it does not exist.
func (e *apiEnv) agent(t *testing.T, ns, name string) *kubeopencodev1alpha1.Agent {
	t.Helper()
	a := &kubeopencodev1alpha1.Agent{}
	err := e.admin.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: name}, a)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func apiTestAgent(ns, name string) *kubeopencodev1alpha1.Agent {
	return &kubeopencodev1alpha1.Agent{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       kubeopencodev1alpha1.AgentSpec{Image: "busybox"},
	}
}

func apiSharePath(ns, agent string) string {
	return "/apis/subresources.kubeopencode.io/v1alpha1/namespaces/" + ns + "/agents/" + agent + "/share"
}

func apiDecodeShare(t *testing.T, out string) *subresourcesv1alpha1.AgentShare {
	t.Helper()
	s := &subresourcesv1alpha1.AgentShare{}
	if err := json.Unmarshal([]byte(out), s); err != nil || s.Kind != "AgentShare" {
		t.Fatalf("not an AgentShare (%v): %s", err, out)
	}
	return s
}

// file writes a file for kubectl -f in the test's folder, whose path has no
// comma: kubectl would split it.
func (e *apiEnv) file(name, content string) string {
	e.t.Helper()
	path := filepath.Join(e.dir, name)
	apiWriteFile(e.t, path, []byte(content))
	return path
}

func apiWriteFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// serveAggregatedAPI starts the aggregated API server in-process as the
// identity of kubeconfig, with a serving certificate for its Service, and
// registers it through a real APIService, which it removes when the test
// ends. It returns the server's port and the CA of its certificate.
func serveAggregatedAPI(t *testing.T, admin client.Client, kubeconfig string, configure func(*apiserverapp.Options), args ...string) (int, []byte) {
	t.Helper()
	a, caPEM := serveAggregatedAPIOn(t, shared.cp, admin, kubeconfig, &aggregatedServer{configure: configure, args: args})
	return a.port, caPEM
}

// serveAggregatedAPIOn is serveAggregatedAPI on a control plane of the
// caller's choice, for a server the caller may restart. The server stops
// when the test ends.
func serveAggregatedAPIOn(t *testing.T, cp *testenv.ControlPlane, admin client.Client, kubeconfig string, a *aggregatedServer) (*aggregatedServer, []byte) {
	t.Helper()
	// The loopback Service has a name of its own: the shipped
	// kubeopencode-apiserver Service is dry-run by the artifacts test.
	const svcNamespace, svcName = testenv.SystemNamespace, "kubeopencode-apiserver-loopback"
	caPEM, certFile, keyFile, err := testenv.WriteServingCert(t.TempDir(), "tls", svcName)
	if err != nil {
		t.Fatal(err)
	}
	a.args = append([]string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--tls-cert-file=" + certFile,
		"--tls-private-key-file=" + keyFile,
	}, a.args...)
	a.start(t)
	t.Cleanup(func() { a.stop(t) })
	name := "v1alpha1." + subresourcesv1alpha1.GroupName
	if err := cp.RegisterAPIService(t.Context(), subresourcesv1alpha1.GroupName, "v1alpha1", svcNamespace, svcName, a.port, caPEM); err != nil {
		t.Fatalf("registering the APIService: %v", err)
	}
	t.Cleanup(func() {
		// Leave the control plane without an APIService whose server is
		// gone.
		svc := &unstructured.Unstructured{}
		svc.SetAPIVersion("apiregistration.k8s.io/v1")
		svc.SetKind("APIService")
		svc.SetName(name)
		if err := admin.Delete(context.Background(), svc); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting the APIService: %v", err)
		}
	})
	if err := cp.WaitForAPIService(t.Context(), name, time.Minute); err != nil {
		t.Fatalf("waiting for the APIService: %v", err)
	}
	return a, caPEM
}
