package agentshare

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	agentvalidation "github.com/kubeopencode/share/pkg/apis/kubeopencode/validation"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/apis/subresources/validation"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/secrets"
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
	// Keys are the system's share signing keys, which mint and prove
	// tokens. Required.
	Keys share.Keys
	// Recorder records a Warning Event on an Agent whose share Secret was
	// rejected; nil records none.
	Recorder record.EventRecorder
}

// REST is the storage of the agents/share subresource.
type REST struct {
	client      client.Client
	publicURL   string
	maxDuration time.Duration
	clock       clock.PassiveClock
	keys        share.Keys
	recorder    record.EventRecorder
}

var (
	_ rest.Storage           = &REST{}
	_ rest.NamedCreater      = &REST{}
	_ rest.GetterWithOptions = &REST{}
	_ rest.GracefulDeleter   = &REST{}
)

// NewREST returns the storage of agents/share.
func NewREST(c Config) *REST {
	r := &REST{client: c.Client, publicURL: c.PublicURL, maxDuration: c.MaxDuration, clock: c.Clock, keys: c.Keys, recorder: c.Recorder}
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
	link := req.Spec.Link
	var errs field.ErrorList
	if req.Name != "" && req.Name != name {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), req.Name, "must be the name of the Agent in the request path"))
	}
	if link != "" {
		errs = append(errs, share.ValidateLinkName(name, link, field.NewPath("spec", "link"))...)
	}
	errs = append(errs, validation.ValidateAgentShareCreate(req, now, r.maxDuration)...)
	if len(errs) > 0 {
		return nil, apierrors.NewInvalid(agentShareKind, name, errs)
	}
	desired := desiredShare(req.Spec, now, r.maxDuration)
	dryRun := isDryRun(options.DryRun)

	agent, err := r.patchAgent(ctx, namespace, name, dryRun, func(a *kubeopencodev1alpha1.Agent) (bool, error) {
		if a.DeletionTimestamp != nil {
			// Its link would open nothing (share.Evaluate), and a Secret
			// made now would only wait for the garbage collector.
			return false, apierrors.NewConflict(agentsShareResource, a.Name, errors.New("the Agent is being deleted"))
		}
		current, enabled := share.FindLink(a, link)
		enabled = enabled && current.Enabled
		if enabled && apiequality.Semantic.DeepEqual(current, desired) {
			return false, nil
		}
		if !enabled && link != "" && a.Spec.Share != nil && len(a.Spec.Share.Links) >= agentvalidation.MaxLinks {
			return false, apierrors.NewInvalid(agentShareKind, name, field.ErrorList{field.Invalid(field.NewPath("spec", "link"), link,
				fmt.Sprintf("the Agent has %d named links, the most it may have; disable one first", agentvalidation.MaxLinks))})
		}
		if !enabled && !dryRun {
			// A Secret left over from an earlier link must not come back to
			// life: remove it while the link is still disabled, so that any
			// Secret present once the patch below succeeds holds a new token.
			if err := r.deleteLeftover(ctx, a, link); err != nil {
				return false, err
			}
		}
		return setLink(a, desired), nil
	})
	if err != nil {
		return nil, err
	}
	if dryRun {
		// Nothing was written, so there is no token to show.
		return r.agentShare(agent, link, "", now), nil
	}

	token, err := r.ensureToken(ctx, agent, link, req.Spec.Rotate)
	if err != nil {
		return nil, r.secretError(ctx, agent, link, err)
	}
	if err := r.confirmEnabled(ctx, agent, link); err != nil {
		return nil, err
	}
	klog.FromContext(ctx).Info("Share link enabled",
		"agent", klog.KObj(agent), "link", share.LinkDisplayName(link), "user", userName(ctx), "rotate", req.Spec.Rotate,
		"mode", desired.ModeOrDefault(), "expiresAt", expiryString(desired.ExpiresAt), "allowedIPs", len(desired.AllowedIPs))
	out := r.agentShare(agent, link, token, now)
	_, uses, viewers, err := r.readToken(ctx, agent, link)
	if err != nil {
		return nil, err
	}
	withUses(out, agent, link, uses)
	out.Status.Viewers = viewers
	if link == "" {
		out.Status.Links = share.LinkNames(agent)
	}
	return out, nil
}

