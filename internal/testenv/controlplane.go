package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

	"github.com/kubeopencode/share/internal/testenv/standin"
)

// EnvBinDir names the environment variable holding the folder of the
// control-plane binaries.
const EnvBinDir = "KUBEOPENCODE_CONTROL_PLANE_BIN"

// AdminUser is the user of Config and KubeconfigPath, in group
// system:masters.
const AdminUser = "kubeopencode-test-admin"

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
	// StandinNode, when not empty, names a stand-in node that Start
	// registers and serves in-process, as StartStandinNode does.
	StandinNode string
	// RealNode runs a real node beside the control plane (see RealNode):
	// kubelet, kube-proxy and containerd on this machine, which needs root
	// and Linux. The kube-apiserver then binds NodeAddress instead of
	// loopback, so that pods reach it through the kubernetes Service, and the
	// Services take their addresses from ServiceCIDR.
	RealNode bool
	// NodeImages are image archives (hack/build-images.sh) that the real
	// node imports before its kubelet starts; one must hold PauseImage.
	NodeImages []string

	// nodeLock is the machine's real-node lock when the caller took it
	// already (RunControlPlane, whose start-up deadline must not count the
	// wait for another process's node); Start releases it on failure.
	nodeLock *nodeLock
}

// ControlPlane is a running etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler on loopback.
type ControlPlane struct {
	dir        string
	removeDir  bool
	binDir     string
	host       string
	kubeconfig string

	// servingCA signs the kube-apiserver's serving certificate (and those of
	// ServingCertFor); clientCA the client certificates it accepts;
	// frontProxyCA its front-proxy client certificate; kubeletCA the
	// stand-in kubelets' serving certificates; kubeletClientCA the
	// certificate it presents to kubelets.
	servingCA, clientCA, frontProxyCA, kubeletCA, kubeletClientCA *CA

	admin *rest.Config

	// apiServerArgs are the kube-apiserver's flags, kept so that it can be
	// started again on the same port with the same certificates.
	apiServerArgs []string

	// realNode is the real node, if Options.RealNode; nodeLock is its
	// machine-wide lock, held from before its network is made.
	realNode *RealNode
	nodeLock *nodeLock

	// bindAddress is the kube-apiserver's address; serviceCIDR the
	// Services' range.
	bindAddress, serviceCIDR string

	mu        sync.Mutex
	processes []*Process
	nodes     []*standin.Kubelet
}

// Start starts a control plane and waits until it serves: every component
// answers its health endpoint and, unless opts.WithoutControllers, the
// controllers have made the default ServiceAccount. ctx bounds the start-up
// only; the control plane runs until Stop. On error nothing is left running
// and the error carries the end of each component's log.
func Start(ctx context.Context, opts Options) (_ *ControlPlane, err error) {
	// A lock the caller took goes with the control plane, or now if Start
	// fails (a second release does nothing).
	defer func() {
		if err != nil {
			opts.nodeLock.release()
		}
	}()
	binDir, err := findBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	cp := &ControlPlane{binDir: binDir, dir: opts.Dir, bindAddress: "127.0.0.1", serviceCIDR: "10.0.0.0/24"}
	if cp.dir == "" {
		removeStaleDirs()
		if cp.dir, err = os.MkdirTemp("", tempDirPrefix); err != nil {
			return nil, fmt.Errorf("making the control plane's folder: %w", err)
		}
		cp.removeDir = true
		// A crashed test leaves its folder behind (its processes die with
		// it); the next Start removes folders whose owner is gone.
		if err := cp.writeFile(ownerFile, []byte(strconv.Itoa(os.Getpid()))); err != nil {
			_ = os.RemoveAll(cp.dir)
			return nil, err
		}
	} else if err := os.MkdirAll(cp.dir, 0o700); err != nil {
		return nil, fmt.Errorf("making the control plane's folder: %w", err)
	}
	defer func() {
		if err != nil {
			if tail := cp.LogTails(); tail != "" {
				err = fmt.Errorf("%w\n%s", err, tail)
			}
			cp.Stop()
		}
	}()
	if opts.RealNode {
		// The network comes first: no component may send a packet to a
		// ClusterIP before its range has somewhere harmless to go.
		if err := CheckRealNodeHost(); err != nil {
			return nil, err
		}
		if cp.nodeLock = opts.nodeLock; cp.nodeLock == nil {
			if cp.nodeLock, err = acquireNodeLock(ctx); err != nil {
				return nil, err
			}
		}
		if err := setUpNodeNetwork(); err != nil {
			return nil, fmt.Errorf("real node network: %w", err)
		}
		cp.bindAddress, cp.serviceCIDR = NodeAddress, ServiceCIDR
	}
	start := time.Now()
	if err := cp.writeCerts(); err != nil {
		return nil, fmt.Errorf("writing the control plane's certificates: %w", err)
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
	if opts.RealNode {
		if err := cp.startRealNode(ctx, opts.NodeImages); err != nil {
			return nil, err
		}
	}
	if opts.StandinNode != "" {
		if _, err := cp.StartStandinNode(ctx, opts.StandinNode); err != nil {
			return nil, err
		}
	}
	if !opts.WithoutControllers {
		// kube-controller-manager answers /healthz seconds before its
		// controllers run; the default ServiceAccount, without which no pod
		// can be created, shows that they do.
		if err := cp.WaitForDefaultServiceAccount(ctx, metav1.NamespaceDefault); err != nil {
			return nil, err
		}
	}
	klog.InfoS("Control plane up", "host", cp.host, "dir", cp.dir, "duration", time.Since(start).Round(time.Millisecond))
	return cp, nil
}

const (
	tempDirPrefix = "kubeopencode-controlplane-"
	ownerFile     = "owner.pid"
)

// removeStaleDirs removes the temporary folders of control planes whose
// test process has died.
func removeStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempDirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		klog.V(2).InfoS("Removing a dead control plane's folder", "dir", dir, "pid", pid)
		_ = os.RemoveAll(dir)
	}
}

