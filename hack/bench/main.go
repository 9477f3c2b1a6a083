// Command bench measures the share path against baselines measured in the
// same run, prints a table and writes it to docs/benchmarks.md. hack/bench.sh
// (make bench) builds it and the servers and runs it; see docs/benchmarks.md
// for what each figure is.
//
// It is also its own helper: "bench exec-holder" holds direct exec streams
// (the baseline of figure 3) and "bench controller" runs the Agent
// controller without client-side rate limiting (figure 6).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/kubeopencode/share/internal/testenv"
)

type options struct {
	root    string
	binDir  string
	work    string
	logDir  string
	self    string
	doc     string
	payload string

	payloadSize   int64
	reps          int
	echoSamples   int
	sessionCounts []int
	// separateSessions is the number of links of figure 3's separate
	// sessions, each with its own Agent.
	separateSessions int
	secrets          int
	loadWorkers      int
	loadDuration     time.Duration
	enableSamples    int
	agentCounts      []int
	// controllerReps is how many times figure 6 measures the write floor
	// and the shipped controller on the first Agent count.
	controllerReps int
	budget         time.Duration
	wettyMain      string
	micro          string
	profiles       string
	only           string
	// t0 is when the run began, for the budget: hack/bench.sh passes the
	// time it started, so that its builds count too.
	t0 time.Time
}

type bench struct {
	o            *options
	r            *report
	sys          *system
	wettyVersion string
	nodeVersion  string
	apiserverPid int
}

func main() {
	if len(os.Args) > 1 {
		var err error
		switch os.Args[1] {
		case "exec-holder":
			err = runExecHolder(os.Args[2:])
		case "controller":
			err = runController(os.Args[2:])
		default:
			err = run()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func run() error {
	o := &options{}
	var payloadMiB int
	var sessions, agents string
	flag.StringVar(&o.binDir, "bin-dir", "_output/bench/bin", "Folder of the built aggregated-apiserver and controller.")
	flag.StringVar(&o.work, "work-dir", "_output/bench/run", "Folder for the run's state and logs; emptied first.")
	flag.StringVar(&o.doc, "doc", "docs/benchmarks.md", "Page whose generated part gets the table; empty writes none.")
	flag.DurationVar(&o.budget, "budget", 9*time.Minute+45*time.Second, "Time the whole run should fit in; figure 6 scales its largest Agent count down to fit, and says so.")
	flag.StringVar(&o.wettyMain, "wetty", "", "WeTTY's build/main.js, to measure it as the peer of figure 7; empty skips it.")
	flag.IntVar(&payloadMiB, "payload-mib", 64, "MiB that figure 1 cats through each path.")
	flag.IntVar(&o.reps, "reps", 5, "Runs of each throughput figure; the median counts.")
	flag.IntVar(&o.echoSamples, "echo-samples", 1000, "Keystroke round trips per path.")
	flag.StringVar(&sessions, "sessions", "100,1000", "Idle viewers of one session in figure 3, ascending.")
	flag.IntVar(&o.separateSessions, "separate-sessions", 100, "Separate idle sessions of figure 3, each on a link (Agent) of its own.")
	flag.IntVar(&o.secrets, "secrets", 10000, "Share Secrets added to the listener's cache for figure 4.")
	flag.IntVar(&o.loadWorkers, "load-workers", 16, "Concurrent connections of figure 4's load.")
	flag.DurationVar(&o.loadDuration, "load-duration", 2*time.Second, "Duration of each load of figure 4.")
	flag.IntVar(&o.enableSamples, "enable-samples", 60, "Enable/disable cycles of figure 5.")
	flag.StringVar(&agents, "agents", "1000,10000", "Agent counts of figure 6, ascending; the first is measured -controller-reps times against the write floor, the others once.")
	flag.IntVar(&o.controllerReps, "controller-reps", 3, "Runs of the write floor and of the shipped controller on figure 6's first Agent count.")
	flag.StringVar(&o.micro, "micro", "", "Output of the go test micro benchmarks, included in the page.")
	flag.StringVar(&o.profiles, "profiles", "", "Folder to save profiles in: the server's goroutine and heap profiles while figure 3's sessions are open (the listener and the exec holder then sample their heaps finely, and the table's notes attribute a session's heap to allocation sites), and CPU profiles of the first throughput run of each path.")
	var t0 int64
	flag.Int64Var(&t0, "t0", 0, "Unix time the run began, for -budget; 0 means now.")
	flag.StringVar(&o.only, "only", "", "Comma-separated figures to run (terminal,sessions,tokens,enable,controller); empty runs all.")
	klog.InitFlags(nil)
	flag.Parse()
	ctrl.SetLogger(klog.Background())
	o.payloadSize = int64(payloadMiB) << 20
	o.t0 = time.Now()
	if t0 > 0 {
		o.t0 = time.Unix(t0, 0)
	}
	var err error
	if o.sessionCounts, err = intList(sessions); err != nil {
		return fmt.Errorf("-sessions: %w", err)
	}
	if o.agentCounts, err = intList(agents); err != nil {
		return fmt.Errorf("-agents: %w", err)
	}
	if o.controllerReps < 1 {
		return fmt.Errorf("-controller-reps must be at least 1")
	}
	if o.root, err = testenv.RepoRoot(); err != nil {
		return err
	}
	for _, p := range []*string{&o.binDir, &o.work, &o.doc, &o.wettyMain, &o.micro, &o.profiles} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(o.root, *p)
		}
	}
	if o.self, err = os.Executable(); err != nil {
		return err
	}
	if o.profiles != "" {
		if err := os.MkdirAll(o.profiles, 0o755); err != nil {
			return err
		}
		// The children (the listener, the exec holder) inherit it: their
		// heap profiles record enough allocations to attribute figure 3.
		godebug := fmt.Sprintf("memprofilerate=%d", profileRate)
		if v := os.Getenv("GODEBUG"); v != "" {
			godebug = v + "," + godebug
		}
		if err := os.Setenv("GODEBUG", godebug); err != nil {
			return err
		}
	}
	_ = os.RemoveAll(o.work)
	o.logDir = filepath.Join(o.work, "logs")
	if err := os.MkdirAll(o.logDir, 0o755); err != nil {
		return err
	}
	if o.profiles != "" {
		if err := os.MkdirAll(o.profiles, 0o755); err != nil {
			return err
		}
	}
	o.payload = filepath.Join(o.work, "payload.txt")
	if err := writePayload(o.payload, o.payloadSize); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := &bench{o: o, r: &report{started: time.Now(), machine: machineInfo()}}
	if o.micro != "" {
		out, err := os.ReadFile(o.micro)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "Benchmark") || strings.HasPrefix(line, "pkg:") {
				b.r.micro = append(b.r.micro, strings.Join(strings.Fields(line), " "))
			}
		}
	}
	if o.wettyMain != "" {
		b.wettyVersion = packageVersion(filepath.Join(filepath.Dir(filepath.Dir(o.wettyMain)), "package.json"))
	}
	err = b.runAll(ctx)
	if b.nodeVersion != "" {
		b.r.machine = append(b.r.machine, "Node (WeTTY): "+b.nodeVersion)
	}
	b.r.machine = append(b.r.machine, fmt.Sprintf("scale: payload %d MiB, %d separate idle sessions and %s idle viewers of one, %d share Secrets, %s Agents, %d echo round trips per path",
		payloadMiB, o.separateSessions, sessions, o.secrets, agents, o.echoSamples))
	fmt.Println()
	b.r.plain(os.Stdout)
	if err != nil {
		return fmt.Errorf("%w (logs in %s)", err, o.logDir)
	}
	if o.doc != "" {
		if err := b.r.writeDoc(o.doc); err != nil {
			return err
		}
		fmt.Printf("\nWrote the table to %s\n", o.doc)
	}
	return nil
}

