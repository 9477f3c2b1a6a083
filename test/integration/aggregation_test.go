package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	aggregatorclient "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"

	"github.com/kubeopencode/share/internal/testenv"
)

const (
	whoamiGroup   = "whoami.test.kubeopencode.io"
	whoamiVersion = "v1"
)

// whoami is what the test's aggregated server answers: the identity the
// kube-apiserver's front proxy passed on.
type whoami struct {
	metav1.TypeMeta `json:",inline"`
	User            string   `json:"user"`
	Groups          []string `json:"groups"`
	ProxyClient     string   `json:"proxyClient"`
}

// serveWhoami serves a minimal aggregated API on a loopback port: it accepts
// only the front proxy's client certificate, as a real aggregated server
// does through the requestheader CA, and answers discovery and
// GET /apis/<group>/<version>/whoamis with the caller's identity.
func serveWhoami(t *testing.T, serving tls.Certificate) int {
	t.Helper()
	gv := whoamiGroup + "/" + whoamiVersion
	mux := http.NewServeMux()
	writeJSON := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /apis/"+gv, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, metav1.APIResourceList{
			TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
			GroupVersion: gv,
			APIResources: []metav1.APIResource{{Name: "whoamis", Kind: "WhoAmI", Verbs: []string{"list"}}},
		})
	})
	mux.HandleFunc("GET /apis/"+gv+"/whoamis", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, whoami{
			TypeMeta:    metav1.TypeMeta{Kind: "WhoAmI", APIVersion: gv},
			User:        r.Header.Get("X-Remote-User"),
			Groups:      r.Header.Values("X-Remote-Group"),
			ProxyClient: r.TLS.PeerCertificates[0].Subject.CommonName,
		})
	})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{serving},
		ClientCAs:    shared.cp.FrontProxyCA().Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("aggregated server: %v", err)
		}
	}()
	t.Cleanup(func() { _ = server.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func TestAggregatedAPIOnLoopback(t *testing.T) {
	const service = "whoami"
	cert, err := shared.cp.ServingCertFor([]string{service + "." + testenv.SystemNamespace + ".svc"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := cert.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	port := serveWhoami(t, serving)

	name := whoamiVersion + "." + whoamiGroup
	if err := shared.cp.RegisterAPIService(t.Context(), whoamiGroup, whoamiVersion, testenv.SystemNamespace, service, port, shared.cp.ServingCA().CertPEM); err != nil {
		t.Fatal(err)
	}
	// Runs before the server closes: an APIService left pointing at
	// nothing would break discovery for the other tests.
	t.Cleanup(func() {
		// t.Context() is done by the time cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		agg, err := aggregatorclient.NewForConfig(shared.cp.Config())
		if err == nil {
			err = agg.ApiregistrationV1().APIServices().Delete(ctx, name, metav1.DeleteOptions{})
		}
		if err != nil {
			t.Errorf("deleting APIService %s: %v", name, err)
		}
	})
	if err := shared.cp.WaitForAPIService(t.Context(), name, time.Minute); err != nil {
		t.Fatal(err)
	}

	_, err = adminClient(t).RbacV1().ClusterRoleBindings().Create(t.Context(), &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "whoami-readers"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "whoami-reader"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "readers"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = adminClient(t).RbacV1().ClusterRoles().Create(t.Context(), &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "whoami-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{whoamiGroup}, Resources: []string{"whoamis"}, Verbs: []string{"list"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		cfg        func() (*rest.Config, error)
		wantUser   string
		wantGroups []string
		wantStatus int
	}{
		{name: "admin", cfg: func() (*rest.Config, error) { return shared.cp.Config(), nil },
			wantUser: testenv.AdminUser, wantGroups: []string{"system:masters"}, wantStatus: http.StatusOK},
		{name: "reader", cfg: func() (*rest.Config, error) { return shared.cp.UserConfig("bob", "readers") },
			wantUser: "bob", wantGroups: []string{"readers", "system:authenticated"}, wantStatus: http.StatusOK},
		// The kube-apiserver authorizes before it proxies.
		{name: "no binding", cfg: func() (*rest.Config, error) { return shared.cp.UserConfig("mallory") },
			wantStatus: http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.cfg()
			if err != nil {
				t.Fatal(err)
			}
			client, err := rest.HTTPClientFor(cfg)
			if err != nil {
				t.Fatal(err)
			}
			url := cfg.Host + "/apis/" + whoamiGroup + "/" + whoamiVersion + "/whoamis"
			var status int
			var body []byte
			// RBAC changes reach the authorizer through an informer: poll.
			err = wait.PollUntilContextTimeout(t.Context(), pollInterval, 30*time.Second, true, func(ctx context.Context) (bool, error) {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				if err != nil {
					return false, err
				}
				resp, err := client.Do(req)
				if err != nil {
					return false, nil
				}
				defer resp.Body.Close()
				status = resp.StatusCode
				body, _ = io.ReadAll(resp.Body)
				return status == tc.wantStatus, nil
			})
			if err != nil {
				t.Fatalf("GET %s: status %d (%s), want %d", url, status, body, tc.wantStatus)
			}
			if tc.wantStatus != http.StatusOK {
				return
			}
			var got whoami
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("%v: %s", err, body)
			}
			if got.User != tc.wantUser || got.ProxyClient != "front-proxy-client" {
				t.Errorf("server saw user %q through %q, want %q through front-proxy-client", got.User, got.ProxyClient, tc.wantUser)
			}
			for _, g := range tc.wantGroups {
				if !slices.Contains(got.Groups, g) {
					t.Errorf("server saw groups %v, want %s among them", got.Groups, g)
				}
			}
		})
	}
}
