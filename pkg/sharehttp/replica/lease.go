package replica

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	// DefaultLeaseDuration is how long a session's Lease outlives the last
	// renewal of its owner: after an owner dies, pages reach a new session
	// on a live replica within it.
	DefaultLeaseDuration = 15 * time.Second
	// leaseNamePrefix starts the name of every session Lease; the Agent's
	// UID follows.
	leaseNamePrefix = "kubeopencode-share-"
	// labelComponent marks the session Leases among the namespace's others.
	labelComponent = "app.kubernetes.io/component"
	componentValue = "share-session"
	// annotationAgent names the Agent of a session Lease, for operators.
	annotationAgent = "kubeopencode.io/agent"
	// acquireAttempts bounds the rounds of reading and writing a Lease that
	// others keep changing.
	acquireAttempts = 5
)

// ErrClosed means the replica is stopping and takes no new session.
var ErrClosed = errors.New("the share listener is stopping")

// Identity names a replica and how its peers reach its share listener: its
// pod's name, and its pod IP with the share port.
type Identity struct {
	Name    string
	Address string
}

// String is the Identity as a Lease's holderIdentity: "name@address".
func (i Identity) String() string { return i.Name + "@" + i.Address }

// ParseIdentity parses a holderIdentity written by String.
func ParseIdentity(s string) (Identity, bool) {
	name, addr, ok := strings.Cut(s, "@")
	if !ok || name == "" || addr == "" {
		return Identity{}, false
	}
	return Identity{Name: name, Address: addr}, true
}

// LeaseName is the name of the Lease of an Agent's shared session.
func LeaseName(agentUID types.UID) string { return leaseNamePrefix + string(agentUID) }

// Leases keeps the Leases of the sessions this replica owns, in the
// listener's namespace: one per Agent, taken when the replica starts the
// Agent's session (or when a page arrives that will start it), renewed every
// renewInterval while the session lives, and deleted when it ends.
//
// Whoever writes a Lease first wins: a new one is created, an expired one
// updated with its resourceVersion, so of replicas racing for one Agent
// exactly one holds it and the others forward to it. An owner that cannot
// renew gives the Lease up (Claim.Lost) a renewal interval before others may
// take it, so two replicas never both believe they own a session, as long as
// their clocks agree to within that interval.
type Leases struct {
	client    client.Client
	namespace string
	self      Identity
	duration  time.Duration
	renew     time.Duration
	clock     clock.WithTicker

	mu     sync.Mutex
	held   map[types.UID]*heldLease
	closed bool
}

// heldLease is a Lease this replica holds, with the claims on it.
type heldLease struct {
	uid  types.UID
	refs int
	// ready is closed once the Lease is acquired or refused; until then
	// other claims of the Agent wait for it rather than race this replica
	// against itself.
	ready chan struct{}
	owner *Identity // another replica that holds it, when refused
	err   error
	// acquired is set, before ready is closed, when this replica took
	// the Lease.
	acquired bool
	// lease is the Lease as last written; only the renewing goroutine
	// writes it after acquisition, and release reads it after that
	// goroutine has stopped.
	lease *coordinationv1.Lease
	stop  chan struct{}
	done  chan struct{}
	lost  chan struct{}
	// deleted makes the end of the Lease happen once, whether the last
	// claim or Close comes first.
	deleted sync.Once
}

// NewLeases returns the Leases of self in namespace. A zero duration means
// DefaultLeaseDuration; renewals come every third of it.
func NewLeases(c client.Client, namespace string, self Identity, duration time.Duration, clk clock.WithTicker) *Leases {
	if duration <= 0 {
		duration = DefaultLeaseDuration
	}
	return &Leases{client: c, namespace: namespace, self: self, duration: duration, renew: duration / 3, clock: clk,
		held: map[types.UID]*heldLease{}}
}

// Self is the identity the Leases are held under.
func (l *Leases) Self() Identity { return l.self }

// Duration is how long a Lease outlives its owner's last renewal.
func (l *Leases) Duration() time.Duration { return l.duration }

// Claim is one use of a session Lease this replica holds. The Lease is
// renewed while any claim on it lasts and deleted when the last is released.
type Claim struct {
	l    *Leases
	h    *heldLease
	once sync.Once
}

// Lost is closed when the replica no longer holds the Lease (it could not
// renew it in time, or another replica took it): the session must end, for
// another replica may start one.
func (c *Claim) Lost() <-chan struct{} { return c.h.lost }

// Another returns a second claim on the same Lease, for a part that
// outlives this one (the session outlives the page that started it). The
// claim must not have been released.
func (c *Claim) Another() *Claim {
	c.l.mu.Lock()
	c.h.refs++
	c.l.mu.Unlock()
	return &Claim{l: c.l, h: c.h}
}

