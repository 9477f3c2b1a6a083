package controller

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	crevent "sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

// Name is the name of the controller, used for its field manager, its Events
// and its metrics.
const Name = "kubeopencode-controller"

// conflictRecheck is how often an Agent blocked by an object it does not own
// (a foreign Deployment or share Secret) is looked at again. A foreign object
// without our labels is outside the caches, so its deletion is not watched.
const conflictRecheck = 30 * time.Second

// Config configures the Agent controller.
type Config struct {
	// PublicURL is the base URL of the share listener, reported in
	// status.share.url. Empty when unknown.
	PublicURL string
	// Clock tells the time for expiry. Nil means the real clock.
	Clock clock.PassiveClock
	// Workers is how many Agents are reconciled at once. Zero means one.
	Workers int
	// SkipNameValidation lets one process register the controller more than
	// once, as tests that restart the manager do.
	SkipNameValidation bool
	// Keys are the system's share signing keys, which mint and prove
	// tokens. Required.
	Keys SigningKeys
}

// SigningKeys are share.Keys that tell when they change, so that every
// Agent's Secrets are looked at again: signed again after a rotation, or
// replaced after the keys were lost.
type SigningKeys interface {
	share.Keys
	OnChange(func())
}

// CacheOptions returns the manager's cache options: Secrets and Deployments
// are cached only when they carry the labels of share Secrets and Agent
// Deployments, so the controller neither holds every Secret of the cluster in
// memory nor sees tokens it has no business with. Managed fields are dropped.
func CacheOptions() cache.Options {
	hasAgent, err := labels.NewRequirement(share.LabelAgent, selection.Exists, nil)
	if err != nil {
		// The requirement is a constant; it cannot be invalid.
		panic(err)
	}
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}:     {Label: labels.SelectorFromSet(share.SecretSelector())},
			&appsv1.Deployment{}: {Label: labels.NewSelector().Add(*hasAgent)},
		},
	}
}

// AgentReconciler reconciles Agents. It owns the Agent's whole status: each
// phase sets its conditions in memory, and Reconcile writes the status once.
type AgentReconciler struct {
	client   client.Client
	recorder recorder.EventRecorder
	clock    clock.PassiveClock
	phases   []phase
	written  writtenStatuses
}

// writtenStatuses holds the status this controller last wrote of each
// Agent until its cache holds it too. Nothing else writes an Agent's
// status, so the API server holds what was written: a reconcile that reads
// an older status from the cache must start from the written one, or it
// would skip a write the API server needs (the status it computes equals
// the cache's, not the server's) and announce transitions twice.
//
// Server-side apply of the status (Status().Apply in controller-runtime)
// would not make them unnecessary. The status is computed from the one read:
// applied from a stale read, it writes back the stale lastTransitionTime of a
// condition that changed meanwhile and announces its transitions again, and
// without the comparison with what the server holds, every reconcile sends a
// request. TestReconcileWritesPastAStaleCache measures both.
type writtenStatuses struct {
	mu     sync.Mutex
	byName map[types.NamespacedName]writtenStatus
}

type writtenStatus struct {
	uid    types.UID
	status *v1alpha1.AgentStatus
}

// current returns the status the API server holds of agent, as far as this
// controller knows: the one it last wrote, until the cache has caught up.
func (w *writtenStatuses) current(key types.NamespacedName, agent *v1alpha1.Agent) v1alpha1.AgentStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	ws, ok := w.byName[key]
	switch {
	case !ok:
		return agent.Status
	case ws.uid != agent.UID || equality.Semantic.DeepEqual(*ws.status, agent.Status):
		delete(w.byName, key)
		return agent.Status
	}
	return *ws.status.DeepCopy()
}

func (w *writtenStatuses) record(key types.NamespacedName, agent *v1alpha1.Agent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byName == nil {
		w.byName = map[types.NamespacedName]writtenStatus{}
	}
	w.byName[key] = writtenStatus{uid: agent.UID, status: agent.Status.DeepCopy()}
}

func (w *writtenStatuses) forget(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.byName, key)
}

// phase reconciles one concern of an Agent. It changes sc.agent.Status in
// memory and may queue Events that are emitted once that status is written.
type phase interface {
	reconcile(ctx context.Context, sc *scope) (reconcile.Result, error)
}