// setLink writes a link into the Agent's spec and reports whether that
// changed it. The default link, named "", goes into spec.share's inline
// fields, keeping the named links; a disabled default link keeps none of its
// fields. A named link replaces the entry of its name in spec.share.links or
// is added to it; a disabled one leaves the list.
func setLink(a *kubeopencodev1alpha1.Agent, l share.Link) bool {
	if !l.Enabled {
		l = share.Link{NamedShareLink: kubeopencodev1alpha1.NamedShareLink{Name: l.Name}}
	}
	s := a.Spec.Share
	if s == nil {
		if !l.Enabled {
			return false
		}
		s = &kubeopencodev1alpha1.ShareSpec{}
		a.Spec.Share = s
	}
	if l.Name == "" {
		before := *s
		s.Enabled, s.ShareLinkSpec = l.Enabled, l.ShareLinkSpec
		return !apiequality.Semantic.DeepEqual(before, *s)
	}
	for i := range s.Links {
		if s.Links[i].Name != l.Name {
			continue
		}
		if l.Enabled {
			s.Links[i] = l.NamedShareLink
			return true
		}
		s.Links = append(s.Links[:i:i], s.Links[i+1:]...)
		if len(s.Links) == 0 {
			s.Links = nil
		}
		return true
	}
	if !l.Enabled {
		return false
	}
	s.Links = append(s.Links, l.NamedShareLink)
	return true
}

// NewGetOptions returns the options of a get: the link query parameter.
func (*REST) NewGetOptions() (runtime.Object, bool, string) {
	return &subresourcesv1alpha1.AgentShareOptions{}, false, ""
}

// Get shows a share link of the Agent called name, the default one unless the
// link query parameter names another: whether it gives access and why, and,
// while it is enabled and not expired, its token and link. The answer about
// the default link lists the names of the named links.
func (r *REST) Get(ctx context.Context, name string, options runtime.Object) (runtime.Object, error) {
	namespace, err := namespaceFrom(ctx)
	if err != nil {
		return nil, err
	}
	var link string
	if o, ok := options.(*subresourcesv1alpha1.AgentShareOptions); ok && o != nil {
		link = o.Link
	}
	if err := validateLinkParameter(name, link); err != nil {
		return nil, err
	}
	agent := &kubeopencodev1alpha1.Agent{}
	if err := r.client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, agent); err != nil {
		return nil, r.apiError(ctx, err, name)
	}
	l, ok := share.FindLink(agent, link)
	if !ok {
		return nil, linkNotFound(name, link)
	}
	now := r.clock.Now()
	var (
		token         string
		uses, viewers int32
	)
	if l.Enabled && !share.Expired(l.ExpiresAt, now) {
		if token, uses, viewers, err = r.readToken(ctx, agent, link); err != nil {
			return nil, err
		}
	}
	out := r.agentShare(agent, link, token, now)
	withUses(out, agent, link, uses)
	out.Status.Viewers = viewers
	if link == "" {
		out.Status.Links = share.LinkNames(agent)
	}
	return out, nil
}

// validateLinkParameter checks the link query parameter of a get or delete.
func validateLinkParameter(agent, link string) error {
	if link == "" {
		return nil
	}
	if errs := share.ValidateLinkName(agent, link, field.NewPath("link")); len(errs) > 0 {
		return apierrors.NewInvalid(agentShareKind, agent, errs)
	}
	return nil
}

// linkNotFound is the answer about a named link the Agent does not have.
func linkNotFound(agent, link string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure,
		Code:   http.StatusNotFound,
		Reason: metav1.StatusReasonNotFound,
		Details: &metav1.StatusDetails{
			Group: subresourcesv1alpha1.GroupName,
			Kind:  "agents/share",
			Name:  link,
		},
		Message: fmt.Sprintf("Agent %s has no share link named %q", agent, link),
	}}
}

