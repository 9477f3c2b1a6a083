package access

import (
	"context"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"

	"github.com/kubeopencode/share/pkg/share"
)

// ReasonTooManyViewers refuses a page past a link's maxViewers.
const ReasonTooManyViewers = "TooManyViewers"

// viewersFlushDelay is how long a change of a link's viewer count waits
// before it is written to the link's Secret, so that a burst of pages joining
// or leaving makes one write.
const viewersFlushDelay = 500 * time.Millisecond

// hostAnnotation is the annotation key of a listener's viewer counts until
// CountViewersAs names its replica: the host's, which is the pod's.
var hostAnnotation = sync.OnceValue(func() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "kubeopencode-share"
	}
	return share.ViewersAnnotation(host)
})

// viewerCounting is how a listener records its viewer counts on the
// Secrets of links: under a key of its own, so that replicas do not
// overwrite each other's counts; and, when the replicas share sessions,
// as the only count of the link, for then every page of an Agent's
// session is on the session's one owner and the counts of other
// replicas are left over from a former owner (one killed before it could
// write its last count).
type viewerCounting struct {
	annotation string
	sole       bool
}

// linkRef names one link of one Agent, and the Secret of its token.
type linkRef struct {
	agent  types.NamespacedName
	uid    types.UID
	link   string
	secret string
}

// Viewers counts the pages that have each link's terminal open through
// this listener, refuses pages past a link's maxViewers, and records the
// counts on the links' Secrets, from which the controller copies them into
// the Agent's status.
type Viewers struct {
	// record writes a link's count; nil records nothing.
	record func(ctx context.Context, ref linkRef, n int32) error
	delay  time.Duration

	mu      sync.Mutex
	counts  map[linkRef]int32
	pending map[linkRef]int // scheduled writes, by the attempt they are
	// inflight counts the writes scheduled or running, and idle is closed
	// when it drops to zero, for wait. Not a sync.WaitGroup: pages still
	// leave, and schedule writes, while the server waits at shutdown, and a
	// WaitGroup may not grow from zero while it is waited on.
	inflight int
	idle     chan struct{}
}

// NewViewers returns Viewers that record the counts through r.
func NewViewers(r *Resolver) *Viewers { return newViewers(r.recordViewers) }

func newViewers(record func(ctx context.Context, ref linkRef, n int32) error) *Viewers {
	return &Viewers{record: record, delay: viewersFlushDelay, counts: map[linkRef]int32{}, pending: map[linkRef]int{}}
}

func refFor(g *Grant) linkRef {
	return linkRef{agent: g.Agent, uid: g.AgentUID, link: g.Link, secret: g.SecretName}
}

// Join counts a page of the grant's link. Past the link's maxViewers (this
// replica's pages and those the others recorded on the Secret) it refuses,
// unless enforce is false, as for a page resuming the session it had.
func (v *Viewers) Join(g *Grant, enforce bool) (leave func(), refusal *Refusal) {
	ref := refFor(g)
	v.mu.Lock()
	defer v.mu.Unlock()
	if enforce && g.MaxViewers > 0 && v.counts[ref]+g.viewersElsewhere >= g.MaxViewers {
		return nil, refuseTooManyViewers(g)
	}
	v.counts[ref]++
	v.scheduleLocked(ref, 0)
	var once sync.Once
	return func() {
		once.Do(func() {
			v.mu.Lock()
			defer v.mu.Unlock()
			if v.counts[ref]--; v.counts[ref] <= 0 {
				delete(v.counts, ref)
			}
			v.scheduleLocked(ref, 0)
		})
	}, nil
}

// count returns the number of pages of a link on this listener.
func (v *Viewers) count(g *Grant) int32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.counts[refFor(g)]
}

// scheduleLocked writes a link's count after the flush delay, unless a
// write is already on its way, which will write the count as it is then.
func (v *Viewers) scheduleLocked(ref linkRef, attempt int) {
	if v.record == nil {
		return
	}
	if _, ok := v.pending[ref]; ok {
		return
	}
	v.pending[ref] = attempt
	v.inflight++
	time.AfterFunc(v.delay<<attempt, func() {
		defer v.done()
		v.flush(ref)
	})
}

