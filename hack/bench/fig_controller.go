package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kubeopencode/share/cmd/controller/app"
	"github.com/kubeopencode/share/internal/testenv"
	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	"github.com/kubeopencode/share/pkg/controller"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/sharetest"
)

// controllerRun is the outcome of one cold start of a controller.
type controllerRun struct {
	agents     int
	reconciled int
	elapsed    time.Duration
	// complete is false when the run was stopped at the time cap.
	complete bool
	peakRSS  int64
	// requests are the kube-apiserver's requests on the controller's
	// resources during the run.
	requests apiCounts
}

// perAgent is the time one Agent took, on average.
func (r controllerRun) perAgent() time.Duration {
	if r.reconciled == 0 {
		return 0
	}
	return r.elapsed / time.Duration(r.reconciled)
}

// estimate is the time the run took or, when capped, would have taken at its
// rate.
func (r controllerRun) estimate() time.Duration {
	if r.complete {
		return r.elapsed
	}
	return r.perAgent() * time.Duration(r.agents)
}

func (r controllerRun) String() string {
	if r.complete {
		return fmt.Sprintf("%s, peak RSS %s", r.elapsed.Round(100*time.Millisecond), fmtMiB(float64(r.peakRSS)))
	}
	return fmt.Sprintf("~%s (%d of %d in %s), peak RSS %s", r.estimate().Round(time.Second), r.reconciled, r.agents, r.elapsed.Round(time.Second), fmtMiB(float64(r.peakRSS)))
}

