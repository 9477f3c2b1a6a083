package framework

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/keyutil"
	"k8s.io/klog/v2"

	"github.com/kubeopencode/share/test/integration/framework/standin"
)

// EnvBinDir names the folder of the control-plane binaries.
const EnvBinDir = "KUBEOPENCODE_CONTROL_PLANE_BIN"

// Options configures a control plane.
type Options struct {
	// Dir holds the control plane's state. Empty means a new temporary folder,
	// removed on Stop.
	Dir string
	// BinDir holds the binaries; empty means $KUBEOPENCODE_CONTROL_PLANE_BIN,
	// then <repo>/_output/bin, built by hack/build-control-plane.sh if missing.
	BinDir string
	// WithoutControllers skips kube-controller-manager and kube-scheduler.
	WithoutControllers bool
	// ExtraAPIServerArgs are appended to the kube-apiserver's flags.
	ExtraAPIServerArgs []string
}

// ControlPlane is a running etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler on loopback.
type ControlPlane struct {
	dir        string
	removeDir  bool
	binDir     string
	host       string
	kubeconfig string

	servingCA, clientCA, frontProxyCA, kubeletCA *CA
	// KubeletClient is the certificate the API server presents to kubelets.
	kubeletClient CertKey

	admin     *rest.Config
	processes []*process
	nodes     []*standin.Kubelet
}

// Start starts a control plane and waits until it serves. On error nothing
// is left running.
func Start(ctx context.Context, opts Options) (cp *ControlPlane, err error) {
	binDir, err := findBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	cp = &ControlPlane{binDir: binDir, dir: opts.Dir}
	if cp.dir == "" {
		if cp.dir, err = os.MkdirTemp("", "kubeopencode-controlplane-"); err != nil {
			return nil, err
		}
		cp.removeDir = true
	} else if err := os.MkdirAll(cp.dir, 0o700); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if tail := cp.logTails(); tail != "" {
				err = fmt.Errorf("%w\n%s", err, tail)
			}
			cp.Stop()
			cp = nil
		}
	}()
	if err := cp.writeCerts(); err != nil {
		return nil, err
	}
	etcdURL, err := cp.startEtcd(ctx)
	if err != nil {
		return nil, err
	}
	if err := cp.startAPIServer(ctx, etcdURL, opts.ExtraAPIServerArgs); err != nil {
		return nil, err
	}
	if !opts.WithoutControllers {
		if err := cp.startControllerManager(ctx); err != nil {
			return nil, err
		}
		if err := cp.startScheduler(ctx); err != nil {
			return nil, err
		}
	}
	return cp, nil
}

// Stop stops every process and, when Start made it, removes the state folder.
func (cp *ControlPlane) Stop() {
	for _, n := range cp.nodes {
		n.Stop()
	}
	cp.nodes = nil
	for i := len(cp.processes) - 1; i >= 0; i-- {
		cp.processes[i].stop()
	}
	cp.processes = nil
	if cp.removeDir {
		_ = os.RemoveAll(cp.dir)
	}
}

// Dir is the control plane's state folder.
func (cp *ControlPlane) Dir() string { return cp.dir }

// BinDir is the folder of the control-plane binaries, kubectl among them.
func (cp *ControlPlane) BinDir() string { return cp.binDir }

// Host is the kube-apiserver's URL.
func (cp *ControlPlane) Host() string { return cp.host }

// Config returns a cluster-admin client configuration.
func (cp *ControlPlane) Config() *rest.Config { return rest.CopyConfig(cp.admin) }

// KubeconfigPath is an admin kubeconfig file.
func (cp *ControlPlane) KubeconfigPath() string { return cp.kubeconfig }

// ServingCA is the CA of the kube-apiserver's serving certificate.
func (cp *ControlPlane) ServingCA() *CA { return cp.servingCA }

// KubeletCA signs the stand-in kubelet's serving certificate, which the
// kube-apiserver verifies.
func (cp *ControlPlane) KubeletCA() *CA { return cp.kubeletCA }

// ClientCA signs the client certificates the kube-apiserver accepts, those
// of the kubelet-client identity among them.
func (cp *ControlPlane) ClientCA() *CA { return cp.clientCA }

// UserConfig returns a client configuration that authenticates as user in
// groups, by a client certificate from the cluster's client CA.
func (cp *ControlPlane) UserConfig(user string, groups ...string) (*rest.Config, error) {
	ck, err := cp.clientCA.IssueClient(user, groups...)
	if err != nil {
		return nil, err
	}
	return &rest.Config{
		Host:            cp.host,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.servingCA.CertPEM, CertData: ck.CertPEM, KeyData: ck.KeyPEM},
		QPS:             100,
		Burst:           200,
	}, nil
}

