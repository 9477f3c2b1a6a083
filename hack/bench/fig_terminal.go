package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kubeopencode/share/internal/testenv"
)

// opener opens one session of a kind under test, its output going to out.
type opener func(ctx context.Context, out sink) (terminal, error)

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
	return roundTrips(t, e, n)
}

// echoWarmup round trips come before those measured; the echo command of a
// run ends after warm-up and measured round trips (see echoBytes).
const echoWarmup = 20

// echoRounds is how many sessions of each path figure 2 measures, in turn.
const echoRounds = 2

// echoBytes is the number of bytes one echo session types.
func (o *options) echoBytes() int { return echoWarmup + o.echoSamples/echoRounds }

// path is one way of reaching a terminal.
type path struct {
	name      string
	echo, cat opener
	// lossy paths may lose the end of the output (WeTTY does when the
	// command exits); their rate counts what came.
	lossy bool
	// procs are the processes that carry the path's bytes, by role, whose
	// CPU time is counted.
	procs map[string]int
}

// throughputResult is the median rate of a path and the CPU time each of its
// processes spent per MiB moved.
type throughputResult struct {
	rate     float64
	cpuPerMB map[string]float64 // milliseconds per MiB, by role
	// cpuRuns are the runs' own milliseconds per MiB, by role, in the order
	// they ran.
	cpuRuns  map[string][]float64
	cpuTotal float64
	// rates and cpuTotals are the runs' own, in the order they ran.
	rates, cpuTotals []float64
	// perMessage is the output a WebSocket data message carried in each
	// run, on average; empty for a path that is no WebSocket.
	perMessage []float64
}

// compareThroughput measures each path reps times, interleaved, and returns
// the median rate of each in bytes per second with the CPU time its
// processes spent per MiB, and the bytes a lossy path lost.
func (b *bench) compareThroughput(ctx context.Context, paths []path, size int64, reps int) (map[string]throughputResult, map[string][]int64, error) {
	rates := map[string][]float64{}
	cpu := map[string]map[string][]float64{}
	totals := map[string][]float64{}
	lost := map[string][]int64{}
	perMessage := map[string][]float64{}
	for rep := range reps {
		for _, p := range paths {
			before := map[string]float64{}
			for role, pid := range p.procs {
				before[role], _ = cpuSeconds(pid)
			}
			stopProfile := func() {}
			if rep == 0 && b.o.profiles != "" {
				stopProfile = b.profileCPU(ctx, p.name)
			}
			r, n, pm, err := throughputOnce(ctx, p.cat, size, p.lossy)
			stopProfile()
			if err != nil {
				return nil, nil, fmt.Errorf("%s throughput (run %d): %w", p.name, rep+1, err)
			}
			if cpu[p.name] == nil {
				cpu[p.name] = map[string][]float64{}
			}
			total := 0.0
			var parts []string
			for _, role := range slices.Sorted(maps.Keys(p.procs)) {
				after, _ := cpuSeconds(p.procs[role])
				ms := (after - before[role]) * 1000 / (float64(n) / (1 << 20))
				cpu[p.name][role] = append(cpu[p.name][role], ms)
				total += ms
				parts = append(parts, fmt.Sprintf("%s %.0f", role, ms))
			}
			totals[p.name] = append(totals[p.name], total)
			messages := ""
			if pm > 0 {
				perMessage[p.name] = append(perMessage[p.name], pm)
				messages = fmt.Sprintf(", %.1f KiB per data message", pm/1024)
			}
			step("  %s: %.1f MiB/s, %.0f ms CPU per MiB (%s)%s", p.name, r/(1<<20), total, strings.Join(parts, ", "), messages)
			rates[p.name] = append(rates[p.name], r)
			if n != size {
				lost[p.name] = append(lost[p.name], size-n)
			}
		}
	}
	out := map[string]throughputResult{}
	for k, v := range rates {
		res := throughputResult{rate: median(v), cpuPerMB: map[string]float64{}, cpuRuns: cpu[k], cpuTotal: median(totals[k]), rates: v, cpuTotals: totals[k], perMessage: perMessage[k]}
		for role, ms := range cpu[k] {
			res.cpuPerMB[role] = median(ms)
		}
		out[k] = res
	}
	return out, lost, nil
}