// controllerFigures measures figure 6 on a control plane of its own without
// kube-controller-manager and kube-scheduler, so that the Deployments the
// controller makes stay as they are and only the controller works: the time
// from a cold start of the shipped controller, with its shipped flags, until
// every Agent's status reports its generation and ShareReady, and its peak
// resident set. The first Agent count is measured -controller-reps times,
// each run after one of the write floor, then a restart on the reconciled
// Agents of the last run, once the controller without client-side rate
// limit (what the limit costs), and each larger count once, to the end.
func (b *bench) controllerFigures(ctx context.Context) error {
	o := b.o
	step("figure 6: starting a control plane without controllers")
	cp, err := testenv.Start(ctx, testenv.Options{Dir: filepath.Join(o.work, "controlplane-controller"), WithoutControllers: true})
	if err != nil {
		return err
	}
	defer cp.Stop()
	if _, err := cp.InstallCRDs(ctx, filepath.Join(o.root, "artifacts", "crd")); err != nil {
		return err
	}
	scheme := clientscheme.Scheme
	adminC := unthrottled(cp.Config())
	admin, err := client.New(adminC, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testenv.SystemNamespace}}); err != nil {
		return err
	}
	for _, f := range []string{"controller/serviceaccount.yaml", "controller/rbac.yaml"} {
		if err := cp.CreateFromFile(ctx, filepath.Join(o.root, "artifacts", f)); err != nil {
			return err
		}
	}
	kubeconfig := filepath.Join(o.work, "controller-fig6.kubeconfig")
	if _, err := cp.ServiceAccountKubeconfig(kubeconfig, testenv.ControllerServiceAccount); err != nil {
		return err
	}
	shipped := func(name string) (*testenv.Process, error) {
		return startController(cp, o, name)
	}
	unlimited := func(name string) (*testenv.Process, error) {
		return testenv.StartProcess(o.logDir, name, o.self, "controller", "-kubeconfig", kubeconfig)
	}

	n0 := o.agentCounts[0]
	var (
		floors, floorReqs []float64 // seconds and requests per Agent of each floor run
		floorCounts       apiCounts
		ours              []controllerRun
		createPer         time.Duration
		restart           controllerRun
		listFloor         time.Duration
	)
	// prepare creates n Agents in a new namespace.
	prepare := func(ns string, n int) error {
		began := time.Now()
		if err := createAgents(ctx, admin, ns, n); err != nil {
			return err
		}
		createPer = time.Since(began) / time.Duration(n)
		return nil
	}
	run := func(label string, start func(string) (*testenv.Process, error), ns string, n int, limit time.Duration) (controllerRun, error) {
		step("  %s controller, %d Agents: creating them", label, n)
		if err := prepare(ns, n); err != nil {
			return controllerRun{}, err
		}
		r, err := coldStart(ctx, adminC, scheme, ns, n, limit, func() (*testenv.Process, error) { return start(ns) })
		if err != nil {
			return r, err
		}
		step("  %s controller, %d Agents: %s; API requests per Agent %s", label, n, r, r.requests.perAgent(max(r.reconciled, 1)))
		return r, nil
	}

	// The floor: the controller's writes for each Agent (create Deployment,
	// read the Secret from the API server, create the Secret, patch the
	// status), made one Agent after another, as one worker would, by an
	// unthrottled client. Floor and controller runs alternate, so that a
	// neighbour's load falls on both.
	for i := range o.controllerReps {
		ns := fmt.Sprintf("floor-%d", i)
		if err := prepare(ns, n0); err != nil {
			return err
		}
		before, err := readAPICounts(ctx, adminC)
		if err != nil {
			return err
		}
		floor, err := writeFloor(ctx, admin, ns, n0)
		if err != nil {
			return err
		}
		after, err := readAPICounts(ctx, adminC)
		if err != nil {
			return err
		}
		reqs := after.since(before)
		step("  floor, %d Agents: %s; API requests per Agent %s", n0, floor.Round(100*time.Millisecond), reqs.perAgent(n0))
		floors, floorReqs, floorCounts = append(floors, floor.Seconds()), append(floorReqs, reqs.total()/float64(n0)), reqs
		if err := cleanNamespace(ctx, admin, ns); err != nil {
			return err
		}

		ns = fmt.Sprintf("shipped-%d-%d", n0, i)
		r, err := run("shipped", shipped, ns, n0, controllerLimit)
		if err != nil {
			return err
		}
		ours = append(ours, r)
		if i < o.controllerReps-1 {
			if err := cleanNamespace(ctx, admin, ns); err != nil {
				return err
			}
			continue
		}
		// A restart: the shipped controller on Agents that are all
		// reconciled already, until it has reconciled each once. Its floor:
		// the lists that fill its caches.
		began := time.Now()
		for _, l := range []client.ObjectList{&kubeopencodev1alpha1.AgentList{}, &appsv1.DeploymentList{}, &corev1.SecretList{}} {
			if err := admin.List(ctx, l, client.InNamespace(ns)); err != nil {
				return err
			}
		}
		listFloor = time.Since(began)
		if restart, err = restartOnReconciled(ctx, cp, o, n0); err != nil {
			return err
		}
		step("  shipped controller restarted on %d reconciled Agents: %s", n0, restart)
		if err := cleanNamespace(ctx, admin, ns); err != nil {
			return err
		}
	}
	floorMed := time.Duration(median(floors) * float64(time.Second))
	floorPer := floorMed / time.Duration(n0)
	secs := func(rs []controllerRun) []float64 {
		out := make([]float64, len(rs))
		for i, r := range rs {
			out[i] = r.estimate().Seconds()
		}
		return out
	}
	fmtSecs := func(x float64) string {
		return (time.Duration(x * float64(time.Second))).Round(100 * time.Millisecond).String()
	}
	med := medianRun(ours)
	b.r.add(row{fig: "6", measure: fmt.Sprintf("cold start, %d new Agents with share enabled: shipped controller (median of %d)", n0, len(ours)),
		baseline: "write floor " + floorMed.Round(100*time.Millisecond).String(), ours: med.String(),
		ratio: fmtRatio(med.estimate().Seconds() / floorMed.Seconds()), spread: fmtSpread(floors, secs(ours), fmtSecs),
		goal: "≤ 1.5 × floor", met: yesNo(med.complete && med.estimate() <= floorMed*3/2)})
	var ourReqs []float64
	for _, r := range ours {
		ourReqs = append(ourReqs, r.requests.total()/float64(max(r.reconciled, 1)))
	}
	fmtReq := func(x float64) string { return fmt.Sprintf("%.2f", x) }
	b.r.add(row{fig: "6", measure: fmt.Sprintf("kube-apiserver requests per new Agent (%d Agents): shipped controller", n0),
		baseline: "write floor " + fmtReq(median(floorReqs)), ours: fmtReq(median(ourReqs)),
		ratio: fmtRatio(median(ourReqs) / median(floorReqs)), spread: fmtSpread(floorReqs, ourReqs, fmtReq)})
	b.r.note("figure 6: requests per new Agent by verb and resource (kube-apiserver's apiserver_request_total on Agents, Deployments, Secrets and Events over a run, lists and watches left out): floor %s (it reads each Agent for its UID, which the controller has from its cache); shipped controller %s",
		floorCounts.perAgent(n0), med.requests.perAgent(max(med.reconciled, 1)))
	b.r.add(row{fig: "6", measure: fmt.Sprintf("restart on %d reconciled Agents: shipped controller", n0),
		baseline: "listing them " + listFloor.Round(time.Millisecond).String(), ours: restart.String(),
		ratio: fmtRatio(restart.estimate().Seconds() / listFloor.Seconds()), spread: "1 run"})

	// What the client-side limit costs: the same controller without it,
	// when the budget holds it besides the larger counts, which come first.
	per := med.perAgent()*5/4 + createPer
	reserve := time.Duration(0)
	for _, n := range o.agentCounts[1:] {
		reserve += per * time.Duration(n)
	}
	unthrottledCost := med.estimate() + createPer*time.Duration(n0) + 10*time.Second
	if remaining := o.budget - time.Since(o.t0); remaining < reserve+unthrottledCost {
		b.r.note("figure 6: the controller without client-side rate limit was not measured: the run's budget of %s would not hold it", o.budget)
	} else {
		ns := fmt.Sprintf("unthrottled-%d", n0)
		u, err := run("unthrottled", unlimited, ns, n0, controllerLimit)
		if err != nil {
			return err
		}
		b.r.add(row{fig: "6", measure: fmt.Sprintf("cold start, %d new Agents: the same controller without client-side rate limit", n0),
			baseline: "write floor " + floorMed.Round(100*time.Millisecond).String(), ours: u.String(),
			ratio: fmtRatio(u.estimate().Seconds() / floorMed.Seconds()), spread: fmtRange(floors, fmtSecs) + "; 1 run"})
		if err := cleanNamespace(ctx, admin, ns); err != nil {
			return err
		}
	}

	for k, n := range o.agentCounts[1:] {
		// Keep the whole run within its budget: at the rate of the first
		// count, with a quarter as much again for larger caches (10,000
		// Agents took 1.1–1.2 times as long per Agent as 1,000), scale the
		// count down to what fits, and say so.
		remaining := o.budget - time.Since(o.t0)
		measure := fmt.Sprintf("cold start, %d new Agents with share enabled: shipped controller", n)
		if fits := int(remaining/per) / 1000 * 1000; fits < n {
			if fits <= n0 {
				b.r.add(row{fig: "6", measure: measure, baseline: "—", ours: "not measured: the run's budget of " + o.budget.String() + " would not hold it", ratio: "—", spread: "—"})
				continue
			}
			b.r.note("figure 6: %d Agents instead of %d, to stay within the run's budget of %s (estimated %s per Agent)", fits, n, o.budget, per.Round(time.Microsecond))
			measure = fmt.Sprintf("cold start, %d new Agents with share enabled (%d did not fit the budget): shipped controller", fits, n)
			n = fits
		}
		// Run to the end, however long it takes, within reason: a run
		// stopped early says so in the table.
		ns := fmt.Sprintf("shipped-%d", n)
		r, err := run("shipped", shipped, ns, n, max(remaining, 2*time.Minute))
		if err != nil {
			return err
		}
		if !r.complete {
			measure += ", NOT DONE: stopped at the run's budget, time extrapolated at its rate"
		}
		b.r.add(row{fig: "6", measure: measure,
			baseline: fmt.Sprintf("write floor %s per Agent (%d Agents)", floorPer.Round(10*time.Microsecond), n0), ours: r.String(),
			ratio: fmtRatio(r.perAgent().Seconds()/floorPer.Seconds()) + " per Agent", spread: "1 run"})
		if k < len(o.agentCounts)-2 {
			if err := cleanNamespace(ctx, admin, ns); err != nil {
				return err
			}
		}
	}
	b.r.note("figure 6: a new Agent is done when its status reports its generation and ShareReady; the write floor is %d Agents × 4 sequential API calls (create Deployment, read Secret, create Secret, patch status) by an unthrottled client; a restart is done when the controller's reconcile count reaches the number of Agents", n0)
	return nil
}

