package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubeopencode/share/cmd/controller/app"
	"github.com/kubeopencode/share/internal/testenv"
	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

// TestReliabilityAPIServerOutage stops the kube-apiserver of a control plane
// of its own while sessions are open and links enabled.
func TestReliabilityAPIServerOutage(t *testing.T) {
	testAPIServerOutage(t, fastSizes.outage)
}

// outageNotice is how long the listener may take to notice that the
// kube-apiserver went away; from then on it must refuse.
const outageNotice = 5 * time.Second

// supervisedController runs the controller as a kubelet runs its container:
// when it exits, as it does on losing its Lease, it is started again.
type supervisedController struct {
	cancel   context.CancelFunc
	done     chan struct{}
	restarts atomic.Int32
}

func superviseController(t *testing.T, kubeconfig string) *supervisedController {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sc := &supervisedController{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(sc.done)
		for ctx.Err() == nil {
			o := app.NewOptions()
			o.SkipControllerNameValidation = true
			cmd := app.NewControllerCommand(o)
			cmd.SetArgs([]string{
				"--kubeconfig=" + kubeconfig,
				"--leader-elect=true",
				"--leader-election-namespace=kubeopencode-system",
				"--metrics-bind-address=0",
				"--health-probe-bind-address=0",
				"--public-url=" + publicURL,
			})
			cmd.SetOut(io.Discard)
			cmd.SetErr(io.Discard)
			err := cmd.ExecuteContext(ctx)
			if ctx.Err() != nil {
				return
			}
			sc.restarts.Add(1)
			t.Logf("the controller exited (%v); restarting it", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-sc.done:
		case <-time.After(30 * time.Second):
			t.Error("the supervised controller did not stop")
		}
	})
	return sc
}

// codeTally counts the answers of one route during the outage.
type codeTally map[int]int

func (c codeTally) String() string {
	var codes []int
	for code := range c {
		codes = append(codes, code)
	}
	sort.Ints(codes)
	var parts []string
	for _, code := range codes {
		parts = append(parts, fmt.Sprintf("%d×%d", c[code], code))
	}
	return strings.Join(parts, " ")
}

