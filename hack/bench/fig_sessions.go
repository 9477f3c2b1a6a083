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
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeopencode/share/pkg/sharehttp"
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
func openIdle(ctx context.Context, n, parallel int, open opener) ([]terminal, error) {
	out := make([]terminal, n)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i := range n {
		g.Go(func() error {
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

// memory is a process's memory at one point: its resident set and its live
// memory (heap in use and stacks right after a garbage collection).
type memory struct{ rss, live float64 }

func (m memory) minus(o memory) memory { return memory{m.rss - o.rss, m.live - o.live} }

func (m memory) per(n int) memory { return memory{m.rss / float64(n), m.live / float64(n)} }

func (m memory) String() string { return "RSS " + fmtKiB(m.rss) + ", live " + fmtKiB(m.live) }

// serverMemory samples the listener process.
func (s *system) serverMemory(ctx context.Context) (memory, error) {
	live, err := s.serverLive(ctx)
	if err != nil {
		return memory{}, err
	}
	rss, err := settledRSS(s.server.pid(), time.Second)
	return memory{rss: float64(rss), live: live}, err
}

// holderMemory samples the exec holder.
func holderMemory(h *child) (memory, error) {
	if err := h.send("mem"); err != nil {
		return memory{}, err
	}
	line, err := h.readLine("mem ", time.Minute)
	if err != nil {
		return memory{}, err
	}
	live, err := strconv.ParseFloat(strings.TrimPrefix(line, "mem "), 64)
	if err != nil {
		return memory{}, err
	}
	rss, err := settledRSS(h.pid(), time.Second)
	return memory{rss: float64(rss), live: live}, err
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
	holder, err := startChildWith(o.logDir, "exec-holder", true, o.self, "exec-holder",
		"-kubeconfig", s.serverKC, "-namespace", benchNamespace, "-pod", s.agents["echo"].pod)
	if err != nil {
		return err
	}
	defer holder.stop()
	if err := holder.expect("idle", 2*time.Minute); err != nil {
		return err
	}
	h0, err := holderMemory(holder)
	if err != nil {
		return err
	}
	execPer := map[int]memory{}
	have := 0
	for _, n := range holderCounts {
		if err := holder.send(fmt.Sprintf("open %d", n-have)); err != nil {
			return err
		}
		if err := holder.expect("open", 10*time.Minute); err != nil {
			return err
		}
		have = n
		m, err := holderMemory(holder)
		if err != nil {
			return err
		}
		execPer[n] = m.minus(h0).per(n)
		step("  %d exec streams: %s per stream", n, execPer[n])
	}
	_ = holder.send("close")
	_ = holder.expect("closed", 2*time.Minute)
	holder.stop()

	g0, err := s.serverMetric(ctx, "go_goroutines")
	if err != nil {
		return err
	}
	m0, err := s.serverMemory(ctx)
	if err != nil {
		return err
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
			ratio: fmtRatio(per.live/base.live) + " (" + signedKiB(per.live-base.live) + " live)",
			goal:  "< 64 KiB beyond the exec stream", met: yesNo(per.live-base.live < 64*1024)})
		waitClosed()
		// A page that goes leaves its session waiting for it to come back;
		// wait until the listener has let them go.
		_ = wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
			g, _ := s.serverMetric(ctx, "go_goroutines")
			return g <= g0, nil
		})
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
	step("  goroutines: %.0f before, %.0f with %d viewers, %.0f after", g0, gOpen, counts[len(counts)-1], g1)
	for _, n := range counts {
		per, base := viewerPer[n], execPer[n]
		b.r.add(row{fig: "3", measure: fmt.Sprintf("listener memory per idle viewer, %d viewers of one session", n),
			baseline: "exec stream alone: " + base.String(), ours: per.String(),
			ratio: fmtRatio(per.live / base.live), goal: "< 64 KiB (a viewer has no exec stream)", met: yesNo(per.live < 64*1024)})
	}
	b.r.add(row{fig: "3", measure: "listener goroutines after every session and viewer closed",
		baseline: fmt.Sprintf("before %.0f", g0), ours: fmt.Sprintf("after %.0f (%.0f with %d viewers)", g1, gOpen, counts[len(counts)-1]),
		ratio: fmtRatio(g1 / g0), goal: "no growth", met: yesNo(g1 <= g0)})
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
	ex, err := sharehttp.NewPodExecutor(cfg)
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
			fmt.Println("mem", ms.HeapInuse+ms.StackInuse)
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