// controllerLimit is how long a run on the first Agent count may take
// before it is stopped, and the table says so.
const controllerLimit = 2 * time.Minute

// medianRun returns the run of median time.
func medianRun(rs []controllerRun) controllerRun {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b controllerRun) int { return cmp.Compare(a.estimate(), b.estimate()) })
	return s[(len(s)-1)/2]
}

// createAgents creates n Agents with share enabled in a new namespace.
func createAgents(ctx context.Context, c client.Client, ns string, n int) error {
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for i := range n {
		g.Go(func() error {
			return c.Create(ctx, &kubeopencodev1alpha1.Agent{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "agent-" + strconv.Itoa(i)},
				Spec: kubeopencodev1alpha1.AgentSpec{
					Image: "bench/agent:1",
					Share: &kubeopencodev1alpha1.ShareSpec{Enabled: true},
				},
			})
		})
	}
	return g.Wait()
}

// cleanNamespace deletes the Agents, Deployments and Secrets of a namespace,
// so that the next cold start does not find them (no garbage collector runs
// on this control plane).
func cleanNamespace(ctx context.Context, c client.Client, ns string) error {
	for _, obj := range []client.Object{&kubeopencodev1alpha1.Agent{}, &appsv1.Deployment{}, &corev1.Secret{}} {
		if err := c.DeleteAllOf(ctx, obj, client.InNamespace(ns)); err != nil {
			return err
		}
	}
	return nil
}

