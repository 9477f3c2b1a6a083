package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/internal/testenv"
	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

const (
	benchNamespace = "bench"
	sharer         = "sharer"
	nodeName       = "bench-node"
)

// system is the whole product on a local control plane, assembled as
// hack/dev does: the controller and the aggregated API server (with the share
// listener) as processes of their own, each as its ServiceAccount with the
// shipped RBAC, behind a real APIService, and a stand-in node that runs
// exec'd commands as local processes on a PTY.
type system struct {
	o      *options
	cp     *testenv.ControlPlane
	admin  client.Client
	adminC *rest.Config
	// user is a person with the edit role in the bench namespace.
	user       *rest.Config
	userHTTP   *http.Client
	executor   *kubectlExecutor
	controller *testenv.Process
	// server is the aggregated API server, with the share listener on
	// shareAddr.
	server    *testenv.AggregatedAPIServer
	shareAddr string
	agents    map[string]*agentInfo
	// metricsHTTP reads the aggregated API server's /metrics.
	metricsHTTP *http.Client
	// idleTokens are the links of figure 3's separate sessions.
	idleTokens []string
}

type agentInfo struct {
	key   types.NamespacedName
	token string
	pod   string
}

func (s *system) stop() {
	if s == nil {
		return
	}
	if s.server != nil {
		s.server.Stop()
	}
	if s.controller != nil {
		s.controller.Stop()
	}
	if s.cp != nil {
		s.cp.Stop()
	}
}

