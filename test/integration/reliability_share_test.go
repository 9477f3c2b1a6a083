package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

// TestReliabilityShareFaults takes away what a share link stands on while
// sessions are open: the server that serves it, the Agent's pod, the Agent.
func TestReliabilityShareFaults(t *testing.T) {
	s := startSystem(t)
	t.Run("the aggregated API server restarted while sessions are open", s.testAggregatedServerRestart)
	t.Run("the Agent's pod deleted during a session", s.testPodDeleted)
	t.Run("the Agent deleted and recreated with the same name", s.testAgentRecreated)
}

// mustOpen opens a terminal session and waits for the shell to answer.
func (s *system) mustOpen(t *testing.T, token string) *session {
	t.Helper()
	var (
		sess *session
		code int
		err  error
	)
	// The listener learns of a link just enabled from its watch, a moment
	// after the enable returned: a page retried, as a person would.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		sess, code, err = openSession(t.Context(), s.shareLn, token, nil)
		if err == nil || code != http.StatusNotFound || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("opening a session: %d %v", code, err)
	}
	t.Cleanup(sess.close)
	if err := sess.typeText("echo rea''dy\r"); err != nil {
		t.Fatal(err)
	}
	if err := sess.waitFor(t.Context(), "ready"); err != nil {
		t.Fatal(err)
	}
	return sess
}

// infoCode returns the status of /s/<token>/info, or 0 when the listener
// cannot be reached.
func (s *system) infoCode(ctx context.Context, token string, header http.Header) int {
	return infoCodeAt(ctx, s.shareLn, token, header)
}

