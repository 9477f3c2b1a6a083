package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/util/wait"
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

// liveSpread is the min–max cell of a memory row: live memory, the measure
// the goals are judged on.
func liveSpread(baseline, ours memory) string {
	return "live " + fmtSpread(baseline.lives, ours.lives, fmtKiB)
}

// execBaseline is the exec stream's own cost, from the exec holder: its
// memory per stream at each count, and the goroutines a stream adds.
type execBaseline struct {
	per   map[int]memory
	sites []siteDelta
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
	base, err := b.measureExecStreams()
	if err != nil {
		return err
	}
	// The largest of a few samples: a goroutine of the listener's own
	// clients that comes and goes must not count as growth later.
	g0s, err := s.metricSamples(ctx, "go_goroutines")
	if err != nil {
		return err
	}
	g0 := slices.Max(g0s)
	if o.profiles != "" {
		s.saveProfiles(ctx, o.profiles, "before")
	}
	if len(s.idleTokens) > 0 {
		if err := b.measureSeparateSessions(ctx, base, g0); err != nil {
			return err
		}
	}
	viewerPer, gOpen, err := b.measureViewers(ctx)
	if err != nil {
		return err
	}
	g1s, err := s.goroutinesBack(ctx, g0)
	if err != nil {
		return err
	}
	g1 := median(g1s)
	if o.profiles != "" {
		s.saveProfiles(ctx, o.profiles, "after")
	}
	last := o.sessionCounts[len(o.sessionCounts)-1]
	step("  goroutines: %.0f before, %.0f with %d viewers, %.0f after", g0, gOpen, last, g1)
	for _, n := range o.sessionCounts {
		per, base := viewerPer[n], base.per[n]
		b.r.add(row{fig: "3", measure: fmt.Sprintf("listener memory per idle viewer, %d viewers of one session", n),
			baseline: "exec stream alone: " + base.String(), ours: per.String(),
			ratio: fmtRatio(per.live / base.live), spread: liveSpread(base, per),
			goal: "< 64 KiB (a viewer has no exec stream)", met: yesNo(per.live < 64*1024)})
	}
	b.r.add(row{fig: "3", measure: "listener goroutines after every session and viewer closed",
		baseline: fmt.Sprintf("before %.0f", g0), ours: fmt.Sprintf("after %.0f (%.0f with %d viewers)", g1, gOpen, last),
		ratio: fmtRatio(g1 / g0), spread: fmtSpread(g0s, g1s, func(f float64) string { return strconv.FormatFloat(f, 'f', 0, 64) }),
		goal: "no growth", met: yesNo(g1 <= g0)})
	b.r.note("figure 3: \"live\" is heap in use plus goroutine stacks right after a forced garbage collection (the listener's /debug/pprof/heap?gc=1 and /metrics; the holder's runtime.MemStats); the goals are judged on it, the resident set moving with the collector's timing by ±20 KiB per session at 100")
	return nil
}

// holderCounts are the stream counts the exec holder is measured at: those
// of the viewers, and that of the separate sessions.
func (o *options) holderCounts() []int {
	counts := slices.Clone(o.sessionCounts)
	if o.separateSessions > 0 && !slices.Contains(counts, o.separateSessions) {
		counts = append(counts, o.separateSessions)
		slices.Sort(counts)
	}
	return counts
}

// measureExecStreams measures the baseline of figure 3 with an exec holder
// at each count, and the goroutines a stream adds at the count of the
// separate sessions.
func (b *bench) measureExecStreams() (execBaseline, error) {
	s, o := b.sys, b.o
	counts := o.holderCounts()
	step("figure 3: exec streams alone, held by a process of their own, at %v", counts)
	h, err := startExecHolder(o, s.server.Kubeconfig, benchNamespace, s.agents["echo"].pod)
	if err != nil {
		return execBaseline{}, err
	}
	defer h.stop()
	m0, err := h.memory()
	if err != nil {
		return execBaseline{}, err
	}
	g0, err := h.goroutines()
	if err != nil {
		return execBaseline{}, err
	}
	if o.profiles != "" {
		h.saveProfiles(o.profiles, "holder-before")
	}
	base := execBaseline{per: map[int]memory{}}
	have := 0
	for _, n := range counts {
		if err := h.openTo(have, n); err != nil {
			return base, err
		}
		have = n
		m, err := h.memory()
		if err != nil {
			return base, err
		}
		base.per[n] = m.minus(m0).per(n)
		step("  %d exec streams: %s per stream", n, base.per[n])
		if n != o.separateSessions {
			continue
		}
		g, err := h.goroutines()
		if err != nil {
			return base, err
		}
		base.sites = perSession(g0, g, n, 0.5)
		if o.profiles != "" {
			h.saveProfiles(o.profiles, "holder")
		}
	}
	return base, nil
}

