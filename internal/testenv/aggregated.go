package testenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"

	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
)

// The project's ServiceAccounts in SystemNamespace, as artifacts/ makes
// them, and the Service of its APIService.
const (
	APIServerServiceAccount  = "kubeopencode-apiserver"
	ControllerServiceAccount = "kubeopencode-controller"
	APIServiceName           = "kubeopencode-apiserver"
)

// ProjectArtifacts are the files of artifacts/ that InstallProject creates:
// the servers' ServiceAccounts and their RBAC, and the share roles.
var ProjectArtifacts = []string{
	"apiserver/serviceaccount.yaml", "apiserver/rbac.yaml", "apiserver/roles.yaml",
	"controller/serviceaccount.yaml", "controller/rbac.yaml",
}

// InstallProject installs what the project's servers need before they
// start, from the repository at root: the Agent CRD, SystemNamespace, and
// ProjectArtifacts.
func (cp *ControlPlane) InstallProject(ctx context.Context, root string) error {
	if _, err := cp.InstallCRDs(ctx, filepath.Join(root, "artifacts", "crd")); err != nil {
		return err
	}
	if err := cp.CreateNamespace(ctx, SystemNamespace); err != nil {
		return err
	}
	for _, f := range ProjectArtifacts {
		if err := cp.CreateFromFile(ctx, filepath.Join(root, "artifacts", f)); err != nil {
			return err
		}
	}
	return nil
}

// ServiceAccountKubeconfig returns the client configuration of the
// ServiceAccount name of SystemNamespace, authenticated as the
// kube-apiserver authenticates a ServiceAccount's token (with its groups),
// so that a server runs with the shipped RBAC only; it writes it as a
// kubeconfig to path.
func (cp *ControlPlane) ServiceAccountKubeconfig(path, name string) (*rest.Config, error) {
	cfg, err := cp.UserConfig("system:serviceaccount:"+SystemNamespace+":"+name,
		"system:serviceaccounts", "system:serviceaccounts:"+SystemNamespace, "system:authenticated")
	if err != nil {
		return nil, err
	}
	return cfg, WriteKubeconfig(path, cfg, "")
}