// startSystem starts the control plane and the product, and makes the Agents
// the figures use: echo (raw cat), cat (the payload), rev (enabled and
// disabled over and over), lobby (figure 3's viewers) and figure 3's idle
// links.
func startSystem(ctx context.Context, o *options) (_ *system, err error) {
	s := &system{o: o, agents: map[string]*agentInfo{}}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	for _, start := range []func(context.Context) error{s.startControlPlane, s.startServers, s.makeUser, s.makeAgents, s.enableLinks} {
		if err := start(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.makeIdleLinks(ctx, o.separateSessions); err != nil {
		return nil, err
	}
	return s, nil
}

// startControlPlane starts the control plane with a stand-in node and
// installs the project's CRDs, RBAC and APIService.
func (s *system) startControlPlane(ctx context.Context) (err error) {
	step("starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler and a stand-in node")
	if s.cp, err = testenv.Start(ctx, testenv.Options{Dir: filepath.Join(s.o.work, "controlplane"), StandinNode: nodeName}); err != nil {
		return err
	}
	s.adminC = unthrottled(s.cp.Config())
	if s.admin, err = client.New(s.adminC, client.Options{Scheme: clientscheme.Scheme}); err != nil {
		return err
	}
	return s.cp.InstallProject(ctx, s.o.root)
}

// startServers starts the controller and the aggregated API server with its
// share listener, as processes of their own.
func (s *system) startServers(ctx context.Context) (err error) {
	o := s.o
	if s.shareAddr, err = freeAddr(); err != nil {
		return err
	}
	// The shipped controller with its client-side rate limit out of reach:
	// with the shipped limit it would take minutes to make the Agents of
	// figure 3 (see figure 6); no figure here measures it.
	step("starting the controller (client-side rate limit out of reach)")
	if s.controller, err = startController(s.cp, o, "controller", unlimitedArgs()...); err != nil {
		return err
	}
	step("starting the aggregated API server with the share listener on %s", s.shareAddr)
	s.server, err = testenv.StartAggregatedAPIServer(ctx, s.cp, testenv.ServerOptions{
		Bin: filepath.Join(o.binDir, "aggregated-apiserver"), Dir: o.work, LogDir: o.logDir, ShareAddr: s.shareAddr,
		Args: listenerArgs(),
	})
	if err != nil {
		return err
	}
	s.executor, err = newKubectlExecutor(s.server.Config)
	return err
}

// listenerArgs are the flags of every share listener the harness starts:
// the figures measure the listener, not its abuse limits, so the
// per-address rate limit is off and the session limits are above the
// counts of figure 3.
func listenerArgs() []string {
	return []string{"--share-requests-per-second=0", "--share-max-sessions=5000", "--share-max-sessions-per-agent=5000"}
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// makeUser makes the bench namespace and its user, a person with the edit
// role there, who enables and disables links as a user would.
func (s *system) makeUser(ctx context.Context) (err error) {
	step("creating the bench namespace, its user and Agents")
	if err := s.cp.CreateNamespace(ctx, benchNamespace); err != nil {
		return err
	}
	if err := s.bindEdit(ctx, benchNamespace); err != nil {
		return err
	}
	if s.user, err = s.cp.UserConfig(sharer, "system:authenticated"); err != nil {
		return err
	}
	s.user = unthrottled(s.user)
	s.userHTTP, err = rest.HTTPClientFor(s.user)
	return err
}

// makeAgents makes the Agents of the figures and waits until each is Ready.
func (s *system) makeAgents(ctx context.Context) error {
	commands := map[string][]string{
		"echo":  echoCommand(s.o.echoBytes()),
		"cat":   catCommand(s.o.payload),
		"rev":   idleCommand(),
		"lobby": idleCommand(),
	}
	for name, cmd := range commands {
		if err := s.admin.Create(ctx, benchAgent(name, cmd)); err != nil {
			return err
		}
		s.agents[name] = &agentInfo{key: types.NamespacedName{Namespace: benchNamespace, Name: name}}
	}
	for name, a := range s.agents {
		if err := s.waitReady(ctx, a); err != nil {
			return fmt.Errorf("waiting for Agent %s: %w", name, err)
		}
	}
	return nil
}

// benchAgent is an Agent of the bench namespace whose terminal runs cmd.
func benchAgent(name string, cmd []string) *kubeopencodev1alpha1.Agent {
	return &kubeopencodev1alpha1.Agent{
		ObjectMeta: metav1.ObjectMeta{Namespace: benchNamespace, Name: name},
		Spec: kubeopencodev1alpha1.AgentSpec{
			Image:    "bench/agent:1",
			Terminal: &kubeopencodev1alpha1.TerminalSpec{Command: cmd},
		},
	}
}

// enableLinks enables the links of echo, cat and lobby as the user, and
// waits until each answers.
func (s *system) enableLinks(ctx context.Context) error {
	for _, name := range []string{"echo", "cat", "lobby"} {
		if err := s.enableLink(ctx, name); err != nil {
			return err
		}
		if err := s.waitLink(ctx, s.agents[name].token, http.StatusOK); err != nil {
			return err
		}
	}
	return nil
}

// enableLink enables the link of the Agent name as the user and keeps its
// token.
func (s *system) enableLink(ctx context.Context, name string) error {
	a := s.agents[name]
	// The edit role gains agents/share once kube-controller-manager has
	// aggregated the shipped ClusterRoles into it: retry until it has.
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		tok, code, err := s.enable(ctx, a.key)
		if code == http.StatusForbidden {
			return false, nil
		}
		a.token = tok
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("enabling the share of %s: %w", name, err)
	}
	return nil
}

// idleNamespace holds the Agents of figure 3's separate sessions.
const idleNamespace = "bench-idle"

// makeIdleLinks makes n ready Agents with sharing enabled in their spec
// (the controller makes their Secrets), each running the idle command, and
// reads their tokens: n links, so n separate sessions, each with its own
// exec stream.
func (s *system) makeIdleLinks(ctx context.Context, n int) error {
	if n == 0 {
		return nil
	}
	step("making %d Agents with share links for figure 3", n)
	if err := s.cp.CreateNamespace(ctx, idleNamespace); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error {
			return s.admin.Create(gctx, &kubeopencodev1alpha1.Agent{
				ObjectMeta: metav1.ObjectMeta{Namespace: idleNamespace, Name: "idle-" + strconv.Itoa(i)},
				Spec: kubeopencodev1alpha1.AgentSpec{
					Image:    "bench/agent:1",
					Terminal: &kubeopencodev1alpha1.TerminalSpec{Command: idleCommand()},
					Share:    &kubeopencodev1alpha1.ShareSpec{Enabled: true},
				},
			})
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	var ready int
	err := wait.PollUntilContextTimeout(ctx, time.Second, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		agents := &kubeopencodev1alpha1.AgentList{}
		if err := s.admin.List(ctx, agents, client.InNamespace(idleNamespace)); err != nil {
			return false, nil
		}
		ready = 0
		for _, a := range agents.Items {
			if meta.IsStatusConditionTrue(a.Status.Conditions, kubeopencodev1alpha1.ConditionShareReady) {
				ready++
			}
		}
		return ready == n, nil
	})
	if err != nil {
		return fmt.Errorf("%d of %d idle Agents ready: %w", ready, n, err)
	}
	secrets := &corev1.SecretList{}
	if err := s.admin.List(ctx, secrets, client.InNamespace(idleNamespace), client.MatchingLabels(share.SecretSelector())); err != nil {
		return err
	}
	for _, sec := range secrets.Items {
		s.idleTokens = append(s.idleTokens, string(sec.Data[share.SecretTokenKey]))
	}
	if len(s.idleTokens) != n {
		return fmt.Errorf("%d share Secrets for %d idle Agents", len(s.idleTokens), n)
	}
	for _, t := range s.idleTokens {
		if err := s.waitLink(ctx, t, http.StatusOK); err != nil {
			return err
		}
	}
	return nil
}

// unthrottled turns client-side rate limiting off: the benchmark's own
// clients must not be what limits a figure.
func unthrottled(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = -1, 0
	return cfg
}

// unlimitedArgs raise the controller's client-side rate limit out of reach.
// Its flags take only a positive limit (controller-runtime's own loader
// turns the limit off with QPS -1, which the controller does not expose): a
// million requests per second of each type, with as large a burst, never
// holds a request back on the machines the bench runs on, so the controller
// is the shipped binary and only its limit differs.
func unlimitedArgs() []string {
	return []string{"--kube-api-qps=1000000", "--kube-api-burst=1000000"}
}

// startController runs the shipped controller binary as its ServiceAccount,
// named name, with extra flags, for the links of an unreachable listener.
func startController(cp *testenv.ControlPlane, o *options, name string, extra ...string) (*testenv.Process, error) {
	return testenv.StartController(cp, testenv.ServerOptions{
		Bin: filepath.Join(o.binDir, "controller"), Name: name, Dir: o.work, LogDir: o.logDir,
		PublicURL: "http://share.bench.invalid", Args: extra,
	})
}

func (s *system) bindEdit(ctx context.Context, ns string) error {
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: sharer + "-edit", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: sharer}},
	}
	if err := s.admin.Create(ctx, rb); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// waitReady waits for the Agent to be Ready and finds its pod.
