package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/cmd/controller/app"
	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/controller"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/secrets"
)

// TestReliabilityControllerFaults kills the controller where it hurts most
// and runs two replicas; each time the cluster must converge to one Secret
// per enabled Agent, with the token it had, and no Event twice.
func TestReliabilityControllerFaults(t *testing.T) {
	s := startSystem(t)
	// The system's controller makes way for controllers whose network the
	// test controls.
	s.ctl.stop(t)

	t.Run("killed between creating the Secret and writing status", s.testControllerKilledMidway)
	t.Run("killed at random points of enable and disable cycles", func(t *testing.T) {
		s.testControllerKilledInCycles(t, fastSizes.cycles)
	})
	t.Run("two replicas: one writer, and the Lease handed over when the leader is killed", s.testLeaderKilled)
}

// controllerGroups are the groups of the controller's ServiceAccount.
var controllerGroups = []string{"system:serviceaccounts", "system:serviceaccounts:kubeopencode-system", "system:authenticated"}

// proxiedController starts the controller as its ServiceAccount behind a
// proxy of its own, so that the test can watch its writes and kill it.
func (s *system) proxiedController(t *testing.T) (*runningController, *apiProxy) {
	t.Helper()
	px := newAPIProxy(t, s.cp, controllerUser, controllerGroups...)
	return startController(t, px.kubeconfig(t, s.cp)), px
}

// newNamespace creates a namespace on the system's control plane in which
// the user "sharer" may edit.
func (s *system) newNamespace(t *testing.T) string {
	t.Helper()
	ns := "test-" + randomSuffix()
	if err := s.cp.CreateNamespace(t.Context(), ns); err != nil {
		t.Fatalf("creating namespace %s: %v", ns, err)
	}
	bindEdit(t, s.admin, ns, "sharer")
	return ns
}

// createAgent creates an Agent whose terminal runs command (sh when nil).
func (s *system) createAgent(t *testing.T, key types.NamespacedName, shareSpec *kubeopencodev1alpha1.ShareSpec, command ...string) {
	t.Helper()
	if command == nil {
		command = []string{"sh"}
	}
	a := &kubeopencodev1alpha1.Agent{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
		Spec: kubeopencodev1alpha1.AgentSpec{
			Image:    "example/agent:1.0",
			Terminal: &kubeopencodev1alpha1.TerminalSpec{Command: command},
			Share:    shareSpec,
		},
	}
	if err := s.admin.Create(t.Context(), a); err != nil {
		t.Fatalf("creating Agent %s: %v", key, err)
	}
}

// getAgent reads an Agent; nil when it does not exist.
func (s *system) getAgent(ctx context.Context, t *testing.T, key types.NamespacedName) *kubeopencodev1alpha1.Agent {
	t.Helper()
	a := &kubeopencodev1alpha1.Agent{}
	if err := s.admin.Get(ctx, key, a); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		t.Fatal(err)
	}
	return a
}

// waitAgent waits up to timeout for the Agent to satisfy cond.
func (s *system) waitAgent(t *testing.T, key types.NamespacedName, timeout time.Duration, what string, cond func(*kubeopencodev1alpha1.Agent) bool) *kubeopencodev1alpha1.Agent {
	t.Helper()
	var last *kubeopencodev1alpha1.Agent
	err := wait.PollUntilContextTimeout(t.Context(), poll, timeout, true, func(ctx context.Context) (bool, error) {
		a := &kubeopencodev1alpha1.Agent{}
		if err := s.admin.Get(ctx, key, a); err != nil {
			return false, nil
		}
		last = a
		return cond(a), nil
	})
	if err != nil {
		t.Fatalf("waiting for Agent %s: %s: %v; last status %+v", key, what, err, statusOf(last))
	}
	return last
}

func statusOf(a *kubeopencodev1alpha1.Agent) any {
	if a == nil {
		return nil
	}
	return a.Status
}

// isReady reports whether the Agent's Ready condition is True.
func isReady(a *kubeopencodev1alpha1.Agent) bool {
	return meta.IsStatusConditionTrue(a.Status.Conditions, kubeopencodev1alpha1.ConditionReady)
}

