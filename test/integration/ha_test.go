package integration

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/kubeopencode/share/internal/testenv"
	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/sharehttp/replica"
	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// haLeaseDuration is the session Lease duration of the replicas of these
// tests: shorter than the default, so that the death of an owner is over
// sooner; the mechanism is the same.
const haLeaseDuration = 5 * time.Second

var (
	apiServerOnce sync.Once
	apiServerBin  string
	apiServerErr  error
)

// buildAPIServer builds the aggregated API server once per test run, for
// the tests that run it as processes they may kill.
func buildAPIServer(t *testing.T) string {
	t.Helper()
	apiServerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "aggregated-apiserver-")
		if err != nil {
			apiServerErr = err
			return
		}
		apiServerBin = filepath.Join(dir, "aggregated-apiserver")
		cmd := exec.Command("go", "build", "-o", apiServerBin, "./cmd/aggregated-apiserver")
		cmd.Dir = shared.root
		if out, err := cmd.CombinedOutput(); err != nil {
			apiServerErr = errors.New(string(out))
		}
	})
	if apiServerErr != nil {
		t.Fatalf("building the aggregated API server: %v", apiServerErr)
	}
	return apiServerBin
}

// haSystem is the system with its share listener in two replicas, each a
// process of the aggregated API server with a name and an address of its
// own on loopback, as two pods would be, sharing sessions through Leases.
type haSystem struct {
	*system
	// top is the test that started the system: the replicas' files and
	// processes are its, whichever subtest (re)starts them.
	top      *testing.T
	replicas []*testenv.AggregatedAPIServer
	// addrs are the replicas' share listeners, host:port.
	addrs []string
	names []string
}

func startHA(t *testing.T) *haSystem {
	t.Helper()
	s := &haSystem{system: startSystem(t), top: t, names: []string{"replica-a", "replica-b"}}
	for i := range s.names {
		port, err := testenv.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		s.addrs = append(s.addrs, fmt.Sprintf("127.0.0.1:%d", port))
		s.replicas = append(s.replicas, nil)
		s.start(t, i)
	}
	return s
}

// start runs replica i, again after it stopped: the same name and address,
// as a process restarted in its pod.
func (s *haSystem) start(t *testing.T, i int) {
	t.Helper()
	name := s.names[i]
	srv, err := testenv.StartAggregatedAPIServer(t.Context(), s.cp, testenv.ServerOptions{
		Bin: buildAPIServer(t), Name: name, Dir: s.top.TempDir(), ShareAddr: s.addrs[i],
		Args: []string{
			"--share-advertise-address=127.0.0.1",
			"--share-replica-name=" + name,
			"--share-lease-namespace=kubeopencode-system",
			"--share-lease-duration=" + haLeaseDuration.String(),
			"--share-requests-per-second=50",
			"--share-request-burst=100",
			"--share-ping-interval=2s",
		},
	})
	if err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	s.top.Cleanup(func() {
		srv.Stop()
		if s.top.Failed() {
			s.top.Logf("--- %s ---\n%s", name, srv.LogTail(4000))
		}
	})
	s.replicas[i] = srv
	// The replica registered the APIService for itself; the API goes on
	// being served by the system's own server, which no test stops.
	if err := s.cp.RegisterAPIService(t.Context(), subresourcesv1alpha1.GroupName, "v1alpha1", testenv.SystemNamespace,
		"kubeopencode-apiserver-loopback", s.apiPort, s.apiCA); err != nil {
		t.Fatal(err)
	}
	if err := s.cp.WaitForAPIService(t.Context(), "v1alpha1."+subresourcesv1alpha1.GroupName, time.Minute); err != nil {
		t.Fatal(err)
	}
}

// enable enables a link and waits until every replica's cache has its
// Secret, so that a page may go to either: an informer learns of a new
// Secret a moment after the API server wrote it.
func (s *haSystem) enable(t *testing.T, agent types.NamespacedName, body string) string {
	t.Helper()
	token := s.system.enable(t, agent, body)
	s.waitInfo(t, token, http.StatusOK)
	return token
}

// waitInfo waits until every replica answers want for the link's /info, as
// it does once its cache holds the link's Secret.
func (s *haSystem) waitInfo(t *testing.T, token string, want int) {
	t.Helper()
	for i, addr := range s.addrs {
		s.waitFor(t, fmt.Sprintf("%s to answer %d for the link's /info", s.names[i], want), func(ctx context.Context) (bool, error) {
			return infoCodeAt(ctx, addr, token, nil) == want, nil
		})
	}
}

