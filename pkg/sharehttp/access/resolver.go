// Package access decides who may open a share link and how much: it
// resolves tokens to grants from informer caches (Resolver), takes the uses
// of one-time links, counts each link's pages (Viewers), limits requests per
// client address (RateLimiter, ClientIPResolver) and concurrent terminals
// (Slots), and tells when the caches stop following the cluster.
package access

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/secrets"
)

// TokenHashIndex indexes share Secrets by the SHA-256 of their token: the
// cache a Resolver reads must have it.
const TokenHashIndex = "share.kubeopencode.io/token-hash"

// Reasons a link is refused, beyond those of pkg/share. Unknown, disabled and
// revoked links are all NotFound, so that the answer tells a guesser nothing.
const (
	ReasonNotFound       = "NotFound"
	ReasonIPNotAllowed   = "IPNotAllowed"
	ReasonNoPod          = "NoPod"
	ReasonTooManyRequest = "TooManyRequests"
	ReasonUnavailable    = "Unavailable"
)

// Grant is the access a valid token gives: a terminal in one Agent's pod.
type Grant struct {
	Agent    types.NamespacedName
	AgentUID types.UID
	// ExpiresAt is when the link expires, zero when it does not.
	ExpiresAt time.Time
	// Command is what the session runs in the Agent's container.
	Command []string
	// Limited is true for a link with maxUses: each new terminal
	// connection uses one.
	Limited bool
	// Link is the name of the link the token belongs to, "" for the
	// Agent's default link.
	Link string
	// ReadOnly is true for a link in view mode: its pages watch the
	// terminal and their input never reaches the command.
	ReadOnly bool
	// MaxViewers, when positive, is how many pages may have the link's
	// terminal open at once.
	MaxViewers int32
	// SecretName is the Secret that holds the link's token.
	SecretName string
	// viewersElsewhere is how many pages other listener replicas report
	// on the link's Secret.
	viewersElsewhere int32

	agent *v1alpha1.Agent
}

func refuseUsedUp(agent *types.NamespacedName) *Refusal {
	return &Refusal{Reason: share.ReasonUsedUp, Code: http.StatusGone, Agent: agent,
		Message: "This link could be used a limited number of times and has been. Ask for a new link."}
}

// consumeUse counts one terminal connection of a link limited by maxUses,
// against the API server, so that racing connections cannot both take the
// last use.
func (r *Resolver) consumeUse(ctx context.Context, grant *Grant, token string) *Refusal {
	if !grant.Limited {
		return nil
	}
	_, err := secrets.ConsumeUse(ctx, r.live, r.liveWriter, r.keys.KeyRing(), grant.agent, grant.Link, token)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, share.ErrUsedUp):
		return refuseUsedUp(&grant.Agent)
	case errors.Is(err, share.ErrForeignSecret), apierrors.IsNotFound(err):
		return refuseNotFound
	default:
		return refuseUnavailable
	}
}

// Refusal says why a request is not let in, in words safe to show the client.
type Refusal struct {
	Reason  string
	Code    int
	Message string
	// Agent is the Agent the token belongs to, when the token was known.
	Agent *types.NamespacedName
}

func (r *Refusal) Error() string { return r.Reason + ": " + r.Message }

var (
	refuseNotFound = &Refusal{Reason: ReasonNotFound, Code: http.StatusNotFound,
		Message: "This share link is not valid. It may have been disabled or replaced."}
	refuseUnavailable = &Refusal{Reason: ReasonUnavailable, Code: http.StatusServiceUnavailable,
		Message: "The share server is starting or cannot reach the cluster. Try again shortly."}
)

// defaultCommand is what a session runs when the Agent names no terminal
// command: a login shell, bash where the image has it, sh otherwise.
var defaultCommand = []string{"/bin/sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l 2>/dev/null || exec sh"}

// Resolver resolves share tokens to Agents from informer caches, so that no
// request of the public listener reaches the API server, and tells live
// pages when the link they were opened with may have changed.
type Resolver struct {
	cache crcache.Cache
	// live reads the API server itself, for Confirm; liveWriter counts
	// the uses of limited links.
	live       client.Reader
	liveWriter client.Writer
	clock      clock.Clock
	// keys prove that this system minted a Secret's token.
	keys share.Keys
	// healthy tells whether the cache follows the cluster; nil means it
	// always does. synced, when set, is told once the cache is filled.
	healthy func() bool
	synced  func()
	// viewers is how this listener records its viewer counts.
	viewers viewerCounting

	mu          sync.Mutex
	subscribers map[types.NamespacedName]map[chan struct{}]struct{}
}

