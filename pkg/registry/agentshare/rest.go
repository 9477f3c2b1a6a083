package agentshare

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

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

// REST is the storage of the agents/share subresource. Like the TokenRequest
// storage of serviceaccounts/token, it keeps nothing itself: it checks and
// defaults a request (strategy.go), has the enabler write the Agent and its
// Secret (enabler.go, token.go), and answers with an AgentShare built from
// what was written (answer.go).
type REST struct {
	links       *enabler
	publicURL   string
	maxDuration time.Duration
	clock       clock.PassiveClock
}

var (
	_ rest.Storage           = &REST{}
	_ rest.NamedCreater      = &REST{}
	_ rest.GetterWithOptions = &REST{}
	_ rest.GracefulDeleter   = &REST{}
)

// NewREST returns the storage of agents/share.
func NewREST(c Config) *REST {
	r := &REST{
		links:       &enabler{client: c.Client, keys: c.Keys, recorder: c.Recorder},
		publicURL:   c.PublicURL,
		maxDuration: c.MaxDuration,
		clock:       c.Clock,
	}
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
// makes a new token, and concurrent enables hand out one token. It returns
// when the Agent's spec.share is written and the share Secret holds the
// token, which the returned AgentShare carries.
func (r *REST) Create(ctx context.Context, name string, obj runtime.Object, createValidation rest.ValidateObjectFunc, options *metav1.CreateOptions) (runtime.Object, error) {
	key, err := agentKey(ctx, name)
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
	if errs := validateCreate(name, req, now, r.maxDuration); len(errs) > 0 {
		return nil, apierrors.NewInvalid(agentShareKind, name, errs)
	}
	desired := desiredShare(req.Spec, now, r.maxDuration)
	link := desired.Name

	dryRun := isDryRun(options.DryRun)
	agent, token, err := r.links.enable(ctx, key, desired, req.Spec.Rotate, dryRun)
	if err != nil {
		return nil, err
	}
	if dryRun {
		// Nothing was written, so there is no token to show.
		return r.agentShare(agent, link, "", now), nil
	}
	klog.FromContext(ctx).Info("Share link enabled",
		"agent", klog.KObj(agent), "link", share.LinkDisplayName(link), "user", userName(ctx), "rotate", req.Spec.Rotate,
		"mode", desired.ModeOrDefault(), "expiresAt", expiryString(desired.ExpiresAt), "allowedIPs", len(desired.AllowedIPs))
	_, uses, viewers, err := r.links.readToken(ctx, agent, link)
	if err != nil {
		return nil, err
	}
	return r.answer(agent, link, token, uses, viewers, now), nil
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
	key, err := agentKey(ctx, name)
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
	agent, err := r.links.agent(ctx, key)
	if err != nil {
		return nil, err
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
		if token, uses, viewers, err = r.links.readToken(ctx, agent, link); err != nil {
			return nil, err
		}
	}
	return r.answer(agent, link, token, uses, viewers, now), nil
}

// Delete disables a share link of the Agent called name, the default one
// unless the link query parameter names another (see WithLinkParameter): the
// default link's spec.share fields are cleared, keeping the named links; a
// named link leaves spec.share.links. The link's Secret is deleted before it
// returns, so the token stops working at once. Disabling the disabled default
// link succeeds and changes nothing; a named link the Agent does not have is
// 404 NotFound.
func (r *REST) Delete(ctx context.Context, name string, deleteValidation rest.ValidateObjectFunc, options *metav1.DeleteOptions) (runtime.Object, bool, error) {
	key, err := agentKey(ctx, name)
	if err != nil {
		return nil, false, err
	}
	link := LinkFrom(ctx)
	if err := validateLinkParameter(name, link); err != nil {
		return nil, false, err
	}
	dryRun := options != nil && isDryRun(options.DryRun)
	now := r.clock.Now()

	var validate func(*kubeopencodev1alpha1.Agent) error
	if deleteValidation != nil {
		validate = func(a *kubeopencodev1alpha1.Agent) error {
			return deleteValidation(ctx, r.agentShare(a, link, "", now))
		}
	}
	agent, err := r.links.disable(ctx, key, link, validate, dryRun)
	if err != nil {
		return nil, false, err
	}
	// A disabled link has no token, uses or viewers to show.
	return r.answer(agent, link, "", 0, 0, now), true, nil
}

// agentKey names the Agent of a request on agents/name/share.
func agentKey(ctx context.Context, name string) (types.NamespacedName, error) {
	namespace, ok := genericapirequest.NamespaceFrom(ctx)
	if !ok || namespace == "" {
		return types.NamespacedName{}, apierrors.NewBadRequest("the request has no namespace")
	}
	return types.NamespacedName{Namespace: namespace, Name: name}, nil
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