// scope is the state of one reconcile of one Agent.
type scope struct {
	// agent is the Agent as read, whose status the phases change.
	agent *v1alpha1.Agent
	// prev is the status as read.
	prev *v1alpha1.AgentStatus
	// now is the time of the reconcile.
	now time.Time
	// events are emitted once the status is written.
	events []event
	// specInvalid is set by a phase that found the spec cannot be applied:
	// the status does not claim to have observed this generation.
	specInvalid bool
	// stale is set by a phase that found the Agent changed on the API server
	// since it was read. The phase leaves its part of the status alone and the
	// status does not claim to have observed this generation; the watch event
	// of the newer Agent brings the next reconcile.
	stale bool
}

// event is an Event on the Agent.
type event struct {
	eventType, reason, action, note string
}

// setCondition sets a condition of the Agent at the reconcile's time and
// generation. The transition time changes only when the status does.
func (sc *scope) setCondition(c metav1.Condition) {
	c.ObservedGeneration = sc.agent.Generation
	c.LastTransitionTime = metav1.NewTime(sc.now)
	meta.SetStatusCondition(&sc.agent.Status.Conditions, c)
}

// prevCondition returns a condition of the status as read, or nil.
func (sc *scope) prevCondition(conditionType string) *metav1.Condition {
	return meta.FindStatusCondition(sc.prev.Conditions, conditionType)
}

// eventOnTransition queues an Event for when the status is written, unless
// the condition already had the reason before this reconcile.
func (sc *scope) eventOnTransition(conditionType, reason string, e event) {
	if prev := sc.prevCondition(conditionType); prev != nil && prev.Reason == reason {
		return
	}
	sc.events = append(sc.events, e)
}

// NewAgentReconciler returns a reconciler of Agents.
//
// The client should read from the manager's cache; apiReader must read from
// the API server, so that a share Secret is only created when the API server
// has none.
func NewAgentReconciler(c client.Client, apiReader client.Reader, rec recorder.EventRecorder, cfg Config) *AgentReconciler {
	if cfg.Keys == nil {
		panic("controller: Config.Keys is required")
	}
	clk := cfg.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &AgentReconciler{
		client:   c,
		recorder: rec,
		clock:    clk,
		phases: []phase{
			&workloadReconciler{client: c, apiReader: apiReader},
			&shareReconciler{client: c, apiReader: apiReader, recorder: rec, keys: cfg.Keys, publicURL: cfg.PublicURL},
		},
	}
}

// SetupWithManager registers the Agent controller with the manager. The
// manager should use CacheOptions and the scheme of pkg/apis/scheme.
func SetupWithManager(mgr ctrl.Manager, cfg Config) error {
	r := NewAgentReconciler(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetEventRecorder(Name), cfg)
	b := ctrl.NewControllerManagedBy(mgr).
		Named("agent").
		// The controller writes the status itself; only spec changes (and
		// creation and deletion) need a reconcile.
		For(&v1alpha1.Agent{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// Only the controller creates the Deployments it owns, in a reconcile
		// that goes on to report them: their creation is no news. Without
		// this, each new Agent was reconciled a second time right after the
		// first, before the cache held the status just written, and that
		// status was patched again.
		Owns(&appsv1.Deployment{}, builder.WithPredicates(notCreated)).
		// Share Secrets map to their Agent by label rather than by owner
		// reference, so that the deletion of a stale Secret left by a deleted
		// Agent of the same name wakes the new Agent.
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(secretToAgent), builder.WithPredicates(notCreatedByController)).
		// A change of the signing keys concerns every Agent with a link.
		WatchesRawSource(source.Channel(keyChanges(cfg.Keys), handler.EnqueueRequestsFromMapFunc(allAgents(mgr.GetClient()))))
	b = b.WithOptions(crcontroller.Options{
		MaxConcurrentReconciles: max(cfg.Workers, 1),
		SkipNameValidation:      ptr.To(cfg.SkipNameValidation),
	})
	if err := b.Complete(r); err != nil {
		return fmt.Errorf("setting up the Agent controller: %w", err)
	}
	return nil
}

// keyChanges returns a channel that carries an event each time the keys
// change. An event still waiting covers the changes after it.
func keyChanges(keys SigningKeys) <-chan crevent.GenericEvent {
	ch := make(chan crevent.GenericEvent, 1)
	keys.OnChange(func() {
		select {
		case ch <- crevent.GenericEvent{Object: &v1alpha1.Agent{}}:
		default:
		}
	})
	return ch
}

// allAgents maps any event to every Agent that has a share link.
func allAgents(c client.Reader) handler.MapFunc {
	return func(ctx context.Context, _ client.Object) []reconcile.Request {
		agents := &v1alpha1.AgentList{}
		if err := c.List(ctx, agents); err != nil {
			klog.FromContext(ctx).Error(err, "Listing Agents after the share signing keys changed")
			return nil
		}
		var out []reconcile.Request
		for i := range agents.Items {
			if agents.Items[i].Spec.Share != nil {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&agents.Items[i])})
			}
		}
		return out
	}
}