// Release ends the claim; the last one deletes the Lease.
func (c *Claim) Release() {
	c.once.Do(func() { c.l.release(c.h) })
}

// Claim makes this replica the owner of the Agent's session, or tells which
// replica owns it. It returns a Claim when this replica holds the Lease
// (already, or newly), or the live owner when another replica holds it; an
// error when the API server could not settle it.
func (l *Leases) Claim(ctx context.Context, agent types.NamespacedName, uid types.UID) (*Claim, *Identity, error) {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, nil, ErrClosed
		}
		h, ok := l.held[uid]
		if !ok {
			h = &heldLease{uid: uid, ready: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}), lost: make(chan struct{})}
			l.held[uid] = h
			h.refs++
			l.mu.Unlock()
			l.acquire(ctx, agent, h)
		} else {
			h.refs++
			l.mu.Unlock()
		}
		select {
		case <-h.ready:
		case <-ctx.Done():
			l.release(h)
			return nil, nil, ctx.Err()
		}
		switch {
		case h.err != nil || h.owner != nil:
			l.release(h)
			return nil, h.owner, h.err
		}
		select {
		case <-h.lost:
			// Lost while this claim came in: settle it again.
			l.release(h)
			continue
		default:
		}
		return &Claim{l: l, h: h}, nil, nil
	}
}

// acquire settles who holds the Agent's Lease and, when it is this
// replica, starts renewing it.
func (l *Leases) acquire(ctx context.Context, agent types.NamespacedName, h *heldLease) {
	defer close(h.ready)
	lease, owner, err := l.take(ctx, agent, h.uid)
	if err != nil || owner != nil {
		h.err, h.owner = err, owner
		// Not held: the entry goes, so that the next claim asks again.
		l.mu.Lock()
		if l.held[h.uid] == h {
			delete(l.held, h.uid)
		}
		l.mu.Unlock()
		close(h.lost)
		close(h.done)
		return
	}
	h.lease, h.acquired = lease, true
	go l.keep(h)
}

// take writes this replica into the Agent's Lease if nobody live holds it.
func (l *Leases) take(ctx context.Context, agent types.NamespacedName, uid types.UID) (*coordinationv1.Lease, *Identity, error) {
	key := types.NamespacedName{Namespace: l.namespace, Name: LeaseName(uid)}
	for range acquireAttempts {
		lease := &coordinationv1.Lease{}
		err := l.client.Get(ctx, key, lease)
		switch {
		case apierrors.IsNotFound(err):
			lease = l.newLease(key, agent)
			if err := l.client.Create(ctx, lease); apierrors.IsAlreadyExists(err) {
				continue
			} else if err != nil {
				return nil, nil, fmt.Errorf("creating the session Lease %s: %w", key, err)
			}
			return lease, nil, nil
		case err != nil:
			return nil, nil, fmt.Errorf("reading the session Lease %s: %w", key, err)
		}
		holder := ptr.Deref(lease.Spec.HolderIdentity, "")
		if holder != l.self.String() && holder != "" && !l.expired(lease) {
			owner, ok := ParseIdentity(holder)
			if !ok {
				return nil, nil, fmt.Errorf("the session Lease %s names a holder that is not a share listener: %q", key, holder)
			}
			return nil, &owner, nil
		}
		// Expired, released, or held under this replica's name by a
		// process before this one (a restart in the same pod), whose
		// session is gone: take it with its resourceVersion, so that of
		// replicas taking it at once only one succeeds.
		now := metav1.NewMicroTime(l.clock.Now())
		lease.Spec.HolderIdentity = ptr.To(l.self.String())
		lease.Spec.LeaseDurationSeconds = ptr.To(int32(l.duration / time.Second))
		lease.Spec.AcquireTime, lease.Spec.RenewTime = &now, &now
		lease.Spec.LeaseTransitions = ptr.To(ptr.Deref(lease.Spec.LeaseTransitions, 0) + 1)
		if err := l.client.Update(ctx, lease); apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			continue
		} else if err != nil {
			return nil, nil, fmt.Errorf("taking the session Lease %s: %w", key, err)
		}
		return lease, nil, nil
	}
	return nil, nil, fmt.Errorf("the session Lease %s kept changing while it was taken", key)
}