// converged reports whether the controller has observed the Agent's spec
// and reports the share as the spec asks.
func converged(a *kubeopencodev1alpha1.Agent) bool {
	c := meta.FindStatusCondition(a.Status.Conditions, kubeopencodev1alpha1.ConditionShareReady)
	if a.Status.ObservedGeneration != a.Generation || c == nil || c.ObservedGeneration != a.Generation {
		return false
	}
	if a.Spec.Share != nil && a.Spec.Share.Enabled {
		return c.Reason == share.ReasonActive && a.Status.Share != nil && a.Status.Share.Active
	}
	return c.Reason == share.ReasonDisabled
}

// updateAgent changes an Agent, retrying on conflicts.
func (s *system) updateAgent(t *testing.T, key types.NamespacedName, mutate func(*kubeopencodev1alpha1.Agent)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), poll, time.Minute, true, func(ctx context.Context) (bool, error) {
		a := &kubeopencodev1alpha1.Agent{}
		if err := s.admin.Get(ctx, key, a); err != nil {
			return false, err
		}
		mutate(a)
		err := s.admin.Update(ctx, a)
		if apierrors.IsConflict(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("updating Agent %s: %v", key, err)
	}
}

func (s *system) setShareEnabled(t *testing.T, key types.NamespacedName, enabled bool) {
	t.Helper()
	s.updateAgent(t, key, func(a *kubeopencodev1alpha1.Agent) {
		if a.Spec.Share == nil {
			a.Spec.Share = &kubeopencodev1alpha1.ShareSpec{}
		}
		a.Spec.Share.Enabled = enabled
	})
}

// shareSecrets returns the share Secrets of a namespace.
func (s *system) shareSecrets(ctx context.Context, t *testing.T, ns string) []corev1.Secret {
	t.Helper()
	list := &corev1.SecretList{}
	if err := s.admin.List(ctx, list, client.InNamespace(ns), client.MatchingLabels(share.SecretSelector())); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// secretToken returns an Agent's share Secret and token; nil when there is
// none.
func (s *system) secretToken(ctx context.Context, t *testing.T, key types.NamespacedName) (*corev1.Secret, string) {
	t.Helper()
	secret := &corev1.Secret{}
	err := s.admin.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: share.SecretName(key.Name)}, secret)
	if apierrors.IsNotFound(err) {
		return nil, ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return secret, string(secret.Data[share.SecretTokenKey])
}

// waitSecretToken waits for the Agent's share Secret and returns its token.
func (s *system) waitSecretToken(t *testing.T, key types.NamespacedName) (*corev1.Secret, string) {
	t.Helper()
	var (
		secret *corev1.Secret
		token  string
	)
	err := wait.PollUntilContextTimeout(t.Context(), poll, time.Minute, true, func(ctx context.Context) (bool, error) {
		secret, token = s.secretToken(ctx, t, key)
		return secret != nil, nil
	})
	if err != nil {
		t.Fatalf("waiting for the share Secret of %s: %v", key, err)
	}
	return secret, token
}

// checkAnnouncements checks the controller's token Events of an Agent: no
// rotation, at most one ShareEnabled per share Secret (a Secret is one
// token's life), and at most as many as there were enables and disables.
func (s *system) checkAnnouncements(t *testing.T, key types.NamespacedName, enables, disables int) (enabled, disabled int) {
	t.Helper()
	ctx := t.Context()
	if n, _ := eventCount(ctx, t, s.admin, key, controller.EventShareRotated); n != 0 {
		t.Errorf("%d ShareRotated Events, but no rotation was asked for: a token was minted again", n)
	}
	enabled, events := eventCount(ctx, t, s.admin, key, controller.EventShareEnabled)
	perSecret := map[types.UID]int{}
	for _, e := range events {
		if e.Related == nil || e.Related.Kind != "Secret" {
			t.Errorf("ShareEnabled Event %s relates to %+v, not a Secret", e.Name, e.Related)
			continue
		}
		n := 1
		if e.Series != nil {
			n = int(e.Series.Count)
		}
		perSecret[e.Related.UID] += n
	}
	for uid, n := range perSecret {
		if n > 1 {
			t.Errorf("the token of Secret %s was announced %d times", uid, n)
		}
	}
	if enabled > enables {
		t.Errorf("%d ShareEnabled Events for %d enables", enabled, enables)
	}
	disabled, _ = eventCount(ctx, t, s.admin, key, controller.EventShareDisabled)
	if disabled > disables {
		t.Errorf("%d ShareDisabled Events for %d disables", disabled, disables)
	}
	return enabled, disabled
}