// infoCodeAt is infoCode of the share listener at addr, host:port.
func infoCodeAt(ctx context.Context, addr, token string, header http.Header) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/s/"+token+"/info", nil)
	if err != nil {
		return 0
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// request sends a request through the kube-apiserver as the user.
func (s *system) request(t *testing.T, method, path, body string) (int, []byte, error) {
	t.Helper()
	httpClient, err := rest.HTTPClientFor(s.user)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, s.user.Host+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// tryShare calls the agents/share subresource as the user and returns the
// status code and, on success, the AgentShare.
func (s *system) tryShare(t *testing.T, method string, agent types.NamespacedName, body string) (int, *subresourcesv1alpha1.AgentShare) {
	t.Helper()
	code, b, err := s.request(t, method, apiSharePath(agent.Namespace, agent.Name), body)
	if err != nil || code >= 300 {
		return code, nil
	}
	out := &subresourcesv1alpha1.AgentShare{}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return code, out
}

func (s *system) testAggregatedServerRestart(t *testing.T) {
	ctx := t.Context()
	key := s.readyAgent(t, "restart")
	token := s.enable(t, key, "")
	before, _ := s.secretToken(ctx, t, key)
	sessions := []*session{s.mustOpen(t, token), s.mustOpen(t, token)}

	s.api.stop(t)
	for i, sess := range sessions {
		code, st, ok := sess.waitClosed(30 * time.Second)
		if !ok {
			t.Fatalf("session %d outlived the server", i)
		}
		// The page shows why and offers to reconnect.
		if code != 1001 || st == nil || st.Reason != "ServerShutdown" {
			t.Errorf("session %d ended with %d %+v, want 1001 ServerShutdown", i, code, st)
		}
	}
	s.api.start(t)

	// The same link works again once the new server has filled its caches.
	if err := wait.PollUntilContextTimeout(ctx, poll, time.Minute, true, func(ctx context.Context) (bool, error) {
		return s.infoCode(ctx, token, nil) == http.StatusOK, nil
	}); err != nil {
		t.Fatalf("the link did not work again after the restart: %v", err)
	}
	s.mustOpen(t, token).close()
	if err := wait.PollUntilContextTimeout(ctx, poll, time.Minute, true, func(ctx context.Context) (bool, error) {
		code, got := s.tryShare(t, http.MethodGet, key, "")
		return code == http.StatusOK && got.Status.Token == token, nil
	}); err != nil {
		t.Errorf("the API does not show the same token after the restart: %v", err)
	}
	after, _ := s.secretToken(ctx, t, key)
	if after == nil || after.UID != before.UID || string(after.Data[share.SecretTokenKey]) != token {
		t.Error("the restart changed the share Secret")
	}
}

// agentPods returns the names of the Agent's pods that are not being
// deleted.
func (s *system) agentPods(ctx context.Context, t *testing.T, key types.NamespacedName) []string {
	t.Helper()
	pods := &corev1.PodList{}
	if err := s.admin.List(ctx, pods, client.InNamespace(key.Namespace), client.MatchingLabels{share.LabelAgent: key.Name}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			names = append(names, p.Name)
		}
	}
	return names
}

func (s *system) testPodDeleted(t *testing.T) {
	ctx := t.Context()
	key := s.readyAgent(t, "podgone")
	token := s.enable(t, key, "")
	pods := s.agentPods(ctx, t, key)
	if len(pods) != 1 {
		t.Fatalf("pods %v", pods)
	}
	sess := s.mustOpen(t, token)
	if err := sess.typeText("echo in-$HOSTNAME-\r"); err != nil {
		t.Fatal(err)
	}
	if err := sess.waitFor(ctx, "in-"+pods[0]+"-"); err != nil {
		t.Fatal(err)
	}

	if err := s.admin.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: pods[0]}}); err != nil {
		t.Fatal(err)
	}
	code, st, ok := sess.waitClosed(30 * time.Second)
	if !ok {
		t.Fatal("the session outlived its pod")
	}
	// The page says why: the pod went, or the Agent is not ready for now.
	podGone := code == 1011 && st != nil && st.Reason == "PodGone"
	notReady := code == 1008 && st != nil && st.Reason == share.ReasonAgentNotReady
	if !podGone && !notReady {
		t.Fatalf("the session ended with %d %+v, want 1011 PodGone or 1008 AgentNotReady", code, st)
	}
	t.Logf("the session ended with %d %s: %q", code, st.Reason, st.Message)

	// Reconnecting reaches the replacement once it runs; until then the
	// link answers 503, never anything worse.
	var next *session
	var refusals []int
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		sess, code, err := openSession(ctx, s.shareLn, token, nil)
		if err != nil {
			refusals = append(refusals, code)
			if code != http.StatusServiceUnavailable {
				return false, fmt.Errorf("reconnecting answers %d: %v", code, err)
			}
			return false, nil
		}
		next = sess
		return true, nil
	}); err != nil {
		t.Fatalf("no session reached a replacement pod: %v", err)
	}
	defer next.close()
	replacement := s.agentPods(ctx, t, key)
	if len(replacement) != 1 || replacement[0] == pods[0] {
		t.Fatalf("pods after the deletion: %v", replacement)
	}
	if err := next.typeText("echo in-$HOSTNAME-\r"); err != nil {
		t.Fatal(err)
	}
	if err := next.waitFor(ctx, "in-"+replacement[0]+"-"); err != nil {
		t.Fatalf("the new session is not in the replacement pod %s: %v", replacement[0], err)
	}
	t.Logf("reconnected to %s after %d refusal(s) %v", replacement[0], len(refusals), refusals)
}

