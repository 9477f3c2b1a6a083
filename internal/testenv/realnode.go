package testenv

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// RealNodeName is the name of the real node.
const RealNodeName = "kubeopencode-node"

// nodeBinaries are the programs of the real node, built into the
// control-plane binaries' folder by hack/build-control-plane.sh --node.
var nodeBinaries = []string{"kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "ctr"}

// PauseImage is the sandbox image of the real node's containerd, built on
// the machine (hack/build-images.sh) and imported with the node's images.
const PauseImage = "kubeopencode/pause:test"

// RealNode is a kubelet, kube-proxy and containerd on this machine, joined
// to a control plane started with Options.RealNode: pods run in containers
// (runc) on a bridge of their own, Services work through kube-proxy, and
// images come only from archives imported with ImportImages (pods must use
// imagePullPolicy Never or IfNotPresent).
type RealNode struct {
	cp         *ControlPlane
	containerd *Process
	processes  []*Process
}

// containerdSocket is containerd's endpoint.
var containerdSocket = filepath.Join(nodeRunDir, "containerd", "containerd.sock")

// nodeLockPath is the machine's real-node lock: one real node at a time,
// since its ranges, bridge, folders and cgroup are fixed.
const nodeLockPath = "/run/kubeopencode-node.lock"

// nodeLock is the machine's real-node lock, held.
type nodeLock struct{ f *os.File }

// acquireNodeLock takes the machine's real-node lock, waiting for another
// process's node to stop first (a test, make dev: they wait for each other
// instead of failing). The kernel releases it when the holder dies, after
// which the next start cleans up.
//
// The lock is the file at nodeLockPath, which release removes so that a
// run leaves nothing behind. A waiter may therefore get the flock of a file
// that was removed meanwhile, while another process has made a new one at
// the path and locked that: holding the flock counts only while the file
// is still the one at the path, and otherwise the waiter starts again on
// the new file.
func acquireNodeLock(ctx context.Context) (*nodeLock, error) {
	waiting := false
	for {
		f, err := os.OpenFile(nodeLockPath, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, err
		}
		for {
			err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			if err == nil {
				break
			}
			if !errors.Is(err, syscall.EWOULDBLOCK) {
				f.Close()
				return nil, fmt.Errorf("locking %s: %w", nodeLockPath, err)
			}
			if !waiting {
				// A real node may run for many minutes (a test, make
				// dev): say why nothing happens meanwhile, and who holds it.
				klog.InfoS("Waiting for the real node of another process on this machine to stop", "lock", nodeLockPath, "holder", nodeLockHolder(f))
				waiting = true
			}
			select {
			case <-ctx.Done():
				holder := nodeLockHolder(f)
				f.Close()
				return nil, fmt.Errorf("waiting for the real node of %s to stop (%s): %w", holder, nodeLockPath, ctx.Err())
			case <-time.After(500 * time.Millisecond):
			}
		}
		held, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		if now, err := os.Stat(nodeLockPath); err == nil && os.SameFile(held, now) {
			// Who holds it, for the processes that wait.
			if err := f.Truncate(0); err == nil {
				_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
			}
			return &nodeLock{f: f}, nil
		}
		f.Close()
	}
}

// nodeLockHolder describes the process that wrote its PID into the lock's
// file f: "process <pid> (<command line>)", or "another process".
func nodeLockHolder(f *os.File) string {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil || pid <= 0 {
		return "another process"
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(cmdline) == 0 {
		return fmt.Sprintf("process %d", pid)
	}
	return fmt.Sprintf("process %d (%s)", pid, strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " ")))
}

// release removes the lock's file, while still holding it, and releases
// the lock: a process waiting on the removed file finds, once it has the
// flock, that the file is no longer the lock, and tries again. Only the
// first call does anything: a second must not remove the file of the
// lock's next holder.
func (l *nodeLock) release() {
	if l == nil || l.f == nil {
		return
	}
	if err := os.Remove(nodeLockPath); err != nil && !os.IsNotExist(err) {
		klog.ErrorS(err, "Removing the real node's lock", "path", nodeLockPath)
	}
	l.f.Close()
	l.f = nil
}