// tokenFingerprint is the fingerprint the controller records of an
// announced token.
func tokenFingerprint(token string) string { return share.TokenHash(token)[:16] }

func (s *system) testControllerKilledMidway(t *testing.T) {
	statusWrite := func(key types.NamespacedName) *regexp.Regexp {
		return regexp.MustCompile("^/apis/kubeopencode.io/v1alpha1/namespaces/" + key.Namespace + "/agents/" + key.Name + "/status$")
	}
	secretWrite := func(key types.NamespacedName) *regexp.Regexp {
		return regexp.MustCompile("^/api/v1/namespaces/" + key.Namespace + "/secrets/" + share.SecretName(key.Name) + "$")
	}
	secretCreate := func(key types.NamespacedName) *regexp.Regexp {
		return regexp.MustCompile("^/api/v1/namespaces/" + key.Namespace + "/secrets$")
	}
	for _, tc := range []struct {
		name string
		// held is the write the controller is killed waiting for.
		held func(types.NamespacedName) *regexp.Regexp
		// method is the method of the held write.
		method string
		// madeByAPI: the share Secret is stored as an enable through the
		// aggregated API stores it, while the controller is down, so the
		// controller finds a token it has not announced. A Secret the
		// controller creates holds the fingerprint from the start: its
		// creation is the write that records the announcement.
		madeByAPI bool
		// announcedBeforeKill: the ShareEnabled Event may have been sent
		// before the kill, and then not again.
		announcedBeforeKill bool
	}{
		{name: "after the token was announced, before the status", held: statusWrite, method: http.MethodPatch, announcedBeforeKill: true},
		{name: "while the Secret is created", held: secretCreate, method: http.MethodPost},
		{name: "after the Secret was created, before the token was announced", held: secretWrite, method: http.MethodPatch, madeByAPI: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			key := types.NamespacedName{Namespace: s.newNamespace(t), Name: "midway"}
			ctl, _ := s.proxiedController(t)
			s.createAgent(t, key, nil)
			s.waitAgent(t, key, 2*time.Minute, "Ready", isReady)
			// The controller is started again behind a proxy that holds
			// the write.
			ctl.stop(t)
			if tc.madeByAPI {
				// The aggregated API writes the Agent, then the Secret.
				s.setShareEnabled(t, key, true)
				if _, _, _, err := secrets.Ensure(ctx, s.admin, s.admin, signingKeys(t), s.getAgent(ctx, t, key), ""); err != nil {
					t.Fatal(err)
				}
			}

			held := tc.held(key)
			px := newAPIProxy(t, s.cp, controllerUser, controllerGroups...)
			px.setHold(func(r *http.Request) bool {
				if r.Method != tc.method || !held.MatchString(r.URL.Path) {
					return false
				}
				if tc.method == http.MethodPost {
					return true
				}
				secret, _ := s.secretToken(context.Background(), t, key)
				return secret != nil
			})
			ctl = startController(t, px.kubeconfig(t, s.cp))
			if !tc.madeByAPI {
				s.setShareEnabled(t, key, true)
			}
			select {
			case what := <-px.held:
				t.Logf("killing the controller while it waits for %s", what)
			case <-time.After(time.Minute):
				t.Fatal("the controller did not get to the write")
			}
			secret, token := s.secretToken(ctx, t, key)
			if tc.method == http.MethodPost {
				if secret != nil {
					t.Fatalf("a share Secret exists while its creation is held: %v", secret)
				}
			} else if secret == nil || !share.ValidToken(token) {
				t.Fatalf("no share Secret with a token at the kill: %v", secret)
			}
			px.cutOff()
			ctl.kill(t)
			if a := s.getAgent(ctx, t, key); converged(a) {
				t.Fatalf("the status was written before the kill: %+v", a.Status)
			}

			// Its replacement waits for the Lease the killed one still holds.
			ctl, _ = s.proxiedController(t)
			defer ctl.stop(t)
			s.waitAgent(t, key, 2*time.Minute, "the share Active", converged)
			secrets := s.shareSecrets(ctx, t, key.Namespace)
			if len(secrets) != 1 {
				t.Fatalf("%d share Secrets, want 1", len(secrets))
			}
			got := secrets[0]
			if secret == nil {
				// The killed controller stored no token; the replacement did.
				secret, token = &got, string(got.Data[share.SecretTokenKey])
			}
			if got.UID != secret.UID || string(got.Data[share.SecretTokenKey]) != token {
				t.Fatalf("the restarted controller replaced the Secret or its token")
			}
			if fp := got.Annotations[controller.AnnotationTokenFingerprint]; fp != tokenFingerprint(token) {
				t.Errorf("fingerprint %q, want that of the token", fp)
			}
			// Events are sent in the background: give them time to land.
			var enabled int
			_ = wait.PollUntilContextTimeout(ctx, poll, 10*time.Second, true, func(ctx context.Context) (bool, error) {
				enabled, _ = eventCount(ctx, t, s.admin, key, controller.EventShareEnabled)
				return enabled >= 1, nil
			})
			s.checkAnnouncements(t, key, 1, 0)
			if !tc.announcedBeforeKill && enabled != 1 {
				t.Errorf("%d ShareEnabled Events, want exactly 1: the replacement announces a token the killed controller did not", enabled)
			}
			t.Logf("one Secret, the same token, %d ShareEnabled Event(s)", enabled)
		})
	}
}

