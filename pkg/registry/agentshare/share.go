package agentshare

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/apis/subresources/validation"
	"github.com/kubeopencode/share/pkg/share"
)

// maxRotateAttempts bounds how often a rotation re-reads a Secret that others
// keep changing before it answers 409 Conflict.
const maxRotateAttempts = 5

// Config configures the storage of agents/share.
type Config struct {
	// Client reads and writes Agents and their share Secrets with the server's
	// own identity. It should not be cached: a create must see the Secret that
	// a concurrent create or the controller has just made.
	Client client.Client
	// PublicURL is the base URL under which the share listener is reached,
	// such as https://share.example.com; empty when it is not known.
	PublicURL string
	// MaxDuration, when positive, caps how long a link may live. A link
	// requested without an expiry then expires after MaxDuration.
	MaxDuration time.Duration
	// Clock tells the time; nil means the real clock.
	Clock clock.PassiveClock
}

// REST is the storage of the agents/share subresource.
type REST struct {
	client      client.Client
	publicURL   string
	maxDuration time.Duration
	clock       clock.PassiveClock
}

var (
	_ rest.Storage         = &REST{}
	_ rest.NamedCreater    = &REST{}
	_ rest.Getter          = &REST{}
	_ rest.GracefulDeleter = &REST{}
)

// NewREST returns the storage of agents/share.
func NewREST(c Config) *REST {
	r := &REST{client: c.Client, publicURL: c.PublicURL, maxDuration: c.MaxDuration, clock: c.Clock}
	if r.clock == nil {
		r.clock = clock.RealClock{}
	}
	return r
}

// New returns an empty AgentShare.
func (*REST) New() runtime.Object {
	return &subresourcesv1alpha1.AgentShare{}
}

// Destroy releases nothing: the storage holds no resources.
func (*REST) Destroy() {}

// Create enables the share link of the Agent called name, or changes the
// expiry and allowed addresses of an enabled link. An enabled link keeps its
// token unless the request asks to rotate it; enabling a disabled link always
// makes a new token, and concurrent enables hand out one token. It returns when the Agent's spec.share is written and the
// share Secret holds the token, which the returned AgentShare carries.
func (r *REST) Create(ctx context.Context, name string, obj runtime.Object, createValidation rest.ValidateObjectFunc, options *metav1.CreateOptions) (runtime.Object, error) {
	namespace, err := namespaceFrom(ctx)
	if err != nil {
		return nil, err
	}
	req, ok := obj.(*subresourcesv1alpha1.AgentShare)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("not an AgentShare: %T", obj))
	}
	if createValidation != nil {
		if err := createValidation(ctx, req.DeepCopyObject()); err != nil {
			return nil, err
		}
	}

	now := r.clock.Now()
	normalize(req)
	var errs field.ErrorList
	if req.Name != "" && req.Name != name {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), req.Name, "must be the name of the Agent in the request path"))
	}
	errs = append(errs, validation.ValidateAgentShareCreate(req, now, r.maxDuration)...)
	if len(errs) > 0 {
		return nil, apierrors.NewInvalid(agentShareKind, name, errs)
	}
	desired := desiredShare(req.Spec, now, r.maxDuration)
	dryRun := isDryRun(options.DryRun)

	agent, err := r.patchAgent(ctx, namespace, name, dryRun, func(a *kubeopencodev1alpha1.Agent) (bool, error) {
		if apiequality.Semantic.DeepEqual(a.Spec.Share, desired) {
			return false, nil
		}
		if !shareEnabled(a) && !dryRun {
			// A Secret left over from an earlier link must not come back to
			// life: remove it while the Agent is still disabled, so that any
			// Secret present once the patch below succeeds holds a new token.
			if _, err := share.DeleteSecret(ctx, r.client, r.client, a); err != nil {
				return false, err
			}
		}
		a.Spec.Share = desired.DeepCopy()
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if dryRun {
		// Nothing was written, so there is no token to show.
		return r.agentShare(agent, "", now), nil
	}

	token, err := r.ensureToken(ctx, agent, req.Spec.Rotate)
	if err != nil {
		return nil, r.secretError(ctx, agent, err)
	}
	if err := r.confirmEnabled(ctx, agent); err != nil {
		return nil, err
	}
	klog.FromContext(ctx).Info("Share link enabled",
		"agent", klog.KObj(agent), "user", userName(ctx), "rotate", req.Spec.Rotate,
		"expiresAt", expiryString(desired.ExpiresAt), "allowedIPs", len(desired.AllowedIPs))
	out := r.agentShare(agent, token, now)
	if desired.MaxUses != nil {
		_, uses, err := r.readToken(ctx, agent)
		if err != nil {
			return nil, err
		}
		withUses(out, agent, uses)
	}
	return out, nil
}

// Get shows the share link of the Agent called name: whether it gives access
// and why, and, while it is enabled and not expired, its token and link.
func (r *REST) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	namespace, err := namespaceFrom(ctx)
	if err != nil {
		return nil, err
	}
	agent := &kubeopencodev1alpha1.Agent{}
	if err := r.client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, agent); err != nil {
		return nil, r.apiError(ctx, err, name)
	}
	now := r.clock.Now()
	var (
		token string
		uses  int32
	)
	if shareEnabled(agent) && !share.Expired(agent.Spec.Share.ExpiresAt, now) {
		if token, uses, err = r.readToken(ctx, agent); err != nil {
			return nil, err
		}
	}
	out := r.agentShare(agent, token, now)
	withUses(out, agent, uses)
	return out, nil
}

