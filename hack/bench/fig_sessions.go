package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeopencode/share/internal/testenv"
	"github.com/kubeopencode/share/pkg/sharehttp/podexec"
)

// readySink closes ready on the session's first output, the ready marker.
type readySink struct {
	once  sync.Once
	ready chan struct{}
}

func newReadySink() *readySink { return &readySink{ready: make(chan struct{})} }

func (r *readySink) sink(p []byte) {
	if len(p) > 0 {
		r.once.Do(func() { close(r.ready) })
	}
}

// openIdle opens n sessions with open, in parallel, and waits until each has
// printed the ready marker: every one is a live terminal, then left idle.
// The terminals get ctx, not the group's context, which ends when openIdle
// returns: a direct exec stream lives as long as the context it is given.
func openIdle(ctx context.Context, n, parallel int, open opener) ([]terminal, error) {
	out := make([]terminal, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i := range n {
		g.Go(func() error {
			if gctx.Err() != nil {
				return gctx.Err()
			}
			r := newReadySink()
			t, err := open(ctx, r.sink)
			if err != nil {
				return err
			}
			out[i] = t
			select {
			case <-r.ready:
				return nil
			case <-t.done():
				return errors.New("a session ended before it was ready")
			case <-gctx.Done():
				return gctx.Err()
			case <-time.After(2 * time.Minute):
				return errors.New("a session was not ready within 2 minutes")
			}
		})
	}
	err := g.Wait()
	if err != nil {
		closeAll(out)
	}
	return out, err
}

func closeAll(ts []terminal) {
	for _, t := range ts {
		if t != nil {
			t.close()
		}
	}
}

// memorySamples is how many times a process's memory is taken at each
// point, a second apart, for the table's min–max.
const memorySamples = 3

// execHeartbeatLinger is how long the heartbeat goroutine of client-go's
// WebSocket exec client can outlive a stream that was cancelled rather
// than closed by the server: it ends at its next ping, sent every 5
// seconds, which fails on the closed connection.
const execHeartbeatLinger = 6 * time.Second

// memory is a process's memory at one point: the medians of its resident
// set, of its live memory (heap in use and stacks right after a garbage
// collection) and of the stacks alone over memorySamples samples, and the
// live samples.
type memory struct {
	rss, live, stack float64
	lives            []float64
}

// minus is what m holds beyond o, each of m's samples less o's median.
func (m memory) minus(o memory) memory {
	d := memory{rss: m.rss - o.rss, live: m.live - o.live, stack: m.stack - o.stack}
	for _, l := range m.lives {
		d.lives = append(d.lives, l-o.live)
	}
	return d
}

func (m memory) per(n int) memory {
	d := memory{rss: m.rss / float64(n), live: m.live / float64(n), stack: m.stack / float64(n)}
	for _, l := range m.lives {
		d.lives = append(d.lives, l/float64(n))
	}
	return d
}

func (m memory) String() string {
	return "RSS " + fmtKiB(m.rss) + ", live " + fmtKiB(m.live) + " (stacks " + fmtKiB(m.stack) + ")"
}

// sampleMemory takes memorySamples samples of a process's live memory
// (with live) and of its resident set, a second apart, once the process has
// settled for a second.
func sampleMemory(pid int, live func() (heap, stack float64, err error)) (memory, error) {
	var m memory
	var rss, stacks []float64
	for i := range memorySamples {
		time.Sleep(time.Second)
		heap, stack, err := live()
		if err != nil {
			return m, err
		}
		m.lives = append(m.lives, heap+stack)
		stacks = append(stacks, stack)
		// The resident set right after the collection, and once the
		// scavenger may have returned what it freed.
		for j := range 2 {
			if j > 0 || i > 0 {
				time.Sleep(200 * time.Millisecond)
			}
			r, err := rssBytes(pid)
			if err != nil {
				return m, err
			}
			rss = append(rss, float64(r))
		}
	}
	m.live, m.rss, m.stack = median(m.lives), median(rss), median(stacks)
	return m, nil
}

// serverMemory samples the listener process.
func (s *system) serverMemory(ctx context.Context) (memory, error) {
	return sampleMemory(s.server.Pid(), func() (float64, float64, error) { return s.serverLive(ctx) })
}

// holderMemory samples the exec holder.
func holderMemory(h *testenv.Process) (memory, error) {
	return sampleMemory(h.Pid(), func() (float64, float64, error) {
		if err := h.Send("mem"); err != nil {
			return 0, 0, err
		}
		line, err := h.ReadLine("mem ", time.Minute)
		if err != nil {
			return 0, 0, err
		}
		var heap, stack float64
		if _, err := fmt.Sscan(strings.TrimPrefix(line, "mem "), &heap, &stack); err != nil {
			return 0, 0, fmt.Errorf("exec holder: %q: %w", line, err)
		}
		return heap, stack, nil
	})
}

// liveSpread is the min–max cell of a memory row: live memory, the measure
// the goals are judged on.
func liveSpread(baseline, ours memory) string {
	return "live " + fmtSpread(baseline.lives, ours.lives, fmtKiB)
}

// sessionFigures measures figure 3. Everyone who opens a link joins the one
// session of that link, so there are two costs: a session (a link in use,
// with its exec stream, shared by its pages) and a viewer (one more page on
// a session). The first is measured with separate links, one per Agent; the
// second with many pages on one link. The baseline is a process of the
// harness holding the same number of direct exec streams: the exec stream's
// own cost. Memory is the listener process's resident set and its live
// memory (heap in use plus stacks after a garbage collection); the goroutines
// must come back to their count before the sessions.
func (b *bench) sessionFigures(ctx context.Context) error {
	s, o := b.sys, b.o
	counts := o.sessionCounts
	holderCounts := append([]int(nil), counts...)
	if o.separateSessions > 0 && !slices.Contains(holderCounts, o.separateSessions) {
		holderCounts = append(holderCounts, o.separateSessions)
		slices.Sort(holderCounts)
	}

	step("figure 3: exec streams alone, held by a process of their own, at %v", holderCounts)
	holder, err := testenv.StartInteractiveProcess(o.logDir, "exec-holder", o.self, "exec-holder",
		"-kubeconfig", s.server.Kubeconfig, "-namespace", benchNamespace, "-pod", s.agents["echo"].pod)
	if err != nil {
		return err
	}
	defer holder.Stop()
	if err := holder.Expect("idle", 2*time.Minute); err != nil {
		return err
	}
	h0, err := holderMemory(holder)
	if err != nil {
		return err
	}
	hg0, err := holderGoroutines(holder, o.logDir)
	if err != nil {
		return err
	}
	if o.profiles != "" {
		_ = holder.Send("profile " + filepath.Join(o.profiles, "holder-before"))
		_, _ = holder.ReadLine("profile ", time.Minute)
	}
	execPer := map[int]memory{}
	var holderSites []siteDelta
	have := 0
	for _, n := range holderCounts {
		if err := holder.Send(fmt.Sprintf("open %d", n-have)); err != nil {
			return err
		}
		if err := holder.Expect("open", 10*time.Minute); err != nil {
			return err
		}
		have = n
		m, err := holderMemory(holder)
		if err != nil {
			return err
		}
		execPer[n] = m.minus(h0).per(n)
		step("  %d exec streams: %s per stream", n, execPer[n])
		if n == o.separateSessions {
			hg, err := holderGoroutines(holder, o.logDir)
			if err != nil {
				return err
			}
			holderSites = perSession(hg0, hg, n, 0.5)
			if o.profiles != "" {
				_ = holder.Send("profile " + filepath.Join(o.profiles, "holder"))
				_, _ = holder.ReadLine("profile ", time.Minute)
			}
		}
	}
	_ = holder.Send("close")
	_ = holder.Expect("closed", 2*time.Minute)
	holder.Stop()

	g0s, err := s.metricSamples(ctx, "go_goroutines")
	if err != nil {
		return err
	}
	g0 := slices.Max(g0s)
	if o.profiles != "" {
		s.saveProfiles(ctx, o.profiles, "before")
	}
	m0, err := s.serverMemory(ctx)
	if err != nil {
		return err
	}
	goroutines0, heap0 := s.serverProfiles(ctx, o.profiles != "")
	if o.profiles != "" {
		s.saveProfiles(ctx, o.profiles, "sessions-before")
	}
	waitClosed := func() {
		_ = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			active, _ := s.serverMetric(ctx, "kubeopencode_share_active_sessions")
			return active == 0, nil
		})
	}

	if n := len(s.idleTokens); n > 0 {
		step("figure 3: %d separate idle sessions, one per link", n)
		next := 0
		var mu sync.Mutex
		sessions, err := openIdle(ctx, n, 8, func(ctx context.Context, out sink) (terminal, error) {
			mu.Lock()
			token := s.idleTokens[next]
			next++
			mu.Unlock()
			return s.dialShare(ctx, token, out)
		})
		if err != nil {
			closeAll(sessions)
			return fmt.Errorf("opening separate sessions: %w", err)
		}
		m, err := s.serverMemory(ctx)
		goroutines1, heap1 := s.serverProfiles(ctx, o.profiles != "")
		if o.profiles != "" {
			s.saveProfiles(ctx, o.profiles, "sessions")
		}
		closeAll(sessions)
		if err != nil {
			return err
		}
		per := m.minus(m0).per(n)
		base := execPer[n]
		step("  %d sessions: %s per session (exec stream alone %s)", n, per, base)
		b.r.add(row{fig: "3", measure: fmt.Sprintf("listener memory per idle session, %d sessions (each its own link and exec stream)", n),
			baseline: "exec stream alone: " + base.String(), ours: per.String(),
			ratio:  fmtRatio(per.live/base.live) + " (" + signedKiB(per.live-base.live) + " live)",
			spread: liveSpread(base, per),
			goal:   "< 64 KiB beyond the exec stream", met: yesNo(per.live-base.live < 64*1024)})
		count := func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
		b.r.note("figure 3, goroutines per separate session: listener %s; exec stream alone %s",
			fmtSites(perSession(goroutines0, goroutines1, n, 0.5), 16, count), fmtSites(holderSites, 16, count))
		if heap0 != nil && heap1 != nil {
			b.r.note("figure 3, listener heap per separate session by allocation site (run with -profiles, at memprofilerate %d): %s",
				profileRate, fmtSites(perSession(heap0, heap1, n, 512), 12, fmtKiB))
		}
		waitClosed()
		// A page that goes leaves its session waiting for it to come back;
		// wait until the listener has let them go.
		closed := time.Now()
		var g float64
		_ = wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
			g, _ = s.serverMetric(ctx, "go_goroutines")
			return g <= g0, nil
		})
		step("  %d sessions closed: %.0f goroutines after %s (%.0f before)", n, g, time.Since(closed).Round(time.Second), g0)
	}

	step("figure 3: idle viewers of one session at %v", counts)
	v0, err := s.serverMemory(ctx)
	if err != nil {
		return err
	}
	var viewers []terminal
	defer func() { closeAll(viewers) }()
	openViewer := func(ctx context.Context, out sink) (terminal, error) {
		return s.dialShare(ctx, s.agents["lobby"].token, out)
	}
	started := time.Now()
	viewerPer := map[int]memory{}
	for _, n := range counts {
		more, err := openIdle(ctx, n-len(viewers), 8, openViewer)
		viewers = append(viewers, more...)
		if err != nil {
			return fmt.Errorf("opening viewers: %w", err)
		}
		m, err := s.serverMemory(ctx)
		if err != nil {
			return err
		}
		viewerPer[n] = m.minus(v0).per(n)
		step("  %d viewers (opened in %s): %s per viewer", n, time.Since(started).Round(time.Millisecond), viewerPer[n])
	}
	gOpen, _ := s.serverMetric(ctx, "go_goroutines")
	if o.profiles != "" {
		s.saveProfiles(ctx, o.profiles, "viewers")
	}
	closeAll(viewers)
	viewers = nil
	waitClosed()
	// The session of the link lingers for its pages to come back, then
	// ends; its goroutines go with it.
	var g1 float64
	_ = wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		g1, _ = s.serverMetric(ctx, "go_goroutines")
		return g1 <= g0, nil
	})
	// A few more samples once back, after the exec streams' last
	// goroutines had time to go: nothing must come back later. Their
	// median is judged, so that a goroutine that comes and goes (a
	// connection of the listener's own clients) is not taken for a leak;
	// a leak stays in every sample.
	time.Sleep(execHeartbeatLinger)
	g1s, _ := s.metricSamples(ctx, "go_goroutines")
	g1s = append(g1s, g1)
	g1 = median(g1s)
	if o.profiles != "" {
		s.saveProfiles(ctx, o.profiles, "after")
	}
	step("  goroutines: %.0f before, %.0f with %d viewers, %.0f after", g0, gOpen, counts[len(counts)-1], g1)
	for _, n := range counts {
		per, base := viewerPer[n], execPer[n]
		b.r.add(row{fig: "3", measure: fmt.Sprintf("listener memory per idle viewer, %d viewers of one session", n),
			baseline: "exec stream alone: " + base.String(), ours: per.String(),
			ratio: fmtRatio(per.live / base.live), spread: liveSpread(base, per),
			goal: "< 64 KiB (a viewer has no exec stream)", met: yesNo(per.live < 64*1024)})
	}
	b.r.add(row{fig: "3", measure: "listener goroutines after every session and viewer closed",
		baseline: fmt.Sprintf("before %.0f", g0), ours: fmt.Sprintf("after %.0f (%.0f with %d viewers)", g1, gOpen, counts[len(counts)-1]),
		ratio: fmtRatio(g1 / g0), spread: fmtSpread(g0s, g1s, func(f float64) string { return strconv.FormatFloat(f, 'f', 0, 64) }),
		goal: "no growth", met: yesNo(g1 <= g0)})
	b.r.note("figure 3: \"live\" is heap in use plus goroutine stacks right after a forced garbage collection (the listener's /debug/pprof/heap?gc=1 and /metrics; the holder's runtime.MemStats); the goals are judged on it, the resident set moving with the collector's timing by ±20 KiB per session at 100")
	return nil
}

