package standin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

const (
	// leaseDuration is the node Lease's duration; heartbeatPeriod renews it
	// well within, as the kubelet does (40s and 10s).
	leaseDuration   = 40 * time.Second
	heartbeatPeriod = 10 * time.Second
	// statusPeriod refreshes the Node's Ready condition.
	statusPeriod = time.Minute
)

// Options configures a stand-in kubelet.
type Options struct {
	// NodeName is the Node it registers.
	NodeName string
	// Config authenticates it to the API server, as system:node:<NodeName>
	// in group system:nodes, so that the Node authorizer and the
	// NodeRestriction admission plugin treat it as that node's kubelet.
	Config *rest.Config
	// ServingCert is its HTTPS certificate, which the API server verifies
	// with --kubelet-certificate-authority; it must name 127.0.0.1.
	ServingCert tls.Certificate
	// ClientCAs verify the client certificate of the API server
	// (--kubelet-client-certificate); a client without one is refused.
	ClientCAs *x509.CertPool
	// WorkDir holds a working folder per pod, <WorkDir>/<namespace>/<pod>,
	// in which exec'd commands run.
	WorkDir string
}

// Kubelet is a running stand-in kubelet.
type Kubelet struct {
	opts   Options
	client kubernetes.Interface
	port   int
	server *http.Server
	pods   corelisters.PodLister

	// ctx ends on Stop; exec'd processes and the sync loops run under it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start registers the Node, waits until the pods bound to it are in its
// cache, and serves on a loopback port until Stop.
func Start(ctx context.Context, opts Options) (*Kubelet, error) {
	if opts.NodeName == "" || opts.Config == nil || opts.ClientCAs == nil || opts.WorkDir == "" {
		return nil, errors.New("stand-in kubelet: NodeName, Config, ClientCAs and WorkDir are required")
	}
	if err := os.MkdirAll(opts.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("stand-in kubelet %s: %w", opts.NodeName, err)
	}
	client, err := kubernetes.NewForConfig(opts.Config)
	if err != nil {
		return nil, fmt.Errorf("stand-in kubelet %s: %w", opts.NodeName, err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{opts.ServingCert},
		ClientCAs:    opts.ClientCAs,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		return nil, fmt.Errorf("stand-in kubelet %s listener: %w", opts.NodeName, err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	k := &Kubelet{
		opts:   opts,
		client: client,
		port:   ln.Addr().(*net.TCPAddr).Port,
		ctx:    runCtx,
		cancel: cancel,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/exec/{namespace}/{pod}/{container}", k.serveExec)
	mux.HandleFunc("/exec/{namespace}/{pod}/{uid}/{container}", k.serveExec)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	k.server = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return runCtx },
	}

	fail := func(err error) (*Kubelet, error) {
		cancel()
		_ = ln.Close()
		k.wg.Wait()
		return nil, err
	}
	if err := k.updateNode(ctx); err != nil {
		return fail(err)
	}
	if err := k.renewLease(ctx); err != nil {
		return fail(fmt.Errorf("node %s lease: %w", opts.NodeName, err))
	}
	if err := k.startPodSync(ctx); err != nil {
		return fail(err)
	}
	k.wg.Add(2)
	go func() {
		defer k.wg.Done()
		if err := k.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Stand-in kubelet stopped serving", "node", opts.NodeName)
		}
	}()
	go func() { defer k.wg.Done(); k.heartbeat(runCtx) }()
	klog.V(1).InfoS("Stand-in kubelet up", "node", opts.NodeName, "addr", k.Addr())
	return k, nil
}

// NodeName is the name of the Node it serves.
func (k *Kubelet) NodeName() string { return k.opts.NodeName }

// Port is the kubelet's HTTPS port on 127.0.0.1.
func (k *Kubelet) Port() int { return k.port }

// Addr is the kubelet's host:port.
func (k *Kubelet) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(k.port)) }

// Stop ends every exec'd process, stops serving and syncing, and returns
// once all of its goroutines have. The Node stays registered (and, without
// heartbeats, eventually turns NotReady). It may be called more than once.
func (k *Kubelet) Stop() {
	k.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = k.server.Shutdown(ctx)
	_ = k.server.Close()
	k.wg.Wait()
}

func (k *Kubelet) node() *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: k.opts.NodeName,
			Labels: map[string]string{
				corev1.LabelHostname:   k.opts.NodeName,
				corev1.LabelOSStable:   "linux",
				corev1.LabelArchStable: "amd64",
			},
		},
	}
}

func (k *Kubelet) nodeStatus() corev1.NodeStatus {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("8"),
		corev1.ResourceMemory:           resource.MustParse("16Gi"),
		corev1.ResourcePods:             resource.MustParse("250"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	now := metav1.Now()
	return corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "stand-in kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", LastHeartbeatTime: now, LastTransitionTime: now},
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: k.opts.NodeName},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(k.port)}},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion:          "v1.37.2",
			OperatingSystem:         "linux",
			Architecture:            "amd64",
			ContainerRuntimeVersion: "standin://1",
			OSImage:                 "stand-in kubelet",
		},
	}
}

// updateNode registers the Node when absent and posts its status: Ready,
// its address and its kubelet port.
func (k *Kubelet) updateNode(ctx context.Context) error {
	nodes := k.client.CoreV1().Nodes()
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		node, err := nodes.Get(ctx, k.opts.NodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			node, err = nodes.Create(ctx, k.node(), metav1.CreateOptions{})
		}
		if err != nil {
			return err
		}
		// Status is dropped on create; it goes through the subresource.
		old := node.Status
		node.Status = k.nodeStatus()
		node.Status.Images, node.Status.VolumesInUse, node.Status.VolumesAttached = old.Images, old.VolumesInUse, old.VolumesAttached
		_, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("registering node %s: %w", k.opts.NodeName, err)
	}
	return nil
}

// renewLease creates or renews the node's Lease in kube-node-lease, which
// the node-lifecycle controller reads as the node's heartbeat.
func (k *Kubelet) renewLease(ctx context.Context) error {
	leases := k.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		now := metav1.NewMicroTime(time.Now())
		lease, err := leases.Get(ctx, k.opts.NodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = leases.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: k.opts.NodeName, Namespace: corev1.NamespaceNodeLease},
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity:       ptr.To(k.opts.NodeName),
					LeaseDurationSeconds: ptr.To(int32(leaseDuration / time.Second)),
					RenewTime:            &now,
				},
			}, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		lease.Spec.RenewTime = &now
		_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
		return err
	})
}

// heartbeat renews the node Lease and refreshes the Ready condition, as a
// kubelet does, so that the node-lifecycle controller never takes the node
// for dead and evicts its pods.
func (k *Kubelet) heartbeat(ctx context.Context) {
	lastStatus := time.Now()
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := k.renewLease(ctx); err != nil && ctx.Err() == nil {
			klog.InfoS("Stand-in node lease renewal failed", "node", k.opts.NodeName, "err", err)
		}
		if time.Since(lastStatus) < statusPeriod {
			return
		}
		if err := k.updateNode(ctx); err != nil && ctx.Err() == nil {
			klog.InfoS("Stand-in node status update failed", "node", k.opts.NodeName, "err", err)
			return
		}
		lastStatus = time.Now()
	}, heartbeatPeriod)
}