// Delete disables a share link of the Agent called name, the default one
// unless the link query parameter names another (see WithLinkParameter): the
// default link's spec.share fields are cleared, keeping the named links; a
// named link leaves spec.share.links. The link's Secret is deleted before it
// returns, so the token stops working at once. Disabling the disabled default
// link succeeds and changes nothing; a named link the Agent does not have is
// 404 NotFound.
func (r *REST) Delete(ctx context.Context, name string, deleteValidation rest.ValidateObjectFunc, options *metav1.DeleteOptions) (runtime.Object, bool, error) {
	namespace, err := namespaceFrom(ctx)
	if err != nil {
		return nil, false, err
	}
	link := LinkFrom(ctx)
	if err := validateLinkParameter(name, link); err != nil {
		return nil, false, err
	}
	dryRun := options != nil && isDryRun(options.DryRun)
	now := r.clock.Now()

	agent, err := r.patchAgent(ctx, namespace, name, dryRun, func(a *kubeopencodev1alpha1.Agent) (bool, error) {
		if _, ok := share.FindLink(a, link); !ok {
			return false, linkNotFound(name, link)
		}
		if deleteValidation != nil {
			if err := deleteValidation(ctx, r.agentShare(a, link, "", now)); err != nil {
				return false, err
			}
		}
		return setLink(a, share.Link{NamedShareLink: kubeopencodev1alpha1.NamedShareLink{Name: link}}), nil
	})
	if err != nil {
		return nil, false, err
	}
	if !dryRun {
		deleted, err := secrets.Delete(ctx, r.client, r.client, agent, link)
		if err != nil {
			return nil, false, r.apiError(ctx, err, name)
		}
		klog.FromContext(ctx).Info("Share link disabled", "agent", klog.KObj(agent), "link", share.LinkDisplayName(link), "user", userName(ctx), "secretDeleted", deleted)
	}
	out := r.agentShare(agent, link, "", now)
	if link == "" {
		out.Status.Links = share.LinkNames(agent)
	}
	return out, true, nil
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

// ensureToken makes sure the Agent's share Secret holds a token this system
// minted and returns it: a token this call wrote, or one carrying a valid
// proof. With rotate, it replaces a token that existed before the call. Two
// calls that rotate at once hand out one token: when a rotation loses the race
// to write the Secret and finds another proven token than the one it set out
// to replace, it returns that token instead of rotating a second time. A
// Secret that claims to be the link's without proof is replaced and reported.
func (r *REST) ensureToken(ctx context.Context, agent *kubeopencodev1alpha1.Agent, link string, rotate bool) (string, error) {
	if !rotate {
		_, token, rejected, err := secrets.Ensure(ctx, r.client, r.client, r.keys, agent, link)
		if rejected {
			r.rejected(ctx, agent, link)
		}
		return token, err
	}
	key := types.NamespacedName{Namespace: agent.Namespace, Name: share.LinkSecretName(agent.Name, link)}
	for range maxRotateAttempts {
		secret := &corev1.Secret{}
		err := r.client.Get(ctx, key, secret)
		if apierrors.IsNotFound(err) {
			// No token to replace: a new Secret holds a new token.
			_, token, err := secrets.Create(ctx, r.client, r.keys, agent, link)
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			return token, err
		}
		if err != nil {
			return "", fmt.Errorf("reading share Secret %s: %w", key, err)
		}
		old, _, err := share.VerifySecretFresh(ctx, r.keys, secret, agent)
		var token string
		switch {
		case errors.Is(err, share.ErrUnproven):
			r.rejected(ctx, agent, link)
			_, token, err = secrets.Replace(ctx, r.client, r.keys, agent, link, secret)
		case err != nil:
			return "", fmt.Errorf("share Secret %s: %w", key, err)
		default:
			_, token, err = secrets.Rotate(ctx, r.client, r.keys, agent, link, secret)
		}
		if err == nil {
			return token, nil
		}
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			return "", err
		}
		latest := &corev1.Secret{}
		if err := r.client.Get(ctx, key, latest); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return "", fmt.Errorf("reading share Secret %s: %w", key, err)
		}
		if token, _, err := share.VerifySecretFresh(ctx, r.keys, latest, agent); err == nil && old != "" && !share.TokensEqual(token, old) {
			return token, nil
		}
	}
	return "", apierrors.NewConflict(agentsShareResource, agent.Name,
		fmt.Errorf("the share Secret %s kept changing while its token was being replaced", key))
}