// WriteServingCert makes a CA and a serving certificate for the Service
// service of SystemNamespace (and localhost, 127.0.0.1), writes the
// certificate and key to dir/name.crt and dir/name.key, and returns the CA
// for the APIService's caBundle.
func WriteServingCert(dir, name, service string) (caPEM []byte, certFile, keyFile string, err error) {
	ca, err := NewCA(service)
	if err != nil {
		return nil, "", "", err
	}
	cert, err := ca.IssueServing([]string{service + "." + SystemNamespace + ".svc", "localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return nil, "", "", err
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, cert.CertPEM, 0o600); err != nil {
		return nil, "", "", err
	}
	if err := os.WriteFile(keyFile, cert.KeyPEM, 0o600); err != nil {
		return nil, "", "", err
	}
	return ca.CertPEM, certFile, keyFile, nil
}

// ServerOptions say how to start one of the project's servers as a process:
// StartController, StartAggregatedAPIServer.
type ServerOptions struct {
	// Bin is the server's binary.
	Bin string
	// Name names its log, LogDir/<Name>.log, and the files it is given in
	// Dir (kubeconfig, certificate). Each start function has a default.
	Name string
	// Dir receives the server's kubeconfig (and certificate); LogDir its
	// log, Dir when empty.
	Dir, LogDir string
	// PublicURL is the base of share links; the aggregated API server's
	// defaults to http://ShareAddr.
	PublicURL string
	// ShareAddr, for the aggregated API server, is where its share
	// listener binds (host:port).
	ShareAddr string
	// Args are more flags, after the start function's own.
	Args []string
}

func (o *ServerOptions) defaults(name string) {
	if o.Name == "" {
		o.Name = name
	}
	if o.LogDir == "" {
		o.LogDir = o.Dir
	}
}

// StartController runs the controller binary as its ServiceAccount, without
// leader election or metrics, its health probes on a free loopback port.
func StartController(cp *ControlPlane, o ServerOptions) (*Process, error) {
	o.defaults("controller")
	kubeconfig := filepath.Join(o.Dir, o.Name+".kubeconfig")
	if _, err := cp.ServiceAccountKubeconfig(kubeconfig, ControllerServiceAccount); err != nil {
		return nil, err
	}
	probes, err := FreePort()
	if err != nil {
		return nil, err
	}
	args := []string{"--kubeconfig=" + kubeconfig, "--leader-elect=false", "--metrics-bind-address=0",
		"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(probes), "--public-url=" + o.PublicURL}
	return StartProcess(o.LogDir, o.Name, o.Bin, append(args, o.Args...)...)
}

// AggregatedAPIServer is the project's aggregated API server running as a
// process, registered through a real APIService.
type AggregatedAPIServer struct {
	*Process
	// Port is its secure port on 127.0.0.1.
	Port int
	// CAPEM is the CA of its serving certificate.
	CAPEM []byte
	// Config and Kubeconfig are its ServiceAccount's identity.
	Config     *rest.Config
	Kubeconfig string
}

// StartAggregatedAPIServer runs the aggregated API server binary as its
// ServiceAccount on a free loopback port, with a serving certificate for
// the Service APIServiceName, and the share listener on o.ShareAddr;
// registers its APIService and waits until the APIService is Available and
// the share listener serves (its caches filled). The server is stopped on
// failure; otherwise the caller stops it.
func StartAggregatedAPIServer(ctx context.Context, cp *ControlPlane, o ServerOptions) (_ *AggregatedAPIServer, err error) {
	o.defaults("aggregated-apiserver")
	if o.PublicURL == "" {
		o.PublicURL = "http://" + o.ShareAddr
	}
	s := &AggregatedAPIServer{Kubeconfig: filepath.Join(o.Dir, "apiserver.kubeconfig")}
	if s.Config, err = cp.ServiceAccountKubeconfig(s.Kubeconfig, APIServerServiceAccount); err != nil {
		return nil, err
	}
	caPEM, certFile, keyFile, err := WriteServingCert(o.Dir, "apiserver", APIServiceName)
	if err != nil {
		return nil, err
	}
	s.CAPEM = caPEM
	if s.Port, err = FreePort(); err != nil {
		return nil, err
	}
	shareHost, sharePort, err := net.SplitHostPort(o.ShareAddr)
	if err != nil {
		return nil, fmt.Errorf("share address: %w", err)
	}
	args := []string{
		"--kubeconfig=" + s.Kubeconfig,
		"--authentication-kubeconfig=" + s.Kubeconfig,
		"--authorization-kubeconfig=" + s.Kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(s.Port),
		"--tls-cert-file=" + certFile,
		"--tls-private-key-file=" + keyFile,
		"--public-url=" + o.PublicURL,
		"--share-bind-address=" + shareHost,
		"--share-port=" + sharePort,
	}
	if s.Process, err = StartProcess(o.LogDir, o.Name, o.Bin, append(args, o.Args...)...); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	if err := cp.RegisterAPIService(ctx, subresourcesv1alpha1.GroupName, "v1alpha1", SystemNamespace, APIServiceName, s.Port, caPEM); err != nil {
		return nil, err
	}
	if err := cp.WaitForAPIService(ctx, "v1alpha1."+subresourcesv1alpha1.GroupName, 2*time.Minute); err != nil {
		return nil, fmt.Errorf("%w\n--- %s ---\n%s", err, s.LogPath(), s.LogTail(3000))
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		if s.Exited() {
			return false, fmt.Errorf("%s exited: %v", o.Name, s.Err())
		}
		resp, err := http.Get("http://" + o.ShareAddr + "/healthz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return nil, fmt.Errorf("the share listener on %s: %w\n--- %s ---\n%s", o.ShareAddr, err, s.LogPath(), s.LogTail(3000))
	}
	return s, nil
}
