package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// bench is one run of the harness: its options, the report it fills and the
// system the figures share.
type bench struct {
	o            *options
	r            *report
	sys          *system
	wettyVersion string
	nodeVersion  string
	apiserverPid int
}

func newBench(o *options) *bench {
	return &bench{o: o, r: &report{started: time.Now(), machine: machineInfo()}}
}

// figure is a group of the table's figures that -only names.
type figure struct {
	name string
	// onSystem figures run on the system of startSystem, which is started
	// once for all of them; the others bring their own control plane.
	onSystem bool
	run      func(*bench, context.Context) error
}

// figures are the groups in the order they run: those on the shared system
// first, then figure 6 on a control plane of its own, once the system is
// gone and its cores are free.
var figures = []figure{
	{name: "terminal", onSystem: true, run: (*bench).terminalFigures},
	{name: "enable", onSystem: true, run: (*bench).enableFigures},
	{name: "sessions", onSystem: true, run: (*bench).sessionFigures},
	{name: "tokens", onSystem: true, run: (*bench).tokenFigures},
	{name: "replicas", onSystem: true, run: (*bench).replicaFigures},
	{name: "controller", run: (*bench).controllerFigures},
}

func figureNames() []string {
	var out []string
	for _, f := range figures {
		out = append(out, f.name)
	}
	return out
}

func isFigure(name string) bool { return slices.Contains(figureNames(), name) }

// run prepares the work folder, runs the figures, prints the table and
// writes it to the page; the table is printed even when a figure failed.
func (b *bench) run(ctx context.Context) error {
	if err := b.prepare(); err != nil {
		return err
	}
	err := b.runFigures(ctx)
	b.describeRun()
	fmt.Println()
	b.r.plain(os.Stdout)
	if err != nil {
		return fmt.Errorf("%w (logs in %s)", err, b.o.logDir)
	}
	if b.o.doc != "" {
		if err := b.r.writeDoc(b.o.doc); err != nil {
			return err
		}
		fmt.Printf("\nWrote the table to %s\n", b.o.doc)
	}
	return nil
}

// prepare empties the work folder, writes the payload and reads what the
// run reports besides its own figures: the micro benchmarks and WeTTY's
// version.
func (b *bench) prepare() error {
	o := b.o
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
	if err := os.MkdirAll(o.logDir, 0o755); err != nil {
		return err
	}
	if err := writePayload(o.payload, o.payloadSize); err != nil {
		return err
	}
	if o.micro != "" {
		out, err := os.ReadFile(o.micro)
		if err != nil {
			return err
		}
		b.r.micro = microLines(string(out))
	}
	if o.wettyMain != "" {
		b.wettyVersion = packageVersion(filepath.Join(filepath.Dir(filepath.Dir(o.wettyMain)), "package.json"))
	}
	return nil
}

// microLines keeps the benchmark and package lines of go test -bench's
// output, with single spaces.
func microLines(out string) []string {
	var lines []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "Benchmark") || strings.HasPrefix(line, "pkg:") {
			lines = append(lines, strings.Join(strings.Fields(line), " "))
		}
	}
	return lines
}

// describeRun adds what the table's reader needs besides the machine: the
// peer's runtime and the run's scale.
func (b *bench) describeRun() {
	o := b.o
	if b.nodeVersion != "" {
		b.r.machine = append(b.r.machine, "Node (WeTTY): "+b.nodeVersion)
	}
	b.r.machine = append(b.r.machine, fmt.Sprintf("scale: payload %d MiB, %d separate idle sessions and %s idle viewers of one, %d share Secrets, %s Agents, %d echo round trips per path in %d rounds",
		o.payloadMiB, o.separateSessions, o.sessionsFlag, o.secrets, o.agentsFlag, o.echoSamples, o.echoRounds))
}

// runFigures runs the figures -only wants, starting the shared system for
// those on it and stopping it before the others.
func (b *bench) runFigures(ctx context.Context) error {
	var onSystem, onTheirOwn []figure
	for _, f := range figures {
		switch {
		case !b.o.wants(f.name):
		case f.onSystem:
			onSystem = append(onSystem, f)
		default:
			onTheirOwn = append(onTheirOwn, f)
		}
	}
	if len(onSystem) > 0 {
		start := time.Now()
		sys, err := startSystem(ctx, b.o)
		if err != nil {
			return err
		}
		b.sys = sys
		step("system up in %s", time.Since(start).Round(time.Second))
		err = b.runEach(ctx, onSystem)
		sys.stop()
		b.sys = nil
		if err != nil {
			return err
		}
	}
	return b.runEach(ctx, onTheirOwn)
}

func (b *bench) runEach(ctx context.Context, fs []figure) error {
	for _, f := range fs {
		// A figure must not share the cores with the leftovers of the one
		// before (a control plane digesting new objects, shells ending).
		quiesce(30 * time.Second)
		step("%s figures (load average %s)", f.name, loadAverage())
		start := time.Now()
		err := f.run(b, ctx)
		step("%s figures took %s", f.name, time.Since(start).Round(time.Second))
		if err != nil {
			return fmt.Errorf("%s figures: %w", f.name, err)
		}
	}
	return nil
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s >>> %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func numCPU() int { return runtime.NumCPU() }

// loadAverage is the machine's 1, 5 and 15 minute load averages, for the
// log of a run.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

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