func testAPIServerOutage(t *testing.T, outage time.Duration) {
	cp := testenv.RunControlPlane(t, testenv.Options{StandinNode: "outage-node"})
	if _, err := cp.InstallCRDs(t.Context(), filepath.Join(shared.root, "artifacts", "crd")); err != nil {
		t.Fatal(err)
	}
	s := startSystemWith(t, systemConfig{cp: cp})
	s.ctl.stop(t)
	ctl := superviseController(t, s.controllerKubeconfig)
	ctx := t.Context()

	a := s.readyAgent(t, "outage")
	token := s.enable(t, a, "")
	secretA, _ := s.secretToken(ctx, t, a)
	open := s.mustOpen(t, token)
	// A link the controller may be making as the API server goes away.
	b := types.NamespacedName{Namespace: a.Namespace, Name: "late"}
	s.createAgent(t, b, &kubeopencodev1alpha1.ShareSpec{Enabled: true})
	unknown, _ := share.NewToken()

	// The kube-apiserver shuts down gracefully, which takes a while; the
	// outage counts from when its process is gone.
	stoppingAt := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- cp.StopAPIServer() }()
	var stoppedAt time.Time
	down := func() bool {
		if stoppedAt.IsZero() {
			select {
			case err := <-stopped:
				if err != nil {
					t.Fatal(err)
				}
				stoppedAt = time.Now()
				t.Logf("the kube-apiserver took %s to stop; it stays down for %s", stoppedAt.Sub(stoppingAt).Round(100*time.Millisecond), outage)
			default:
			}
		}
		return !stoppedAt.IsZero()
	}
	routes := map[string]string{
		"info":          "/s/" + token + "/info",
		"page":          "/s/" + token,
		"unknown token": "/s/" + unknown + "/info",
	}
	early, late := map[string]codeTally{}, map[string]codeTally{}
	tally := func(route string, code int) {
		m := late
		if !down() || time.Since(stoppedAt) < outageNotice {
			m = early
		}
		if m[route] == nil {
			m[route] = codeTally{}
		}
		m[route][code]++
	}
	for !down() || time.Since(stoppedAt) < outage {
		for name, path := range routes {
			tally(name, s.infoCodePath(ctx, path))
		}
		sess, code, err := openSession(ctx, s.shareLn, token, nil)
		if err == nil {
			code = http.StatusSwitchingProtocols
			sess.close()
		}
		tally("terminal", code)
		time.Sleep(250 * time.Millisecond)
	}
	sessCode, sessStatus, sessEnded := open.waitClosed(0)
	if err := cp.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	restartedAt := time.Now()
	t.Logf("answers while the kube-apiserver stopped and in the first %s of the outage: %v", outageNotice, early)
	t.Logf("answers after that: %v", late)

	// New requests are refused with 503 once the listener noticed, never
	// let in and never a server error.
	for route, codes := range late {
		for code, n := range codes {
			ok := code == http.StatusServiceUnavailable || (route == "unknown token" && code == http.StatusNotFound)
			if !ok {
				t.Errorf("%s answered %d %d time(s) while the kube-apiserver was down", route, code, n)
			}
		}
	}
	for route, codes := range early {
		for code, n := range codes {
			if code >= 500 && code != http.StatusServiceUnavailable || code == 0 {
				t.Errorf("%s answered %d %d time(s) as the kube-apiserver went away", route, code, n)
			}
		}
	}
	// The open session streams through the kube-apiserver: it ends with a
	// status the page shows, or survives.
	if sessEnded {
		t.Logf("the open session ended with %d %+v", sessCode, sessStatus)
		if sessStatus == nil || sessStatus.Reason != "Unavailable" {
			t.Errorf("the open session ended with %d %+v, want a status saying the cluster cannot be reached", sessCode, sessStatus)
		}
	}

	// Everything recovers without a restart.
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		return s.infoCode(ctx, token, nil) == http.StatusOK, nil
	}); err != nil {
		t.Fatalf("the link did not work again after the kube-apiserver returned: %v", err)
	}
	t.Logf("the link works again %s after the kube-apiserver returned", time.Since(restartedAt).Round(100*time.Millisecond))
	if !sessEnded {
		// A session that survived must still work, not hang.
		if err := open.typeText("echo sur''vived\r"); err != nil {
			t.Errorf("the session that survived cannot be written to: %v", err)
		} else if err := open.waitFor(ctx, "survived"); err != nil {
			t.Errorf("the session that survived the outage does not work: %v", err)
		}
	}
	s.mustOpen(t, token).close()
	s.waitAgent(t, b, 3*time.Minute, "the late link Active", converged)
	s.waitAgent(t, a, 3*time.Minute, "the link Active", converged)

	// No token was minted again by retries.
	if got, tok := s.secretToken(ctx, t, a); got == nil || got.UID != secretA.UID || tok != token {
		t.Error("the share Secret of the open link changed")
	}
	if n := len(s.shareSecrets(ctx, t, a.Namespace)); n != 2 {
		t.Errorf("%d share Secrets, want 2", n)
	}
	time.Sleep(3 * time.Second) // Events are sent in the background.
	s.checkAnnouncements(t, a, 1, 0)
	s.checkAnnouncements(t, b, 1, 0)
	t.Logf("the controller was restarted %d time(s)", ctl.restarts.Load())

	// A link disabled now is refused at once: the listener follows the
	// cluster again.
	sess := s.mustOpen(t, token)
	s.shareCall(t, http.MethodDelete, a, "")
	if code, st, ok := sess.waitClosed(5 * time.Second); !ok || st == nil || st.Reason != "Revoked" {
		t.Errorf("a session of a link disabled after the outage: closed=%v %d %+v, want Revoked within 5s", ok, code, st)
	}
	if code := s.infoCode(ctx, token, nil); code != http.StatusNotFound {
		t.Errorf("a link disabled after the outage answers %d", code)
	}
}

// infoCodePath returns the status of a GET of path on the share listener, or
// 0 when it cannot be reached.
func (s *system) infoCodePath(ctx context.Context, path string) int {
	token := strings.TrimSuffix(strings.TrimPrefix(path, "/s/"), "/info")
	if strings.HasSuffix(path, "/info") {
		return s.infoCode(ctx, token, nil)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.shareLn+path, nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
