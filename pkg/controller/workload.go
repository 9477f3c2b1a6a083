package controller

import (
	"context"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

// ContainerName is the name of the main container of an Agent's pods, the
// one share sessions exec into.
const ContainerName = "agent"

// Reasons of the Ready condition.
const (
	// ReasonDeploymentAvailable means the Agent's Deployment has an
	// available pod.
	ReasonDeploymentAvailable = "DeploymentAvailable"
	// ReasonDeploymentUnavailable means the Agent's Deployment has no
	// available pod yet, or no longer.
	ReasonDeploymentUnavailable = "DeploymentUnavailable"
	// ReasonDeploymentConflict means a Deployment with the Agent's name
	// exists and does not belong to the Agent, so it is left alone.
	ReasonDeploymentConflict = "DeploymentConflict"
	// ReasonInvalidSpec (a Warning Event, and the Ready condition of an
	// Agent that has no Deployment yet) means the API server refused the
	// Deployment made from the Agent's spec: a value the Agent's schema
	// lets through but a pod may not have, such as an environment variable
	// named with "=". A Deployment made from an earlier spec keeps running.
	ReasonInvalidSpec = "InvalidSpec"
)

// LabelManagedBy and ManagedBy mark the Deployments the controller makes.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = Name
)

// errForeignDeployment means a Deployment with the Agent's name is not
// controlled by the Agent.
var errForeignDeployment = errors.New("a Deployment with the Agent's name exists and does not belong to the Agent")

// workloadReconciler keeps an Agent's Deployment and its Ready condition.
type workloadReconciler struct {
	client    client.Client
	apiReader client.Reader
}

func (w *workloadReconciler) reconcile(ctx context.Context, sc *scope) (reconcile.Result, error) {
	agent := sc.agent
	deploy, err := w.ensureDeployment(ctx, agent)
	if errors.Is(err, errForeignDeployment) {
		msg := fmt.Sprintf("Deployment %s exists and is not controlled by this Agent; it is left alone", agent.Name)
		sc.setCondition(metav1.Condition{
			Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse,
			Reason: ReasonDeploymentConflict, Message: msg,
		})
		sc.eventOnTransition(v1alpha1.ConditionReady, ReasonDeploymentConflict, event{
			eventType: corev1.EventTypeWarning, reason: ReasonDeploymentConflict, action: "EnsureDeployment", note: msg,
		})
		// The Warning Event tells the user, once; the log says it at each look.
		klog.FromContext(ctx).V(2).Info("Deployment of the Agent's name belongs to something else", "agent", klog.KObj(agent))
		return reconcile.Result{RequeueAfter: conflictRecheck}, nil
	}
	if apierrors.IsInvalid(err) {
		// Retrying the same spec cannot help: the user must change it, which
		// brings the next reconcile. The Agent says why; observedGeneration
		// stays behind, as the spec is not applied; what runs keeps running.
		msg := fmt.Sprintf("The spec cannot be applied to Deployment %s: %s", agent.Name, apiMessage(err))
		sc.specInvalid = true
		sc.events = append(sc.events, event{
			eventType: corev1.EventTypeWarning, reason: ReasonInvalidSpec, action: "EnsureDeployment", note: msg,
		})
		if deploy == nil {
			sc.setCondition(metav1.Condition{
				Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonInvalidSpec, Message: msg,
			})
		} else {
			sc.setCondition(readyCondition(deploy))
		}
		klog.FromContext(ctx).V(2).Info("Deployment of the Agent refused as invalid", "agent", klog.KObj(agent), "err", err)
		return reconcile.Result{}, nil
	}
	if err != nil {
		// The Ready condition is left as it was: what is known of the
		// Deployment has not changed.
		return reconcile.Result{}, err
	}
	sc.setCondition(readyCondition(deploy))
	return reconcile.Result{}, nil
}

// apiMessage returns the message of an API error, which names the object and
// the fields at fault.
func apiMessage(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		if msg := status.Status().Message; msg != "" {
			return msg
		}
	}
	return err.Error()
}

