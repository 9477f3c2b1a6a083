package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
)

// throughputOnce runs one session whose command writes the payload and
// measures its output rate from the first byte to the last, and, on a
// WebSocket path, the output a data message carried on average (0 on
// others). The output ends when size bytes have come, the session ends, or,
// for a lossy path, nothing has come for two seconds; only a lossy path may
// deliver less than size.
func throughputOnce(ctx context.Context, open opener, size int64, lossy bool) (rate float64, n int64, perMessage float64, err error) {
	m := newMeter(size)
	t, err := open(ctx, m.add)
	if err != nil {
		return 0, 0, 0, err
	}
	defer t.close()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(3 * time.Minute)
wait:
	for {
		select {
		case <-m.full:
			break wait
		case <-t.done():
			// Output that came before the end was delivered before done.
			break wait
		case <-tick.C:
			m.mu.Lock()
			quiet := m.n > 0 && time.Since(m.last) > 2*time.Second
			m.mu.Unlock()
			if lossy && quiet {
				break wait
			}
		case <-timeout:
			return 0, 0, 0, errors.New("the payload did not arrive within 3 minutes")
		case <-ctx.Done():
			return 0, 0, 0, ctx.Err()
		}
	}
	n, rate = m.rate()
	if ws, ok := t.(*wsTerminal); ok && ws.messages.Load() > 0 {
		perMessage = float64(n) / float64(ws.messages.Load())
	}
	if n == 0 {
		return 0, 0, 0, errors.New("no output arrived")
	}
	// Output lost at the end is a defect of the path, reported with the
	// figure; the rate counts what came.
	return rate, n, perMessage, nil
}

// throughputRun is one throughput run of a path.
type throughputRun struct {
	rate float64 // bytes per second
	n    int64   // bytes that came
	// perMessage is the output a WebSocket data message carried on
	// average; 0 on a path that is no WebSocket.
	perMessage float64
	// cpu is the CPU time each process of the path spent per MiB moved, in
	// milliseconds, by role.
	cpu map[string]float64
}

func (r throughputRun) cpuTotal() float64 {
	total := 0.0
	for _, ms := range r.cpu {
		total += ms
	}
	return total
}

// throughputResult is the runs of a path, in the order they ran; its
// figures are their medians.
type throughputResult struct {
	runs []throughputRun
}

func (t *throughputResult) pick(f func(throughputRun) float64) []float64 {
	out := make([]float64, 0, len(t.runs))
	for _, r := range t.runs {
		out = append(out, f(r))
	}
	return out
}

func (t *throughputResult) rates() []float64 {
	return t.pick(func(r throughputRun) float64 { return r.rate })
}

func (t *throughputResult) rate() float64 { return median(t.rates()) }

func (t *throughputResult) cpuTotals() []float64 {
	return t.pick(throughputRun.cpuTotal)
}

func (t *throughputResult) cpuTotal() float64 { return median(t.cpuTotals()) }

// cpuRuns are the runs' own milliseconds per MiB of one role.
func (t *throughputResult) cpuRuns(role string) []float64 {
	return t.pick(func(r throughputRun) float64 { return r.cpu[role] })
}

func (t *throughputResult) cpuPerMB(role string) float64 { return median(t.cpuRuns(role)) }

func (t *throughputResult) roles() []string {
	if len(t.runs) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(t.runs[0].cpu))
}

// perMessage is the runs' output per data message; empty for a path that
// is no WebSocket.
func (t *throughputResult) perMessage() []float64 {
	var out []float64
	for _, r := range t.runs {
		if r.perMessage > 0 {
			out = append(out, r.perMessage)
		}
	}
	return out
}

// lost is the bytes each run that lost output missed of size.
func (t *throughputResult) lost(size int64) []int64 {
	var out []int64
	for _, r := range t.runs {
		if r.n != size {
			out = append(out, size-r.n)
		}
	}
	return out
}

// compareThroughput measures each path o.reps times, interleaved (run 1 of
// each path, then run 2 of each, …) so that the machine's noise falls on
// all of them alike.
func (b *bench) compareThroughput(ctx context.Context, paths []path) (map[string]*throughputResult, error) {
	out := map[string]*throughputResult{}
	for _, p := range paths {
		out[p.name] = &throughputResult{}
	}
	for rep := range b.o.reps {
		for _, p := range paths {
			r, err := b.throughputRun(ctx, p, rep == 0 && b.o.profiles != "")
			if err != nil {
				return nil, fmt.Errorf("%s throughput (run %d): %w", p.name, rep+1, err)
			}
			out[p.name].runs = append(out[p.name].runs, r)
		}
	}
	return out, nil
}