func (s *system) testControllerKilledInCycles(t *testing.T, cycles int) {
	ctx := t.Context()
	seed := uint64(time.Now().UnixNano())
	rnd := rand.New(rand.NewPCG(seed, 0))
	t.Logf("random seed %d", seed)
	key := types.NamespacedName{Namespace: s.newNamespace(t), Name: "cycles"}
	ctl, px := s.proxiedController(t)
	defer func() { ctl.stop(t) }()
	s.createAgent(t, key, nil)
	s.waitAgent(t, key, 2*time.Minute, "Ready", isReady)

	kills, hard := 0, false
	pause := func() { time.Sleep(time.Duration(rnd.IntN(300)) * time.Millisecond) }
	maybeKill := func() {
		pause()
		if rnd.IntN(4) != 0 {
			return
		}
		// A hard kill leaves the Lease held until it expires, as a killed
		// process does; a soft one lets go of it, as a stopped one does.
		if hard {
			px.cutOff()
			ctl.kill(t)
		} else {
			ctl.kill(t)
			px.cutOff()
		}
		kills++
		hard = !hard
		ctl, px = s.proxiedController(t)
	}
	checkToken := func(want string, when string) {
		t.Helper()
		_, got := s.secretToken(ctx, t, key)
		if got != want {
			t.Fatalf("cycle token changed %s (Secret holds a different token or none)", when)
		}
	}

	enables, disables := 0, 0
	for i := range cycles {
		viaAPI := i%2 == 0
		var token string
		if viaAPI {
			token = s.enable(t, key, "")
		} else {
			s.setShareEnabled(t, key, true)
		}
		enables++
		maybeKill()
		if !viaAPI {
			_, token = s.waitSecretToken(t, key)
		}
		checkToken(token, fmt.Sprintf("in cycle %d after enabling", i))
		maybeKill()
		checkToken(token, fmt.Sprintf("in cycle %d before disabling", i))
		if viaAPI {
			s.shareCall(t, http.MethodDelete, key, "")
		} else {
			s.setShareEnabled(t, key, false)
		}
		disables++
		maybeKill()
	}
	final := s.enable(t, key, "")
	enables++
	maybeKill()
	a := s.waitAgent(t, key, 2*time.Minute, "the share Active", converged)
	secrets := s.shareSecrets(ctx, t, key.Namespace)
	if len(secrets) != 1 || string(secrets[0].Data[share.SecretTokenKey]) != final {
		t.Fatalf("%d share Secrets; want one holding the token of the last enable", len(secrets))
	}
	if a.Status.Share.SecretName != secrets[0].Name {
		t.Errorf("status.share.secretName %q", a.Status.Share.SecretName)
	}
	time.Sleep(3 * time.Second) // Events are sent in the background.
	enabled, disabled := s.checkAnnouncements(t, key, enables, disables)
	t.Logf("%d cycles, %d kills: %d ShareEnabled and %d ShareDisabled Events for %d enables and %d disables",
		cycles, kills, enabled, disabled, enables, disables)
}

