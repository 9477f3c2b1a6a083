package standin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// Options configures a stand-in kubelet.
type Options struct {
	// NodeName is the Node it registers.
	NodeName string
	// Config authenticates it to the API server, as system:node:<NodeName>
	// in group system:nodes.
	Config *rest.Config
	// ServingCert is its HTTPS certificate, which the API server verifies
	// with --kubelet-certificate-authority; it must name 127.0.0.1.
	ServingCert tls.Certificate
	// ClientCAs verify the API server's kubelet-client certificate.
	ClientCAs *x509.CertPool
	// WorkDir holds each pod's working folder.
	WorkDir string
}

// Kubelet is a running stand-in kubelet.
type Kubelet struct {
	opts     Options
	client   kubernetes.Interface
	port     int
	server   *http.Server
	executor *processExecutor
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// Start registers the Node and serves until Stop.
func Start(ctx context.Context, opts Options) (*Kubelet, error) {
	client, err := kubernetes.NewForConfig(opts.Config)
	if err != nil {
		return nil, err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{opts.ServingCert},
		ClientCAs:    opts.ClientCAs,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		return nil, fmt.Errorf("stand-in kubelet listener: %w", err)
	}
	k := &Kubelet{
		opts:     opts,
		client:   client,
		port:     ln.Addr().(*net.TCPAddr).Port,
		executor: &processExecutor{workDir: opts.WorkDir},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/exec/{namespace}/{pod}/{container}", k.serveExec)
	mux.HandleFunc("/exec/{namespace}/{pod}/{uid}/{container}", k.serveExec)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	k.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	runCtx, cancel := context.WithCancel(context.Background())
	k.cancel = cancel
	if err := k.registerNode(ctx); err != nil {
		cancel()
		ln.Close()
		return nil, err
	}
	k.wg.Add(3)
	go func() {
		defer k.wg.Done()
		if err := k.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Stand-in kubelet stopped serving")
		}
	}()
	go func() { defer k.wg.Done(); k.heartbeat(runCtx) }()
	go func() { defer k.wg.Done(); k.syncPods(runCtx) }()
	return k, nil
}

// Port is the kubelet's HTTPS port.
func (k *Kubelet) Port() int { return k.port }

// Stop stops serving and syncing. The Node stays registered.
func (k *Kubelet) Stop() {
	k.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = k.server.Shutdown(ctx)
	_ = k.server.Close()
	k.wg.Wait()
}

func (k *Kubelet) serveExec(w http.ResponseWriter, req *http.Request) {
	opts, err := remotecommand.NewOptions(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := req.URL.Query()[corev1.ExecCommandParam]
	pod := req.PathValue("pod")
	klog.V(2).InfoS("Stand-in exec", "pod", req.PathValue("namespace")+"/"+pod, "container", req.PathValue("container"), "tty", opts.TTY)
	remotecommand.ServeExec(w, req, k.executor, pod, req.PathValue("uid"), req.PathValue("container"), cmd, opts,
		4*time.Hour, 30*time.Second, remotecommand.SupportedStreamingProtocols)
}

func (k *Kubelet) node() *corev1.Node {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("8"),
		corev1.ResourceMemory:           resource.MustParse("16Gi"),
		corev1.ResourcePods:             resource.MustParse("250"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:   k.opts.NodeName,
			Labels: map[string]string{corev1.LabelHostname: k.opts.NodeName, corev1.LabelOSStable: "linux", corev1.LabelArchStable: "amd64"},
		},
		Status: k.nodeStatus(capacity),
	}
}

func (k *Kubelet) nodeStatus(capacity corev1.ResourceList) corev1.NodeStatus {
	now := metav1.Now()
	return corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "stand-in kubelet is ready", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: k.opts.NodeName},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(k.port)}},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion: "v1.37.2", OperatingSystem: "linux", Architecture: "amd64",
			ContainerRuntimeVersion: "standin://1", OSImage: "stand-in kubelet",
		},
	}
}

func (k *Kubelet) registerNode(ctx context.Context) error {
	node := k.node()
	created, err := k.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = k.client.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("registering node %s: %w", node.Name, err)
	}
	// Status is ignored on create; set it through the status subresource.
	created.Status = node.Status
	if _, err := k.client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting node %s status: %w", node.Name, err)
	}
	return nil
}

// heartbeat renews the node Lease and Ready condition, as a kubelet does, so
// the node-lifecycle controller never takes the node for dead.
func (k *Kubelet) heartbeat(ctx context.Context) {
	leases := k.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	tick := 0
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		now := metav1.NewMicroTime(time.Now())
		lease, err := leases.Get(ctx, k.opts.NodeName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = leases.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: k.opts.NodeName, Namespace: corev1.NamespaceNodeLease},
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity: ptr.To(k.opts.NodeName), LeaseDurationSeconds: ptr.To[int32](40), RenewTime: &now,
				},
			}, metav1.CreateOptions{})
		case err == nil:
			lease.Spec.RenewTime = &now
			_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			klog.V(2).InfoS("Stand-in node lease renewal failed", "err", err)
		}
		if tick++; tick%6 == 0 {
			if err := k.registerNode(ctx); err != nil && ctx.Err() == nil {
				klog.V(2).InfoS("Stand-in node status update failed", "err", err)
			}
		}
	}, 10*time.Second)
}

// syncPods reports pods bound to the node Running and Ready, and finishes
// the deletion of pods being deleted, as a kubelet does once their
// containers have stopped.
func (k *Kubelet) syncPods(ctx context.Context) {
	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", k.opts.NodeName).String()
	}))
	inf := factory.Core().V1().Pods().Informer()
	queue := make(chan *corev1.Pod, 1024)
	enqueue := func(obj interface{}) {
		if pod, ok := obj.(*corev1.Pod); ok {
			select {
			case queue <- pod:
			case <-ctx.Done():
			}
		}
	}
	_, _ = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj interface{}) { enqueue(obj) },
	})
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for {
		select {
		case <-ctx.Done():
			return
		case pod := <-queue:
			if err := k.syncPod(ctx, pod); err != nil && ctx.Err() == nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				klog.InfoS("Stand-in pod sync failed", "pod", klog.KObj(pod), "err", err)
			}
		}
	}
}

func (k *Kubelet) syncPod(ctx context.Context, pod *corev1.Pod) error {
	pods := k.client.CoreV1().Pods(pod.Namespace)
	if pod.DeletionTimestamp != nil {
		return pods.Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
	}
	if pod.Status.Phase == corev1.PodRunning && podReady(pod) {
		return nil
	}
	now := metav1.Now()
	updated := pod.DeepCopy()
	st := &updated.Status
	st.Phase = corev1.PodRunning
	st.HostIP = "127.0.0.1"
	st.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
	st.PodIP = "127.0.0.1"
	st.PodIPs = []corev1.PodIP{{IP: "127.0.0.1"}}
	st.StartTime = &now
	st.Conditions = nil
	for _, t := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.PodScheduled, corev1.ContainersReady, corev1.PodReady} {
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	st.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name:         c.Name,
			Image:        c.Image,
			ImageID:      "standin://" + c.Image,
			ContainerID:  "standin://" + string(pod.UID) + "/" + c.Name,
			Ready:        true,
			Started:      ptr.To(true),
			RestartCount: 0,
			State:        corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	_, err := pods.UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	return err
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Addr is the kubelet's host:port.
func (k *Kubelet) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(k.port)) }