// startRealNode runs containerd, imports images, and runs kube-proxy and
// the kubelet, then waits for the Node to be Ready. The network is set up
// already (Start did it before etcd).
func (cp *ControlPlane) startRealNode(ctx context.Context, images []string) error {
	n := &RealNode{cp: cp}
	cp.realNode = n
	if missing := missingIn(cp.binDir, nodeBinaries); missing != nil {
		return fmt.Errorf("real node: %v missing in %s (run hack/build-control-plane.sh --node)", missing, cp.binDir)
	}
	for _, dir := range []string{"containerd", "cni/net.d", "cni/networks", "kubelet"} {
		if err := os.MkdirAll(filepath.Join(nodeStateDir, dir), 0o700); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(containerdSocket), 0o700); err != nil {
		return err
	}
	if err := n.startContainerd(ctx); err != nil {
		return err
	}
	if err := n.ImportImages(ctx, images...); err != nil {
		return err
	}
	if err := n.startKubelet(ctx); err != nil {
		return err
	}
	if err := n.waitReady(ctx); err != nil {
		return err
	}
	// kube-proxy reads the node's addresses once, from its Node, and exits
	// when they change: it starts once the kubelet has registered them.
	return n.startKubeProxy(ctx)
}

func missingIn(dir string, names []string) []string {
	var missing []string
	for _, bin := range names {
		if fi, err := os.Stat(filepath.Join(dir, bin)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, bin)
		}
	}
	return missing
}

// start runs one of the node's programs, its log beside the control
// plane's, with the binaries' folder first on PATH (containerd finds its
// shim there).
func (n *RealNode) start(name string, args ...string) (*Process, error) {
	p, err := StartProcess(n.cp.dir, name, filepath.Join(n.cp.binDir, name), args...)
	if err != nil {
		return nil, err
	}
	n.processes = append(n.processes, p)
	return p, nil
}

func (n *RealNode) writeFile(name, content string) (string, error) {
	path := filepath.Join(nodeStateDir, name)
	return path, os.WriteFile(path, []byte(content), 0o600)
}

// containerdConfig runs the CRI with runc, the bridge CNI plugin and the
// machine-built sandbox image; restrict_oom_score_adj because the test
// process may lack CAP_SYS_RESOURCE, and no plugin that would reach for
// anything outside the node's folders.
const containerdConfig = `version = 3
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[3]q

[ttrpc]
  address = "%[3]s.ttrpc"

[plugins.'io.containerd.internal.v1.opt']
  path = "%[1]s/opt"

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %[4]q

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = %[5]q
        Root = %[8]q
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%[6]q]
    conf_dir = %[7]q
`

// cniConfig puts pods on the bridge with addresses from PodCIDR, a route
// to the Services through the node and no other route: no default route,
// no masquerade, no gateway role for the bridge plugin. Pods reach the
// node and each other and nothing else.
const cniConfig = `{
  "cniVersion": "1.0.0",
  "name": "kubeopencode-node",
  "plugins": [{
    "type": "bridge",
    "bridge": %q,
    "isGateway": false,
    "isDefaultGateway": false,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": %q, "gateway": %q}]],
      "routes": [{"dst": %q, "gw": %q}],
      "dataDir": %q
    }
  }]
}
`

// cniBinDir is where Debian's containernetworking-plugins puts the plugins.
const cniBinDir = "/usr/lib/cni"