// Delete disables the share link of the Agent called name: it turns
// spec.share.enabled off, clearing the link's expiry and allowed addresses,
// and deletes the share Secret before it returns, so the token stops working
// at once. Disabling a disabled link succeeds and changes nothing.
func (r *REST) Delete(ctx context.Context, name string, deleteValidation rest.ValidateObjectFunc, options *metav1.DeleteOptions) (runtime.Object, bool, error) {
	namespace, err := namespaceFrom(ctx)
	if err != nil {
		return nil, false, err
	}
	dryRun := options != nil && isDryRun(options.DryRun)
	now := r.clock.Now()

	agent, err := r.patchAgent(ctx, namespace, name, dryRun, func(a *kubeopencodev1alpha1.Agent) (bool, error) {
		if deleteValidation != nil {
			if err := deleteValidation(ctx, r.agentShare(a, "", now)); err != nil {
				return false, err
			}
		}
		if a.Spec.Share == nil || apiequality.Semantic.DeepEqual(*a.Spec.Share, kubeopencodev1alpha1.ShareSpec{}) {
			return false, nil
		}
		a.Spec.Share = &kubeopencodev1alpha1.ShareSpec{}
		return true, nil
	})
	if err != nil {
		return nil, false, err
	}
	if !dryRun {
		deleted, err := share.DeleteSecret(ctx, r.client, r.client, agent)
		if err != nil {
			return nil, false, r.apiError(ctx, err, name)
		}
		klog.FromContext(ctx).Info("Share link disabled", "agent", klog.KObj(agent), "user", userName(ctx), "secretDeleted", deleted)
	}
	return r.agentShare(agent, "", now), true, nil
}

// patchAgent reads the Agent, lets mutate change it, and writes the change as
// a merge patch guarded by the resourceVersion it read, reading again and
// retrying when the Agent changed in between. It writes nothing when mutate
// reports no change or on a dry run, and returns the Agent as it now is (or
// would be). An error of mutate ends the attempt and is returned as it is.
func (r *REST) patchAgent(ctx context.Context, namespace, name string, dryRun bool, mutate func(*kubeopencodev1alpha1.Agent) (bool, error)) (*kubeopencodev1alpha1.Agent, error) {
	key := types.NamespacedName{Namespace: namespace, Name: name}
	var result *kubeopencodev1alpha1.Agent
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		current := &kubeopencodev1alpha1.Agent{}
		if err := r.client.Get(ctx, key, current); err != nil {
			return err
		}
		updated := current.DeepCopy()
		changed, err := mutate(updated)
		if err != nil {
			return mutateError{err}
		}
		result = updated
		if !changed || dryRun {
			return nil
		}
		return r.client.Patch(ctx, updated, client.MergeFromWithOptions(current, client.MergeFromWithOptimisticLock{}))
	})
	var m mutateError
	if errors.As(err, &m) {
		if _, ok := m.err.(apierrors.APIStatus); ok {
			return nil, m.err
		}
		return nil, r.apiError(ctx, m.err, name)
	}
	if err != nil {
		return nil, r.apiError(ctx, err, name)
	}
	return result, nil
}

// mutateError carries an error of a mutation through the retry loop, which
// must not retry it even when it is a conflict.
type mutateError struct{ err error }

func (m mutateError) Error() string { return m.err.Error() }