// coldStart starts a controller on a namespace of unreconciled Agents and
// waits until each reports its generation and ShareReady, or the limit.
func coldStart(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, ns string, n int, limit time.Duration, start func() (*testenv.Process, error)) (controllerRun, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cache, err := crcache.New(cfg, crcache.Options{Scheme: scheme, DefaultNamespaces: map[string]crcache.Config{ns: {}}})
	if err != nil {
		return controllerRun{}, err
	}
	inf, err := cache.GetInformer(ctx, &kubeopencodev1alpha1.Agent{})
	if err != nil {
		return controllerRun{}, err
	}
	var mu sync.Mutex
	done := map[types.UID]bool{}
	all := make(chan struct{})
	check := func(obj any) {
		a, ok := obj.(*kubeopencodev1alpha1.Agent)
		if !ok || a.Status.ObservedGeneration != a.Generation || meta.FindStatusCondition(a.Status.Conditions, kubeopencodev1alpha1.ConditionShareReady) == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !done[a.UID] {
			done[a.UID] = true
			if len(done) == n {
				close(all)
			}
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: check, UpdateFunc: func(_, o any) { check(o) }}); err != nil {
		return controllerRun{}, err
	}
	go func() { _ = cache.Start(ctx) }()
	if !cache.WaitForCacheSync(ctx) {
		return controllerRun{}, fmt.Errorf("the Agent cache of %s did not sync", ns)
	}
	before, err := readAPICounts(ctx, cfg)
	if err != nil {
		return controllerRun{}, err
	}
	c, err := start()
	if err != nil {
		return controllerRun{}, err
	}
	defer c.Stop()
	began := time.Now()
	r := controllerRun{agents: n}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(limit)
	for {
		select {
		case <-all:
			r.complete = true
		case <-deadline:
		case <-tick.C:
			if rss, err := rssBytes(c.Pid()); err == nil {
				r.peakRSS = max(r.peakRSS, rss)
			}
			if c.Exited() {
				return r, fmt.Errorf("the controller exited (log %s)", c.LogPath())
			}
			continue
		case <-ctx.Done():
			return r, ctx.Err()
		}
		break
	}
	r.elapsed = time.Since(began)
	if rss, err := rssBytes(c.Pid()); err == nil {
		r.peakRSS = max(r.peakRSS, rss)
	}
	mu.Lock()
	r.reconciled = len(done)
	mu.Unlock()
	after, err := readAPICounts(ctx, cfg)
	if err != nil {
		return r, err
	}
	r.requests = after.since(before)
	return r, nil
}