// notCreated lets every event but creation through. Creations seen when the
// informer lists at start are covered too: each Agent's own creation event
// brings its reconcile then.
var notCreated = predicate.Funcs{CreateFunc: func(crevent.CreateEvent) bool { return false }}

// notCreatedByController lets through every event of a share Secret but the
// creation of one the controller made: a Secret born with the token
// fingerprint, which only the controller writes (ensureSecret), was created
// by a reconcile that reported it. A Secret made by the aggregated API (an
// enable) has no fingerprint yet, and its creation must bring the reconcile
// that announces it.
var notCreatedByController = predicate.Funcs{CreateFunc: func(e crevent.CreateEvent) bool {
	_, announced := e.Object.GetAnnotations()[AnnotationTokenFingerprint]
	return !announced
}}

// secretToAgent maps a share Secret to the Agent it is named for.
func secretToAgent(_ context.Context, obj client.Object) []reconcile.Request {
	name := obj.GetLabels()[share.LabelAgent]
	if name == "" {
		name = strings.TrimSuffix(obj.GetName(), share.SecretSuffix)
	}
	if name == "" || share.LinkSecretName(name, obj.GetLabels()[share.LabelShareLink]) != obj.GetName() {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: name}}}
}

// Reconcile brings an Agent's Deployment and share Secret in line with its
// spec and writes its status.
func (r *AgentReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	logger := klog.FromContext(ctx)
	agent := &v1alpha1.Agent{}
	if err := r.client.Get(ctx, req.NamespacedName, agent); err != nil {
		if apierrors.IsNotFound(err) {
			r.written.forget(req.NamespacedName)
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !agent.DeletionTimestamp.IsZero() {
		// The garbage collector deletes the Deployment and the Secret.
		r.written.forget(req.NamespacedName)
		return reconcile.Result{}, nil
	}
	agent.Status = r.written.current(req.NamespacedName, agent)

	original := agent.DeepCopy()
	sc := &scope{agent: agent, prev: &original.Status, now: r.clock.Now()}
	var (
		errs   []error
		result reconcile.Result
	)
	for _, p := range r.phases {
		// Every phase runs even when an earlier one failed: a Deployment
		// that cannot be updated must not keep a share from being disabled.
		res, err := p.reconcile(ctx, sc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		result = earliest(result, res)
	}
	if len(errs) == 0 && !sc.stale && !sc.specInvalid {
		agent.Status.ObservedGeneration = agent.Generation
	}

	written := true
	if !equality.Semantic.DeepEqual(original.Status, agent.Status) {
		err := r.client.Status().Patch(ctx, agent, client.MergeFrom(original))
		switch {
		case apierrors.IsNotFound(err):
			// Deleted meanwhile; there is nothing left to report on.
			return reconcile.Result{}, nil
		case err != nil:
			written = false
			errs = append(errs, fmt.Errorf("writing the status of Agent %s: %w", req.NamespacedName, err))
		default:
			r.written.record(req.NamespacedName, agent)
			logger.V(2).Info("Updated Agent status", "agent", klog.KObj(agent), "generation", agent.Generation)
		}
	}
	// The Events report transitions the written status records. When the
	// status could not be written, the retry finds the same transitions and
	// reports them then.
	if written {
		for _, e := range sc.events {
			r.recorder.Eventf(agent, nil, e.eventType, e.reason, e.action, "%s", e.note)
		}
	}
	if err := kerrors.NewAggregate(errs); err != nil {
		return reconcile.Result{}, err
	}
	return result, nil
}

// earliest returns the result that asks to be called back first.
func earliest(a, b reconcile.Result) reconcile.Result {
	switch {
	case a.RequeueAfter == 0:
		return b
	case b.RequeueAfter == 0 || a.RequeueAfter <= b.RequeueAfter:
		return a
	default:
		return b
	}
}
