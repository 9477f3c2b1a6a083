package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/internal/testenv"
	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
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

// controllerEnv is figure 6's control plane: one without
// kube-controller-manager and kube-scheduler, so that the Deployments the
// controller makes stay as they are and only the controller works, with the
// CRDs and the controller's ServiceAccount and RBAC.
type controllerEnv struct {
	o      *options
	cp     *testenv.ControlPlane
	adminC *rest.Config
	admin  client.Client
	scheme *runtime.Scheme
	// createPer is the time creating one Agent took, in the last namespace
	// prepared: the budget's estimates count it.
	createPer time.Duration
}

func startControllerEnv(ctx context.Context, o *options) (_ *controllerEnv, err error) {
	step("figure 6: starting a control plane without controllers")
	e := &controllerEnv{o: o}
	if e.cp, err = testenv.Start(ctx, testenv.Options{Dir: filepath.Join(o.work, "controlplane-controller"), WithoutControllers: true}); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			e.cp.Stop()
		}
	}()
	if _, err := e.cp.InstallCRDs(ctx, filepath.Join(o.root, "artifacts", "crd")); err != nil {
		return nil, err
	}
	e.scheme = clientscheme.Scheme
	e.adminC = unthrottled(e.cp.Config())
	if e.admin, err = client.New(e.adminC, client.Options{Scheme: e.scheme}); err != nil {
		return nil, err
	}
	if err := e.admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testenv.SystemNamespace}}); err != nil {
		return nil, err
	}
	for _, f := range []string{"controller/serviceaccount.yaml", "controller/rbac.yaml"} {
		if err := e.cp.CreateFromFile(ctx, filepath.Join(o.root, "artifacts", f)); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func (e *controllerEnv) stop() { e.cp.Stop() }

// prepare creates n Agents in a new namespace.
func (e *controllerEnv) prepare(ctx context.Context, ns string, n int) error {
	began := time.Now()
	if err := createAgents(ctx, e.admin, ns, n); err != nil {
		return err
	}
	e.createPer = time.Since(began) / time.Duration(n)
	return nil
}

// coldStart creates n Agents in ns and times a cold start of the shipped
// controller on them, with extra flags, up to limit.
func (e *controllerEnv) coldStart(ctx context.Context, label, ns string, n int, limit time.Duration, extra ...string) (controllerRun, error) {
	step("  %s controller, %d Agents: creating them", label, n)
	if err := e.prepare(ctx, ns, n); err != nil {
		return controllerRun{}, err
	}
	done, err := watchDone(ctx, e.adminC, e.scheme, ns, n)
	if err != nil {
		return controllerRun{}, err
	}
	defer done.stop()
	before, err := readAPICounts(ctx, e.adminC)
	if err != nil {
		return controllerRun{}, err
	}
	c, err := startController(e.cp, e.o, ns, extra...)
	if err != nil {
		return controllerRun{}, err
	}
	defer c.Stop()
	r, err := waitRun(ctx, c, done, n, limit)
	if err != nil {
		return r, err
	}
	after, err := readAPICounts(ctx, e.adminC)
	if err != nil {
		return r, err
	}
	r.requests = after.since(before)
	step("  %s controller, %d Agents: %s; API requests per Agent %s", label, n, r, r.requests.perAgent(max(r.reconciled, 1)))
	return r, nil
}

// floorRun is one run of the write floor.
type floorRun struct {
	elapsed  time.Duration
	requests apiCounts
}

// floor creates n Agents in ns and makes the controller's writes for each
// (create Deployment, read the Secret from the API server, create the
// Secret, patch the status) one Agent after another, as one worker would,
// with an unthrottled client.
func (e *controllerEnv) floor(ctx context.Context, ns string, n int) (floorRun, error) {
	if err := e.prepare(ctx, ns, n); err != nil {
		return floorRun{}, err
	}
	before, err := readAPICounts(ctx, e.adminC)
	if err != nil {
		return floorRun{}, err
	}
	elapsed, err := writeFloor(ctx, e.admin, ns, n)
	if err != nil {
		return floorRun{}, err
	}
	after, err := readAPICounts(ctx, e.adminC)
	if err != nil {
		return floorRun{}, err
	}
	r := floorRun{elapsed: elapsed, requests: after.since(before)}
	step("  floor, %d Agents: %s; API requests per Agent %s", n, elapsed.Round(100*time.Millisecond), r.requests.perAgent(n))
	return r, nil
}

// firstCount is what figure 6 measures on its first Agent count: the runs
// of the floor and of the shipped controller, alternating, and a restart
// on the reconciled Agents of the last run with its floor, listing them.
type firstCount struct {
	n         int
	floors    []floorRun
	ours      []controllerRun
	restart   controllerRun
	listFloor time.Duration
}

func (f firstCount) floorSeconds() []float64 {
	var out []float64
	for _, r := range f.floors {
		out = append(out, r.elapsed.Seconds())
	}
	return out
}

func (f firstCount) floorRequests() []float64 {
	var out []float64
	for _, r := range f.floors {
		out = append(out, r.requests.total()/float64(f.n))
	}
	return out
}

func (f firstCount) floorMedian() time.Duration {
	return time.Duration(median(f.floorSeconds()) * float64(time.Second))
}

// controllerFigures measures figure 6 on a control plane of its own: the
// time from a cold start of the shipped controller, with its shipped flags,
// until every Agent's status reports its generation and ShareReady, and its
// peak resident set. The first Agent count is measured -controller-reps
// times, each run after one of the write floor, then a restart on the
// reconciled Agents of the last run, once the controller without
// client-side rate limit (what the limit costs), and each larger count
// once, to the end.
func (b *bench) controllerFigures(ctx context.Context) error {
	e, err := startControllerEnv(ctx, b.o)
	if err != nil {
		return err
	}
	defer e.stop()
	first, err := b.measureFirstCount(ctx, e)
	if err != nil {
		return err
	}
	b.reportFirstCount(first)
	// An Agent of a larger count takes about a quarter as long again as
	// one of the first (10,000 Agents took 1.1–1.2 times as long per Agent
	// as 1,000), and must be created first.
	per := medianRun(first.ours).perAgent()*5/4 + e.createPer
	if err := b.measureUnthrottled(ctx, e, first, per); err != nil {
		return err
	}
	if err := b.measureLargerCounts(ctx, e, first, per); err != nil {
		return err
	}
	b.r.note("figure 6: a new Agent is done when its status reports its generation and ShareReady; the write floor is %d Agents × 4 sequential API calls (create Deployment, read Secret, create Secret, patch status) by an unthrottled client; a restart is done when the controller's reconcile count reaches the number of Agents", first.n)
	return nil
}

// measureFirstCount runs the floor and the shipped controller in turn on
// the first Agent count, so that a neighbour's load falls on both, then the
// restart.
func (b *bench) measureFirstCount(ctx context.Context, e *controllerEnv) (firstCount, error) {
	o := b.o
	f := firstCount{n: o.agentCounts[0]}
	for i := range o.controllerReps {
		ns := fmt.Sprintf("floor-%d", i)
		fr, err := e.floor(ctx, ns, f.n)
		if err != nil {
			return f, err
		}
		f.floors = append(f.floors, fr)
		if err := cleanNamespace(ctx, e.admin, ns); err != nil {
			return f, err
		}
		ns = fmt.Sprintf("shipped-%d-%d", f.n, i)
		r, err := e.coldStart(ctx, "shipped", ns, f.n, controllerLimit)
		if err != nil {
			return f, err
		}
		f.ours = append(f.ours, r)
		if i == o.controllerReps-1 {
			if f.restart, f.listFloor, err = e.restartOn(ctx, ns, f.n); err != nil {
				return f, err
			}
		}
		if err := cleanNamespace(ctx, e.admin, ns); err != nil {
			return f, err
		}
	}
	return f, nil
}

// restartOn restarts the shipped controller on the n Agents of ns, all
// reconciled already, until it has reconciled each once; its floor is the
// lists that fill its caches.
func (e *controllerEnv) restartOn(ctx context.Context, ns string, n int) (controllerRun, time.Duration, error) {
	began := time.Now()
	for _, l := range []client.ObjectList{&kubeopencodev1alpha1.AgentList{}, &appsv1.DeploymentList{}, &corev1.SecretList{}} {
		if err := e.admin.List(ctx, l, client.InNamespace(ns)); err != nil {
			return controllerRun{}, 0, err
		}
	}
	listFloor := time.Since(began)
	r, err := restartOnReconciled(ctx, e.cp, e.o, n)
	if err != nil {
		return r, 0, err
	}
	step("  shipped controller restarted on %d reconciled Agents: %s", n, r)
	return r, listFloor, nil
}

func fmtSecs(x float64) string {
	return (time.Duration(x * float64(time.Second))).Round(100 * time.Millisecond).String()
}

// reportFirstCount adds the rows of the first Agent count: the cold start
// against the floor, the requests per Agent and the restart.
func (b *bench) reportFirstCount(f firstCount) {
	floorMed := f.floorMedian()
	med := medianRun(f.ours)
	var ourSecs, ourReqs []float64
	for _, r := range f.ours {
		ourSecs = append(ourSecs, r.estimate().Seconds())
		ourReqs = append(ourReqs, r.requests.total()/float64(max(r.reconciled, 1)))
	}
	b.r.add(row{fig: "6", measure: fmt.Sprintf("cold start, %d new Agents with share enabled: shipped controller (median of %d)", f.n, len(f.ours)),
		baseline: "write floor " + floorMed.Round(100*time.Millisecond).String(), ours: med.String(),
		ratio: fmtRatio(med.estimate().Seconds() / floorMed.Seconds()), spread: fmtSpread(f.floorSeconds(), ourSecs, fmtSecs),
		goal: "≤ 1.5 × floor", met: yesNo(med.complete && med.estimate() <= floorMed*3/2)})
	fmtReq := func(x float64) string { return fmt.Sprintf("%.2f", x) }
	b.r.add(row{fig: "6", measure: fmt.Sprintf("kube-apiserver requests per new Agent (%d Agents): shipped controller", f.n),
		baseline: "write floor " + fmtReq(median(f.floorRequests())), ours: fmtReq(median(ourReqs)),
		ratio: fmtRatio(median(ourReqs) / median(f.floorRequests())), spread: fmtSpread(f.floorRequests(), ourReqs, fmtReq)})
	b.r.note("figure 6: requests per new Agent by verb and resource (kube-apiserver's apiserver_request_total on Agents, Deployments, Secrets and Events over a run, lists and watches left out): floor %s (it reads each Agent for its UID, which the controller has from its cache); shipped controller %s",
		f.floors[len(f.floors)-1].requests.perAgent(f.n), med.requests.perAgent(max(med.reconciled, 1)))
	b.r.add(row{fig: "6", measure: fmt.Sprintf("restart on %d reconciled Agents: shipped controller", f.n),
		baseline: "listing them " + f.listFloor.Round(time.Millisecond).String(), ours: f.restart.String(),
		ratio: fmtRatio(f.restart.estimate().Seconds() / f.listFloor.Seconds()), spread: "1 run"})
}

// measureUnthrottled measures what the client-side limit costs: the same
// controller without it on the first count, when the budget holds it
// besides the larger counts, which come first; per is the estimated time
// of one Agent of those.
func (b *bench) measureUnthrottled(ctx context.Context, e *controllerEnv, f firstCount, per time.Duration) error {
	o := b.o
	reserve := time.Duration(0)
	for _, n := range o.agentCounts[1:] {
		reserve += per * time.Duration(n)
	}
	cost := medianRun(f.ours).estimate() + e.createPer*time.Duration(f.n) + 10*time.Second
	if remaining := o.budget - time.Since(o.t0); remaining < reserve+cost {
		b.r.note("figure 6: the controller without client-side rate limit was not measured: the run's budget of %s would not hold it", o.budget)
		return nil
	}
	ns := fmt.Sprintf("unthrottled-%d", f.n)
	u, err := e.coldStart(ctx, "unthrottled", ns, f.n, controllerLimit, unlimitedArgs()...)
	if err != nil {
		return err
	}
	floorMed := f.floorMedian()
	b.r.add(row{fig: "6", measure: fmt.Sprintf("cold start, %d new Agents: the same controller without client-side rate limit", f.n),
		baseline: "write floor " + floorMed.Round(100*time.Millisecond).String(), ours: u.String(),
		ratio: fmtRatio(u.estimate().Seconds() / floorMed.Seconds()), spread: fmtRange(f.floorSeconds(), fmtSecs) + "; 1 run"})
	return cleanNamespace(ctx, e.admin, ns)
}

// measureLargerCounts runs the shipped controller once on each larger
// count, to the end, however long it takes within reason (a run stopped
// early says so in the table). To keep the whole run within its budget, a
// count is scaled down to what fits at per, and the table says so.
func (b *bench) measureLargerCounts(ctx context.Context, e *controllerEnv, f firstCount, per time.Duration) error {
	o := b.o
	floorPer := f.floorMedian() / time.Duration(f.n)
	for k, n := range o.agentCounts[1:] {
		remaining := o.budget - time.Since(o.t0)
		measure := fmt.Sprintf("cold start, %d new Agents with share enabled: shipped controller", n)
		if fits := int(remaining/per) / 1000 * 1000; fits < n {
			if fits <= f.n {
				b.r.add(row{fig: "6", measure: measure, baseline: "—", ours: "not measured: the run's budget of " + o.budget.String() + " would not hold it", ratio: "—", spread: "—"})
				continue
			}
			b.r.note("figure 6: %d Agents instead of %d, to stay within the run's budget of %s (estimated %s per Agent)", fits, n, o.budget, per.Round(time.Microsecond))
			measure = fmt.Sprintf("cold start, %d new Agents with share enabled (%d did not fit the budget): shipped controller", fits, n)
			n = fits
		}
		ns := fmt.Sprintf("shipped-%d", n)
		r, err := e.coldStart(ctx, "shipped", ns, n, max(remaining, 2*time.Minute))
		if err != nil {
			return err
		}
		if !r.complete {
			measure += ", NOT DONE: stopped at the run's budget, time extrapolated at its rate"
		}
		b.r.add(row{fig: "6", measure: measure,
			baseline: fmt.Sprintf("write floor %s per Agent (%d Agents)", floorPer.Round(10*time.Microsecond), f.n), ours: r.String(),
			ratio: fmtRatio(r.perAgent().Seconds()/floorPer.Seconds()) + " per Agent", spread: "1 run"})
		// The last count's objects go with the control plane.
		if k < len(o.agentCounts)-2 {
			if err := cleanNamespace(ctx, e.admin, ns); err != nil {
				return err
			}
		}
	}
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

// doneTracker counts, from an informer of the harness, the Agents of a
// namespace whose status reports their generation and ShareReady.
type doneTracker struct {
	cancel context.CancelFunc
	n      int
	mu     sync.Mutex
	done   map[types.UID]bool
	// all is closed once n Agents are done.
	all chan struct{}
}

// watchDone starts an informer on the Agents of ns and returns once its
// cache has synced.
func watchDone(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, ns string, n int) (*doneTracker, error) {
	ctx, cancel := context.WithCancel(ctx)
	d := &doneTracker{cancel: cancel, n: n, done: map[types.UID]bool{}, all: make(chan struct{})}
	cache, err := crcache.New(cfg, crcache.Options{Scheme: scheme, DefaultNamespaces: map[string]crcache.Config{ns: {}}})
	if err != nil {
		cancel()
		return nil, err
	}
	inf, err := cache.GetInformer(ctx, &kubeopencodev1alpha1.Agent{})
	if err != nil {
		cancel()
		return nil, err
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: d.check, UpdateFunc: func(_, o any) { d.check(o) }}); err != nil {
		cancel()
		return nil, err
	}
	go func() { _ = cache.Start(ctx) }()
	if !cache.WaitForCacheSync(ctx) {
		cancel()
		return nil, fmt.Errorf("the Agent cache of %s did not sync", ns)
	}
	return d, nil
}

func (d *doneTracker) check(obj any) {
	a, ok := obj.(*kubeopencodev1alpha1.Agent)
	if !ok || a.Status.ObservedGeneration != a.Generation || meta.FindStatusCondition(a.Status.Conditions, kubeopencodev1alpha1.ConditionShareReady) == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.done[a.UID] {
		d.done[a.UID] = true
		if len(d.done) == d.n {
			close(d.all)
		}
	}
}

func (d *doneTracker) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.done)
}

func (d *doneTracker) stop() { d.cancel() }

// waitRun times a controller from now until every Agent is done or limit,
// sampling its resident set for the peak.
func waitRun(ctx context.Context, c *testenv.Process, done *doneTracker, n int, limit time.Duration) (controllerRun, error) {
	began := time.Now()
	r := controllerRun{agents: n}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(limit)
	samplePeak := func() {
		if rss, err := rssBytes(c.Pid()); err == nil {
			r.peakRSS = max(r.peakRSS, rss)
		}
	}
wait:
	for {
		select {
		case <-done.all:
			r.complete = true
			break wait
		case <-deadline:
			break wait
		case <-tick.C:
			samplePeak()
			if c.Exited() {
				return r, fmt.Errorf("the controller exited (log %s)", c.LogPath())
			}
		case <-ctx.Done():
			return r, ctx.Err()
		}
	}
	r.elapsed = time.Since(began)
	samplePeak()
	r.reconciled = done.count()
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