// NewResolver returns a Resolver reading the cluster through config. Only
// share Secrets and Agent pods are cached.
func NewResolver(config *rest.Config, keys share.Keys, clk clock.Clock) (*Resolver, error) {
	agentPods, err := labels.NewRequirement(share.LabelAgent, selection.Exists, nil)
	if err != nil {
		return nil, err
	}
	// The kinds are known, so the cache needs no discovery: the listener can
	// be built while the API server is away and fills once it answers.
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(corev1.SchemeGroupVersion.WithKind("Secret"), meta.RESTScopeNamespace)
	mapper.Add(corev1.SchemeGroupVersion.WithKind("Pod"), meta.RESTScopeNamespace)
	mapper.Add(v1alpha1.SchemeGroupVersion.WithKind("Agent"), meta.RESTScopeNamespace)
	watches := newWatchHealth(clk, watchGrace, watchedResources...)
	cacheConfig := rest.CopyConfig(config)
	cacheConfig.Wrap(watches.wrap)
	c, err := crcache.New(cacheConfig, crcache.Options{
		Scheme: clientscheme.Scheme,
		Mapper: mapper,
		ByObject: map[client.Object]crcache.ByObject{
			&corev1.Secret{}: {Label: labels.SelectorFromSet(share.SecretSelector())},
			&corev1.Pod{}:    {Label: labels.NewSelector().Add(*agentPods)},
		},
		DefaultTransform:             crcache.TransformStripManagedFields(),
		DefaultUnsafeDisableDeepCopy: ptr.To(true),
	})
	if err != nil {
		return nil, fmt.Errorf("creating the share cache: %w", err)
	}
	live, err := client.New(config, client.Options{Scheme: clientscheme.Scheme, Mapper: mapper})
	if err != nil {
		return nil, err
	}
	r := NewResolverFor(c, live, keys, clk, watches.healthy)
	r.synced = watches.synced
	return r, nil
}

// NewResolverFor returns a Resolver reading cache, which must index share
// Secrets by TokenHashIndex, and the API server through live. healthy tells
// whether the cache follows the cluster; nil means it always does.
// NewResolver makes these from a rest.Config; tests hand in fakes.
func NewResolverFor(cache crcache.Cache, live client.Client, keys share.Keys, clk clock.Clock, healthy func() bool) *Resolver {
	return &Resolver{cache: cache, live: live, liveWriter: live, keys: keys, clock: clk, healthy: healthy,
		viewers:     viewerCounting{annotation: hostAnnotation()},
		subscribers: map[types.NamespacedName]map[chan struct{}]struct{}{}}
}

// CountViewersAs names the replica under which this listener records its
// viewer counts on the Secrets of links (by default the host). With sole,
// the replicas share sessions, and a replica's count is the link's whole:
// it removes the counts other replicas left and does not add them to its
// own against maxViewers. It must be called before the listener serves.
func (r *Resolver) CountViewersAs(replica string, sole bool) {
	r.viewers = viewerCounting{annotation: share.ViewersAnnotation(replica), sole: sole}
}

// followsCluster reports whether the caches follow the cluster: the watch
// of every kind they hold is open, or was a moment ago. While they do not,
// a revocation may not have reached them.
func (r *Resolver) followsCluster() bool {
	return r.healthy == nil || r.healthy()
}

// healthCheckInterval is how often a Resolver looks whether its caches still
// follow the cluster.
const healthCheckInterval = 500 * time.Millisecond

// monitor wakes every page when the caches stop following the cluster,
// so that each checks its link again and, failing closed, ends.
func (r *Resolver) monitor(ctx context.Context) {
	if r.healthy == nil {
		return
	}
	healthy := true
	for {
		t := r.clock.NewTimer(healthCheckInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		now := r.followsCluster()
		if healthy && !now {
			klog.InfoS("The share caches lost their watch of the cluster; refusing links until it is back")
			r.notifyAll()
		} else if !healthy && now {
			klog.InfoS("The share caches follow the cluster again")
		}
		healthy = now
	}
}

// Run fills and keeps the caches until ctx ends. Call WaitForCacheSync to
// know when they are filled.
func (r *Resolver) Run(ctx context.Context) error {
	if err := r.cache.IndexField(ctx, &corev1.Secret{}, TokenHashIndex, func(obj client.Object) []string {
		token := obj.(*corev1.Secret).Data[share.SecretTokenKey]
		if !share.ValidToken(string(token)) {
			return nil
		}
		return []string{share.TokenHash(string(token))}
	}); err != nil {
		return fmt.Errorf("indexing share Secrets: %w", err)
	}
	for _, obj := range []client.Object{&corev1.Secret{}, &v1alpha1.Agent{}, &corev1.Pod{}} {
		inf, err := r.cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("starting the %T informer: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    r.notifyFor,
			UpdateFunc: func(_, obj interface{}) { r.notifyFor(obj) },
			DeleteFunc: r.notifyFor,
		}); err != nil {
			return err
		}
	}
	go r.monitor(ctx)
	if err := r.cache.Start(ctx); err != nil {
		return fmt.Errorf("share cache: %w", err)
	}
	return nil
}

