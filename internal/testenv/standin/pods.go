package standin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// startPodSync starts an informer on the pods bound to the node and a worker
// that reports them Running and Ready and finishes their deletion. It
// returns once the informer has synced, so that exec finds every pod.
func (k *Kubelet) startPodSync(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", k.opts.NodeName).String()
	}))
	podInformer := factory.Core().V1().Pods()
	inf := podInformer.Informer()
	k.pods = podInformer.Lister()
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 10*time.Second),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "standin-" + k.opts.NodeName})
	enqueue := func(obj any) {
		if key, err := toolscache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			queue.Add(key)
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		return fmt.Errorf("stand-in kubelet %s pod informer: %w", k.opts.NodeName, err)
	}
	factory.Start(k.ctx.Done())
	k.wg.Add(2)
	go func() {
		defer k.wg.Done()
		<-k.ctx.Done()
		queue.ShutDown()
		factory.Shutdown()
	}()
	go func() {
		defer k.wg.Done()
		for k.processNextPod(queue) {
		}
	}()
	syncCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if !toolscache.WaitForCacheSync(syncCtx.Done(), inf.HasSynced) {
		return fmt.Errorf("stand-in kubelet %s: pod cache did not sync", k.opts.NodeName)
	}
	return nil
}

func (k *Kubelet) processNextPod(queue workqueue.TypedRateLimitingInterface[string]) bool {
	key, quit := queue.Get()
	if quit {
		return false
	}
	defer queue.Done(key)
	err := k.syncPod(k.ctx, key)
	switch {
	case err == nil || apierrors.IsNotFound(err):
		queue.Forget(key)
	case k.ctx.Err() != nil:
	default:
		if !apierrors.IsConflict(err) {
			klog.InfoS("Stand-in pod sync failed; retrying", "node", k.opts.NodeName, "pod", key, "err", err)
		}
		queue.AddRateLimited(key)
	}
	return true
}

// syncPod brings the pod named key to what a kubelet would make of it with
// every container started at once and never exiting.
func (k *Kubelet) syncPod(ctx context.Context, key string) error {
	namespace, name, err := toolscache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := k.pods.Pods(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		// Gone: its working folder goes too.
		return os.RemoveAll(k.podDir(namespace, name))
	}
	if err != nil {
		return err
	}
	pods := k.client.CoreV1().Pods(namespace)
	if pod.DeletionTimestamp != nil {
		// Its "containers" stop at once; a kubelet then deletes the pod
		// for good with grace period 0.
		return pods.Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
	}
	if pod.Status.Phase == corev1.PodRunning && podReady(pod) {
		return nil
	}
	_, err = pods.UpdateStatus(ctx, runningPod(pod), metav1.UpdateOptions{})
	return err
}

// runningPod returns pod with the status of a Running and Ready pod on
// 127.0.0.1.
func runningPod(pod *corev1.Pod) *corev1.Pod {
	now := metav1.Now()
	updated := pod.DeepCopy()
	st := &updated.Status
	st.Phase = corev1.PodRunning
	st.Reason, st.Message = "", ""
	st.HostIP = "127.0.0.1"
	st.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
	st.PodIP = "127.0.0.1"
	st.PodIPs = []corev1.PodIP{{IP: "127.0.0.1"}}
	if st.StartTime == nil {
		st.StartTime = &now
	}
	st.Conditions = nil
	for _, t := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.PodScheduled, corev1.ContainersReady, corev1.PodReady} {
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now, ObservedGeneration: pod.Generation})
	}
	st.InitContainerStatuses = nil
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, corev1.ContainerStatus{
			Name:        c.Name,
			Image:       c.Image,
			ImageID:     "standin://" + c.Image,
			ContainerID: containerID(pod, c.Name),
			Ready:       true,
			Started:     ptr.To(false),
			State:       corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed", StartedAt: now, FinishedAt: now, ContainerID: containerID(pod, c.Name)}},
		})
	}
	st.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name:        c.Name,
			Image:       c.Image,
			ImageID:     "standin://" + c.Image,
			ContainerID: containerID(pod, c.Name),
			Ready:       true,
			Started:     ptr.To(true),
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	return updated
}

func containerID(pod *corev1.Pod, container string) string {
	return "standin://" + string(pod.UID) + "/" + container
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podDir is the working folder of a pod's exec'd processes.
func (k *Kubelet) podDir(namespace, name string) string {
	return filepath.Join(k.opts.WorkDir, namespace, name)
}