// writeFloor makes the API calls of the controller's reconciles of n new
// Agents, one Agent after another.
func writeFloor(ctx context.Context, c client.Client, ns string, n int) (time.Duration, error) {
	start := time.Now()
	for i := range n {
		a := &kubeopencodev1alpha1.Agent{}
		if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "agent-" + strconv.Itoa(i)}, a); err != nil {
			return 0, err
		}
		labels := map[string]string{share.LabelAgent: a.Name}
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: a.Name, Labels: labels,
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(a, kubeopencodev1alpha1.SchemeGroupVersion.WithKind("Agent"))}},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: a.Spec.Image}}},
				},
			},
		}
		if err := c.Create(ctx, d); err != nil {
			return 0, err
		}
		if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: share.SecretName(a.Name)}, &corev1.Secret{}); err == nil {
			return 0, fmt.Errorf("a share Secret exists before the floor made it")
		}
		token, err := share.NewToken()
		if err != nil {
			return 0, err
		}
		// The floor measures the writes, not the proof: a fixed key signs.
		if err := c.Create(ctx, sharetest.Secret(a, "", token)); err != nil {
			return 0, err
		}
		orig := a.DeepCopy()
		a.Status.ObservedGeneration = a.Generation
		meta.SetStatusCondition(&a.Status.Conditions, metav1.Condition{Type: kubeopencodev1alpha1.ConditionShareReady, Status: metav1.ConditionFalse,
			Reason: share.ReasonAgentNotReady, Message: "bench", ObservedGeneration: a.Generation})
		if err := c.Status().Patch(ctx, a, client.MergeFrom(orig)); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// runController is the controller subcommand: the Agent controller as
// cmd/controller runs it, with as many workers, but with client-side rate
// limiting off (QPS -1, as controller-runtime's own config loader sets), to
// show what that limit costs. No leader election, metrics or probes.
func runController(args []string) error {
	fs := flag.NewFlagSet("controller", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the controller's identity")
	_ = fs.Parse(args)
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	cfg.UserAgent = controller.Name
	cfg.QPS = -1
	ctrl.SetLogger(klog.Background())
	scheme := clientscheme.Scheme
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme:                 scheme,
		Cache:                  controller.CacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// As many workers and the same signing keys as the shipped controller:
	// only the limit differs.
	shipped := app.NewOptions()
	keys, err := shipped.SigningKey.Start(ctx, cfg)
	if err != nil {
		return err
	}
	if err := controller.SetupWithManager(mgr, controller.Config{Keys: keys, PublicURL: "http://share.bench.invalid", Workers: shipped.Workers}); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// restartOnReconciled starts the shipped controller on n Agents that are all
// reconciled, and times it until its reconcile counter (from its metrics)
// reaches n.
func restartOnReconciled(ctx context.Context, cp *testenv.ControlPlane, o *options, n int) (controllerRun, error) {
	port, err := testenv.FreePort()
	if err != nil {
		return controllerRun{}, err
	}
	metrics := "127.0.0.1:" + strconv.Itoa(port)
	c, err := startController(cp, o, "controller-restart", "--metrics-bind-address="+metrics, "--metrics-secure=false")
	if err != nil {
		return controllerRun{}, err
	}
	defer c.Stop()
	began := time.Now()
	r := controllerRun{agents: n}
	deadline := time.Now().Add(controllerLimit)
	for time.Now().Before(deadline) {
		if rss, err := rssBytes(c.Pid()); err == nil {
			r.peakRSS = max(r.peakRSS, rss)
		}
		if c.Exited() {
			return r, fmt.Errorf("the controller exited (log %s)", c.LogPath())
		}
		if total, err := reconcileTotal(ctx, "http://"+metrics+"/metrics"); err == nil && total >= float64(n) {
			r.complete, r.reconciled = true, n
			break
		} else if err == nil {
			r.reconciled = int(total)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.elapsed = time.Since(began)
	return r, nil
}

// reconcileTotal sums controller_runtime_reconcile_total of the agent
// controller over its results.
func reconcileTotal(ctx context.Context, url string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	total := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "controller_runtime_reconcile_total{") && strings.Contains(line, `controller="agent"`) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err == nil {
				total += v
			}
		}
	}
	return total, nil
}