func (l *Leases) newLease(key types.NamespacedName, agent types.NamespacedName) *coordinationv1.Lease {
	now := metav1.NewMicroTime(l.clock.Now())
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name:      key.Name,
			Namespace: key.Namespace,
			Labels: map[string]string{
				"app.kubernetes.io/part-of": "kubeopencode",
				labelComponent:              componentValue,
			},
			Annotations: map[string]string{annotationAgent: agent.String()},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(l.self.String()),
			LeaseDurationSeconds: ptr.To(int32(l.duration / time.Second)),
			AcquireTime:          &now,
			RenewTime:            &now,
			LeaseTransitions:     ptr.To[int32](0),
		},
	}
}

// expired reports whether a Lease's holder let it lapse.
func (l *Leases) expired(lease *coordinationv1.Lease) bool {
	if lease.Spec.RenewTime == nil {
		return true
	}
	d := time.Duration(ptr.Deref(lease.Spec.LeaseDurationSeconds, 0)) * time.Second
	return !l.clock.Now().Before(lease.Spec.RenewTime.Add(d))
}

// keep renews a held Lease until it is released or lost. It gives the Lease
// up once it has not renewed it for the duration less one renewal interval,
// before any other replica may see it expired.
func (l *Leases) keep(h *heldLease) {
	defer close(h.done)
	ticker := l.clock.NewTicker(l.renew)
	defer ticker.Stop()
	renewed := l.clock.Now()
	for {
		select {
		case <-h.stop:
			return
		case <-ticker.C():
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.renew)
		err := l.renewOnce(ctx, h)
		cancel()
		switch {
		case err == nil:
			renewed = l.clock.Now()
			continue
		case errors.Is(err, errTaken):
		case l.clock.Since(renewed) < l.duration-l.renew:
			klog.V(2).InfoS("Could not renew a share session Lease; trying again", "lease", klog.KObj(h.lease), "err", err)
			continue
		}
		klog.InfoS("Lost a share session Lease; ending its session", "lease", klog.KObj(h.lease), "err", err)
		l.mu.Lock()
		if l.held[h.uid] == h {
			delete(l.held, h.uid)
		}
		l.mu.Unlock()
		close(h.lost)
		return
	}
}

// errTaken means another replica holds a Lease this one thought it held.
var errTaken = errors.New("the Lease is held by another replica")

func (l *Leases) renewOnce(ctx context.Context, h *heldLease) error {
	lease := h.lease.DeepCopy()
	now := metav1.NewMicroTime(l.clock.Now())
	lease.Spec.RenewTime = &now
	err := l.client.Update(ctx, lease)
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		// Someone else wrote it: still ours only if it still names us.
		current := &coordinationv1.Lease{}
		if err := l.client.Get(ctx, client.ObjectKeyFromObject(lease), current); err != nil {
			if apierrors.IsNotFound(err) {
				return errTaken
			}
			return err
		}
		if ptr.Deref(current.Spec.HolderIdentity, "") != l.self.String() {
			return errTaken
		}
		current.Spec.RenewTime = &now
		lease, err = current, l.client.Update(ctx, current)
		if apierrors.IsConflict(err) {
			return err
		}
	}
	if err != nil {
		return err
	}
	h.lease = lease
	return nil
}

// release drops a claim; the last one stops the renewals and deletes the
// Lease, with its resourceVersion, so that a Lease another replica has
// taken meanwhile is left alone.
func (l *Leases) release(h *heldLease) {
	l.mu.Lock()
	h.refs--
	last := h.refs == 0
	if last && l.held[h.uid] == h {
		delete(l.held, h.uid)
	}
	l.mu.Unlock()
	if !last {
		return
	}
	<-h.ready
	if h.acquired {
		l.stopAndDelete(h)
	}
}

func (l *Leases) stopAndDelete(h *heldLease) {
	h.deleted.Do(func() { l.deleteLease(h) })
}

func (l *Leases) deleteLease(h *heldLease) {
	close(h.stop)
	<-h.done
	select {
	case <-h.lost:
		return
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := l.client.Delete(ctx, h.lease, client.Preconditions{UID: &h.lease.UID, ResourceVersion: &h.lease.ResourceVersion})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		// It expires by itself.
		klog.V(2).InfoS("Could not delete a share session Lease", "lease", klog.KObj(h.lease), "err", err)
	}
}

// Close takes no new claim and deletes every Lease still held, whatever
// its claims: the replica is stopping and its sessions have ended.
func (l *Leases) Close() {
	l.mu.Lock()
	l.closed = true
	held := make([]*heldLease, 0, len(l.held))
	for uid, h := range l.held {
		held = append(held, h)
		delete(l.held, uid)
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, h := range held {
		wg.Go(func() {
			<-h.ready
			if h.acquired {
				l.stopAndDelete(h)
			}
		})
	}
	wg.Wait()
}