// deleteLeftover deletes the Secret a disabled link may have left behind. A
// leftover the system did not mint was planted: it is reported as rejected
// before it goes.
func (r *REST) deleteLeftover(ctx context.Context, agent *kubeopencodev1alpha1.Agent, link string) error {
	secret := &corev1.Secret{}
	key := types.NamespacedName{Namespace: agent.Namespace, Name: share.LinkSecretName(agent.Name, link)}
	err := r.client.Get(ctx, key, secret)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		// Wrapped: a refusal of the server's own identity is not the
		// caller's to see as it is (apiError).
		return fmt.Errorf("reading share Secret %s: %w", key, err)
	}
	if _, _, err := share.VerifySecretFresh(ctx, r.keys, secret, agent); errors.Is(err, share.ErrUnproven) {
		r.rejected(ctx, agent, link)
	}
	_, err = secrets.Delete(ctx, r.client, r.client, agent, link)
	return err
}

// rejected reports a share Secret that claimed to be the link's without
// proof that this system minted its token. The token is never echoed.
func (r *REST) rejected(ctx context.Context, agent *kubeopencodev1alpha1.Agent, link string) {
	name := share.LinkSecretName(agent.Name, link)
	klog.FromContext(ctx).Info("Rejected a share Secret whose token this system did not mint", "agent", klog.KObj(agent), "link", share.LinkDisplayName(link), "secret", klog.KRef(agent.Namespace, name))
	if r.recorder != nil {
		r.recorder.Eventf(agent, corev1.EventTypeWarning, share.ReasonShareSecretRejected,
			"Secret %s was rejected: its token carries no proof that this system minted it (planted or edited by hand). A new token was minted; the rejected one never opened the link.", name)
	}
}

// confirmEnabled reads the Agent again after its Secret was made: if a
// concurrent disable turned sharing off in between, it deletes the Secret it
// may have recreated and answers 409 Conflict, so that a disable that
// returned is never undone.
func (r *REST) confirmEnabled(ctx context.Context, agent *kubeopencodev1alpha1.Agent, link string) error {
	latest := &kubeopencodev1alpha1.Agent{}
	err := r.client.Get(ctx, client.ObjectKeyFromObject(agent), latest)
	if err != nil && !apierrors.IsNotFound(err) {
		return r.apiError(ctx, err, agent.Name)
	}
	if err == nil && latest.UID == agent.UID {
		if l, ok := share.FindLink(latest, link); ok && l.Enabled {
			return nil
		}
	}
	if _, err := secrets.Delete(ctx, r.client, r.client, agent, link); err != nil {
		return r.apiError(ctx, err, agent.Name)
	}
	return apierrors.NewConflict(agentsShareResource, agent.Name,
		errors.New("the share link was disabled or the Agent deleted while it was being enabled"))
}

// readToken returns the token of an enabled link, its use count and its
// viewer count, or "" while its Secret does not exist yet or does not belong
// to the Agent.
func (r *REST) readToken(ctx context.Context, agent *kubeopencodev1alpha1.Agent, link string) (string, int32, int32, error) {
	secret := &corev1.Secret{}
	key := types.NamespacedName{Namespace: agent.Namespace, Name: share.LinkSecretName(agent.Name, link)}
	if err := r.client.Get(ctx, key, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return "", 0, 0, nil
		}
		return "", 0, 0, r.apiError(ctx, fmt.Errorf("reading share Secret %s: %w", key, err), agent.Name)
	}
	token, _, err := share.VerifySecretFresh(ctx, r.keys, secret, agent)
	if err != nil {
		klog.FromContext(ctx).Info("Share Secret holds no token of the Agent", "agent", klog.KObj(agent), "secret", klog.KObj(secret), "reason", err.Error())
		return "", 0, 0, nil
	}
	return token, share.Uses(secret), share.Viewers(secret), nil
}