// runExecHolder is the exec-holder subcommand: a process that holds direct
// exec streams to a pod, the baseline of figure 3. It reads commands on
// stdin: "open N" opens N more streams and answers "open" once each is live;
// "close" closes them all and answers "closed".
func runExecHolder(args []string) error {
	fs := flag.NewFlagSet("exec-holder", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the identity that execs")
	namespace := fs.String("namespace", "", "namespace of the pod")
	pod := fs.String("pod", "", "pod to exec into")
	_ = fs.Parse(args)
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	ex, err := podexec.NewClient(cfg)
	if err != nil {
		return err
	}
	ctx := context.Background()
	open := func(ctx context.Context, out sink) (terminal, error) {
		return startExec(ctx, ex, *namespace, *pod, idleCommand(), out), nil
	}
	// One stream first, so that the code and buffers every stream shares are
	// in the baseline.
	warm, err := openIdle(ctx, 1, 1, open)
	if err != nil {
		return err
	}
	closeAll(warm)
	fmt.Println("idle")
	var held []terminal
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 2 && f[0] == "open":
			n, err := strconv.Atoi(f[1])
			if err != nil {
				return err
			}
			more, err := openIdle(ctx, n, 8, open)
			held = append(held, more...)
			if err != nil {
				fmt.Println("error", err)
				continue
			}
			fmt.Println("open")
		case len(f) == 1 && f[0] == "mem":
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Println("mem", ms.HeapInuse, ms.StackInuse)
		case len(f) == 2 && f[0] == "goroutines":
			result := "ok"
			if err := writeGoroutines(f[1]); err != nil {
				result = err.Error()
			}
			fmt.Println("goroutines", result)
		case len(f) == 2 && f[0] == "profile":
			// Heap and goroutine profiles of the streams held, to set
			// beside the listener's (bench -profiles).
			fmt.Println("profile", writeProfiles(f[1]))
		case len(f) == 1 && f[0] == "close":
			closeAll(held)
			for _, t := range held {
				<-t.done()
			}
			held = nil
			fmt.Println("closed")
		}
	}
	closeAll(held)
	return nil
}