// ensureDeployment creates or updates the Agent's Deployment and returns it.
// When an update fails, it returns the Deployment as it is with the error.
func (w *workloadReconciler) ensureDeployment(ctx context.Context, agent *v1alpha1.Agent) (*appsv1.Deployment, error) {
	logger := klog.FromContext(ctx)
	key := types.NamespacedName{Namespace: agent.Namespace, Name: agent.Name}
	current := &appsv1.Deployment{}
	err := w.client.Get(ctx, key, current)
	if apierrors.IsNotFound(err) {
		desired := newDeployment(agent)
		err = w.client.Create(ctx, desired)
		if err == nil {
			logger.Info("Created Deployment", "agent", klog.KObj(agent), "deployment", klog.KObj(desired))
			return desired, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("creating Deployment %s: %w", key, err)
		}
		// The cache holds only Deployments with our label: read the one in
		// the way from the API server to see whose it is.
		current = &appsv1.Deployment{}
		err = w.apiReader.Get(ctx, key, current)
	}
	if err != nil {
		return nil, fmt.Errorf("reading Deployment %s: %w", key, err)
	}
	if !metav1.IsControlledBy(current, agent) {
		return current, errForeignDeployment
	}

	updated := current.DeepCopy()
	setDeploymentSpec(updated, agent)
	if equality.Semantic.DeepEqual(current, updated) {
		return current, nil
	}
	if err := w.client.Update(ctx, updated); err != nil {
		return current, fmt.Errorf("updating Deployment %s: %w", key, err)
	}
	logger.Info("Updated Deployment", "agent", klog.KObj(agent), "deployment", klog.KObj(updated))
	return updated, nil
}

// podLabels returns the labels of an Agent's pods, which also select them.
func podLabels(agent *v1alpha1.Agent) map[string]string {
	return map[string]string{share.LabelAgent: agent.Name}
}

// newDeployment returns the Deployment of an Agent.
func newDeployment(agent *v1alpha1.Agent) *appsv1.Deployment {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{
			Name:      agent.Name,
			Namespace: agent.Namespace,
			OwnerReferences: []metav1.OwnerReference{
				*metav1.NewControllerRef(agent, v1alpha1.SchemeGroupVersion.WithKind("Agent")),
			},
		},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: podLabels(agent)},
		},
	}
	setDeploymentSpec(d, agent)
	return d
}

// setDeploymentSpec sets the fields of a Deployment that follow from the
// Agent, and leaves the others (the server's defaults, and what other tools
// set, such as a restart annotation) alone. The selector is immutable and set
// only by newDeployment.
func setDeploymentSpec(d *appsv1.Deployment, agent *v1alpha1.Agent) {
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	d.Labels[share.LabelAgent] = agent.Name
	d.Labels[LabelManagedBy] = ManagedBy
	d.Spec.Replicas = ptr.To[int32](1)

	tpl := &d.Spec.Template
	if tpl.Labels == nil {
		tpl.Labels = map[string]string{}
	}
	for k, v := range podLabels(agent) {
		tpl.Labels[k] = v
	}
	// Whoever holds the share link has a shell in the pod: it must not find
	// a credential of the cluster there.
	tpl.Spec.AutomountServiceAccountToken = ptr.To(false)

	i := 0
	for i < len(tpl.Spec.Containers) && tpl.Spec.Containers[i].Name != ContainerName {
		i++
	}
	if i == len(tpl.Spec.Containers) {
		tpl.Spec.Containers = append([]corev1.Container{{Name: ContainerName}}, tpl.Spec.Containers...)
		i = 0
	}
	// A copy, so that the Deployment shares no memory with the Agent.
	spec := agent.Spec.DeepCopy()
	c := &tpl.Spec.Containers[i]
	c.Image = spec.Image
	c.Command = spec.Command
	c.Args = spec.Args
	c.Env = spec.Env
	c.Resources = spec.Resources
	c.WorkingDir = spec.WorkingDir
}

// readyCondition returns the Agent's Ready condition for its Deployment: True
// while the Deployment is Available with at least one available pod.
func readyCondition(d *appsv1.Deployment) metav1.Condition {
	var available *appsv1.DeploymentCondition
	for i := range d.Status.Conditions {
		if d.Status.Conditions[i].Type == appsv1.DeploymentAvailable {
			available = &d.Status.Conditions[i]
		}
	}
	if available != nil && available.Status == corev1.ConditionTrue && d.Status.AvailableReplicas > 0 {
		return metav1.Condition{
			Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue,
			Reason:  ReasonDeploymentAvailable,
			Message: fmt.Sprintf("Deployment %s has %d available pod(s)", d.Name, d.Status.AvailableReplicas),
		}
	}
	msg := fmt.Sprintf("Deployment %s has no available pod", d.Name)
	if available != nil && available.Message != "" {
		msg += ": " + available.Message
	}
	return metav1.Condition{
		Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: ReasonDeploymentUnavailable, Message: msg,
	}
}