// WriteKubeconfig writes a kubeconfig file for cfg, with namespace as the
// context's namespace when not empty.
func WriteKubeconfig(path string, cfg *rest.Config, namespace string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "user", Namespace: namespace}
	kc.CurrentContext = "local"
	return clientcmd.WriteToFile(*kc, path)
}

func (cp *ControlPlane) path(name string) string { return filepath.Join(cp.dir, name) }

func (cp *ControlPlane) writeFile(name string, data []byte) error {
	return os.WriteFile(cp.path(name), data, 0o600)
}

func (cp *ControlPlane) writeCertKey(name string, ck CertKey) error {
	if err := cp.writeFile(name+".crt", ck.CertPEM); err != nil {
		return err
	}
	return cp.writeFile(name+".key", ck.KeyPEM)
}

func (cp *ControlPlane) writeCerts() error {
	var err error
	for _, ca := range []struct {
		ca   **CA
		name string
	}{{&cp.servingCA, "serving-ca"}, {&cp.clientCA, "client-ca"}, {&cp.frontProxyCA, "front-proxy-ca"}, {&cp.kubeletCA, "kubelet-ca"}} {
		if *ca.ca, err = NewCA("kubeopencode-test-" + ca.name); err != nil {
			return err
		}
		if err := cp.writeFile(ca.name+".crt", (*ca.ca).CertPEM); err != nil {
			return err
		}
	}
	serving, err := cp.servingCA.IssueServing(
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")})
	if err != nil {
		return err
	}
	if err := cp.writeCertKey("apiserver", serving); err != nil {
		return err
	}
	frontProxy, err := cp.frontProxyCA.IssueClient("front-proxy-client")
	if err != nil {
		return err
	}
	if err := cp.writeCertKey("front-proxy-client", frontProxy); err != nil {
		return err
	}
	if cp.kubeletClient, err = cp.clientCA.IssueClient("kube-apiserver-kubelet-client", "system:masters"); err != nil {
		return err
	}
	if err := cp.writeCertKey("kubelet-client", cp.kubeletClient); err != nil {
		return err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(saKey)
	if err != nil {
		return err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return err
	}
	if err := cp.writeFile("sa.key", keyPEM); err != nil {
		return err
	}
	return cp.writeFile("sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
}

// retryStart starts a component on fresh ports, again when another process
// took a port between choosing and binding it.
func retryStart(ctx context.Context, start func() error) error {
	var err error
	for range 3 {
		if err = start(); err == nil || ctx.Err() != nil {
			return err
		}
		klog.InfoS("Retrying control-plane start", "err", err)
	}
	return err
}

func (cp *ControlPlane) startEtcd(ctx context.Context) (string, error) {
	var clientURL string
	err := retryStart(ctx, func() error {
		clientPort, err := FreePort()
		if err != nil {
			return err
		}
		peerPort, err := FreePort()
		if err != nil {
			return err
		}
		clientURL = "http://127.0.0.1:" + itoa(clientPort)
		peerURL := "http://127.0.0.1:" + itoa(peerPort)
		dataDir := cp.path("etcd")
		_ = os.RemoveAll(dataDir)
		p, err := startProcess(cp.dir, "etcd", filepath.Join(cp.binDir, "etcd"),
			"--name=default",
			"--data-dir="+dataDir,
			"--listen-client-urls="+clientURL,
			"--advertise-client-urls="+clientURL,
			"--listen-peer-urls="+peerURL,
			"--initial-advertise-peer-urls="+peerURL,
			"--initial-cluster=default="+peerURL,
			"--unsafe-no-fsync=true",
			"--quota-backend-bytes=2147483648",
			"--log-level=warn",
		)
		if err != nil {
			return err
		}
		if err := waitHTTP(ctx, p, clientURL+"/health", nil, 60*time.Second); err != nil {
			p.stop()
			return err
		}
		cp.processes = append(cp.processes, p)
		return nil
	})
	return clientURL, err
}

func (cp *ControlPlane) startAPIServer(ctx context.Context, etcdURL string, extra []string) error {
	return retryStart(ctx, func() error {
		port, err := FreePort()
		if err != nil {
			return err
		}
		cp.host = "https://127.0.0.1:" + itoa(port)
		args := []string{
			"--etcd-servers=" + etcdURL,
			"--bind-address=127.0.0.1",
			"--secure-port=" + itoa(port),
			"--advertise-address=127.0.0.1",
			"--endpoint-reconciler-type=none",
			"--tls-cert-file=" + cp.path("apiserver.crt"),
			"--tls-private-key-file=" + cp.path("apiserver.key"),
			"--client-ca-file=" + cp.path("client-ca.crt"),
			"--authorization-mode=Node,RBAC",
			"--service-account-key-file=" + cp.path("sa.pub"),
			"--service-account-signing-key-file=" + cp.path("sa.key"),
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-cluster-ip-range=10.0.0.0/24",
			"--allow-privileged=true",
			// The aggregation layer: the kube-apiserver proxies to aggregated
			// servers as front-proxy-client, and they trust it through the
			// requestheader CA published in kube-system.
			"--requestheader-client-ca-file=" + cp.path("front-proxy-ca.crt"),
			"--requestheader-allowed-names=front-proxy-client",
			"--requestheader-username-headers=X-Remote-User",
			"--requestheader-uid-headers=X-Remote-Uid",
			"--requestheader-group-headers=X-Remote-Group",
			"--requestheader-extra-headers-prefix=X-Remote-Extra-",
			"--proxy-client-cert-file=" + cp.path("front-proxy-client.crt"),
			"--proxy-client-key-file=" + cp.path("front-proxy-client.key"),
			// EndpointSlices refuse loopback addresses, so an APIService on
			// loopback goes through an ExternalName Service instead.
			"--enable-aggregator-routing=false",
			"--kubelet-client-certificate=" + cp.path("kubelet-client.crt"),
			"--kubelet-client-key=" + cp.path("kubelet-client.key"),
			"--kubelet-certificate-authority=" + cp.path("kubelet-ca.crt"),
			"--kubelet-preferred-address-types=InternalIP",
			"--profiling=false",
			"--v=1",
		}
		p, err := startProcess(cp.dir, "kube-apiserver", filepath.Join(cp.binDir, "kube-apiserver"), append(args, extra...)...)
		if err != nil {
			return err
		}
		admin, err := cp.UserConfig("kubeopencode-test-admin", "system:masters")
		if err != nil {
			p.stop()
			return err
		}
		cp.admin = admin
		if err := waitHTTP(ctx, p, cp.host+"/readyz", admin, 120*time.Second); err != nil {
			p.stop()
			return err
		}
		cp.processes = append(cp.processes, p)
		cp.kubeconfig = cp.path("admin.kubeconfig")
		return WriteKubeconfig(cp.kubeconfig, admin, "")
	})
}

func (cp *ControlPlane) componentKubeconfig(name, user string, groups ...string) (string, error) {
	cfg, err := cp.UserConfig(user, groups...)
	if err != nil {
		return "", err
	}
	path := cp.path(name + ".kubeconfig")
	return path, WriteKubeconfig(path, cfg, "")
}

func (cp *ControlPlane) startControllerManager(ctx context.Context) error {
	kubeconfig, err := cp.componentKubeconfig("kube-controller-manager", "system:kube-controller-manager")
	if err != nil {
		return err
	}
	return retryStart(ctx, func() error {
		port, err := FreePort()
		if err != nil {
			return err
		}
		p, err := startProcess(cp.dir, "kube-controller-manager", filepath.Join(cp.binDir, "kube-controller-manager"),
			"--kubeconfig="+kubeconfig,
			"--authentication-kubeconfig="+kubeconfig,
			"--authorization-kubeconfig="+kubeconfig,
			"--bind-address=127.0.0.1",
			"--secure-port="+itoa(port),
			"--cert-dir="+cp.path("kube-controller-manager-certs"),
			"--leader-elect=false",
			"--use-service-account-credentials=true",
			"--service-account-private-key-file="+cp.path("sa.key"),
			"--root-ca-file="+cp.path("serving-ca.crt"),
			"--service-cluster-ip-range=10.0.0.0/24",
			"--controllers=*",
			// The stand-in node heartbeats through its Lease; a stalled test
			// should not see its pods evicted.
			"--node-monitor-grace-period=5m",
			"--profiling=false",
			"--v=1",
		)
		if err != nil {
			return err
		}
		if err := waitHTTP(ctx, p, "https://127.0.0.1:"+itoa(port)+"/healthz", nil, 60*time.Second); err != nil {
			p.stop()
			return err
		}
		cp.processes = append(cp.processes, p)
		return nil
	})
}

func (cp *ControlPlane) startScheduler(ctx context.Context) error {
	kubeconfig, err := cp.componentKubeconfig("kube-scheduler", "system:kube-scheduler")
	if err != nil {
		return err
	}
	return retryStart(ctx, func() error {
		port, err := FreePort()
		if err != nil {
			return err
		}
		p, err := startProcess(cp.dir, "kube-scheduler", filepath.Join(cp.binDir, "kube-scheduler"),
			"--kubeconfig="+kubeconfig,
			"--authentication-kubeconfig="+kubeconfig,
			"--authorization-kubeconfig="+kubeconfig,
			"--bind-address=127.0.0.1",
			"--secure-port="+itoa(port),
			"--leader-elect=false",
			"--profiling=false",
			"--v=1",
		)
		if err != nil {
			return err
		}
		if err := waitHTTP(ctx, p, "https://127.0.0.1:"+itoa(port)+"/healthz", nil, 60*time.Second); err != nil {
			p.stop()
			return err
		}
		cp.processes = append(cp.processes, p)
		return nil
	})
}

// waitHTTP polls url until it answers 200, the process exits or the timeout
// passes. A nil cfg skips server verification, for components whose serving
// certificate is self-signed.
func waitHTTP(ctx context.Context, p *process, url string, cfg *rest.Config, timeout time.Duration) error {
	if cfg == nil {
		cfg = &rest.Config{TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	}
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = 5 * time.Second
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	var last string
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("%s exited: %v", p.name, p.err)
		}
		resp, err := httpClient.Get(url)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		defer resp.Body.Close()
		last = resp.Status
		return resp.StatusCode == 200, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %s at %s (last: %s): %w\n--- %s log tail ---\n%s", p.name, url, last, err, p.name, p.logTail(3000))
	}
	return nil
}

// logTails returns the end of each process's log, for failure reports.
func (cp *ControlPlane) logTails() string {
	var b strings.Builder
	for _, p := range cp.processes {
		fmt.Fprintf(&b, "--- %s (%s) ---\n%s\n", p.name, p.logPath, p.logTail(2000))
	}
	return b.String()
}

// WaitForDefaultServiceAccount waits until the controller manager has made
// the default ServiceAccount of a namespace, without which pods cannot be
// created.
func (cp *ControlPlane) WaitForDefaultServiceAccount(ctx context.Context, namespace string) error {
	cs, err := kubernetes.NewForConfig(cp.admin)
	if err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(namespace).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
}

// CreateNamespace creates a namespace and waits for its default
// ServiceAccount.
func (cp *ControlPlane) CreateNamespace(ctx context.Context, name string) error {
	cs, err := kubernetes.NewForConfig(cp.admin)
	if err != nil {
		return err
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	return cp.WaitForDefaultServiceAccount(ctx, name)
}

// Kubectl runs the control plane's kubectl with the given kubeconfig.
func (cp *ControlPlane) Kubectl(ctx context.Context, kubeconfig string, stdin []byte, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, filepath.Join(cp.binDir, "kubectl"), append([]string{"--kubeconfig=" + kubeconfig}, args...)...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if stdin != nil {
		cmd.Stdin = strings.NewReader(string(stdin))
	}
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// findBinDir locates the control-plane binaries, building them when absent.
func findBinDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv(EnvBinDir)
	}
	root, rootErr := RepoRoot()
	if dir == "" {
		if rootErr != nil {
			return "", fmt.Errorf("set %s: %w", EnvBinDir, rootErr)
		}
		dir = filepath.Join(root, "_output", "bin")
	}
	missing := false
	for _, bin := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			missing = true
		}
	}
	if !missing {
		return dir, nil
	}
	if rootErr != nil {
		return "", fmt.Errorf("control-plane binaries missing in %s and no repository to build them: %w", dir, rootErr)
	}
	klog.InfoS("Building the control plane (minutes when cold)", "dir", dir)
	cmd := exec.Command(filepath.Join(root, "hack", "build-control-plane.sh"))
	cmd.Env = append(os.Environ(), "CONTROL_PLANE_BIN="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("hack/build-control-plane.sh: %w\n%s", err, out)
	}
	return dir, nil
}

// RepoRoot returns the root of this repository, found from the working
// directory upwards.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/kubeopencode/share\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the github.com/kubeopencode/share repository")
		}
		dir = parent
	}
}