// throughputRun runs the payload through a path once and counts the CPU
// time its processes spent; with profile, it saves CPU profiles of it.
func (b *bench) throughputRun(ctx context.Context, p path, profile bool) (throughputRun, error) {
	before := map[string]float64{}
	for role, pid := range p.procs {
		before[role], _ = cpuSeconds(pid)
	}
	stopProfile := func() {}
	if profile {
		stopProfile = b.profileCPU(ctx, p.name)
	}
	rate, n, perMessage, err := throughputOnce(ctx, p.cat, b.o.payloadSize, p.lossy)
	stopProfile()
	if err != nil {
		return throughputRun{}, err
	}
	r := throughputRun{rate: rate, n: n, perMessage: perMessage, cpu: map[string]float64{}}
	var parts []string
	for _, role := range slices.Sorted(maps.Keys(p.procs)) {
		after, _ := cpuSeconds(p.procs[role])
		r.cpu[role] = (after - before[role]) * 1000 / (float64(n) / (1 << 20))
		parts = append(parts, fmt.Sprintf("%s %.0f", role, r.cpu[role]))
	}
	messages := ""
	if perMessage > 0 {
		messages = fmt.Sprintf(", %.1f KiB per data message", perMessage/1024)
	}
	step("  %s: %.1f MiB/s, %.0f ms CPU per MiB (%s)%s", p.name, rate/(1<<20), r.cpuTotal(), strings.Join(parts, ", "), messages)
	return r, nil
}

// echoOnce opens an echo session and measures n one-byte round trips after a
// warm-up.
func echoOnce(ctx context.Context, open opener, n int) ([]time.Duration, error) {
	e := newEchoer()
	t, err := open(ctx, e.sink)
	if err != nil {
		return nil, err
	}
	defer t.close()
	if err := e.waitReady(t, 30*time.Second); err != nil {
		return nil, err
	}
	if _, err := roundTrips(t, e, echoWarmup); err != nil {
		return nil, err
	}
	out, err := roundTrips(t, e, n)
	if err != nil {
		return nil, err
	}
	// One keystroke more, not measured: the command's last byte, whose echo
	// comes with the command's exit and the end of the exec stream. Measured,
	// it was among the three slowest round trips in 15 of 21 rounds of
	// figure 8, the slowest in 11: one of the few that make a round's p99. Its echo may race the session's
	// end, so neither is waited for as an error.
	_, _ = roundTrips(t, e, 1)
	return out, nil
}

// echoRound measures one session of n round trips on each path in turn,
// adding each to its path's rounds in out, and returns what each measured.
func echoRound(ctx context.Context, paths []path, n int, out map[string]echoResult) ([]string, error) {
	var parts []string
	for _, p := range paths {
		s, err := echoOnceSettled(ctx, p, n)
		if err != nil {
			return nil, fmt.Errorf("%s echo: %w", p.name, err)
		}
		l := summarize(s)
		out[p.name] = echoResult{rounds: append(out[p.name].rounds, l)}
		parts = append(parts, fmt.Sprintf("%s %s", p.name, l))
	}
	return parts, nil
}

// echoOnceSettled is echoOnce on p's echo, then waits until the session
// has settled, when the path says how, so that the next path is measured
// on a machine at rest.
func echoOnceSettled(ctx context.Context, p path, n int) ([]time.Duration, error) {
	s, err := echoOnce(ctx, p.echo, n)
	if err != nil || p.settled == nil {
		return s, err
	}
	return s, p.settled(ctx)
}

// sessionSettled waits until the Agent's last session has nothing left in
// flight:
// the owner writes a link's viewer count half a second after its last page
// left, which sets off the controller's status update and the watch events
// of every cache. In figure 8, measured before that had settled, the path
// that came second in a round (whichever it was) added up to 1.7 ms at p99
// to the owner's page; the Agent's status with no viewers is the end of it,
// and the machine at rest after it.
func sessionSettled(ctx context.Context, c client.Reader, agent types.NamespacedName) error {
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		a := &kubeopencodev1alpha1.Agent{}
		if err := c.Get(ctx, agent, a); err != nil {
			return false, nil
		}
		return a.Status.Share == nil || a.Status.Share.Viewers == 0, nil
	})
	if err != nil {
		return fmt.Errorf("the viewers of %s's last session are still counted: %w", agent, err)
	}
	quiesce(5 * time.Second)
	return nil
}

// echoWarmup round trips come before those measured; the echo command of a
// session ends after warm-up and measured round trips (see echoBytes).
const echoWarmup = 20

