package replica

import (
	"context"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

const testNamespace = "kubeopencode-system"

var (
	replicaA  = Identity{Name: "listener-a", Address: "10.0.0.1:8080"}
	replicaB  = Identity{Name: "listener-b", Address: "10.0.0.2:8080"}
	testAgent = types.NamespacedName{Namespace: "team", Name: "agent"}
	testUID   = types.UID("5b1e0c1a-0000-4000-8000-000000000001")
)

func newFakeClient(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	s := runtime.NewScheme()
	if err := coordinationv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).Build()
}

func leaseHeldBy(holder string, renewed time.Time, transitions int32) *coordinationv1.Lease {
	renew := metav1.NewMicroTime(renewed)
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace, Name: LeaseName(testUID)},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(holder),
			LeaseDurationSeconds: ptr.To[int32](15),
			RenewTime:            &renew,
			LeaseTransitions:     ptr.To(transitions),
		},
	}
}

func getLease(t *testing.T, c client.Client) (*coordinationv1.Lease, bool) {
	t.Helper()
	lease := &coordinationv1.Lease{}
	err := c.Get(context.Background(), types.NamespacedName{Namespace: testNamespace, Name: LeaseName(testUID)}, lease)
	if apierrors.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return lease, true
}

func TestIdentityRoundTrips(t *testing.T) {
	for _, id := range []Identity{replicaA, {Name: "p", Address: "[fd00::1]:8080"}} {
		got, ok := ParseIdentity(id.String())
		if !ok || got != id {
			t.Errorf("ParseIdentity(%q) = %v, %v; want %v", id.String(), got, ok, id)
		}
	}
	for _, s := range []string{"", "name", "@10.0.0.1:8080", "name@"} {
		if _, ok := ParseIdentity(s); ok {
			t.Errorf("ParseIdentity(%q) succeeded", s)
		}
	}
}

func TestClaimSettlesTheOwner(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name            string
		existing        *coordinationv1.Lease
		wantOwner       *Identity
		wantErr         bool
		wantTransitions int32
	}{
		{name: "no Lease: this replica takes it"},
		{name: "a live peer holds it: the page goes to the peer",
			existing: leaseHeldBy(replicaB.String(), now.Add(-5*time.Second), 0), wantOwner: &replicaB},
		{name: "a peer let it expire: this replica takes it over",
			existing: leaseHeldBy(replicaB.String(), now.Add(-15*time.Second), 2), wantTransitions: 3},
		{name: "released without a holder: this replica takes it",
			existing: leaseHeldBy("", now, 1), wantTransitions: 2},
		{name: "held under this replica's name by the process before: taken again",
			existing: leaseHeldBy(replicaA.String(), now, 0), wantTransitions: 1},
		{name: "held by something that is not a listener: an error, no forward",
			existing: leaseHeldBy("some-controller", now, 0), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var objs []client.Object
			if tc.existing != nil {
				objs = append(objs, tc.existing)
			}
			c := newFakeClient(t, objs...)
			leases := NewLeases(c, testNamespace, replicaA, 0, clocktesting.NewFakeClock(now))
			defer leases.Close()
			claim, owner, err := leases.Claim(context.Background(), testAgent, testUID)
			switch {
			case tc.wantErr:
				if err == nil || claim != nil || owner != nil {
					t.Fatalf("Claim = %v, %v, %v; want an error", claim, owner, err)
				}
				return
			case err != nil:
				t.Fatal(err)
			case tc.wantOwner != nil:
				if claim != nil || owner == nil || *owner != *tc.wantOwner {
					t.Fatalf("Claim = %v, %v; want owner %v", claim, owner, *tc.wantOwner)
				}
				lease, _ := getLease(t, c)
				if *lease.Spec.HolderIdentity != tc.wantOwner.String() {
					t.Fatalf("the Lease changed hands: %q", *lease.Spec.HolderIdentity)
				}
				return
			}
			if claim == nil || owner != nil {
				t.Fatalf("Claim = %v, %v; want a claim", claim, owner)
			}
			lease, ok := getLease(t, c)
			if !ok {
				t.Fatal("no Lease")
			}
			if got := ptr.Deref(lease.Spec.HolderIdentity, ""); got != replicaA.String() {
				t.Errorf("holder %q, want %q", got, replicaA.String())
			}
			if got := ptr.Deref(lease.Spec.LeaseDurationSeconds, 0); got != 15 {
				t.Errorf("leaseDurationSeconds %d, want 15", got)
			}
			if got := ptr.Deref(lease.Spec.LeaseTransitions, -1); got != tc.wantTransitions {
				t.Errorf("leaseTransitions %d, want %d", got, tc.wantTransitions)
			}
			if !lease.Spec.RenewTime.Time.Equal(now) {
				t.Errorf("renewTime %v, want %v", lease.Spec.RenewTime, now)
			}
			claim.Release()
			if _, ok := getLease(t, c); ok {
				t.Error("the Lease outlived the last claim")
			}
		})
	}
}

