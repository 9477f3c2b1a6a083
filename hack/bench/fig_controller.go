package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
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

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/controller"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/test/integration/framework"
)

// controllerRun is the outcome of one cold start of a controller.
type controllerRun struct {
	agents     int
	reconciled int
	elapsed    time.Duration
	// complete is false when the run was stopped at the time cap.
	complete bool
	peakRSS  int64
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
// from a cold start until every Agent's status reports its generation and
// ShareReady, and the controller's peak resident set.
func (b *bench) controllerFigures(ctx context.Context) error {
	o := b.o
	step("figure 6: starting a control plane without controllers")
	cp, err := framework.Start(ctx, framework.Options{Dir: filepath.Join(o.work, "controlplane-controller"), WithoutControllers: true})
	if err != nil {
		return err
	}
	defer cp.Stop()
	if _, err := cp.InstallCRDs(ctx, filepath.Join(o.root, "artifacts", "crd")); err != nil {
		return err
	}
	scheme, err := controller.NewScheme()
	if err != nil {
		return err
	}
	adminC := unthrottled(cp.Config())
	admin, err := client.New(adminC, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: systemNamespace}}); err != nil {
		return err
	}
	for _, f := range []string{"controller/serviceaccount.yaml", "controller/rbac.yaml"} {
		if err := cp.CreateFromFile(ctx, filepath.Join(o.root, "artifacts", f)); err != nil {
			return err
		}
	}
	_, kubeconfig, err := serviceAccountConfig(cp, o.work, "controller-fig6", "kubeopencode-controller")
	if err != nil {
		return err
	}
	shipped := func(name string) (*child, error) {
		return startController(cp, o, name, filepath.Join(o.binDir, "controller"), "http://share.bench.invalid")
	}
	unlimited := func(name string) (*child, error) {
		return startChild(o.logDir, name, o.self, "controller", "-kubeconfig", kubeconfig)
	}

	// The floor: the controller's writes for each Agent (create Deployment,
	// read the Secret from the API server, create the Secret, patch the
	// status), made one Agent after another as its single worker does, by
	// an unthrottled client. No controller can do less with one worker.
	n0 := o.agentCounts[0]
	floorNS := "floor"
	if err := createAgents(ctx, admin, floorNS, n0); err != nil {
		return err
	}
	floor, err := writeFloor(ctx, admin, floorNS, n0)
	if err != nil {
		return err
	}
	step("  floor, %d Agents: %s", n0, floor.Round(100*time.Millisecond))
	if err := cleanNamespace(ctx, admin, floorNS); err != nil {
		return err
	}

	runs := map[string]controllerRun{}
	var restart controllerRun
	var listFloor time.Duration
	var createPer time.Duration
	run := func(label string, start func(string) (*child, error), n int, limit time.Duration) error {
		ns := fmt.Sprintf("%s-%d", label, n)
		step("  %s controller, %d Agents: creating them", label, n)
		began := time.Now()
		if err := createAgents(ctx, admin, ns, n); err != nil {
			return err
		}
		createPer = time.Since(began) / time.Duration(n)
		r, err := coldStart(ctx, adminC, scheme, ns, n, limit, func() (*child, error) { return start(ns) })
		if err != nil {
			return err
		}
		step("  %s controller, %d Agents: %s", label, n, r)
		runs[fmt.Sprintf("%s/%d", label, n)] = r
		if label == "unthrottled" && n == n0 {
			// A restart: the shipped controller on Agents that are all
			// reconciled already, until it has reconciled each once.
			// Its floor: the lists that fill its caches.
			began := time.Now()
			for _, l := range []client.ObjectList{&kubeopencodev1alpha1.AgentList{}, &appsv1.DeploymentList{}, &corev1.SecretList{}} {
				if err := admin.List(ctx, l, client.InNamespace(ns)); err != nil {
					return err
				}
			}
			listFloor = time.Since(began)
			if restart, err = restartOnReconciled(ctx, cp, o, n); err != nil {
				return err
			}
			step("  shipped controller restarted on %d reconciled Agents: %s", n, restart)
		}
		return cleanNamespace(ctx, admin, ns)
	}
	if err := run("shipped", shipped, n0, o.controllerCap); err != nil {
		return err
	}
	var counts []int
	for _, n := range o.agentCounts {
		remaining := o.budget - time.Since(o.t0)
		if n != n0 {
			// Keep the whole run within its budget: at the rate of the
			// first count, with a quarter more for a larger cache, scale
			// the count down to what fits, and say so.
			per := runs[fmt.Sprintf("unthrottled/%d", n0)].perAgent()*5/4 + createPer
			if fits := int(remaining/per) / 1000 * 1000; fits < n {
				if fits <= n0 {
					b.r.note("figure 6: %d Agents skipped: the run's budget of %s would not hold them", n, o.budget)
					continue
				}
				b.r.note("figure 6: %d Agents instead of %d, to stay within the run's budget of %s (estimated %s per Agent)", fits, n, o.budget, per.Round(time.Microsecond))
				n = fits
			}
		}
		if err := run("unthrottled", unlimited, n, max(remaining, time.Minute)); err != nil {
			return err
		}
		counts = append(counts, n)
	}

	s := runs[fmt.Sprintf("shipped/%d", n0)]
	u0 := runs[fmt.Sprintf("unthrottled/%d", n0)]
	b.r.add(row{fig: "6", measure: fmt.Sprintf("cold start, %d new Agents with share enabled: shipped controller", n0),
		baseline: "write floor " + floor.Round(100*time.Millisecond).String(), ours: s.String(),
		ratio: fmtRatio(s.estimate().Seconds() / floor.Seconds())})
	if nMax := o.agentCounts[len(o.agentCounts)-1]; !s.complete && nMax != n0 {
		est := s.perAgent() * time.Duration(nMax)
		b.r.add(row{fig: "6", measure: fmt.Sprintf("cold start, %d new Agents: shipped controller (extrapolated at its rate)", nMax),
			baseline: fmt.Sprintf("write floor ~%s (scaled)", (floor * time.Duration(nMax/n0)).Round(time.Second)), ours: "~" + est.Round(time.Minute).String(),
			ratio: fmtRatio(est.Seconds() / (floor.Seconds() * float64(nMax/n0)))})
	}
	b.r.add(row{fig: "6", measure: fmt.Sprintf("restart on %d reconciled Agents: shipped controller", n0),
		baseline: "listing them " + listFloor.Round(time.Millisecond).String(), ours: restart.String(),
		ratio: fmtRatio(restart.estimate().Seconds() / listFloor.Seconds())})
	for _, n := range counts {
		u := runs[fmt.Sprintf("unthrottled/%d", n)]
		base, ratio := "write floor "+floor.Round(100*time.Millisecond).String(), fmtRatio(u.estimate().Seconds()/floor.Seconds())
		if n != n0 {
			base = fmt.Sprintf("%d Agents: %s per Agent", n0, u0.perAgent().Round(10*time.Microsecond))
			ratio = fmtRatio(u.perAgent().Seconds()/u0.perAgent().Seconds()) + " per Agent"
		}
		b.r.add(row{fig: "6", measure: fmt.Sprintf("cold start, %d Agents: controller without client-side rate limit", n),
			baseline: base, ours: u.String(), ratio: ratio})
	}
	b.r.note("figure 6: a new Agent is done when its status reports its generation and ShareReady; the shipped controller is stopped after %s and extrapolated at its rate when not done; the write floor is %d Agents × 4 sequential API calls (create Deployment, read Secret, create Secret, patch status) by an unthrottled client; a restart is done when the controller's reconcile count reaches the number of Agents", o.controllerCap, n0)
	return nil
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
func coldStart(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, ns string, n int, limit time.Duration, start func() (*child, error)) (controllerRun, error) {
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
	c, err := start()
	if err != nil {
		return controllerRun{}, err
	}
	defer c.stop()
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
			if rss, err := rssBytes(c.pid()); err == nil {
				r.peakRSS = max(r.peakRSS, rss)
			}
			if c.exited() {
				return r, fmt.Errorf("the controller exited (log %s)", c.log)
			}
			continue
		case <-ctx.Done():
			return r, ctx.Err()
		}
		break
	}
	r.elapsed = time.Since(began)
	if rss, err := rssBytes(c.pid()); err == nil {
		r.peakRSS = max(r.peakRSS, rss)
	}
	mu.Lock()
	r.reconciled = len(done)
	mu.Unlock()
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
		if err := c.Create(ctx, share.NewSecret(a, token)); err != nil {
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
// cmd/controller runs it, but with client-side rate limiting off (QPS -1,
// as controller-runtime's own config loader sets), to show what that limit
// costs. No leader election, metrics or probes.
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
	scheme, err := controller.NewScheme()
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme:                 scheme,
		Cache:                  controller.CacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		return err
	}
	if err := controller.SetupWithManager(mgr, controller.Config{PublicURL: "http://share.bench.invalid"}); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return mgr.Start(ctx)
}

// restartOnReconciled starts the shipped controller on n Agents that are all
// reconciled, and times it until its reconcile counter (from its metrics)
// reaches n.
func restartOnReconciled(ctx context.Context, cp *framework.ControlPlane, o *options, n int) (controllerRun, error) {
	port, err := freePort()
	if err != nil {
		return controllerRun{}, err
	}
	metrics := "127.0.0.1:" + strconv.Itoa(port)
	c, err := startController(cp, o, "controller-restart", filepath.Join(o.binDir, "controller"), "http://share.bench.invalid",
		"--metrics-bind-address="+metrics, "--metrics-secure=false")
	if err != nil {
		return controllerRun{}, err
	}
	defer c.stop()
	began := time.Now()
	r := controllerRun{agents: n}
	deadline := time.Now().Add(o.controllerCap)
	for time.Now().Before(deadline) {
		if rss, err := rssBytes(c.pid()); err == nil {
			r.peakRSS = max(r.peakRSS, rss)
		}
		if c.exited() {
			return r, fmt.Errorf("the controller exited (log %s)", c.log)
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