// echoResult is the latency of each echo round of a path, in the order they
// ran. Its figures are the medians of the rounds' own percentiles: a p99
// is the few slowest round trips of a round, which one slow moment of a
// shared machine decides, and the median of rounds is what the path does
// when no such moment falls on it.
type echoResult struct {
	rounds []latency
}

func (e echoResult) p50() float64 { return median(p50s(e.rounds)) }

func (e echoResult) p99() float64 { return median(p99s(e.rounds)) }

// addedP99 is, for each round, how much the p99 of e exceeds that of base in
// the same round: the rounds alternate the paths, so each round of one has
// a round of the other beside it, under the same load.
func (e echoResult) addedP99(base echoResult) []float64 {
	var out []float64
	for i := range min(len(e.rounds), len(base.rounds)) {
		out = append(out, e.rounds[i].p99-base.rounds[i].p99)
	}
	return out
}

// compareEcho measures o.echoRounds rounds of round trips on each path;
// each round opens one session of each path in turn, so that the
// machine's noise falls on all of them alike. Each round starts on a
// settled machine (see settle).
func (b *bench) compareEcho(ctx context.Context, paths []path) (map[string]echoResult, error) {
	o := b.o
	out := map[string]echoResult{}
	for round := range o.echoRounds {
		// The first round waits longest: the throughput runs before it
		// leave the most behind.
		limit := 5 * time.Second
		if round == 0 {
			limit = 30 * time.Second
		}
		busy := b.settle(ctx, limit)
		gc0 := b.collections(ctx)
		resumeGC := pauseGC()
		parts, err := echoRound(ctx, paths, o.echoPerRound(), out)
		if err != nil {
			resumeGC()
			return nil, fmt.Errorf("round %d: %w", round+1, err)
		}
		// Counted before the collector resumes, which then collects what
		// the round left at once.
		gc := b.collections(ctx).since(gc0)
		resumeGC()
		step("  round %d (machine %.0f%% busy before it; collections during it: listener %d, harness %d): %s",
			round+1, busy*100, gc.listener, gc.harness, strings.Join(parts, "; "))
	}
	return out, nil
}

// settle lets an echo round start on a machine at rest, and returns how
// busy the machine was when it did. The throughput runs before the echo
// figure leave garbage in the processes on the echo path, ours (the
// listener; the harness, which hosts the stand-in kubelet and the clients)
// and others' (kube-apiserver, WeTTY's node), and processes ending; a
// collection that starts in the middle of a round, or a neighbour's work,
// lands on the few slowest round trips, which are the p99. So: collect the
// garbage of ours now, then wait for the machine to be idle.
func (b *bench) settle(ctx context.Context, limit time.Duration) float64 {
	runtime.GC()
	// Fetching a heap profile with gc=1 collects the listener's garbage.
	if _, err := b.sys.serverGet(ctx, "/debug/pprof/heap?gc=1"); err != nil {
		step("  collecting the listener's garbage: %v", err)
	}
	return quiesce(limit)
}

// pauseGC stops the harness's garbage collector, unless its heap passes
// 1 GiB, until the function it returns is called. The harness is on every
// echo path (the stand-in kubelet, the floor, the clients), and a round
// allocates enough to start a collection in it even right after one (a
// test run on 2 shared cores showed one in every round): it would land on
// the round trips of whichever path is measured at that moment. A round
// allocates a few MiB; the limit only guards against a runaway.
func pauseGC() func() {
	percent := debug.SetGCPercent(-1)
	limit := debug.SetMemoryLimit(1 << 30)
	return func() {
		debug.SetGCPercent(percent)
		debug.SetMemoryLimit(limit)
	}
}

// gcCounts are the garbage collections so far of the processes of ours on
// the echo path; the log of each echo round says how many fell in it, to
// tell a tail of ours from the machine's.
type gcCounts struct{ listener, harness int }

func (b *bench) collections(ctx context.Context) gcCounts {
	var c gcCounts
	if n, err := b.sys.serverMetric(ctx, "go_gc_duration_seconds_count"); err == nil {
		c.listener = int(n)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	c.harness = int(ms.NumGC)
	return c
}

func (c gcCounts) since(before gcCounts) gcCounts {
	return gcCounts{listener: c.listener - before.listener, harness: c.harness - before.harness}
}

// p50s and p99s pick one percentile of each round.
func p50s(ls []latency) []float64 { return pick(ls, func(l latency) float64 { return l.p50 }) }

func p99s(ls []latency) []float64 { return pick(ls, func(l latency) float64 { return l.p99 }) }

func pick(ls []latency, f func(latency) float64) []float64 {
	out := make([]float64, len(ls))
	for i, l := range ls {
		out[i] = f(l)
	}
	return out
}