// WaitForCacheSync blocks until the caches are filled or ctx ends.
func (r *Resolver) WaitForCacheSync(ctx context.Context) bool {
	if !r.cache.WaitForCacheSync(ctx) {
		return false
	}
	// Until the signing keys are read, no token can be proven: serving
	// then would answer every link 404.
	if keys, ok := r.keys.(interface{ WaitForSync(context.Context) bool }); ok && !keys.WaitForSync(ctx) {
		return false
	}
	if r.synced != nil {
		r.synced()
	}
	return true
}

// notifyFor wakes the pages of the Agent an object belongs to.
func (r *Resolver) notifyFor(obj interface{}) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	o, ok := obj.(client.Object)
	if !ok {
		return
	}
	name := o.GetName()
	switch o.(type) {
	case *corev1.Secret, *corev1.Pod:
		name = o.GetLabels()[share.LabelAgent]
	}
	r.notify(types.NamespacedName{Namespace: o.GetNamespace(), Name: name})
}

// notifyAll wakes the pages of every Agent.
func (r *Resolver) notifyAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, chans := range r.subscribers {
		for ch := range chans {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

func (r *Resolver) notify(agent types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for ch := range r.subscribers[agent] {
		select {
		case ch <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// Subscribe returns a channel that receives a value whenever the Agent, its
// share Secret or its pods change, and a function to unsubscribe.
func (r *Resolver) Subscribe(agent types.NamespacedName) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	if r.subscribers[agent] == nil {
		r.subscribers[agent] = map[chan struct{}]struct{}{}
	}
	r.subscribers[agent][ch] = struct{}{}
	r.mu.Unlock()
	return ch, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.subscribers[agent], ch)
		if len(r.subscribers[agent]) == 0 {
			delete(r.subscribers, agent)
		}
	}
}

// Resolve checks a token for a client address: the token is known and held
// by the share Secret of the very Agent it was made for, sharing is enabled
// and not expired, the address is allowed and the Agent is ready. It reads
// only the caches. While the caches cannot follow the cluster (see
// followsCluster), it refuses with 503: a revocation it cannot see must not let
// anyone in.
func (r *Resolver) Resolve(ctx context.Context, token string, client netip.Addr) (*Grant, *Refusal) {
	if !share.ValidToken(token) {
		return nil, refuseNotFound
	}
	if !r.followsCluster() {
		return nil, refuseUnavailable
	}
	secrets := &corev1.SecretList{}
	if err := r.cache.List(ctx, secrets, clientMatchingHash(token)); err != nil {
		return nil, refuseUnavailable
	}
	// Anyone who knows a token and may write Secrets can plant more Secrets
	// holding it; only the one this system minted counts.
	for i := range secrets.Items {
		secret := &secrets.Items[i]
		if !share.TokensEqual(string(secret.Data[share.SecretTokenKey]), token) {
			continue
		}
		agent := &v1alpha1.Agent{}
		if err := r.cache.Get(ctx, types.NamespacedName{Namespace: secret.Namespace, Name: secret.Labels[share.LabelAgent]}, agent); err != nil {
			continue
		}
		if !r.proven(secret, agent, token) {
			continue
		}
		return r.decide(secret, agent, token, client)
	}
	return nil, refuseNotFound
}

// proven reports whether secret is the share Secret of agent holding token,
// and this system minted that token for it. Owner references, labels and
// annotations alone prove nothing: whoever may write Secrets in the namespace
// can set them.
func (r *Resolver) proven(secret *corev1.Secret, agent *v1alpha1.Agent, token string) bool {
	held, _, err := share.VerifySecret(r.keys.KeyRing(), secret, agent)
	return err == nil && share.TokensEqual(held, token)
}

// Confirm checks a token against the API server itself rather than the
// caches. A terminal session is confirmed so before it starts, since it
// needs the API server for pods/exec anyway: a link revoked a moment ago,
// whose watch event is still on its way, opens nothing.
func (r *Resolver) Confirm(ctx context.Context, grant *Grant, token string, client netip.Addr) (*Grant, *Refusal) {
	agent := &v1alpha1.Agent{}
	if err := r.live.Get(ctx, grant.Agent, agent); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, refuseNotFound
		}
		return nil, refuseUnavailable
	}
	secret := &corev1.Secret{}
	if err := r.live.Get(ctx, types.NamespacedName{Namespace: agent.Namespace, Name: share.LinkSecretName(agent.Name, grant.Link)}, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, refuseNotFound
		}
		return nil, refuseUnavailable
	}
	if !r.proven(secret, agent, token) {
		return nil, refuseNotFound
	}
	return r.decide(secret, agent, token, client)
}