func (s *system) waitReady(ctx context.Context, a *agentInfo) error {
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		agent := &kubeopencodev1alpha1.Agent{}
		if err := s.admin.Get(ctx, a.key, agent); err != nil {
			return false, nil
		}
		ready := false
		for _, c := range agent.Status.Conditions {
			if c.Type == kubeopencodev1alpha1.ConditionReady && c.Status == metav1.ConditionTrue {
				ready = true
			}
		}
		if !ready {
			return false, nil
		}
		pods := &corev1.PodList{}
		if err := s.admin.List(ctx, pods, client.InNamespace(a.key.Namespace), client.MatchingLabels{share.LabelAgent: a.key.Name}); err != nil {
			return false, nil
		}
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				a.pod = p.Name
				return true, nil
			}
		}
		return false, nil
	})
}

func apiSharePath(key types.NamespacedName) string {
	return "/apis/" + subresourcesv1alpha1.GroupName + "/v1alpha1/namespaces/" + key.Namespace + "/agents/" + key.Name + "/share"
}

// shareCall calls agents/share as the user and returns the HTTP status.
func (s *system) shareCall(ctx context.Context, method string, key types.NamespacedName, body string) (*subresourcesv1alpha1.AgentShare, int, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.user.Host+apiSharePath(key), rd)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.userHTTP.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return nil, resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, apiSharePath(key), resp.StatusCode, b)
	}
	out := &subresourcesv1alpha1.AgentShare{}
	if err := json.Unmarshal(b, out); err != nil {
		return nil, resp.StatusCode, err
	}
	return out, resp.StatusCode, nil
}