// measureSeparateSessions opens one session on each of the idle links, each
// with its own exec stream, and reports the listener's memory and
// goroutines per session; it waits until the sessions are gone and the
// goroutines back to g0.
func (b *bench) measureSeparateSessions(ctx context.Context, base execBaseline, g0 float64) error {
	s, o := b.sys, b.o
	n := len(s.idleTokens)
	m0, err := s.serverMemory(ctx)
	if err != nil {
		return err
	}
	goroutines0, heap0 := s.serverProfiles(ctx, o.profiles != "")
	if o.profiles != "" {
		s.saveProfiles(ctx, o.profiles, "sessions-before")
	}
	step("figure 3: %d separate idle sessions, one per link", n)
	tokens := make(chan string, n)
	for _, t := range s.idleTokens {
		tokens <- t
	}
	sessions, err := openIdle(ctx, n, 8, func(ctx context.Context, out sink) (terminal, error) {
		return s.dialShare(ctx, <-tokens, out)
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
	per, stream := m.minus(m0).per(n), base.per[n]
	step("  %d sessions: %s per session (exec stream alone %s)", n, per, stream)
	b.r.add(row{fig: "3", measure: fmt.Sprintf("listener memory per idle session, %d sessions (each its own link and exec stream)", n),
		baseline: "exec stream alone: " + stream.String(), ours: per.String(),
		ratio:  fmtRatio(per.live/stream.live) + " (" + signedKiB(per.live-stream.live) + " live)",
		spread: liveSpread(stream, per),
		goal:   "< 64 KiB beyond the exec stream", met: yesNo(per.live-stream.live < 64*1024)})
	count := func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
	b.r.note("figure 3, goroutines per separate session: listener %s; exec stream alone %s",
		fmtSites(perSession(goroutines0, goroutines1, n, 0.5), 16, count), fmtSites(base.sites, 16, count))
	if heap0 != nil && heap1 != nil {
		b.r.note("figure 3, listener heap per separate session by allocation site (run with -profiles, at memprofilerate %d): %s",
			profileRate, fmtSites(perSession(heap0, heap1, n, 512), 12, fmtKiB))
	}
	s.waitSessionsClosed(ctx)
	// A page that goes leaves its session waiting for it to come back;
	// wait until the listener has let them go.
	closed := time.Now()
	g := s.waitGoroutines(ctx, g0)
	step("  %d sessions closed: %.0f goroutines after %s (%.0f before)", n, g, time.Since(closed).Round(time.Second), g0)
	return nil
}

// measureViewers opens pages on the one session of the lobby link, up to
// each of the viewer counts, and returns the listener's memory per viewer
// at each count and its goroutines with them all open; it closes them.
func (b *bench) measureViewers(ctx context.Context) (map[int]memory, float64, error) {
	s, o := b.sys, b.o
	step("figure 3: idle viewers of one session at %v", o.sessionCounts)
	m0, err := s.serverMemory(ctx)
	if err != nil {
		return nil, 0, err
	}
	var viewers []terminal
	defer func() { closeAll(viewers) }()
	openViewer := func(ctx context.Context, out sink) (terminal, error) {
		return s.dialShare(ctx, s.agents["lobby"].token, out)
	}
	started := time.Now()
	per := map[int]memory{}
	for _, n := range o.sessionCounts {
		more, err := openIdle(ctx, n-len(viewers), 8, openViewer)
		viewers = append(viewers, more...)
		if err != nil {
			return nil, 0, fmt.Errorf("opening viewers: %w", err)
		}
		m, err := s.serverMemory(ctx)
		if err != nil {
			return nil, 0, err
		}
		per[n] = m.minus(m0).per(n)
		step("  %d viewers (opened in %s): %s per viewer", n, time.Since(started).Round(time.Millisecond), per[n])
	}
	gOpen, _ := s.serverMetric(ctx, "go_goroutines")
	if o.profiles != "" {
		s.saveProfiles(ctx, o.profiles, "viewers")
	}
	closeAll(viewers)
	viewers = nil
	s.waitSessionsClosed(ctx)
	return per, gOpen, nil
}

// waitSessionsClosed waits, up to a minute, until the listener reports no
// active session.
func (s *system) waitSessionsClosed(ctx context.Context) {
	_ = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		active, _ := s.serverMetric(ctx, "kubeopencode_share_active_sessions")
		return active == 0, nil
	})
}

// waitGoroutines waits, up to a minute, until the listener's goroutines
// are back to g0 at most, and returns the last count.
func (s *system) waitGoroutines(ctx context.Context, g0 float64) float64 {
	var g float64
	_ = wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		g, _ = s.serverMetric(ctx, "go_goroutines")
		return g <= g0, nil
	})
	return g
}

// goroutinesBack waits until the listener's goroutines are back to g0 once
// the last session has lingered for its pages and ended, then takes a few
// more samples after the exec streams' last goroutines had time to go:
// nothing must come back later. The median of them all is judged, so that
// a goroutine that comes and goes (a connection of the listener's own
// clients) is not taken for a leak; a leak stays in every sample.
func (s *system) goroutinesBack(ctx context.Context, g0 float64) ([]float64, error) {
	g := s.waitGoroutines(ctx, g0)
	time.Sleep(execHeartbeatLinger)
	gs, err := s.metricSamples(ctx, "go_goroutines")
	if err != nil {
		return nil, err
	}
	return append(gs, g), nil
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
