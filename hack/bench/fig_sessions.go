package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
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

// sessionFigures measures figure 3: the resident set of the server per idle
// session, against that of a process holding the same number of direct exec
// streams (the exec stream's own cost), and the server's goroutines after
// the sessions close.
func (b *bench) sessionFigures(ctx context.Context) error {
	s, o := b.sys, b.o
	counts := o.sessionCounts

	step("figure 3: exec streams alone, held by a process of their own, at %v", counts)
	holder, err := startChildWith(o.logDir, "exec-holder", true, o.self, "exec-holder",
		"-kubeconfig", s.serverKC, "-namespace", benchNamespace, "-pod", s.agents["echo"].pod)
	if err != nil {
		return err
	}
	defer holder.stop()
	if err := holder.expect("idle", 2*time.Minute); err != nil {
		return err
	}
	h0, err := settledRSS(holder.pid(), time.Second)
	if err != nil {
		return err
	}
	holderRSS := map[int]int64{}
	have := 0
	for _, n := range counts {
		if err := holder.send(fmt.Sprintf("open %d", n-have)); err != nil {
			return err
		}
		if err := holder.expect("open", 10*time.Minute); err != nil {
			return err
		}
		have = n
		if holderRSS[n], err = settledRSS(holder.pid(), 2*time.Second); err != nil {
			return err
		}
		step("  %d exec streams: holder RSS %s (+%s)", n, fmtMiB(float64(holderRSS[n])), fmtMiB(float64(holderRSS[n]-h0)))
	}
	_ = holder.send("close")
	_ = holder.expect("closed", 2*time.Minute)
	holder.stop()

	step("figure 3: idle share sessions at %v", counts)
	g0, err := s.serverMetric(ctx, "go_goroutines")
	if err != nil {
		return err
	}
	r0, err := settledRSS(s.server.pid(), time.Second)
	if err != nil {
		return err
	}
	serverRSS := map[int]int64{}
	var sessions []terminal
	defer func() { closeAll(sessions) }()
	openShare := func(ctx context.Context, out sink) (terminal, error) {
		return s.dialShare(ctx, s.agents["echo"].token, out)
	}
	started := time.Now()
	for _, n := range counts {
		more, err := openIdle(ctx, n-len(sessions), 8, openShare)
		sessions = append(sessions, more...)
		if err != nil {
			return fmt.Errorf("opening share sessions: %w", err)
		}
		if serverRSS[n], err = settledRSS(s.server.pid(), 2*time.Second); err != nil {
			return err
		}
		step("  %d share sessions (opened in %s): server RSS %s (+%s)", n, time.Since(started).Round(time.Millisecond),
			fmtMiB(float64(serverRSS[n])), fmtMiB(float64(serverRSS[n]-r0)))
	}
	gOpen, _ := s.serverMetric(ctx, "go_goroutines")
	if o.profiles != "" {
		// What the open sessions hold, for a closer look with go tool pprof.
		for file, path := range map[string]string{"sessions-goroutines.txt": "/debug/pprof/goroutine?debug=1", "sessions-heap.pprof": "/debug/pprof/heap"} {
			if b, err := s.serverGet(ctx, path); err == nil {
				_ = os.WriteFile(filepath.Join(o.profiles, file), b, 0o644)
			} else {
				step("  profile %s: %v", path, err)
			}
		}
	}
	closeAll(sessions)
	sessions = nil
	// The server ends each session once the page has gone; wait until none
	// is left, then for its goroutines to wind down.
	var active float64
	_ = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		active, _ = s.serverMetric(ctx, "kubeopencode_share_active_sessions")
		return active == 0, nil
	})
	var g1 float64
	_ = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		g1, _ = s.serverMetric(ctx, "go_goroutines")
		return g1 <= g0, nil
	})
	step("  goroutines: %.0f before, %.0f with %d sessions open, %.0f after they closed (active sessions %.0f)", g0, gOpen, counts[len(counts)-1], g1, active)

	for _, n := range counts {
		execPer := float64(holderRSS[n]-h0) / float64(n)
		sharePer := float64(serverRSS[n]-r0) / float64(n)
		beyond := sharePer - execPer
		b.r.add(row{fig: "3", measure: fmt.Sprintf("server RSS per idle session, %d sessions", n),
			baseline: "exec stream alone " + fmtKiB(execPer), ours: "share session " + fmtKiB(sharePer),
			ratio: fmtRatio(sharePer/execPer) + " (" + signedKiB(beyond) + ")", goal: "< 64 KiB beyond the exec stream", met: yesNo(beyond < 64*1024)})
	}
	b.r.add(row{fig: "3", measure: fmt.Sprintf("server goroutines after %d sessions closed", counts[len(counts)-1]),
		baseline: fmt.Sprintf("before %.0f", g0), ours: fmt.Sprintf("after %.0f (%.0f while open)", g1, gOpen),
		ratio: fmtRatio(g1 / g0), goal: "no growth", met: yesNo(g1 <= g0)})
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
		return startExec(ctx, ex, *namespace, *pod, echoCommand(), out), nil
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