// decide applies the link rules to a token's Secret and Agent, which the
// caller has found proven (Resolve, Confirm): a Secret left over from a
// deleted Agent of the same name, or one that someone else made or edited,
// however well it imitates the real one, never gets here. The Secret names
// the link it holds the token of; the link must still be in the Agent's
// spec.
func (r *Resolver) decide(secret *corev1.Secret, agent *v1alpha1.Agent, token string, client netip.Addr) (*Grant, *Refusal) {
	key := types.NamespacedName{Namespace: agent.Namespace, Name: agent.Name}
	linkName := secret.Labels[share.LabelShareLink]
	link, ok := share.FindLink(agent, linkName)
	if !ok {
		return nil, refuseNotFound
	}
	decision := share.Evaluate(agent, link, r.clock.Now())
	known := &key
	switch decision.Reason {
	case share.ReasonActive:
	case share.ReasonDisabled:
		return nil, refuseNotFound
	case share.ReasonExpired:
		return nil, &Refusal{Reason: share.ReasonExpired, Code: http.StatusGone, Agent: known, Message: "This share link has expired."}
	default:
		return nil, &Refusal{Reason: share.ReasonAgentNotReady, Code: http.StatusServiceUnavailable, Agent: known,
			Message: "The Agent is not ready. Try again when it is running."}
	}
	allowed, err := share.ParseAllowedIPs(share.AllowedIPStrings(link))
	if err != nil || !share.IPAllowed(allowed, client) {
		return nil, &Refusal{Reason: ReasonIPNotAllowed, Code: http.StatusForbidden, Agent: known,
			Message: "This share link cannot be used from your network address."}
	}
	if share.UsedUp(link, secret) {
		return nil, refuseUsedUp(known)
	}
	g := &Grant{Agent: key, AgentUID: agent.UID, Command: defaultCommand, Limited: link.MaxUses != nil,
		Link: link.Name, ReadOnly: link.ReadOnly(), SecretName: secret.Name,
		agent: agent}
	if !r.viewers.sole {
		g.viewersElsewhere = share.ViewersExcept(secret, r.viewers.annotation)
	}
	if link.MaxViewers != nil {
		g.MaxViewers = *link.MaxViewers
	}
	if decision.ExpiresAt != nil {
		g.ExpiresAt = decision.ExpiresAt.Time
	}
	if agent.Spec.Terminal != nil && len(agent.Spec.Terminal.Command) > 0 {
		g.Command = append([]string(nil), agent.Spec.Terminal.Command...)
	}
	return g, nil
}

// ReadyPod returns the name of a ready, running pod of the Agent: the newest,
// so that a session started during a rollout lands on the pod that stays.
func (r *Resolver) ReadyPod(ctx context.Context, agent types.NamespacedName) (string, bool) {
	pods := &corev1.PodList{}
	if err := r.cache.List(ctx, pods, client.InNamespace(agent.Namespace), client.MatchingLabels{share.LabelAgent: agent.Name}); err != nil {
		return "", false
	}
	var ready []*corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && podReady(p) {
			ready = append(ready, p)
		}
	}
	if len(ready) == 0 {
		return "", false
	}
	sort.Slice(ready, func(i, j int) bool {
		ti, tj := ready[i].CreationTimestamp, ready[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return tj.Before(&ti)
		}
		return ready[i].Name < ready[j].Name
	})
	return ready[0].Name, true
}

// PodExists reports whether the named pod of the Agent is still there and not
// being deleted.
func (r *Resolver) PodExists(ctx context.Context, namespace, name string) bool {
	pod := &corev1.Pod{}
	if err := r.cache.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, pod); err != nil {
		return false
	}
	return pod.DeletionTimestamp == nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func clientMatchingHash(token string) client.ListOption {
	return client.MatchingFields{TokenHashIndex: share.TokenHash(token)}
}