// compareEcho measures n round trips on each path, in rounds that alternate
// the paths so that the machine's noise falls on all of them alike.
// It returns the latencies of all round trips of each path and of each
// round.
func compareEcho(ctx context.Context, paths []path, n, rounds int) (map[string]latency, map[string][]latency, error) {
	samples := map[string][]time.Duration{}
	perRound := map[string][]latency{}
	for round := range rounds {
		for _, p := range paths {
			s, err := echoOnce(ctx, p.echo, n/rounds)
			if err != nil {
				return nil, nil, fmt.Errorf("%s echo (round %d): %w", p.name, round+1, err)
			}
			samples[p.name] = append(samples[p.name], s...)
			perRound[p.name] = append(perRound[p.name], summarize(s))
		}
	}
	out := map[string]latency{}
	for k, v := range samples {
		out[k] = summarize(v)
		step("  %s: %s", k, out[k])
	}
	return out, perRound, nil
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

func (b *bench) sharePath() path {
	s := b.sys
	return path{
		name:  "share",
		procs: map[string]int{"kube-apiserver": b.apiserverPid, "share server": s.server.Pid(), "benchmark process": os.Getpid()},
		echo: func(ctx context.Context, out sink) (terminal, error) {
			return s.dialShare(ctx, s.agents["echo"].token, out)
		},
		cat: func(ctx context.Context, out sink) (terminal, error) {
			return s.dialShare(ctx, s.agents["cat"].token, out)
		},
	}
}

func (b *bench) execPath() path {
	s := b.sys
	return path{
		name:  "direct exec",
		procs: map[string]int{"kube-apiserver": b.apiserverPid, "benchmark process": os.Getpid()},
		echo: func(ctx context.Context, out sink) (terminal, error) {
			return startExec(ctx, s.executor, benchNamespace, s.agents["echo"].pod, echoCommand(b.o.echoBytes()), out), nil
		},
		cat: func(ctx context.Context, out sink) (terminal, error) {
			return startExec(ctx, s.executor, benchNamespace, s.agents["cat"].pod, catCommand(b.o.payload), out), nil
		},
	}
}

func floorPath(f *floorServer) path {
	dial := func(route string) opener {
		return func(ctx context.Context, out sink) (terminal, error) {
			t, _, err := dialWS(ctx, "ws://"+f.addr+route, "http://"+f.addr, out)
			return t, err
		}
	}
	return path{name: "floor", echo: dial("/echo"), cat: dial("/cat"), procs: map[string]int{"benchmark process": os.Getpid()}}
}

// terminalFigures measures figures 1, 2 and 7.
func (b *bench) terminalFigures(ctx context.Context) error {
	o := b.o
	pid, err := findProcess("kube-apiserver", b.sys.cp.Dir())
	if err != nil {
		return err
	}
	b.apiserverPid = pid
	paths := []path{b.execPath(), b.sharePath()}
	floor, err := startFloor(o.payload, o.echoBytes())
	if err != nil {
		return err
	}
	defer floor.stop()
	paths = append(paths, floorPath(floor))
	wetty, stopWetty := b.startWetty(ctx)
	defer stopWetty()
	if wetty != nil {
		paths = append(paths, *wetty)
	}

	step("figures 1 and 7: throughput, cat of %s, %d runs each", fmtMiB(float64(o.payloadSize)), o.reps)
	results, lost, err := b.compareThroughput(ctx, paths, o.payloadSize, o.reps)
	if err != nil {
		return err
	}
	for _, p := range paths {
		if l := lost[p.name]; len(l) > 0 {
			b.r.note("%s LOST the last bytes of the output in %d of %d runs (%v bytes missing of %d): the session ended before all of the command's output was delivered", p.name, len(l), o.reps, l, o.payloadSize)
		}
	}
	step("figures 2 and 7: keystroke echo, %d round trips each", o.echoSamples)
	lats, rounds, err := compareEcho(ctx, paths, o.echoSamples, echoRounds)
	if err != nil {
		return err
	}

	mib := func(r float64) string { return fmt.Sprintf("%.1f MiB/s", r/(1<<20)) }
	size := fmtMiB(float64(o.payloadSize))
	rates := map[string]float64{}
	for k, v := range results {
		rates[k] = v.rate
	}
	ex, sh := rates["direct exec"], rates["share"]
	// The paths ran in turn, so each run of the share path has a direct
	// exec run of its own beside it: the ratio of each pair is the margin
	// a single run shows.
	var pairs []float64
	for i, r := range results["share"].rates {
		pairs = append(pairs, r/results["direct exec"].rates[i])
	}
	mibRate := func(r float64) string { return fmt.Sprintf("%.1f", r/(1<<20)) }
	b.r.add(row{fig: "1", measure: "terminal throughput, cat " + size + " (median of " + strconv.Itoa(o.reps) + " runs; ratio of each run to the direct exec run beside it)",
		baseline: "direct exec " + mib(ex), ours: "share " + mib(sh),
		ratio:  fmt.Sprintf("%.3f (runs %s)", sh/ex, fmtRange(pairs, func(r float64) string { return fmt.Sprintf("%.3f", r) })),
		spread: fmtSpread(results["direct exec"].rates, results["share"].rates, mibRate) + " MiB/s",
		goal:   "≥ 0.95", met: yesNo(sh/ex >= 0.95)})
	b.r.add(row{fig: "1", measure: "output delivered whole at the session's end",
		baseline: fmt.Sprintf("direct exec: %d of %d runs", o.reps-len(lost["direct exec"]), o.reps),
		ours:     fmt.Sprintf("share: %d of %d runs", o.reps-len(lost["share"]), o.reps),
		goal:     "every run", met: yesNo(len(lost["share"]) == 0)})
	// The direct exec's client is client-go's, whose messages the harness
	// does not see; the floor sends each read of its PTY as one message.
	if mf, ms := results["floor"].perMessage, results["share"].perMessage; len(mf) > 0 && len(ms) > 0 {
		kib := func(b float64) string { return fmt.Sprintf("%.1f", b/1024) }
		b.r.add(row{fig: "1", measure: "output per WebSocket data message to the page (median of runs; the floor sends each PTY read as it comes)",
			baseline: "floor " + kib(median(mf)) + " KiB", ours: "share " + kib(median(ms)) + " KiB", ratio: fmtRatio(median(ms) / median(mf)),
			spread: fmtSpread(mf, ms, kib) + " KiB"})
	}
	ce, cs := results["direct exec"].cpuTotal, results["share"].cpuTotal
	b.r.add(row{fig: "1", measure: "CPU time per MiB moved, all processes of the path (median)",
		baseline: fmt.Sprintf("direct exec %.0f ms", ce), ours: fmt.Sprintf("share %.0f ms", cs), ratio: fmtRatio(cs / ce),
		spread: fmtSpread(results["direct exec"].cpuTotals, results["share"].cpuTotals, func(ms float64) string { return fmt.Sprintf("%.0f", ms) }) + " ms"})
	// kube-apiserver proxies the same stream on both paths, so its CPU per
	// MiB is a yardstick of the machine's speed in the run: the listener's
	// cost against it changes with the listener, not with the machine.
	if share := results["share"].cpuRuns; len(share["share server"]) > 0 {
		var perRun []float64
		for i, ms := range share["share server"] {
			perRun = append(perRun, ms/share["kube-apiserver"][i])
		}
		msSpread := func(ms float64) string { return fmt.Sprintf("%.1f", ms) }
		b.r.add(row{fig: "1", measure: "CPU time per MiB of the share listener, against kube-apiserver's in the same run (median of the runs' own ratios)",
			baseline: fmt.Sprintf("kube-apiserver %.1f ms", results["share"].cpuPerMB["kube-apiserver"]),
			ours:     fmt.Sprintf("share listener %.1f ms", results["share"].cpuPerMB["share server"]),
			ratio:    fmt.Sprintf("%.2f (runs %s)", median(perRun), fmtRange(perRun, func(r float64) string { return fmt.Sprintf("%.2f", r) })),
			spread:   fmtSpread(share["kube-apiserver"], share["share server"], msSpread) + " ms"})
	}
	for _, p := range paths {
		r := results[p.name]
		var parts []string
		for _, role := range slices.Sorted(maps.Keys(r.cpuPerMB)) {
			parts = append(parts, fmt.Sprintf("%s %.0f", role, r.cpuPerMB[role]))
		}
		b.r.note("CPU ms per MiB, %s: %s (medians of %d runs)", p.name, strings.Join(parts, ", "), o.reps)
	}
	le, ls := lats["direct exec"], lats["share"]
	ms := func(v float64) string { return fmtMs(v) }
	b.r.add(row{fig: "2", measure: fmt.Sprintf("keystroke echo p50 (%d round trips; min–max of the %d rounds' own)", le.n, echoRounds),
		baseline: "direct exec " + fmtMs(le.p50) + " ms", ours: "share " + fmtMs(ls.p50) + " ms",
		ratio:  fmtRatio(ls.p50/le.p50) + " (" + fmtDelta(ls.p50-le.p50) + ")",
		spread: fmtSpread(p50s(rounds["direct exec"]), p50s(rounds["share"]), ms) + " ms"})
	b.r.add(row{fig: "2", measure: fmt.Sprintf("keystroke echo p99 (%d round trips; min–max of the %d rounds' own)", le.n, echoRounds),
		baseline: "direct exec " + fmtMs(le.p99) + " ms", ours: "share " + fmtMs(ls.p99) + " ms",
		ratio:  fmtRatio(ls.p99/le.p99) + " (" + fmtDelta(ls.p99-le.p99) + ")",
		spread: fmtSpread(p99s(rounds["direct exec"]), p99s(rounds["share"]), ms) + " ms",
		goal:   "share hop adds < 1 ms", met: yesNo(ls.p99-le.p99 < 1)})

	rateSpread := func(baseline, ours string) string {
		return fmtSpread(results[baseline].rates, results[ours].rates, mibRate) + " MiB/s"
	}
	p99Spread := func(baseline string) string {
		return "p99 " + fmtSpread(p99s(rounds[baseline]), p99s(rounds["share"]), ms) + " ms"
	}
	fl := rates["floor"]
	b.r.add(row{fig: "7", measure: "throughput vs the floor (WebSocket→PTY in-process, no Kubernetes)",
		baseline: "floor " + mib(fl), ours: "share " + mib(sh), ratio: fmtRatio(sh / fl), spread: rateSpread("floor", "share")})
	b.r.add(row{fig: "7", measure: "throughput of the Kubernetes exec path vs the floor",
		baseline: "floor " + mib(fl), ours: "direct exec " + mib(ex), ratio: fmtRatio(ex / fl), spread: rateSpread("floor", "direct exec")})
	lf := lats["floor"]
	b.r.add(row{fig: "7", measure: "echo p50 / p99 vs the floor",
		baseline: "floor " + fmtMs(lf.p50) + " / " + fmtMs(lf.p99) + " ms", ours: "share " + fmtMs(ls.p50) + " / " + fmtMs(ls.p99) + " ms",
		ratio: fmtRatio(ls.p50/lf.p50) + " / " + fmtRatio(ls.p99/lf.p99), spread: p99Spread("floor")})
	if wetty != nil {
		wt, lw := rates["WeTTY"], lats["WeTTY"]
		b.r.add(row{fig: "7", measure: "throughput vs WeTTY " + b.wettyVersion + " (local shell)",
			baseline: "WeTTY " + mib(wt), ours: "share " + mib(sh), ratio: fmtRatio(sh / wt), spread: rateSpread("WeTTY", "share")})
		b.r.add(row{fig: "7", measure: "echo p50 / p99 vs WeTTY",
			baseline: "WeTTY " + fmtMs(lw.p50) + " / " + fmtMs(lw.p99) + " ms", ours: "share " + fmtMs(ls.p50) + " / " + fmtMs(ls.p99) + " ms",
			ratio: fmtRatio(ls.p50/lw.p50) + " / " + fmtRatio(ls.p99/lw.p99), spread: p99Spread("WeTTY")})
	}
	return nil
}

// startWetty starts two WeTTY servers on loopback, one running the echo
// command and one the payload command, when WeTTY is installed. It returns
// nil, and notes why, when it is not.
func (b *bench) startWetty(ctx context.Context) (*path, func()) {
	nothing := func() {}
	if b.o.wettyMain == "" {
		b.r.note("WeTTY was not measured: no -wetty given (hack/bench.sh installs it with npm when it can)")
		return nil, nothing
	}
	node, err := exec.LookPath("node")
	if err != nil {
		b.r.note("WeTTY was not measured: no node on PATH")
		return nil, nothing
	}
	if v, err := exec.Command(node, "--version").Output(); err == nil {
		b.nodeVersion = strings.TrimSpace(string(v))
	}
	start := func(name string, command []string) (string, *testenv.Process, error) {
		port, err := testenv.FreePort()
		if err != nil {
			return "", nil, err
		}
		c, err := testenv.StartProcess(b.o.logDir, name, node, b.o.wettyMain, "--host", "127.0.0.1", "--port", strconv.Itoa(port),
			"--command", shellJoin(command), "--log-level", "warn")
		if err != nil {
			return "", nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) && !c.Exited() {
			if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				conn.Close()
				return addr, c, nil
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.Stop()
		return "", nil, fmt.Errorf("WeTTY did not listen on %s within 30s (log %s)", addr, c.LogPath())
	}
	echoAddr, echoChild, err := start("wetty-echo", echoCommand(b.o.echoBytes()))
	if err != nil {
		b.r.note("WeTTY was not measured: %v", err)
		return nil, nothing
	}
	catAddr, catChild, err := start("wetty-cat", catCommand(b.o.payload))
	if err != nil {
		echoChild.Stop()
		b.r.note("WeTTY was not measured: %v", err)
		return nil, nothing
	}
	dial := func(addr string) opener {
		return func(ctx context.Context, out sink) (terminal, error) { return dialWetty(ctx, addr, out) }
	}
	p := &path{name: "WeTTY", echo: dial(echoAddr), cat: dial(catAddr), lossy: true,
		procs: map[string]int{"WeTTY (node)": catChild.Pid(), "benchmark process": os.Getpid()}}
	// One session first: a WeTTY that starts but cannot spawn a terminal
	// (node-pty not built for this Node) is reported, not measured.
	if _, err := echoOnce(ctx, p.echo, 5); err != nil {
		echoChild.Stop()
		catChild.Stop()
		b.r.note("WeTTY was not measured: it started but a session failed: %v (log %s)", err, echoChild.LogPath())
		return nil, nothing
	}
	b.r.note("WeTTY %s on Node %s, two servers on loopback, each with --command running the same command as the other paths", b.wettyVersion, b.nodeVersion)
	return p, func() { echoChild.Stop(); catChild.Stop() }
}

// shellJoin quotes a command for a shell.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// profileCPU saves CPU profiles of the first throughput run of a path, for a
// look at where its time per MiB goes: the benchmark process's own (the
// stand-in kubelet and the client) and, on the share path, the listener's,
// as <profiles>/throughput-<path>-{bench,server}.pprof. It returns the
// function that ends them.
func (b *bench) profileCPU(ctx context.Context, name string) func() {
	base := filepath.Join(b.o.profiles, "throughput-"+strings.ReplaceAll(name, " ", "-"))
	f, err := os.Create(base + "-bench.pprof")
	if err != nil {
		step("  profile: %v", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		step("  profile: %v", err)
		return func() {}
	}
	server := make(chan struct{})
	if name == "share" {
		go func() {
			defer close(server)
			// The run takes a second or two on this machine; a longer
			// profile only adds the idle tail.
			if p, err := b.sys.serverGet(ctx, "/debug/pprof/profile?seconds=2"); err == nil {
				_ = os.WriteFile(base+"-server.pprof", p, 0o644)
			} else {
				step("  profile of the listener: %v", err)
			}
		}()
	} else {
		close(server)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		<-server
	}
}
