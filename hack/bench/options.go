package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kubeopencode/share/internal/testenv"
)

// options are the harness's settings, filled from its flags; complete works
// out the rest (lists, absolute paths, the harness's own binary).
type options struct {
	// Flags as given; complete parses them into the fields below.
	payloadMiB    int
	sessionsFlag  string
	agentsFlag    string
	startUnixTime int64

	root    string
	binDir  string
	work    string
	logDir  string
	self    string
	doc     string
	payload string

	payloadSize int64
	reps        int
	echoSamples int
	// echoRounds is how many sessions of each path figure 2 opens, in turn;
	// its rows are medians over them.
	echoRounds    int
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
	// docSet is whether -doc was given.
	docSet bool
	// t0 is when the run began, for the budget: hack/bench.sh passes the
	// time it started, so that its builds count too.
	t0 time.Time
}

func newOptions() *options {
	return &options{
		binDir:           "_output/bench/bin",
		work:             "_output/bench/run",
		doc:              "docs/benchmarks.md",
		budget:           9*time.Minute + 45*time.Second,
		payloadMiB:       64,
		reps:             5,
		echoSamples:      2000,
		echoRounds:       5,
		sessionsFlag:     "100,1000",
		separateSessions: 100,
		secrets:          10000,
		loadWorkers:      16,
		loadDuration:     2 * time.Second,
		enableSamples:    60,
		agentsFlag:       "1000,10000",
		controllerReps:   3,
	}
}

func (o *options) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.binDir, "bin-dir", o.binDir, "Folder of the built aggregated-apiserver and controller.")
	fs.StringVar(&o.work, "work-dir", o.work, "Folder for the run's state and logs; emptied first.")
	fs.StringVar(&o.doc, "doc", o.doc, "Page whose generated part gets the table; empty writes none. A run with -only writes none unless -doc is given: its few rows would replace the whole table.")
	fs.DurationVar(&o.budget, "budget", o.budget, "Time the whole run should fit in; figure 6 scales its largest Agent count down to fit, and says so.")
	fs.StringVar(&o.wettyMain, "wetty", o.wettyMain, "WeTTY's build/main.js, to measure it as the peer of figure 7; empty skips it.")
	fs.IntVar(&o.payloadMiB, "payload-mib", o.payloadMiB, "MiB that figure 1 cats through each path.")
	fs.IntVar(&o.reps, "reps", o.reps, "Runs of each throughput figure; the median counts.")
	fs.IntVar(&o.echoSamples, "echo-samples", o.echoSamples, "Keystroke round trips per path, spread over -echo-rounds sessions.")
	fs.IntVar(&o.echoRounds, "echo-rounds", o.echoRounds, "Echo sessions per path, alternating the paths; figure 2 reports the median of their percentiles, so that one slow round does not decide it.")
	fs.StringVar(&o.sessionsFlag, "sessions", o.sessionsFlag, "Idle viewers of one session in figure 3, ascending.")
	fs.IntVar(&o.separateSessions, "separate-sessions", o.separateSessions, "Separate idle sessions of figure 3, each on a link (Agent) of its own.")
	fs.IntVar(&o.secrets, "secrets", o.secrets, "Share Secrets added to the listener's cache for figure 4.")
	fs.IntVar(&o.loadWorkers, "load-workers", o.loadWorkers, "Concurrent connections of figure 4's load.")
	fs.DurationVar(&o.loadDuration, "load-duration", o.loadDuration, "Duration of each load of figure 4.")
	fs.IntVar(&o.enableSamples, "enable-samples", o.enableSamples, "Enable/disable cycles of figure 5.")
	fs.StringVar(&o.agentsFlag, "agents", o.agentsFlag, "Agent counts of figure 6, ascending; the first is measured -controller-reps times against the write floor, the others once.")
	fs.IntVar(&o.controllerReps, "controller-reps", o.controllerReps, "Runs of the write floor and of the shipped controller on figure 6's first Agent count.")
	fs.StringVar(&o.micro, "micro", o.micro, "Output of the go test micro benchmarks, included in the page.")
	fs.StringVar(&o.profiles, "profiles", o.profiles, "Folder to save profiles in: the server's goroutine and heap profiles while figure 3's sessions are open (the listener and the exec holder then sample their heaps finely, and the table's notes attribute a session's heap to allocation sites), and CPU profiles of the first throughput run of each path.")
	fs.Int64Var(&o.startUnixTime, "t0", o.startUnixTime, "Unix time the run began, for -budget; 0 means now.")
	fs.StringVar(&o.only, "only", o.only, "Comma-separated figures to run ("+strings.Join(figureNames(), ",")+"); empty runs all.")
}

// complete parses the list flags, makes paths absolute from the
// repository's root (the harness runs from anywhere) and finds the
// harness's own binary, which it runs again as the exec holder.
func (o *options) complete() error {
	if o.only != "" && !o.docSet {
		o.doc = ""
	}
	o.payloadSize = int64(o.payloadMiB) << 20
	o.t0 = time.Now()
	if o.startUnixTime > 0 {
		o.t0 = time.Unix(o.startUnixTime, 0)
	}
	var err error
	if o.sessionCounts, err = intList(o.sessionsFlag); err != nil {
		return fmt.Errorf("-sessions: %w", err)
	}
	if o.agentCounts, err = intList(o.agentsFlag); err != nil {
		return fmt.Errorf("-agents: %w", err)
	}
	if o.root, err = testenv.RepoRoot(); err != nil {
		return err
	}
	for _, p := range []*string{&o.binDir, &o.work, &o.doc, &o.wettyMain, &o.micro, &o.profiles} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(o.root, *p)
		}
	}
	o.logDir = filepath.Join(o.work, "logs")
	o.payload = filepath.Join(o.work, "payload.txt")
	if o.self, err = os.Executable(); err != nil {
		return err
	}
	return nil
}

func (o *options) validate() error {
	if o.controllerReps < 1 {
		return fmt.Errorf("-controller-reps must be at least 1")
	}
	if o.echoRounds < 1 || o.echoSamples < o.echoRounds {
		return fmt.Errorf("-echo-rounds must be at least 1 and -echo-samples at least -echo-rounds")
	}
	for _, f := range strings.Split(o.only, ",") {
		if f = strings.TrimSpace(f); f != "" && !isFigure(f) {
			return fmt.Errorf("-only: no figures named %q (there are %s)", f, strings.Join(figureNames(), ", "))
		}
	}
	return nil
}

// wants says whether -only lets the figures named fig run.
func (o *options) wants(fig string) bool {
	if o.only == "" {
		return true
	}
	for _, f := range strings.Split(o.only, ",") {
		if strings.TrimSpace(f) == fig {
			return true
		}
	}
	return false
}

// echoPerRound is the number of round trips one echo session measures.
func (o *options) echoPerRound() int { return o.echoSamples / o.echoRounds }

// echoBytes is how many bytes the echo command echoes before it exits: the
// warm-up, the measured round trips and the last keystroke (see echoOnce).
func (o *options) echoBytes() int { return echoWarmup + o.echoPerRound() + 1 }

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