func (b *bench) wants(fig string) bool {
	if b.o.only == "" {
		return true
	}
	for _, f := range strings.Split(b.o.only, ",") {
		if strings.TrimSpace(f) == fig {
			return true
		}
	}
	return false
}

func (b *bench) runAll(ctx context.Context) error {
	timed := func(name string, f func(context.Context) error) error {
		if !b.wants(name) {
			return nil
		}
		quiesce(30 * time.Second)
		start := time.Now()
		if load, err := os.ReadFile("/proc/loadavg"); err == nil {
			step("%s figures (load average %s)", name, strings.Join(strings.Fields(string(load))[:3], " "))
		}
		err := f(ctx)
		step("%s figures took %s", name, time.Since(start).Round(time.Second))
		if err != nil {
			return fmt.Errorf("%s figures: %w", name, err)
		}
		return nil
	}
	if b.wants("terminal") || b.wants("sessions") || b.wants("tokens") || b.wants("enable") {
		start := time.Now()
		sys, err := startSystem(ctx, b.o)
		if err != nil {
			return err
		}
		b.sys = sys
		step("system up in %s", time.Since(start).Round(time.Second))
		for _, f := range []struct {
			name string
			fn   func(context.Context) error
		}{{"terminal", b.terminalFigures}, {"enable", b.enableFigures}, {"sessions", b.sessionFigures}, {"tokens", b.tokenFigures}} {
			if err := timed(f.name, f.fn); err != nil {
				sys.stop()
				return err
			}
		}
		sys.stop()
		b.sys = nil
	}
	return timed("controller", b.controllerFigures)
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s >>> %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func numCPU() int { return runtime.NumCPU() }

// packageVersion reads the version of an npm package.json.
func packageVersion(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	const key = `"version": "`
	i := strings.Index(string(b), key)
	if i < 0 {
		return ""
	}
	v := string(b[i+len(key):])
	if j := strings.IndexByte(v, '"'); j >= 0 {
		return v[:j]
	}
	return ""
}