// Stop stops the stand-in nodes and every process, each with its process
// group, and, when Start made it, removes the state folder. It may be called
// more than once.
func (cp *ControlPlane) Stop() {
	if cp == nil {
		return
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	for _, n := range cp.nodes {
		n.Stop()
	}
	cp.nodes = nil
	if cp.realNode != nil {
		cp.realNode.stop()
		cp.realNode = nil
	} else if cp.nodeLock != nil {
		cleanUpNode()
	}
	if cp.nodeLock != nil {
		cp.nodeLock.release()
		cp.nodeLock = nil
	}
	for i := len(cp.processes) - 1; i >= 0; i-- {
		cp.processes[i].Stop()
	}
	cp.processes = nil
	if cp.removeDir {
		if err := os.RemoveAll(cp.dir); err != nil {
			klog.ErrorS(err, "Removing the control plane's folder", "dir", cp.dir)
		}
	}
}

// addProcess records a started process, for Stop.
func (cp *ControlPlane) addProcess(p *Process) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.processes = append(cp.processes, p)
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

// ServingCA is the CA of the kube-apiserver's serving certificate and of
// the certificates of ServingCertFor: the caBundle of an APIService whose
// server has one of them.
func (cp *ControlPlane) ServingCA() *CA { return cp.servingCA }

// ServingCertFor issues a serving certificate from ServingCA for the names
// and addresses, for instance for an aggregated API server registered with
// RegisterAPIService, whose certificate the aggregator checks for
// <service>.<namespace>.svc.
func (cp *ControlPlane) ServingCertFor(dnsNames []string, ips []net.IP) (CertKey, error) {
	return cp.servingCA.IssueServing(dnsNames, ips)
}

// KubeletCA signs the stand-in kubelet's serving certificate, which the
// kube-apiserver verifies.
func (cp *ControlPlane) KubeletCA() *CA { return cp.kubeletCA }

// ClientCA signs the client certificates the kube-apiserver accepts
// (--client-ca-file).
func (cp *ControlPlane) ClientCA() *CA { return cp.clientCA }

// FrontProxyCA signs the certificate the kube-apiserver presents to
// aggregated API servers (--requestheader-client-ca-file); the servers find
// it in the extension-apiserver-authentication ConfigMap of kube-system.
func (cp *ControlPlane) FrontProxyCA() *CA { return cp.frontProxyCA }

// UserConfig returns a client configuration that authenticates as user in
// groups, by a client certificate from the cluster's client CA.
func (cp *ControlPlane) UserConfig(user string, groups ...string) (*rest.Config, error) {
	ck, err := cp.clientCA.IssueClient(user, groups...)
	if err != nil {
		return nil, fmt.Errorf("client certificate for %s: %w", user, err)
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
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
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
	}{
		{&cp.servingCA, "serving-ca"},
		{&cp.clientCA, "client-ca"},
		{&cp.frontProxyCA, "front-proxy-ca"},
		{&cp.kubeletCA, "kubelet-ca"},
		{&cp.kubeletClientCA, "kubelet-client-ca"},
	} {
		if *ca.ca, err = NewCA("kubeopencode-test-" + ca.name); err != nil {
			return err
		}
		if err := cp.writeFile(ca.name+".crt", (*ca.ca).CertPEM); err != nil {
			return err
		}
	}
	serving, err := cp.servingCA.IssueServing(
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1"), net.ParseIP(NodeAddress), net.ParseIP(kubernetesServiceIP)})
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
	// The kube-apiserver's identity toward kubelets comes from a CA of its
	// own, which only the stand-in kubelets trust, so no user certificate
	// from ClientCA opens their exec endpoint directly.
	kubeletClient, err := cp.kubeletClientCA.IssueClient("kube-apiserver-kubelet-client")
	if err != nil {
		return err
	}
	if err := cp.writeCertKey("kubelet-client", kubeletClient); err != nil {
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

// errPortTaken marks a component that exited because another process took
// its port between FreePort and the bind.
var errPortTaken = errors.New("port taken")

// retryStart starts a component on fresh ports, again when another process
// took a port between choosing and binding it; other errors end at once.
func retryStart(ctx context.Context, start func() error) error {
	var err error
	for range 5 {
		if err = start(); err == nil || !errors.Is(err, errPortTaken) || ctx.Err() != nil {
			return err
		}
		klog.InfoS("Retrying a control-plane component on other ports", "err", err)
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
		p, err := StartProcess(cp.dir, "etcd", filepath.Join(cp.binDir, "etcd"),
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
			p.Stop()
			return err
		}
		cp.addProcess(p)
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
		cp.host = "https://" + net.JoinHostPort(cp.bindAddress, itoa(port))
		// With a real node the kubernetes Service's endpoint is the
		// kube-apiserver's own, kept by its lease reconciler; without one no
		// pod needs it.
		reconciler := "none"
		if cp.bindAddress != "127.0.0.1" {
			reconciler = "lease"
		}
		args := []string{
			"--etcd-servers=" + etcdURL,
			"--bind-address=" + cp.bindAddress,
			"--secure-port=" + itoa(port),
			"--advertise-address=" + cp.bindAddress,
			"--endpoint-reconciler-type=" + reconciler,
			"--tls-cert-file=" + cp.path("apiserver.crt"),
			"--tls-private-key-file=" + cp.path("apiserver.key"),
			"--client-ca-file=" + cp.path("client-ca.crt"),
			"--authorization-mode=Node,RBAC",
			"--service-account-key-file=" + cp.path("sa.pub"),
			"--service-account-signing-key-file=" + cp.path("sa.key"),
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-cluster-ip-range=" + cp.serviceCIDR,
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
		args = append(args, extra...)
		p, err := StartProcess(cp.dir, "kube-apiserver", filepath.Join(cp.binDir, "kube-apiserver"), args...)
		if err != nil {
			return err
		}
		admin, err := cp.UserConfig(AdminUser, "system:masters")
		if err != nil {
			p.Stop()
			return err
		}
		cp.admin = admin
		if err := waitHTTP(ctx, p, cp.host+"/readyz", admin, 120*time.Second); err != nil {
			p.Stop()
			return err
		}
		cp.addProcess(p)
		cp.apiServerArgs = args
		cp.kubeconfig = cp.path("admin.kubeconfig")
		return WriteKubeconfig(cp.kubeconfig, admin, "")
	})
}

// apiServerProcess returns the running or stopped kube-apiserver and its
// index among the processes.
func (cp *ControlPlane) apiServerProcess() (*Process, int) {
	for i, p := range cp.processes {
		if p.name == "kube-apiserver" {
			return p, i
		}
	}
	return nil, -1
}

// StopAPIServer stops the kube-apiserver alone (SIGTERM, SIGKILL after ten
// seconds) and returns once it has exited. etcd, the controllers, the
// scheduler and the stand-in nodes keep running and see connections
// refused, as in an outage of the API server; StartAPIServer brings it back
// on the same address with the same certificates and data. Tests that stop
// the API server need a control plane of their own.
func (cp *ControlPlane) StopAPIServer() error {
	cp.mu.Lock()
	p, _ := cp.apiServerProcess()
	cp.mu.Unlock()
	if p == nil {
		return errors.New("no kube-apiserver was started")
	}
	p.Stop()
	return nil
}

// StartAPIServer starts a kube-apiserver stopped by StopAPIServer again, with
// the same flags (address, port, certificates, etcd), and waits until it is
// ready. It does nothing when the kube-apiserver is running.
func (cp *ControlPlane) StartAPIServer(ctx context.Context) error {
	cp.mu.Lock()
	old, i := cp.apiServerProcess()
	args := cp.apiServerArgs
	cp.mu.Unlock()
	if old == nil || args == nil {
		return errors.New("no kube-apiserver was started")
	}
	if !old.Exited() {
		return nil
	}
	// The log of the first run is kept beside the new one.
	_ = os.Rename(old.logPath, strings.TrimSuffix(old.logPath, ".log")+fmt.Sprintf(".%d.log", time.Now().UnixNano()))
	p, err := StartProcess(cp.dir, "kube-apiserver", filepath.Join(cp.binDir, "kube-apiserver"), args...)
	if err != nil {
		return err
	}
	cp.mu.Lock()
	cp.processes[i] = p
	cp.mu.Unlock()
	// The port was the kube-apiserver's a moment ago; a start that finds it
	// taken fails here rather than moving: clients know only this address.
	return waitHTTP(ctx, p, cp.host+"/readyz", cp.admin, 120*time.Second)
}

// RestartAPIServer stops the kube-apiserver, leaves it down for downtime (or
// until ctx ends), and starts it again as StartAPIServer does.
func (cp *ControlPlane) RestartAPIServer(ctx context.Context, downtime time.Duration) error {
	if err := cp.StopAPIServer(); err != nil {
		return err
	}
	select {
	case <-time.After(downtime):
	case <-ctx.Done():
	}
	return cp.StartAPIServer(context.WithoutCancel(ctx))
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
	// kube-controller-manager serves /healthz but no /readyz; its
	// controllers are known to run once the serviceaccount controller has
	// filled the default namespace.
	return cp.startComponent(ctx, "kube-controller-manager", "system:kube-controller-manager", "/healthz",
		"--cert-dir="+cp.path("kube-controller-manager-certs"),
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+cp.path("sa.key"),
		"--root-ca-file="+cp.path("serving-ca.crt"),
		"--service-cluster-ip-range="+cp.serviceCIDR,
		"--controllers=*",
		// The stand-in node heartbeats through its Lease; a stalled test
		// should not see its pods evicted.
		"--node-monitor-grace-period=5m",
	)
}

func (cp *ControlPlane) startScheduler(ctx context.Context) error {
	return cp.startComponent(ctx, "kube-scheduler", "system:kube-scheduler", "/readyz")
}

// startComponent runs the control-plane binary name as user, serving on a
// free loopback port without leader election or profiling, and waits until
// its probe path answers 200.
func (cp *ControlPlane) startComponent(ctx context.Context, name, user, probe string, extra ...string) error {
	kubeconfig, err := cp.componentKubeconfig(name, user)
	if err != nil {
		return err
	}
	return retryStart(ctx, func() error {
		port, err := FreePort()
		if err != nil {
			return err
		}
		args := append([]string{
			"--kubeconfig=" + kubeconfig,
			"--authentication-kubeconfig=" + kubeconfig,
			"--authorization-kubeconfig=" + kubeconfig,
			"--bind-address=127.0.0.1",
			"--secure-port=" + itoa(port),
			"--leader-elect=false",
			"--profiling=false",
			"--v=1",
		}, extra...)
		p, err := StartProcess(cp.dir, name, filepath.Join(cp.binDir, name), args...)
		if err != nil {
			return err
		}
		if err := waitHTTP(ctx, p, "https://127.0.0.1:"+itoa(port)+probe, nil, 60*time.Second); err != nil {
			p.Stop()
			return err
		}
		cp.addProcess(p)
		return nil
	})
}

// waitHTTP polls url until it answers 200, the process exits or the timeout
// passes. A nil cfg skips server verification, for components whose serving
// certificate is self-signed.
func waitHTTP(ctx context.Context, p *Process, url string, cfg *rest.Config, timeout time.Duration) error {
	if cfg == nil {
		cfg = &rest.Config{TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	}
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = 5 * time.Second
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return fmt.Errorf("client for %s: %w", p.name, err)
	}
	var last string
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if p.Exited() {
			if strings.Contains(p.LogTail(4000), "address already in use") {
				return false, fmt.Errorf("%s exited (%w): %w", p.name, errPortTaken, p.err)
			}
			return false, fmt.Errorf("%s exited: %w", p.name, p.err)
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
		return fmt.Errorf("waiting for %s at %s (last: %s): %w\n--- %s log tail ---\n%s", p.name, url, last, err, p.name, p.LogTail(3000))
	}
	return nil
}

// LogTails returns the end of each component's log, for failure reports.
// The full logs are the *.log files in Dir.
func (cp *ControlPlane) LogTails() string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var b strings.Builder
	for _, p := range cp.processes {
		fmt.Fprintf(&b, "--- %s (%s) ---\n%s\n", p.name, p.logPath, p.LogTail(2000))
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
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(namespace).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("no default ServiceAccount in namespace %s (is kube-controller-manager running?): %w", namespace, err)
	}
	return nil
}

// CreateNamespace creates a namespace and waits for its default
// ServiceAccount.
func (cp *ControlPlane) CreateNamespace(ctx context.Context, name string) error {
	cs, err := kubernetes.NewForConfig(cp.admin)
	if err != nil {
		return err
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating namespace %s: %w", name, err)
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

// controlPlaneBinaries are the programs findBinDir looks for.
var controlPlaneBinaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"}

// findBinDir locates the control-plane binaries: dir, else $EnvBinDir, else
// <repo>/_output/bin. Missing binaries are built (BuildBinaries).
func findBinDir(dir string) (string, error) {
	dir, err := binDirOrDefault(dir)
	if err != nil {
		return "", err
	}
	if missingBinaries(dir) == nil {
		return dir, nil
	}
	klog.InfoS("Building the control plane; a cold build takes about ten minutes", "dir", dir, "missing", missingBinaries(dir))
	var out strings.Builder
	if _, err := BuildBinaries(context.Background(), dir, false, &out); err != nil {
		return "", fmt.Errorf("%w\n%s", err, out.String())
	}
	if missing := missingBinaries(dir); missing != nil {
		return "", fmt.Errorf("hack/build-control-plane.sh left %v missing in %s", missing, dir)
	}
	return dir, nil
}

// binDirOrDefault is dir, else $EnvBinDir, else <repo>/_output/bin.
func binDirOrDefault(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv(EnvBinDir)
	}
	if dir != "" {
		return dir, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("no control-plane binaries: set %s to their folder: %w", EnvBinDir, err)
	}
	return filepath.Join(root, "_output", "bin"), nil
}

// BuildBinaries runs hack/build-control-plane.sh, which rebuilds what is
// stale of the control plane and, with node, of the real node's programs,
// into dir (as findBinDir defaults it), and returns dir. It holds the
// folder's build lock meanwhile, so that processes that need the binaries at
// once (test binaries in parallel, make dev) build them once. The script's
// output goes to out.
func BuildBinaries(ctx context.Context, dir string, node bool, out io.Writer) (string, error) {
	dir, err := binDirOrDefault(dir)
	if err != nil {
		return "", err
	}
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("no repository to build the binaries in %s (run hack/build-control-plane.sh): %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("making %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".build.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", fmt.Errorf("locking %s: %w", dir, err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("locking %s: %w", dir, err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	var args []string
	if node {
		args = append(args, "--node")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "build-control-plane.sh"), args...)
	cmd.Env = append(os.Environ(), "CONTROL_PLANE_BIN="+dir)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("hack/build-control-plane.sh %s: %w", strings.Join(args, " "), err)
	}
	return dir, nil
}

// missingBinaries lists the control-plane programs that dir lacks.
func missingBinaries(dir string) []string {
	var missing []string
	for _, bin := range controlPlaneBinaries {
		if fi, err := os.Stat(filepath.Join(dir, bin)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, bin)
		}
	}
	return missing
}

// modulePath is this repository's Go module.
const modulePath = "github.com/kubeopencode/share"

// RepoRoot returns the root of this repository: the folder of the go.mod of
// module github.com/kubeopencode/share, found from the working directory
// upwards, else from this source file's folder upwards.
func RepoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		if root, ok := findModuleRoot(dir); ok {
			return root, nil
		}
	}
	return "", fmt.Errorf("not inside the %s repository (searched up from %v)", modulePath, starts)
}

func findModuleRoot(dir string) (string, bool) {
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && goModPath(b) == modulePath {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// goModPath returns the module path a go.mod declares.
func goModPath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}