// dialVia opens a link's terminal through replica i.
func (s *haSystem) dialVia(t *testing.T, i int, token string, header http.Header) (*terminalClient, int) {
	t.Helper()
	c, code := dialTerminal(t, s.addrs[i], token, header)
	if c == nil {
		t.Logf("the terminal through %s answers %d", s.names[i], code)
	}
	return c, code
}

// lease returns the session Lease of an Agent, if there is one.
func (s *haSystem) lease(t *testing.T, agent types.NamespacedName) (*coordinationv1.Lease, bool) {
	t.Helper()
	a := &kubeopencodev1alpha1.Agent{}
	if err := s.admin.Get(t.Context(), agent, a); err != nil {
		t.Fatal(err)
	}
	lease := &coordinationv1.Lease{}
	err := s.admin.Get(t.Context(), types.NamespacedName{Namespace: "kubeopencode-system", Name: replica.LeaseName(a.UID)}, lease)
	if apierrors.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return lease, true
}

// waitNoLease waits until the Agent's session Lease is gone.
func (s *haSystem) waitNoLease(t *testing.T, agent types.NamespacedName) {
	t.Helper()
	s.waitFor(t, "no session Lease of "+agent.String(), func(context.Context) (bool, error) {
		_, ok := s.lease(t, agent)
		return !ok, nil
	})
}

// holder returns the name of the replica that holds the Agent's Lease.
func (s *haSystem) holder(t *testing.T, agent types.NamespacedName) string {
	t.Helper()
	lease, ok := s.lease(t, agent)
	if !ok {
		t.Fatalf("no session Lease of %s", agent)
	}
	id, ok := replica.ParseIdentity(ptr.Deref(lease.Spec.HolderIdentity, ""))
	if !ok {
		t.Fatalf("the Lease's holder %q names no replica", ptr.Deref(lease.Spec.HolderIdentity, ""))
	}
	return id.Name
}

