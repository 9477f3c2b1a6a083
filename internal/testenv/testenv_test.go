package testenv

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestCAIssues(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("other-ca")
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.IssueServing([]string{"whoami.kubeopencode-system.svc"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.IssueClient("alice", "team-a", "team-b")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		certPEM []byte
		roots   *CA
		usage   x509.ExtKeyUsage
		dnsName string
		wantErr bool
	}{
		{name: "serving for its SAN", certPEM: serving.CertPEM, roots: ca, usage: x509.ExtKeyUsageServerAuth, dnsName: "whoami.kubeopencode-system.svc"},
		{name: "serving for its IP", certPEM: serving.CertPEM, roots: ca, usage: x509.ExtKeyUsageServerAuth, dnsName: "127.0.0.1"},
		{name: "serving for another name", certPEM: serving.CertPEM, roots: ca, usage: x509.ExtKeyUsageServerAuth, dnsName: "other.svc", wantErr: true},
		{name: "serving is no client", certPEM: serving.CertPEM, roots: ca, usage: x509.ExtKeyUsageClientAuth, wantErr: true},
		{name: "client", certPEM: client.CertPEM, roots: ca, usage: x509.ExtKeyUsageClientAuth},
		{name: "client from another CA", certPEM: client.CertPEM, roots: other, usage: x509.ExtKeyUsageClientAuth, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseCert(t, tc.certPEM).Verify(x509.VerifyOptions{Roots: tc.roots.Pool(), DNSName: tc.dnsName, KeyUsages: []x509.ExtKeyUsage{tc.usage}})
			if (err != nil) != tc.wantErr {
				t.Fatalf("verify: %v, want error %v", err, tc.wantErr)
			}
		})
	}
	if c := parseCert(t, client.CertPEM); c.Subject.CommonName != "alice" || !slices.Equal(c.Subject.Organization, []string{"team-a", "team-b"}) {
		t.Errorf("client subject %v, want CN alice and O team-a, team-b", c.Subject)
	}
	if _, err := serving.TLSCertificate(); err != nil {
		t.Errorf("serving pair: %v", err)
	}
}

func TestGoModPath(t *testing.T) {
	tests := []struct {
		name, gomod, want string
	}{
		{name: "plain", gomod: "module github.com/kubeopencode/share\n\ngo 1.26.0\n", want: modulePath},
		{name: "after a comment", gomod: "// a comment\nmodule example.com/x\n", want: "example.com/x"},
		{name: "quoted", gomod: "module \"example.com/q\"\n", want: "example.com/q"},
		{name: "prefix of another word", gomod: "modules example.com/x\n", want: ""},
		{name: "none", gomod: "go 1.26\n", want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, goModPath([]byte(tc.gomod))); diff != "" {
				t.Errorf("goModPath (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "hack", "build-control-plane.sh")); err != nil {
		t.Errorf("repository root %s has no hack/build-control-plane.sh: %v", root, err)
	}
}

// processesUsing returns the command lines of running processes that
// mention dir.
func processesUsing(t *testing.T, dir string) []string {
	t.Helper()
	cmdlines, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, f := range cmdlines {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // gone meanwhile
		}
		if cmd := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(cmd, dir) {
			found = append(found, cmd)
		}
	}
	return found
}

func TestStartFailureLeavesNothingRunning(t *testing.T) {
	dir := t.TempDir()
	cp, err := Start(t.Context(), Options{Dir: dir, WithoutControllers: true, ExtraAPIServerArgs: []string{"--no-such-flag"}})
	if err == nil {
		cp.Stop()
		t.Fatal("Start succeeded with a bad kube-apiserver flag")
	}
	// The error names the component and carries its log's end.
	for _, want := range []string{"kube-apiserver exited", "unknown flag: --no-such-flag"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	if procs := processesUsing(t, dir); len(procs) > 0 {
		t.Errorf("processes left running after a failed Start:\n%s", strings.Join(procs, "\n"))
	}
}

func TestRunControlPlaneStopsEverything(t *testing.T) {
	var dir string
	t.Run("control plane", func(t *testing.T) {
		cp := RunControlPlane(t, Options{StandinNode: "node-a"})
		dir = cp.Dir()
		if got := processesUsing(t, dir); len(got) != 4 {
			t.Errorf("%d processes running, want etcd, kube-apiserver, kube-controller-manager and kube-scheduler:\n%s", len(got), strings.Join(got, "\n"))
		}
		cs, err := kubernetes.NewForConfig(cp.Config())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(t.Context(), "default", metav1.GetOptions{}); err != nil {
			t.Errorf("Start returned before the default ServiceAccount existed: %v", err)
		}
		if _, err := cs.CoreV1().Nodes().Get(t.Context(), "node-a", metav1.GetOptions{}); err != nil {
			t.Errorf("stand-in node: %v", err)
		}
		// The kubeconfig on disk works as the admin.
		kc, err := clientcmd.BuildConfigFromFlags("", cp.KubeconfigPath())
		if err != nil {
			t.Fatal(err)
		}
		cs, err = kubernetes.NewForConfig(kc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().Namespaces().List(t.Context(), metav1.ListOptions{}); err != nil {
			t.Errorf("admin kubeconfig: %v", err)
		}
	})
	if procs := processesUsing(t, dir); len(procs) > 0 {
		t.Errorf("processes left running after the test:\n%s", strings.Join(procs, "\n"))
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("state folder %s not removed: %v", dir, err)
	}
}

func TestCheckStaticBusybox(t *testing.T) {
	for _, tc := range []struct {
		name, path, want string
	}{
		{name: "missing", path: filepath.Join(t.TempDir(), "busybox"), want: "no such file"},
		{name: "dynamically linked", path: "/bin/sh", want: "linked dynamically"},
		{name: "not a program", path: "/etc/hostname", want: "static busybox"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("BUSYBOX", tc.path)
			if err := CheckStaticBusybox(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CheckStaticBusybox() = %v, want an error with %q", err, tc.want)
			}
		})
	}
}