// TestClaimRaceHasOneWinner races two replicas for one Agent's session,
// for a new Lease and for an expired one: exactly one holds it, the other
// is told to forward to it.
func TestClaimRaceHasOneWinner(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		existing func() *coordinationv1.Lease
	}{
		{name: "new Lease", existing: func() *coordinationv1.Lease { return nil }},
		{name: "expired Lease", existing: func() *coordinationv1.Lease {
			return leaseHeldBy("listener-c@10.0.0.3:8080", now.Add(-time.Minute), 0)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for try := range 20 {
				var objs []client.Object
				if l := tc.existing(); l != nil {
					objs = append(objs, l)
				}
				c := newFakeClient(t, objs...)
				clk := clocktesting.NewFakeClock(now)
				a := NewLeases(c, testNamespace, replicaA, 0, clk)
				b := NewLeases(c, testNamespace, replicaB, 0, clk)
				type result struct {
					claim *Claim
					owner *Identity
					err   error
				}
				results := make([]result, 2)
				var wg sync.WaitGroup
				for i, l := range []*Leases{a, b} {
					wg.Go(func() {
						claim, owner, err := l.Claim(context.Background(), testAgent, testUID)
						results[i] = result{claim, owner, err}
					})
				}
				wg.Wait()
				winners := 0
				for i, r := range results {
					if r.err != nil {
						t.Fatalf("try %d: replica %d: %v", try, i, r.err)
					}
					if r.claim != nil {
						winners++
						continue
					}
					other := []Identity{replicaB, replicaA}[i]
					if r.owner == nil || *r.owner != other {
						t.Fatalf("try %d: replica %d lost to %v, want %v", try, i, r.owner, other)
					}
				}
				if winners != 1 {
					t.Fatalf("try %d: %d replicas hold the session", try, winners)
				}
				a.Close()
				b.Close()
				if _, ok := getLease(t, c); ok {
					t.Fatalf("try %d: the Lease outlived both replicas", try)
				}
			}
		})
	}
}

func TestClaimsShareOneLease(t *testing.T) {
	c := newFakeClient(t)
	leases := NewLeases(c, testNamespace, replicaA, 0, clocktesting.NewFakeClock(time.Now()))
	first, _, err := leases.Claim(context.Background(), testAgent, testUID)
	if err != nil || first == nil {
		t.Fatalf("first claim: %v, %v", first, err)
	}
	second, _, err := leases.Claim(context.Background(), testAgent, testUID)
	if err != nil || second == nil {
		t.Fatalf("second claim: %v, %v", second, err)
	}
	third := first.Another()
	first.Release()
	first.Release() // twice is once
	third.Release()
	if _, ok := getLease(t, c); !ok {
		t.Fatal("the Lease went with a claim still on it")
	}
	second.Release()
	if _, ok := getLease(t, c); ok {
		t.Fatal("the Lease outlived its last claim")
	}
}

// waitForTicker waits until the renewal loop waits on the fake clock, so
// that a Step reaches it.
func waitForTicker(t *testing.T, clk *clocktesting.FakeClock) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return clk.HasWaiters(), nil
	}); err != nil {
		t.Fatal("the Lease is not being renewed")
	}
}

func TestRenewalKeepsTheLease(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clk := clocktesting.NewFakeClock(start)
	c := newFakeClient(t)
	leases := NewLeases(c, testNamespace, replicaA, 0, clk)
	defer leases.Close()
	claim, _, err := leases.Claim(context.Background(), testAgent, testUID)
	if err != nil || claim == nil {
		t.Fatalf("claim: %v, %v", claim, err)
	}
	for round := 1; round <= 3; round++ {
		waitForTicker(t, clk)
		clk.Step(5 * time.Second)
		want := start.Add(time.Duration(round) * 5 * time.Second)
		if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			lease, _ := getLease(t, c)
			return lease.Spec.RenewTime.Time.Equal(want), nil
		}); err != nil {
			t.Fatalf("round %d: the Lease was not renewed to %v", round, want)
		}
	}
	// Past the first renewals, a peer must still see it held.
	peer := NewLeases(c, testNamespace, replicaB, 0, clk)
	if _, owner, err := peer.Claim(context.Background(), testAgent, testUID); err != nil || owner == nil || *owner != replicaA {
		t.Fatalf("the peer sees owner %v (%v), want %v", owner, err, replicaA)
	}
	select {
	case <-claim.Lost():
		t.Fatal("lost a Lease it renewed")
	default:
	}
}

func TestLeaseIsLostWhenTaken(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	c := newFakeClient(t)
	leases := NewLeases(c, testNamespace, replicaA, 0, clk)
	defer leases.Close()
	claim, _, err := leases.Claim(context.Background(), testAgent, testUID)
	if err != nil || claim == nil {
		t.Fatalf("claim: %v, %v", claim, err)
	}
	// Another replica took it (this one was cut off past its duration).
	lease, _ := getLease(t, c)
	lease.Spec.HolderIdentity = ptr.To(replicaB.String())
	if err := c.Update(context.Background(), lease); err != nil {
		t.Fatal(err)
	}
	waitForTicker(t, clk)
	clk.Step(5 * time.Second)
	select {
	case <-claim.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the session went on after its Lease was taken")
	}
	claim.Release()
	if lease, ok := getLease(t, c); !ok || *lease.Spec.HolderIdentity != replicaB.String() {
		t.Fatal("releasing a lost Lease deleted the new owner's")
	}
	// The next page of the Agent goes to the new owner.
	if _, owner, err := leases.Claim(context.Background(), testAgent, testUID); err != nil || owner == nil || *owner != replicaB {
		t.Fatalf("after losing it, owner %v (%v), want %v", owner, err, replicaB)
	}
}

func TestCloseDeletesEveryLease(t *testing.T) {
	c := newFakeClient(t)
	leases := NewLeases(c, testNamespace, replicaA, 0, clocktesting.NewFakeClock(time.Now()))
	claim, _, err := leases.Claim(context.Background(), testAgent, testUID)
	if err != nil || claim == nil {
		t.Fatalf("claim: %v, %v", claim, err)
	}
	leases.Close()
	if _, ok := getLease(t, c); ok {
		t.Fatal("a Lease outlived Close")
	}
	claim.Release() // after Close: nothing more to do
	if _, _, err := leases.Claim(context.Background(), testAgent, testUID); err != ErrClosed {
		t.Fatalf("a claim after Close: %v, want ErrClosed", err)
	}
}