// agentShare describes a link of the Agent. The token is given only while the
// link is enabled and not expired; an Agent that is not ready yet still gets
// it, since the link works as soon as the Agent is ready.
func (r *REST) agentShare(agent *kubeopencodev1alpha1.Agent, link, token string, now time.Time) *subresourcesv1alpha1.AgentShare {
	l, _ := share.FindLink(agent, link)
	d := share.Evaluate(agent, l, now)
	out := &subresourcesv1alpha1.AgentShare{
		ObjectMeta: metav1.ObjectMeta{Name: agent.Name, Namespace: agent.Namespace},
		Spec:       subresourcesv1alpha1.AgentShareSpec{Link: link},
		Status:     subresourcesv1alpha1.AgentShareStatus{Active: d.Active, Reason: d.Reason, Link: link},
	}
	if !l.Enabled {
		return out
	}
	mode := l.ModeOrDefault()
	out.Spec.ExpiresAt = l.ExpiresAt.DeepCopy()
	out.Spec.AllowedIPs = share.AllowedIPStrings(l)
	out.Spec.Mode = mode
	out.Status.ExpiresAt = l.ExpiresAt.DeepCopy()
	out.Status.AllowedIPs = share.AllowedIPStrings(l)
	out.Status.Mode = mode
	if l.MaxViewers != nil {
		out.Spec.MaxViewers = ptr.To(*l.MaxViewers)
		out.Status.MaxViewers = ptr.To(*l.MaxViewers)
	}
	if token != "" && d.Reason != share.ReasonExpired {
		out.Status.Token = token
		out.Status.Path = share.Path(token)
		out.Status.URL = share.URL(r.publicURL, token)
	}
	return out
}

// secretError turns an error of ensuring the share Secret into an API error.
func (r *REST) secretError(ctx context.Context, agent *kubeopencodev1alpha1.Agent, link string, err error) error {
	if errors.Is(err, share.ErrForeignSecret) {
		return apierrors.NewConflict(agentsShareResource, agent.Name,
			fmt.Errorf("a Secret named %s exists in namespace %s and does not belong to the Agent; delete or rename it", share.LinkSecretName(agent.Name, link), agent.Namespace))
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

// desiredShare is the link that a valid create asks for at time now. A
// request without an expiry expires at the cap, when there is one. An
// explicit edit mode is stored as the default it is, unset.
func desiredShare(spec subresourcesv1alpha1.AgentShareSpec, now time.Time, maxDuration time.Duration) share.Link {
	out := share.Link{NamedShareLink: kubeopencodev1alpha1.NamedShareLink{Name: spec.Link}, Enabled: true}
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
	if spec.MaxViewers != nil {
		out.MaxViewers = ptr.To(*spec.MaxViewers)
	}
	if spec.Mode == kubeopencodev1alpha1.ShareModeView {
		out.Mode = kubeopencodev1alpha1.ShareModeView
	}
	return out
}

// withUses adds the use count of a link limited by maxUses to what agentShare
// made, and turns an active link that has opened all its connections off.
func withUses(out *subresourcesv1alpha1.AgentShare, agent *kubeopencodev1alpha1.Agent, link string, uses int32) {
	l, ok := share.FindLink(agent, link)
	if !ok || !l.Enabled || l.MaxUses == nil {
		return
	}
	max := *l.MaxUses
	out.Spec.MaxUses = ptr.To(max)
	out.Status.MaxUses = ptr.To(max)
	out.Status.Uses = uses
	if uses >= max && out.Status.Active {
		out.Status.Active, out.Status.Reason = false, share.ReasonUsedUp
	}
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