// enable enables a share link and returns its token.
func (s *system) enable(ctx context.Context, key types.NamespacedName) (string, int, error) {
	got, code, err := s.shareCall(ctx, http.MethodPost, key, "{}")
	if err != nil {
		return "", code, err
	}
	if !share.ValidToken(got.Status.Token) {
		return "", code, fmt.Errorf("enable returned no token: %+v", got.Status)
	}
	return got.Status.Token, code, nil
}

func (s *system) disable(ctx context.Context, key types.NamespacedName) error {
	_, _, err := s.shareCall(ctx, http.MethodDelete, key, "")
	return err
}

// waitLink waits until /s/<token>/info answers code.
func (s *system) waitLink(ctx context.Context, token string, code int) error {
	return s.waitLinkEvery(ctx, token, code, 20*time.Millisecond)
}

func (s *system) waitLinkEvery(ctx context.Context, token string, code int, every time.Duration) error {
	return waitLinkAt(ctx, s.shareAddr, token, code, every)
}

// waitLinkAt waits until /s/<token>/info answers code on the listener at
// addr.
func waitLinkAt(ctx context.Context, addr, token string, code int, every time.Duration) error {
	var last int
	err := wait.PollUntilContextTimeout(ctx, every, time.Minute, true, func(context.Context) (bool, error) {
		resp, err := http.Get("http://" + addr + "/s/" + token + "/info")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		last = resp.StatusCode
		return last == code, nil
	})
	if err != nil {
		return fmt.Errorf("the link answers %d, want %d: %w", last, code, err)
	}
	return nil
}

// terminalURL is the share terminal of a token.
func (s *system) terminalURL(token string) string {
	return "ws://" + s.shareAddr + share.Path(token) + "/terminal"
}

func (s *system) dialShare(ctx context.Context, token string, out sink) (*wsTerminal, error) {
	t, code, err := dialWS(ctx, s.terminalURL(token), "http://"+s.shareAddr, out)
	if err != nil {
		return nil, fmt.Errorf("share terminal (HTTP %d): %w", code, err)
	}
	return t, nil
}

// serverGet fetches a path of the aggregated API server's secure port, as
// the cluster admin, over one kept connection (so that fetching leaves the
// server's goroutine count as it was).
func (s *system) serverGet(ctx context.Context, path string) ([]byte, error) {
	return s.secureGet(ctx, s.server.Port, path)
}

// secureGet fetches a path of an aggregated API server's secure port on
// loopback, as the cluster admin.
func (s *system) secureGet(ctx context.Context, port int, path string) ([]byte, error) {
	host := "https://127.0.0.1:" + strconv.Itoa(port)
	if s.metricsHTTP == nil {
		cfg := s.cp.Config()
		cfg.CAData = nil
		cfg.Insecure = true
		hc, err := rest.HTTPClientFor(cfg)
		if err != nil {
			return nil, err
		}
		s.metricsHTTP = hc
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, host+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.metricsHTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d", path, resp.StatusCode)
	}
	return b, nil
}

// serverLive returns the listener process's live memory, heap in use and
// goroutine stacks, right after a garbage collection (which fetching a heap
// profile with gc=1 runs): memory the process holds for what is alive, without
// the collector's timing.
func (s *system) serverLive(ctx context.Context) (heap, stack float64, err error) {
	if _, err := s.serverGet(ctx, "/debug/pprof/heap?gc=1"); err != nil {
		return 0, 0, err
	}
	if heap, err = s.serverMetric(ctx, "go_memstats_heap_inuse_bytes"); err != nil {
		return 0, 0, err
	}
	stack, err = s.serverMetric(ctx, "go_memstats_stack_inuse_bytes")
	return heap, stack, err
}

// serverMetric reads one unlabelled sample of the aggregated API server's
// /metrics.
func (s *system) serverMetric(ctx context.Context, name string) (float64, error) {
	b, err := s.serverGet(ctx, "/metrics")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("no %s in the server's metrics", name)
}

// writePayload writes size bytes of printable text with a newline every 80
// characters, the output of figure 1.
func writePayload(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	block := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range block {
		if i%81 == 80 {
			block[i] = '\n'
		} else {
			block[i] = byte('!' + r.IntN(94))
		}
	}
	for written := int64(0); written < size; {
		n := min(int64(len(block)), size-written)
		if _, err := f.Write(block[:n]); err != nil {
			return err
		}
		written += n
	}
	return nil
}