func (n *RealNode) startContainerd(ctx context.Context) error {
	runc, err := exec.LookPath("runc")
	if err != nil {
		return fmt.Errorf("real node: %w", err)
	}
	if _, err := os.Stat(filepath.Join(cniBinDir, "bridge")); err != nil {
		return fmt.Errorf("real node: the CNI plugins (containernetworking-plugins): %w", err)
	}
	if _, err := n.writeFile("cni/net.d/10-kubeopencode.conflist", fmt.Sprintf(cniConfig,
		nodeBridge, PodCIDR, NodeAddress, ServiceCIDR, NodeAddress, filepath.Join(nodeStateDir, "cni", "networks"))); err != nil {
		return err
	}
	config, err := n.writeFile("containerd.toml", fmt.Sprintf(containerdConfig,
		filepath.Join(nodeStateDir, "containerd"), filepath.Join(nodeRunDir, "containerd-state"),
		containerdSocket, PauseImage, runc, cniBinDir, filepath.Join(nodeStateDir, "cni", "net.d"), filepath.Join(nodeRunDir, "runc")))
	if err != nil {
		return err
	}
	// containerd finds its shim on PATH.
	path := "PATH=" + n.cp.binDir + string(os.PathListSeparator) + os.Getenv("PATH")
	p, err := startProcessEnv(n.cp.dir, "containerd", []string{path}, filepath.Join(n.cp.binDir, "containerd"), "--config="+config, "--log-level=warn")
	if err != nil {
		return err
	}
	n.processes = append(n.processes, p)
	n.containerd = p
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("containerd exited: %w\n%s", p.Err(), p.LogTail(3000))
		}
		_, err := n.ctr(ctx, "version")
		return err == nil, nil
	})
}