// done ends a scheduled write.
func (v *Viewers) done() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.inflight--; v.inflight == 0 && v.idle != nil {
		close(v.idle)
		v.idle = nil
	}
}

func (v *Viewers) flush(ref linkRef) {
	v.mu.Lock()
	attempt := v.pending[ref]
	delete(v.pending, ref)
	n := v.counts[ref]
	v.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := v.record(ctx, ref, n)
	if err == nil || apierrors.IsNotFound(err) {
		return
	}
	klog.V(2).InfoS("Could not record the viewers of a share link", "agent", ref.agent, "link", share.LinkDisplayName(ref.link), "viewers", n, "err", err)
	if attempt < 4 {
		v.mu.Lock()
		v.scheduleLocked(ref, attempt+1)
		v.mu.Unlock()
	}
}

// Wait waits for the writes on their way, at shutdown, including those
// that pages leaving meanwhile schedule.
func (v *Viewers) Wait(ctx context.Context) {
	for {
		v.mu.Lock()
		if v.inflight == 0 {
			v.mu.Unlock()
			return
		}
		if v.idle == nil {
			v.idle = make(chan struct{})
		}
		idle := v.idle
		v.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return
		}
	}
}

// recordViewers writes this replica's viewer count of a link on the link's
// Secret, read from the API server and updated with its resourceVersion;
// zero removes the annotation. A Secret that is gone or belongs to another
// Agent is left alone.
func (r *Resolver) recordViewers(ctx context.Context, ref linkRef, n int32) error {
	if r.liveWriter == nil {
		return nil
	}
	key := types.NamespacedName{Namespace: ref.agent.Namespace, Name: ref.secret}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		secret := &corev1.Secret{}
		if err := r.live.Get(ctx, key, secret); err != nil {
			return err
		}
		if !share.OwnedBy(secret, ref.uid) {
			return nil
		}
		annotation := r.viewers.annotation
		old, had := secret.Annotations[annotation]
		stale := r.viewers.sole && share.ViewersExcept(secret, annotation) > 0
		if !stale && (n == 0 && !had || had && old == strconv.Itoa(int(n))) {
			return nil
		}
		if stale {
			share.ClearViewers(secret.Annotations)
		}
		if n == 0 {
			delete(secret.Annotations, annotation)
		} else {
			if secret.Annotations == nil {
				secret.Annotations = map[string]string{}
			}
			secret.Annotations[annotation] = strconv.Itoa(int(n))
		}
		return r.liveWriter.Update(ctx, secret)
	})
}

// refuseTooManyViewers is the answer to a page past a link's maxViewers.
func refuseTooManyViewers(g *Grant) *Refusal {
	return &Refusal{Reason: ReasonTooManyViewers, Code: http.StatusTooManyRequests, Agent: &g.Agent,
		Message: "This link is open in as many pages as it allows. Try again when someone has left."}
}

// ClearViewers removes the viewer counts this replica recorded on share
// Secrets before it (re)started: it has no pages yet. Failures are logged
// and left: the next page of the link writes its count again.
func (r *Resolver) ClearViewers(ctx context.Context) {
	secrets := &corev1.SecretList{}
	if err := r.cache.List(ctx, secrets); err != nil {
		return
	}
	annotation := r.viewers.annotation
	for i := range secrets.Items {
		secret := &secrets.Items[i]
		if _, ok := secret.Annotations[annotation]; !ok {
			continue
		}
		ref := linkRef{
			agent:  types.NamespacedName{Namespace: secret.Namespace, Name: secret.Labels[share.LabelAgent]},
			uid:    types.UID(secret.Annotations[share.AnnotationAgentUID]),
			link:   secret.Labels[share.LabelShareLink],
			secret: secret.Name,
		}
		if err := r.recordViewers(ctx, ref, 0); err != nil && !apierrors.IsNotFound(err) {
			klog.V(2).InfoS("Could not clear the viewers this listener recorded before it restarted", "secret", klog.KObj(secret), "err", err)
		}
	}
}