// sessionOf returns the session a page was put in.
func (c *terminalClient) sessionOf() string {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		sy := c.sync
		c.mu.Unlock()
		if sy != nil {
			return sy.Session
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("the page was never told its session")
	return ""
}

func TestHA(t *testing.T) {
	s := startHA(t)
	const a, b = 0, 1

	t.Run("two pages through different replicas share one session", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, "")
		view := s.shareLink(t, http.MethodPost, agent, "", `{"spec":{"link":"watch","mode":"view"}}`).Status.Token

		pa, code := s.dialVia(t, a, token, nil)
		if pa == nil {
			t.Fatalf("the page through replica A answers %d", code)
		}
		pa.resize(80, 24)
		pa.typeText("echo a-''ready\r")
		pa.waitForOutput("a-ready")
		if got := s.holder(t, agent); got != s.names[a] {
			t.Fatalf("the session's Lease is held by %q, want %q (the replica of the first page)", got, s.names[a])
		}
		pb, code := s.dialVia(t, b, token, nil)
		if pb == nil {
			t.Fatalf("the page through replica B answers %d", code)
		}
		pb.resize(80, 24)
		pa.waitForPresence(2)
		pb.waitForPresence(2)
		if pa.sessionOf() != pb.sessionOf() {
			t.Fatalf("the pages are in sessions %s and %s", pa.sessionOf(), pb.sessionOf())
		}
		// Input typed on either reaches the one shell, and both see it.
		pb.typeText("echo from-''b-$((40+2))\r")
		pa.waitForOutput("from-b-42")
		pb.waitForOutput("from-b-42")
		pa.typeText("echo from-''a-$((6*7))\r")
		pb.waitForOutput("from-a-42")

		// A read-only page through the replica that does not own the
		// session watches, and cannot type.
		watcher, code := s.dialVia(t, b, view, nil)
		if watcher == nil {
			t.Fatalf("the view page through replica B answers %d", code)
		}
		watcher.resize(80, 24)
		pa.waitForPresence(3)
		watcher.waitForPresence(3)
		watcher.typeText("touch typed-by-''watcher; echo watcher-''typed\r")
		pa.typeText("touch typed-by-''editor; echo editor-''typed\r")
		watcher.waitForOutput("editor-typed")
		for _, c := range []*terminalClient{pa, pb, watcher} {
			if strings.Contains(c.text(), "watcher-typed") {
				t.Fatalf("the watcher's input reached the shell: %q", c.text())
			}
		}
		if files := s.execInPod(t, agent, "sh", "-c", "ls"); strings.Contains(files, "typed-by-watcher") || !strings.Contains(files, "typed-by-editor") {
			t.Fatalf("files in the pod: %q", files)
		}
		// The owner holds every page: the link's count is the session's.
		s.waitViewers(t, agent, "", 2)
		s.waitViewers(t, agent, "watch", 1)
		// The command's end ends the session, and its Lease goes.
		pb.typeText("exit\r")
		for _, c := range []*terminalClient{pa, pb, watcher} {
			if _, st, _ := c.waitClosed(30 * time.Second); st == nil || st.Reason != wire.ReasonExited {
				t.Fatalf("a page ended with %+v, want Exited", st)
			}
		}
		s.waitNoLease(t, agent)
	})

	t.Run("a page resumes through another replica with nothing lost or repeated", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, "")
		p, _ := s.dialVia(t, a, token, nil)
		p.resize(80, 24)
		p.typeText("echo pid-$$-''end\r")
		p.waitForOutput("-end")
		pid := regexp.MustCompile(`pid-(\d+)-end`).FindStringSubmatch(p.text())
		if pid == nil {
			t.Fatalf("no pid in %q", p.text())
		}
		p.typeText("sleep 1; echo after-''drop-1; echo after-''drop-2\r")
		p.waitForOutput("sleep 1;")
		p.mu.Lock()
		session, offset := p.sync.Session, p.offset
		p.mu.Unlock()
		// The network drops: no close frame, no status.
		_ = p.conn.UnderlyingConn().Close()
		time.Sleep(2500 * time.Millisecond) // the command writes while no page is there

		r, code := dialTerminalURL(t, fmt.Sprintf("ws://%s/s/%s/terminal?resume=%s:%d", s.addrs[b], token, session, offset), s.addrs[b], nil)
		if r == nil {
			t.Fatalf("resuming through replica B answers %d", code)
		}
		r.resize(80, 24)
		r.waitForOutput("after-drop-2")
		r.mu.Lock()
		got, sync := r.output.String(), r.sync
		r.mu.Unlock()
		if sync == nil || sync.Session != session || sync.Offset != offset {
			t.Fatalf("resumed at %+v, want session %s offset %d", sync, session, offset)
		}
		if strings.Count(got, "after-drop-1") != 1 || strings.Index(got, "after-drop-1") > strings.Index(got, "after-drop-2") {
			t.Fatalf("resumed output is not the missed output once and in order: %q", got)
		}
		if strings.Contains(got, "pid-"+pid[1]) {
			t.Fatalf("resumed output repeats what the page had seen: %q", got)
		}
		r.typeText("echo pid-$$-''end\r")
		r.waitForOutput("pid-" + pid[1] + "-end")
		if got := s.holder(t, agent); got != s.names[a] {
			t.Fatalf("the session moved to %q", got)
		}
	})

	t.Run("maxViewers counts the pages of both replicas", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		qa := s.shareLink(t, http.MethodPost, agent, "", `{"spec":{"link":"qa","maxViewers":2}}`).Status.Token
		first, _ := s.dialVia(t, a, qa, nil)
		first.resize(80, 24)
		second, code := s.dialVia(t, b, qa, nil)
		if second == nil {
			t.Fatalf("the second page answers %d", code)
		}
		second.resize(80, 24)
		second.waitForPresence(2)
		for _, i := range []int{a, b} {
			if _, code := s.dialVia(t, i, qa, nil); code != http.StatusTooManyRequests {
				t.Fatalf("a third page through replica %s answers %d, want 429", s.names[i], code)
			}
		}
	})

	t.Run("disabling the link closes its pages on both replicas", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, "")
		var pages []*terminalClient
		for _, i := range []int{a, b} {
			c, code := s.dialVia(t, i, token, nil)
			if c == nil {
				t.Fatalf("the page through %s answers %d", s.names[i], code)
			}
			c.resize(80, 24)
			pages = append(pages, c)
		}
		pages[1].waitForPresence(2)
		s.shareCall(t, http.MethodDelete, agent, "")
		for i, c := range pages {
			if code, st, _ := c.waitClosed(30 * time.Second); code != websocket.ClosePolicyViolation || st == nil || st.Reason != "Revoked" {
				t.Fatalf("the page through %s closed with %d, %+v; want 1008 Revoked", s.names[i], code, st)
			}
		}
		s.waitNoLease(t, agent)
	})

	t.Run("a forwarded client address without a proof is refused and opens nothing", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, "")
		// Only 192.0.2.0/24 may open it; the tests connect from loopback.
		fenced := s.shareLink(t, http.MethodPost, agent, "", `{"spec":{"link":"fenced","allowedIPs":["192.0.2.0/24"]}}`).Status.Token
		s.waitInfo(t, fenced, http.StatusForbidden)
		for _, tc := range []struct {
			name   string
			header http.Header
		}{
			{"an address alone", http.Header{replica.HeaderClient: {"192.0.2.7"}}},
			{"an address with a made-up proof", http.Header{replica.HeaderClient: {"192.0.2.7"}, replica.HeaderProof: {"1:" + fmt.Sprint(time.Now().Unix()) + ":AAAA"}}},
			{"a proof alone", http.Header{replica.HeaderProof: {"1:1:AAAA"}}},
		} {
			for _, i := range []int{a, b} {
				for _, tok := range []string{token, fenced} {
					if c, code := s.dialVia(t, i, tok, tc.header.Clone()); c != nil || code != http.StatusForbidden {
						t.Errorf("%s through %s: the terminal answers %d, want 403", tc.name, s.names[i], code)
					}
				}
				resp, _ := getFrom(t, s.addrs[i], "/s/"+fenced+"/info", tc.header.Clone())
				if resp.StatusCode != http.StatusForbidden {
					t.Errorf("%s through %s: /info answers %d, want 403", tc.name, s.names[i], resp.StatusCode)
				}
			}
		}
		// Without the header, the fenced link is refused for the address
		// the page really has.
		if _, code := s.dialVia(t, b, fenced, nil); code != http.StatusForbidden {
			t.Fatalf("the fenced link from loopback answers %d, want 403", code)
		}
		if _, ok := s.lease(t, agent); ok {
			t.Fatal("a refused page left a session Lease")
		}
	})

	t.Run("first pages racing on both replicas make one session", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, "")
		for try := range 20 {
			pages := make([]*terminalClient, 2)
			var wg sync.WaitGroup
			for i := range pages {
				wg.Go(func() {
					c, code := s.dialVia(t, i, token, nil)
					if c == nil {
						t.Errorf("try %d: the page through %s answers %d", try, s.names[i], code)
						return
					}
					c.resize(80, 24)
					pages[i] = c
				})
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			if pages[0].sessionOf() != pages[1].sessionOf() {
				t.Fatalf("try %d: two sessions, %s and %s", try, pages[0].sessionOf(), pages[1].sessionOf())
			}
			pages[0].waitForPresence(2)
			pages[1].waitForPresence(2)
			// End the session, for the next try to race for a new one.
			pages[try%2].typeText("exit\r")
			for _, c := range pages {
				c.waitClosed(30 * time.Second)
			}
			s.waitNoLease(t, agent)
		}
	})

	t.Run("a replica that stops gracefully ends its sessions and hands its forwarded pages over", func(t *testing.T) {
		// Agent one's session runs on A, with a page forwarded by B;
		// agent two's on B, with a page forwarded by A.
		one, two := s.readyAgent(t, "team-agent"), s.readyAgent(t, "team-agent")
		tokenOne, tokenTwo := s.enable(t, one, ""), s.enable(t, two, "")
		open := func(i int, token string) *terminalClient {
			c, code := s.dialVia(t, i, token, nil)
			if c == nil {
				t.Fatalf("the page through %s answers %d", s.names[i], code)
			}
			c.resize(80, 24)
			c.sessionOf()
			return c
		}
		onA, viaB := open(a, tokenOne), open(b, tokenOne)
		onB, viaA := open(b, tokenTwo), open(a, tokenTwo)
		viaB.waitForPresence(2)
		viaA.waitForPresence(2)
		viaB.typeText("echo before-''stop\r")
		viaB.waitForOutput("before-stop")

		s.replicas[b].Stop()
		// B's own session ends, for its page and the one A forwarded.
		for _, c := range []*terminalClient{onB, viaA, viaB} {
			if code, st, _ := c.waitClosed(30 * time.Second); code != websocket.CloseGoingAway || st == nil || st.Reason != wire.ReasonServerShutdown {
				t.Fatalf("a page closed with %d, %+v; want 1001 ServerShutdown", code, st)
			}
		}
		s.waitNoLease(t, two)
		// The page B forwarded to A resumes its session through A.
		viaB.mu.Lock()
		session, offset := viaB.sync.Session, viaB.offset
		viaB.mu.Unlock()
		r, code := dialTerminalURL(t, fmt.Sprintf("ws://%s/s/%s/terminal?resume=%s:%d", s.addrs[a], tokenOne, session, offset), s.addrs[a], nil)
		if r == nil {
			t.Fatalf("resuming through A answers %d", code)
		}
		r.resize(80, 24)
		if r.sessionOf() != session {
			t.Fatalf("resumed into session %s, want %s", r.sessionOf(), session)
		}
		onA.typeText("echo after-''stop\r")
		r.waitForOutput("after-stop")
		if strings.Contains(r.text(), "before-stop") {
			t.Fatalf("the resumed page was sent what it had seen: %q", r.text())
		}
		// Agent two's next page starts a new session on A at once.
		again := open(a, tokenTwo)
		if again.sessionOf() == onB.sessionOf() {
			t.Fatal("a session of the stopped replica went on")
		}
		if got := s.holder(t, two); got != s.names[a] {
			t.Fatalf("agent two's new session is held by %q", got)
		}
		for _, c := range []*terminalClient{onA, again} {
			c.typeText("exit\r")
		}
		s.waitNoLease(t, one)
		s.waitNoLease(t, two)
		s.start(t, b)
	})

	// Last: it kills replica A.
	t.Run("when the owner is killed, its pages reconnect into a new session on the other replica", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		token := s.enable(t, agent, "")
		owner, _ := s.dialVia(t, a, token, nil)
		owner.resize(80, 24)
		owner.typeText("echo owned-''by-a\r")
		owner.waitForOutput("owned-by-a")
		p, code := s.dialVia(t, b, token, nil)
		if p == nil {
			t.Fatalf("the page through replica B answers %d", code)
		}
		p.resize(80, 24)
		p.waitForPresence(2)
		old := p.sessionOf()
		// A has recorded its two pages; killed, it cannot take them back.
		s.waitViewers(t, agent, "", 2)

		if err := syscall.Kill(-s.replicas[a].Pid(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-s.replicas[a].Done()
		// The forwarding replica tells the page, which offers Reconnect.
		code, st, _ := p.waitClosed(30 * time.Second)
		if code != websocket.CloseInternalServerErr || st == nil || st.Reason != wire.ReasonUnavailable {
			t.Fatalf("the page closed with %d, %+v; want 1011 Unavailable", code, st)
		}
		// Reconnecting, as the page's button does, lands in a new session
		// on replica B once A's Lease has run out.
		p.mu.Lock()
		offset := p.offset
		p.mu.Unlock()
		var again *terminalClient
		err := wait.PollUntilContextTimeout(t.Context(), 500*time.Millisecond, haLeaseDuration+20*time.Second, true, func(context.Context) (bool, error) {
			c, _ := dialTerminalURL(t, fmt.Sprintf("ws://%s/s/%s/terminal?resume=%s:%d", s.addrs[b], token, old, offset), s.addrs[b], nil)
			if c == nil {
				return false, nil
			}
			select {
			case <-c.closed:
				// Answered with a status at once: the old owner's Lease
				// holds yet.
				return false, nil
			case <-time.After(time.Second):
			}
			c.resize(80, 24)
			again = c
			return true, nil
		})
		if err != nil {
			t.Fatalf("no new session on replica B within the Lease duration and then some: %v", err)
		}
		if again.sessionOf() == old {
			t.Fatal("reconnected into the killed replica's session")
		}
		again.typeText("echo on-''b\r")
		again.waitForOutput("on-b")
		// The count is the new session's, not what the killed owner left.
		s.waitViewers(t, agent, "", 1)
		if got := s.holder(t, agent); got != s.names[b] {
			t.Fatalf("the new session's Lease is held by %q", got)
		}
		again.typeText("exit\r")
		again.waitClosed(30 * time.Second)
		s.waitNoLease(t, agent)
	})
}

// getFrom fetches a path of the share listener at hostPort.
func getFrom(t *testing.T, hostPort, path string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	return (&system{shareLn: hostPort}).get(t, path, header)
}