// ctr runs containerd's ctr against the node's containerd in the
// Kubernetes namespace.
func (n *RealNode) ctr(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(n.cp.binDir, "ctr"), append([]string{"--address=" + containerdSocket, "--namespace=k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ImportImages imports image archives (hack/build-images.sh) into the
// node's containerd, where the kubelet finds them by the names they were
// built with.
func (n *RealNode) ImportImages(ctx context.Context, archives ...string) error {
	for _, a := range archives {
		if _, err := n.ctr(ctx, "images", "import", a); err != nil {
			return fmt.Errorf("real node: importing %s: %w", a, err)
		}
	}
	return nil
}

const kubeProxyConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %q
mode: iptables
hostnameOverride: %q
bindAddress: %q
healthzBindAddress: 127.0.0.1:%d
metricsBindAddress: 127.0.0.1:%d
clusterCIDR: %q
nodePortAddresses: [%q]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`

func (n *RealNode) startKubeProxy(ctx context.Context) error {
	kubeconfig, err := n.cp.componentKubeconfig("kube-proxy", "system:kube-proxy")
	if err != nil {
		return err
	}
	healthz, err := FreePort()
	if err != nil {
		return err
	}
	metrics, err := FreePort()
	if err != nil {
		return err
	}
	config, err := n.writeFile("kube-proxy.yaml", fmt.Sprintf(kubeProxyConfig,
		kubeconfig, RealNodeName, NodeAddress, healthz, metrics, PodCIDR, NodeAddress+"/32"))
	if err != nil {
		return err
	}
	p, err := n.start("kube-proxy", "--config="+config, "--v=1")
	if err != nil {
		return err
	}
	return waitHTTP(ctx, p, fmt.Sprintf("http://127.0.0.1:%d/livez", healthz), nil, time.Minute)
}

// kubeletConfig: cgroupfs under the node's own cgroup root, x509 clients
// from the kube-apiserver's kubelet-client CA only, no DNS (pods get no
// resolver to reach for), eviction thresholds low enough for a busy CI
// disk, and cgroup v1 allowed.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]q
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %[2]d
tlsCertFile: %[3]q
tlsPrivateKeyFile: %[4]q
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: %[5]q
authorization:
  mode: AlwaysAllow
containerRuntimeEndpoint: unix://%[6]s
cgroupDriver: cgroupfs
cgroupRoot: /%[7]s
failCgroupV1: false
failSwapOn: false
resolvConf: ""
clusterDomain: cluster.local
podCIDR: %[8]q
registerNode: true
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
nodeStatusUpdateFrequency: 2s
syncFrequency: 5s
`

func (n *RealNode) startKubelet(ctx context.Context) error {
	kubeconfig, err := n.cp.componentKubeconfig("kubelet", "system:node:"+RealNodeName, "system:nodes")
	if err != nil {
		return err
	}
	serving, err := n.cp.kubeletCA.IssueServing([]string{RealNodeName}, []net.IP{net.ParseIP(NodeAddress)})
	if err != nil {
		return err
	}
	certPath, err := n.writeFile("kubelet.crt", string(serving.CertPEM))
	if err != nil {
		return err
	}
	keyPath, err := n.writeFile("kubelet.key", string(serving.KeyPEM))
	if err != nil {
		return err
	}
	if err := makeCgroupRoot(); err != nil {
		return err
	}
	healthz, err := FreePort()
	if err != nil {
		return err
	}
	config, err := n.writeFile("kubelet.yaml", fmt.Sprintf(kubeletConfig,
		NodeAddress, healthz, certPath, keyPath, n.cp.path("kubelet-client-ca.crt"),
		containerdSocket, nodeCgroup, PodCIDR))
	if err != nil {
		return err
	}
	p, err := n.start("kubelet",
		"--config="+config,
		"--kubeconfig="+kubeconfig,
		"--hostname-override="+RealNodeName,
		"--node-ip="+NodeAddress,
		"--root-dir="+filepath.Join(nodeStateDir, "kubelet"),
		"--v=1")
	if err != nil {
		return err
	}
	return waitHTTP(ctx, p, fmt.Sprintf("http://127.0.0.1:%d/healthz", healthz), nil, time.Minute)
}

// makeCgroupRoot makes the kubelet's cgroup root in every hierarchy, as the
// kubelet requires it to exist; cgroup v1's cpuset needs its CPUs and
// memory nodes filled in before a child can hold a process.
func makeCgroupRoot() error {
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*/cgroup.procs")
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.procs"); err == nil {
		hierarchies = append(hierarchies, "/sys/fs/cgroup/cgroup.procs")
	}
	for _, h := range hierarchies {
		parent := filepath.Dir(h)
		dir := filepath.Join(parent, nodeCgroup)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("real node: cgroup %s: %w", dir, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(parent, f)); err == nil {
				_ = os.WriteFile(filepath.Join(dir, f), v, 0o644)
			}
		}
	}
	return nil
}

// waitReady waits for the Node to be Ready.
func (n *RealNode) waitReady(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(n.cp.admin)
	if err != nil {
		return err
	}
	var last string
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, p := range n.processes {
			if p.Exited() {
				return false, fmt.Errorf("%s exited: %w\n%s", p.name, p.Err(), p.LogTail(3000))
			}
		}
		node, err := cs.CoreV1().Nodes().Get(ctx, RealNodeName, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				last = c.Reason + ": " + c.Message
				return c.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("real node %s not Ready (last: %s): %w", RealNodeName, last, err)
	}
	return nil
}

// stop stops the kubelet and kube-proxy, then containerd, then removes
// everything the node made: the pods' processes die with their cgroups,
// which is what a kubelet's node going away means for them.
func (n *RealNode) stop() {
	if n == nil {
		return
	}
	for i := len(n.processes) - 1; i >= 0; i-- {
		if n.processes[i] != n.containerd {
			n.processes[i].Stop()
		}
	}
	killNodeProcesses()
	n.containerd.Stop()
	cleanUpNode()
	klog.V(2).InfoS("Real node stopped")
}

// LogTails returns the end of the node's logs.
func (n *RealNode) LogTails() string {
	var b strings.Builder
	for _, p := range n.processes {
		fmt.Fprintf(&b, "--- %s (%s) ---\n%s\n", p.name, p.logPath, p.LogTail(3000))
	}
	return b.String()
}

// RealNode is the real node of a control plane started with
// Options.RealNode, or nil.
func (cp *ControlPlane) RealNode() *RealNode { return cp.realNode }

// ContainerPID returns the host PID of a running container's first
// process, from the containerID of its pod's status (containerd://<id>).
func (n *RealNode) ContainerPID(ctx context.Context, containerID string) (int, error) {
	id := strings.TrimPrefix(containerID, "containerd://")
	out, err := n.ctr(ctx, "tasks", "ls")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == id {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("no task %s on the real node:\n%s", id, out)
}

// CheckStaticBusybox says why hack/build-images.sh cannot make the Agent
// image of a real node's tests and of make dev, or nil: it needs a static
// busybox at $BUSYBOX, else /bin/busybox (Debian's busybox-static).
func CheckStaticBusybox() error {
	path := os.Getenv("BUSYBOX")
	if path == "" {
		path = "/bin/busybox"
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("the Agent image needs a static busybox (busybox-static): %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("the Agent image needs a static busybox (busybox-static): %s is linked dynamically", path)
		}
	}
	return nil
}