// watchToken asks /info of a token every 100ms until stop is called, and
// returns the answers other than want.
func (s *system) watchToken(token string, want int) (stop func() []string) {
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu  sync.Mutex
		bad []string
		wg  sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if code := s.infoCode(ctx, token, nil); code != want && ctx.Err() == nil {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%s: %d", time.Now().Format("15:04:05.000"), code))
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() []string {
		cancel()
		wg.Wait()
		return bad
	}
}

// expectDead checks that a token opens nothing on any route.
func (s *system) expectDead(t *testing.T, token string) {
	t.Helper()
	for _, path := range []string{"/s/" + token, "/s/" + token + "/info"} {
		if resp, _ := s.get(t, path, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s answers %d", strings.Replace(path, token, "<old token>", 1), resp.StatusCode)
		}
	}
	if sess, code, err := openSession(t.Context(), s.shareLn, token, nil); err == nil {
		sess.close()
		t.Error("the old token opened a terminal")
	} else if code != http.StatusNotFound {
		t.Errorf("the old token's terminal answers %d", code)
	}
}

func (s *system) testAgentRecreated(t *testing.T) {
	ctx := t.Context()
	const finalizer = "example.com/hold"
	for _, tc := range []struct {
		name   string
		policy metav1.DeletionPropagation
		// finalizer, when true, holds the Agent in deletion until the test
		// lets it go, as any finalizer of another tool may.
		finalizer bool
	}{
		// The garbage collector deletes the Secret and the Deployment, but
		// the new Agent may come before it does.
		{name: "deleted in the background", policy: metav1.DeletePropagationBackground},
		// The old Secret stays, with the old token, and no owner.
		{name: "deleted orphaning its Secret and Deployment", policy: metav1.DeletePropagationOrphan},
		{name: "held in deletion by a finalizer", policy: metav1.DeletePropagationBackground, finalizer: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := s.readyAgent(t, "reborn")
			old := s.enable(t, key, "")
			sess := s.mustOpen(t, old)

			if tc.finalizer {
				s.updateAgent(t, key, func(a *kubeopencodev1alpha1.Agent) { a.Finalizers = append(a.Finalizers, finalizer) })
			}
			agent := s.getAgent(ctx, t, key)
			if err := s.admin.Delete(ctx, agent, client.PropagationPolicy(tc.policy)); err != nil {
				t.Fatal(err)
			}
			// From the moment the listener has seen the deletion, which may
			// wait for finalizers, the old token must never work again.
			if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
				return s.infoCode(ctx, old, nil) == http.StatusNotFound, nil
			}); err != nil {
				t.Fatalf("the old token still works after the Agent was deleted: %v", err)
			}
			stop := s.watchToken(old, http.StatusNotFound)
			defer func() {
				if bad := stop(); len(bad) > 0 {
					t.Errorf("the old token answered other than 404 after the Agent was deleted: %v", bad)
				}
			}()
			code, st, ok := sess.waitClosed(30 * time.Second)
			if !ok {
				t.Fatal("the session outlived its Agent")
			}
			if tc.finalizer {
				// All of this happened while the Agent was being deleted.
				if a := s.getAgent(ctx, t, key); a == nil || a.DeletionTimestamp == nil {
					t.Fatal("the Agent is not held in deletion")
				}
				s.updateAgent(t, key, func(a *kubeopencodev1alpha1.Agent) { a.Finalizers = nil })
			}
			t.Logf("the open session ended with %d %+v", code, st)
			if st == nil || (st.Reason != "Revoked" && st.Reason != "PodGone" && st.Reason != share.ReasonAgentNotReady) {
				t.Errorf("the session ended with %d %+v, want Revoked, PodGone or AgentNotReady", code, st)
			}
			if err := wait.PollUntilContextTimeout(ctx, poll, time.Minute, true, func(ctx context.Context) (bool, error) {
				return s.getAgent(ctx, t, key) == nil, nil
			}); err != nil {
				t.Fatal("the Agent was not deleted")
			}

			s.createAgent(t, key, nil)
			s.expectDead(t, old)
			if tc.policy == metav1.DeletePropagationOrphan {
				// The old Secret is not the new Agent's: it is refused, and
				// the old Deployment is not adopted either.
				if code, _ := s.tryShare(t, http.MethodPost, key, "{}"); code != http.StatusConflict {
					t.Errorf("enabling next to the old Secret answers %d, want 409", code)
				}
				s.expectDead(t, old)
				for _, obj := range []client.Object{
					&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: share.SecretName(key.Name)}},
					&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}},
				} {
					if err := s.admin.Delete(ctx, obj); err != nil {
						t.Fatal(err)
					}
				}
			}
			s.waitAgent(t, key, 2*time.Minute, "Ready", isReady)
			var fresh string
			if err := wait.PollUntilContextTimeout(ctx, poll, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
				// 409 while the old Secret waits for the garbage collector.
				code, got := s.tryShare(t, http.MethodPost, key, "{}")
				if code == http.StatusConflict {
					return false, nil
				}
				if code != http.StatusCreated && code != http.StatusOK {
					return false, fmt.Errorf("enabling the new Agent answers %d", code)
				}
				fresh = got.Status.Token
				return true, nil
			}); err != nil {
				t.Fatal(err)
			}
			if fresh == old {
				t.Fatal("the new Agent got the old token")
			}
			s.mustOpen(t, fresh).close()
			s.expectDead(t, old)
			a := s.getAgent(ctx, t, key)
			if secret, _ := s.secretToken(ctx, t, key); secret == nil || !share.OwnedBy(secret, a.UID) {
				t.Error("the new Agent's Secret is not its own")
			}
		})
	}
}