// ensureToken makes sure the Agent's share Secret exists and returns its
// token. With rotate, it replaces a token that existed before the call. Two
// calls that rotate at once hand out one token: when a rotation loses the race
// to write the Secret and finds a token other than the one it set out to
// replace, it returns that token instead of rotating a second time.
func (r *REST) ensureToken(ctx context.Context, agent *kubeopencodev1alpha1.Agent, rotate bool) (string, error) {
	if !rotate {
		_, token, err := share.EnsureSecret(ctx, r.client, r.client, agent)
		return token, err
	}
	key := types.NamespacedName{Namespace: agent.Namespace, Name: share.SecretName(agent.Name)}
	for range maxRotateAttempts {
		secret := &corev1.Secret{}
		err := r.client.Get(ctx, key, secret)
		if apierrors.IsNotFound(err) {
			// No token to replace: a new Secret holds a new token.
			_, token, err := share.EnsureSecret(ctx, r.client, r.client, agent)
			return token, err
		}
		if err != nil {
			return "", fmt.Errorf("reading share Secret %s: %w", key, err)
		}
		if !share.OwnedBy(secret, agent.UID) {
			return "", fmt.Errorf("share Secret %s: %w", key, share.ErrForeignSecret)
		}
		old := string(secret.Data[share.SecretTokenKey])
		_, token, err := share.RotateSecret(ctx, r.client, secret)
		if err == nil {
			return token, nil
		}
		if !apierrors.IsConflict(err) {
			return "", err
		}
		latest := &corev1.Secret{}
		if err := r.client.Get(ctx, key, latest); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return "", fmt.Errorf("reading share Secret %s: %w", key, err)
		}
		if token, err := share.TokenFrom(latest, agent.UID); err == nil && !share.TokensEqual(token, old) {
			return token, nil
		}
	}
	return "", apierrors.NewConflict(agentsShareResource, agent.Name,
		fmt.Errorf("the share Secret %s kept changing while its token was being replaced", key))
}

// confirmEnabled reads the Agent again after its Secret was made: if a
// concurrent disable turned sharing off in between, it deletes the Secret it
// may have recreated and answers 409 Conflict, so that a disable that
// returned is never undone.
func (r *REST) confirmEnabled(ctx context.Context, agent *kubeopencodev1alpha1.Agent) error {
	latest := &kubeopencodev1alpha1.Agent{}
	err := r.client.Get(ctx, client.ObjectKeyFromObject(agent), latest)
	if err != nil && !apierrors.IsNotFound(err) {
		return r.apiError(ctx, err, agent.Name)
	}
	if err == nil && latest.UID == agent.UID && shareEnabled(latest) {
		return nil
	}
	if _, err := share.DeleteSecret(ctx, r.client, r.client, agent); err != nil {
		return r.apiError(ctx, err, agent.Name)
	}
	return apierrors.NewConflict(agentsShareResource, agent.Name,
		errors.New("the share link was disabled or the Agent deleted while it was being enabled"))
}

// readToken returns the token of an enabled link, or "" while its Secret does
// not exist yet or does not belong to the Agent.
func (r *REST) readToken(ctx context.Context, agent *kubeopencodev1alpha1.Agent) (string, int32, error) {
	secret := &corev1.Secret{}
	key := types.NamespacedName{Namespace: agent.Namespace, Name: share.SecretName(agent.Name)}
	if err := r.client.Get(ctx, key, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return "", 0, nil
		}
		return "", 0, r.apiError(ctx, fmt.Errorf("reading share Secret %s: %w", key, err), agent.Name)
	}
	token, err := share.TokenFrom(secret, agent.UID)
	if err != nil {
		klog.FromContext(ctx).Info("Share Secret holds no token of the Agent", "agent", klog.KObj(agent), "secret", klog.KObj(secret), "reason", err.Error())
		return "", 0, nil
	}
	return token, share.Uses(secret), nil
}

// agentShare describes the Agent's link. The token is given only while the
// link is enabled and not expired; an Agent that is not ready yet still gets
// it, since the link works as soon as the Agent is ready.
func (r *REST) agentShare(agent *kubeopencodev1alpha1.Agent, token string, now time.Time) *subresourcesv1alpha1.AgentShare {
	d := share.Evaluate(agent, now)
	out := &subresourcesv1alpha1.AgentShare{
		ObjectMeta: metav1.ObjectMeta{Name: agent.Name, Namespace: agent.Namespace},
		Status:     subresourcesv1alpha1.AgentShareStatus{Active: d.Active, Reason: d.Reason},
	}
	if !shareEnabled(agent) {
		return out
	}
	s := agent.Spec.Share
	out.Spec.ExpiresAt = s.ExpiresAt.DeepCopy()
	out.Spec.AllowedIPs = share.AllowedIPStrings(s)
	out.Status.ExpiresAt = s.ExpiresAt.DeepCopy()
	out.Status.AllowedIPs = share.AllowedIPStrings(s)
	if token != "" && d.Reason != share.ReasonExpired {
		out.Status.Token = token
		out.Status.Path = share.Path(token)
		out.Status.URL = share.URL(r.publicURL, token)
	}
	return out
}

// secretError turns an error of ensuring the share Secret into an API error.
func (r *REST) secretError(ctx context.Context, agent *kubeopencodev1alpha1.Agent, err error) error {
	if errors.Is(err, share.ErrForeignSecret) {
		return apierrors.NewConflict(agentsShareResource, agent.Name,
			fmt.Errorf("a Secret named %s exists in namespace %s and does not belong to the Agent; delete or rename it", share.SecretName(agent.Name), agent.Namespace))
	}
	return r.apiError(ctx, err, agent.Name)
}