// lease returns the controller's leader election Lease.
func (s *system) lease(ctx context.Context, t *testing.T) *coordinationv1.Lease {
	t.Helper()
	l := &coordinationv1.Lease{}
	if err := s.admin.Get(ctx, types.NamespacedName{Namespace: "kubeopencode-system", Name: app.LeaderElectionID}, l); err != nil {
		t.Fatal(err)
	}
	return l
}

// firstLeaseWrite waits up to timeout for a successful write to the Lease
// through px, and returns its time.
func firstLeaseWrite(ctx context.Context, px *apiProxy, timeout time.Duration) (time.Time, bool) {
	var at time.Time
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		for _, w := range px.writesTo(leasePath) {
			if w.code < 300 {
				at = w.at
				return true, nil
			}
		}
		return false, nil
	})
	return at, err == nil
}

func (s *system) testLeaderKilled(t *testing.T) {
	ctx := t.Context()
	key := types.NamespacedName{Namespace: s.newNamespace(t), Name: "leader"}
	a, pxA := s.proxiedController(t)
	if _, ok := firstLeaseWrite(ctx, pxA, time.Minute); !ok {
		t.Fatal("the first replica did not take the Lease")
	}
	b, pxB := s.proxiedController(t)
	defer b.stop(t)
	s.createAgent(t, key, &kubeopencodev1alpha1.ShareSpec{Enabled: true})
	s.waitAgent(t, key, 2*time.Minute, "the share Active", converged)
	if w := pxB.writesTo(nil); len(w) > 0 {
		t.Fatalf("the standby replica wrote while the leader was alive: %+v", w)
	}
	lease := s.lease(ctx, t)
	holder := *lease.Spec.HolderIdentity
	duration := time.Duration(*lease.Spec.LeaseDurationSeconds) * time.Second

	// Killed: its connections drop, it renews nothing and releases nothing.
	killedAt := time.Now()
	pxA.cutOff()
	a.kill(t)
	// The standby counts the lease duration from when it saw the last
	// renewal, and looks every retry period: 2s plus a jitter of up to 1.2
	// times that, so 4.4s at most. It takes the Lease within the duration
	// and two such looks; 3s more for a loaded machine.
	const maxRetry = 4400 * time.Millisecond
	bound := duration + 2*maxRetry + 3*time.Second
	tookAt, ok := firstLeaseWrite(ctx, pxB, bound+30*time.Second)
	if !ok {
		t.Fatal("the standby replica never took the Lease")
	}
	took := tookAt.Sub(killedAt)
	t.Logf("the standby took the Lease %s after the leader was killed (lease duration %s)", took.Round(100*time.Millisecond), duration)
	if took > bound {
		t.Errorf("hand-over took %s, longer than the lease duration %s, two looks of the standby and 3s", took, duration)
	}
	if l := s.lease(ctx, t); *l.Spec.HolderIdentity == holder {
		t.Errorf("the Lease is still held by the killed replica")
	}

	// The new leader alone writes from now on.
	s.setShareEnabled(t, key, false)
	s.waitAgent(t, key, time.Minute, "the share Disabled", converged)
	if secret, _ := s.secretToken(ctx, t, key); secret != nil {
		t.Error("the new leader left the Secret of a disabled share")
	}
	for _, w := range pxA.writesTo(nil) {
		if w.at.After(killedAt) {
			t.Errorf("the killed replica wrote after its death: %+v", w)
		}
	}
	var agentWrites int
	for _, w := range pxB.writesTo(nil) {
		if w.at.Before(tookAt) {
			t.Errorf("the standby wrote before it held the Lease: %+v", w)
		}
		if !leasePath.MatchString(w.path) {
			agentWrites++
		}
	}
	if agentWrites == 0 {
		t.Error("the new leader did not write the disable")
	}

	// A replica that stops lets go of the Lease, and the next one takes it
	// without waiting for it to expire.
	b.stop(t)
	c, pxC := s.proxiedController(t)
	defer c.stop(t)
	if _, ok := firstLeaseWrite(ctx, pxC, duration+30*time.Second); !ok {
		t.Fatal("a new replica did not take the released Lease")
	}
	s.setShareEnabled(t, key, true)
	s.waitAgent(t, key, time.Minute, "the share Active again", converged)
}