// profileRate is the runtime.MemProfileRate of the listener and the exec
// holder when -profiles is given: every allocation of 4 KiB or more is
// recorded, so that the heap of 100 sessions can be attributed to sites.
// Left at the default (512 KiB) otherwise, as its cost would show in the
// throughput of figure 1.
const profileRate = 4096

// metricSamples reads a metric of the listener memorySamples times, half a
// second apart.
func (s *system) metricSamples(ctx context.Context, name string) ([]float64, error) {
	var out []float64
	for i := range memorySamples {
		if i > 0 {
			time.Sleep(500 * time.Millisecond)
		}
		v, err := s.serverMetric(ctx, name)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// serverProfiles returns the listener's goroutines and, when heap is true,
// its heap in use, by site. A profile that cannot be read is nil.
func (s *system) serverProfiles(ctx context.Context, heap bool) (goroutines, heapInUse map[string]float64) {
	if b, err := s.serverGet(ctx, "/debug/pprof/goroutine?debug=1"); err == nil {
		goroutines = goroutineSites(b)
	}
	if heap {
		if b, err := s.serverGet(ctx, "/debug/pprof/heap?gc=1&debug=1"); err == nil {
			heapInUse = heapSites(b)
		}
	}
	return goroutines, heapInUse
}

// holderGoroutines returns the exec holder's goroutines by site.
func holderGoroutines(h *testenv.Process, dir string) (map[string]float64, error) {
	file := filepath.Join(dir, "exec-holder-goroutines.txt")
	if err := h.Send("goroutines " + file); err != nil {
		return nil, err
	}
	if _, err := h.ReadLine("goroutines ", time.Minute); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return goroutineSites(b), nil
}

// writeProfiles writes this process's heap profile, after a collection,
// and its goroutines to prefix-heap.pprof and prefix-goroutines.txt, and
// returns "ok" or what failed.
func writeProfiles(prefix string) string {
	runtime.GC()
	for suffix, name := range map[string]string{"-heap.pprof": "heap", "-goroutines.txt": "goroutine"} {
		f, err := os.Create(prefix + suffix)
		if err != nil {
			return err.Error()
		}
		debug := 0
		if name == "goroutine" {
			debug = 1
		}
		err = pprof.Lookup(name).WriteTo(f, debug)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err.Error()
		}
	}
	return "ok"
}

func writeGoroutines(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	err = pprof.Lookup("goroutine").WriteTo(f, 1)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func signedKiB(b float64) string {
	if b < 0 {
		return "−" + fmtKiB(-b)
	}
	return "+" + fmtKiB(b)
}

// saveProfiles writes what the listener's open sessions hold, for a closer
// look with go tool pprof: <dir>/<prefix>-goroutines.txt and -heap.pprof.
func (s *system) saveProfiles(ctx context.Context, dir, prefix string) {
	for file, path := range map[string]string{prefix + "-goroutines.txt": "/debug/pprof/goroutine?debug=1", prefix + "-heap.pprof": "/debug/pprof/heap"} {
		if b, err := s.serverGet(ctx, path); err == nil {
			_ = os.WriteFile(filepath.Join(dir, file), b, 0o644)
		} else {
			step("  profile %s: %v", path, err)
		}
	}
}