// apiError turns an error of reading or writing the cluster into the answer
// of the request. A missing Agent is 404 NotFound for agents.kubeopencode.io;
// conflicts, rejected input and the cluster's transient failures pass
// through; a refusal of the server's own identity is the operator's to fix and
// answers 500, as does anything unexpected.
func (r *REST) apiError(ctx context.Context, err error, name string) error {
	var status apierrors.APIStatus
	switch {
	case apierrors.IsNotFound(err) && isAgentError(err):
		return apierrors.NewNotFound(kubeopencodev1alpha1.Resource("agents"), name)
	case apierrors.IsConflict(err), apierrors.IsInvalid(err), apierrors.IsBadRequest(err),
		apierrors.IsTimeout(err), apierrors.IsServerTimeout(err), apierrors.IsTooManyRequests(err),
		apierrors.IsServiceUnavailable(err):
		if errors.As(err, &status) {
			return status.(error)
		}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return apierrors.NewTimeoutError(fmt.Sprintf("the request ended before the share link of %s was settled", name), 0)
	}
	klog.FromContext(ctx).Error(err, "Share request failed", "agent", klog.KRef(genericapirequest.NamespaceValue(ctx), name))
	return apierrors.NewInternalError(err)
}

// isAgentError reports whether a NotFound error is about the Agent rather than
// another object, such as its Secret.
func isAgentError(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	d := status.Status().Details
	return d != nil && d.Group == kubeopencodev1alpha1.GroupName && d.Kind == "agents"
}

var (
	agentShareKind      = subresourcesv1alpha1.SchemeGroupVersion.WithKind("AgentShare").GroupKind()
	agentsShareResource = subresourcesv1alpha1.Resource("agents/share")
)

// normalize drops the sub-second part of a requested expiry, which the Agent
// could not store, before the expiry is validated.
func normalize(s *subresourcesv1alpha1.AgentShare) {
	if s.Spec.ExpiresAt != nil {
		t := metav1.NewTime(s.Spec.ExpiresAt.Truncate(time.Second))
		s.Spec.ExpiresAt = &t
	}
}

// desiredShare is the spec.share that a valid create asks for at time now. A
// request without an expiry expires at the cap, when there is one.
func desiredShare(spec subresourcesv1alpha1.AgentShareSpec, now time.Time, maxDuration time.Duration) *kubeopencodev1alpha1.ShareSpec {
	out := &kubeopencodev1alpha1.ShareSpec{Enabled: true}
	var expiresAt time.Time
	switch {
	case spec.ExpiresAt != nil:
		expiresAt = spec.ExpiresAt.Time
	case spec.ExpiresIn != nil:
		expiresAt = now.Add(spec.ExpiresIn.Duration)
	case maxDuration > 0:
		expiresAt = now.Add(maxDuration)
	}
	if !expiresAt.IsZero() {
		t := metav1.NewTime(expiresAt.Truncate(time.Second))
		out.ExpiresAt = &t
	}
	for _, ip := range spec.AllowedIPs {
		out.AllowedIPs = append(out.AllowedIPs, kubeopencodev1alpha1.IPOrCIDR(ip))
	}
	if spec.MaxUses != nil {
		out.MaxUses = ptr.To(*spec.MaxUses)
	}
	return out
}

// withUses adds the use count of a link limited by maxUses to what agentShare
// made, and turns an active link that has opened all its connections off.
func withUses(out *subresourcesv1alpha1.AgentShare, agent *kubeopencodev1alpha1.Agent, uses int32) {
	if !shareEnabled(agent) || agent.Spec.Share.MaxUses == nil {
		return
	}
	max := *agent.Spec.Share.MaxUses
	out.Spec.MaxUses = ptr.To(max)
	out.Status.MaxUses = ptr.To(max)
	out.Status.Uses = uses
	if uses >= max && out.Status.Active {
		out.Status.Active, out.Status.Reason = false, share.ReasonUsedUp
	}
}

func shareEnabled(agent *kubeopencodev1alpha1.Agent) bool {
	return agent.Spec.Share != nil && agent.Spec.Share.Enabled
}

func namespaceFrom(ctx context.Context) (string, error) {
	namespace, ok := genericapirequest.NamespaceFrom(ctx)
	if !ok || namespace == "" {
		return "", apierrors.NewBadRequest("the request has no namespace")
	}
	return namespace, nil
}

func isDryRun(dryRun []string) bool {
	return len(dryRun) > 0
}

func userName(ctx context.Context) string {
	if u, ok := genericapirequest.UserFrom(ctx); ok {
		return u.GetName()
	}
	return ""
}

func expiryString(t *metav1.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
