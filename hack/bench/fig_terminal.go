package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// terminalFigures measures figures 1 (throughput), 2 (keystroke echo) and 7
// (the peers): the share path against a direct exec, the in-process floor
// and WeTTY, all serving the same commands.
func (b *bench) terminalFigures(ctx context.Context) error {
	o := b.o
	pid, err := findProcess("kube-apiserver", b.sys.cp.Dir())
	if err != nil {
		return err
	}
	b.apiserverPid = pid
	paths, stop, err := b.terminalPaths(ctx)
	if err != nil {
		return err
	}
	defer stop()

	step("figures 1 and 7: throughput, cat of %s, %d runs each", fmtMiB(float64(o.payloadSize)), o.reps)
	throughput, err := b.compareThroughput(ctx, paths)
	if err != nil {
		return err
	}
	step("figures 2 and 7: keystroke echo, %d rounds of %d round trips each", o.echoRounds, o.echoPerRound())
	echo, err := b.compareEcho(ctx, paths)
	if err != nil {
		return err
	}
	b.reportThroughput(paths, throughput)
	b.reportEcho(echo)
	b.reportPeers(throughput, echo)
	return nil
}

func mibPerSecond(r float64) string { return fmt.Sprintf("%.1f MiB/s", r/(1<<20)) }

// mibRate is a rate in MiB/s without its unit, for the min–max cells.
func mibRate(r float64) string { return fmt.Sprintf("%.1f", r/(1<<20)) }

// reportThroughput adds the rows of figure 1 and its notes.
func (b *bench) reportThroughput(paths []path, res map[string]*throughputResult) {
	o := b.o
	ex, sh := res[pathExec], res[pathShare]
	lost := map[string][]int64{}
	for _, p := range paths {
		if l := res[p.name].lost(o.payloadSize); len(l) > 0 {
			lost[p.name] = l
			b.r.note("%s LOST the last bytes of the output in %d of %d runs (%v bytes missing of %d): the session ended before all of the command's output was delivered", p.name, len(l), o.reps, l, o.payloadSize)
		}
	}
	// The paths ran in turn, so each run of the share path has a direct
	// exec run of its own beside it: the ratio of each pair is the margin
	// a single run shows.
	b.r.add(pairedThroughputRow("1", "terminal throughput, cat "+fmtMiB(float64(o.payloadSize))+" (median of "+strconv.Itoa(o.reps)+" runs; ratio of each run to the direct exec run beside it)",
		"direct exec", ex, "share", sh, 0.95))
	b.r.add(row{fig: "1", measure: "output delivered whole at the session's end",
		baseline: fmt.Sprintf("direct exec: %d of %d runs", o.reps-len(lost[pathExec]), o.reps),
		ours:     fmt.Sprintf("share: %d of %d runs", o.reps-len(lost[pathShare]), o.reps),
		goal:     "every run", met: yesNo(len(lost[pathShare]) == 0)})
	// The direct exec's client is client-go's, whose messages the harness
	// does not see; the floor sends each read of its PTY as one message.
	if mf, ms := res[pathFloor].perMessage(), sh.perMessage(); len(mf) > 0 && len(ms) > 0 {
		kib := func(b float64) string { return fmt.Sprintf("%.1f", b/1024) }
		b.r.add(row{fig: "1", measure: "output per WebSocket data message to the page (median of runs; the floor sends each PTY read as it comes)",
			baseline: "floor " + kib(median(mf)) + " KiB", ours: "share " + kib(median(ms)) + " KiB", ratio: fmtRatio(median(ms) / median(mf)),
			spread: fmtSpread(mf, ms, kib) + " KiB"})
	}
	b.r.add(row{fig: "1", measure: "CPU time per MiB moved, all processes of the path (median)",
		baseline: fmt.Sprintf("direct exec %.0f ms", ex.cpuTotal()), ours: fmt.Sprintf("share %.0f ms", sh.cpuTotal()), ratio: fmtRatio(sh.cpuTotal() / ex.cpuTotal()),
		spread: fmtSpread(ex.cpuTotals(), sh.cpuTotals(), func(ms float64) string { return fmt.Sprintf("%.0f", ms) }) + " ms"})
	b.reportListenerCPU(sh)
	for _, p := range paths {
		r := res[p.name]
		var parts []string
		for _, role := range r.roles() {
			parts = append(parts, fmt.Sprintf("%s %.0f", role, r.cpuPerMB(role)))
		}
		b.r.note("CPU ms per MiB, %s: %s (medians of %d runs)", p.name, strings.Join(parts, ", "), o.reps)
	}
}

// reportListenerCPU adds the row of the listener's CPU time per MiB against
// kube-apiserver's. kube-apiserver proxies the same stream on both paths,
// so its CPU per MiB is a yardstick of the machine's speed in the run: the
// listener's cost against it changes with the listener, not with the
// machine.
func (b *bench) reportListenerCPU(sh *throughputResult) {
	const listener, apiserver = "share server", "kube-apiserver"
	ours, theirs := sh.cpuRuns(listener), sh.cpuRuns(apiserver)
	if len(ours) == 0 {
		return
	}
	var perRun []float64
	for i, ms := range ours {
		perRun = append(perRun, ms/theirs[i])
	}
	msSpread := func(ms float64) string { return fmt.Sprintf("%.1f", ms) }
	b.r.add(row{fig: "1", measure: "CPU time per MiB of the share listener, against kube-apiserver's in the same run (median of the runs' own ratios)",
		baseline: fmt.Sprintf("kube-apiserver %.1f ms", sh.cpuPerMB(apiserver)),
		ours:     fmt.Sprintf("share listener %.1f ms", sh.cpuPerMB(listener)),
		ratio:    fmt.Sprintf("%.2f (runs %s)", median(perRun), fmtRange(perRun, func(r float64) string { return fmt.Sprintf("%.2f", r) })),
		spread:   fmtSpread(theirs, ours, msSpread) + " ms"})
}

// reportEcho adds the rows of figure 2. Both are medians of the rounds; the
// goal is judged on the median of the rounds' own added p99, so that one
// slow round cannot decide it, and the rounds' range is beside it.
func (b *bench) reportEcho(echo map[string]echoResult) {
	o := b.o
	le, ls := echo[pathExec], echo[pathShare]
	what := fmt.Sprintf("median of %d rounds of %d round trips; min–max of the rounds' own", o.echoRounds, o.echoPerRound())
	b.r.add(row{fig: "2", measure: "keystroke echo p50 (" + what + ")",
		baseline: "direct exec " + fmtMs(le.p50()) + " ms", ours: "share " + fmtMs(ls.p50()) + " ms",
		ratio:  fmtRatio(ls.p50()/le.p50()) + " (" + fmtDelta(ls.p50()-le.p50()) + ")",
		spread: fmtSpread(p50s(le.rounds), p50s(ls.rounds), fmtMs) + " ms"})
	b.r.add(addedP99Row("2", "keystroke echo p99 ("+what+"; the share hop's added p99 is the median of each round's share − direct exec)",
		"direct exec", le, "share", ls, "share hop adds < 1 ms"))
}

// pairedThroughputRow is a row of ours against a baseline whose runs
// alternated with ours: the ratio of the medians, met at least min, with
// the ratio of each run to the one beside it.
func pairedThroughputRow(fig, measure, baseName string, base *throughputResult, oursName string, ours *throughputResult, min float64) row {
	var pairs []float64
	for i, r := range ours.rates() {
		pairs = append(pairs, r/base.rates()[i])
	}
	ratio := ours.rate() / base.rate()
	return row{fig: fig, measure: measure,
		baseline: baseName + " " + mibPerSecond(base.rate()), ours: oursName + " " + mibPerSecond(ours.rate()),
		ratio:  fmt.Sprintf("%.3f (runs %s)", ratio, fmtRange(pairs, func(r float64) string { return fmt.Sprintf("%.3f", r) })),
		spread: fmtSpread(base.rates(), ours.rates(), mibRate) + " MiB/s",
		goal:   fmt.Sprintf("≥ %.2g", min), met: yesNo(ratio >= min)}
}

// addedP99Row is a row of ours against a baseline measured in the same
// echo rounds: the median of the rounds' p99, and the median of what ours
// added to the baseline round by round, which the goal, when there is one,
// wants under 1 ms.
func addedP99Row(fig, measure, baseName string, base echoResult, oursName string, ours echoResult, goal string) row {
	added := ours.addedP99(base)
	r := row{fig: fig, measure: measure,
		baseline: baseName + " " + fmtMs(base.p99()) + " ms", ours: oursName + " " + fmtMs(ours.p99()) + " ms",
		ratio:  fmtRatio(ours.p99()/base.p99()) + " (added " + fmtDelta(median(added)) + "; rounds " + fmtDeltaRange(added) + ")",
		spread: fmtSpread(p99s(base.rounds), p99s(ours.rounds), fmtMs) + " ms",
		goal:   "—", met: "—"}
	if goal != "" {
		r.goal, r.met = goal, yesNo(median(added) < 1)
	}
	return r
}

// reportPeers adds the rows of figure 7: the share path against the floor
// and WeTTY, when it was measured.
func (b *bench) reportPeers(res map[string]*throughputResult, echo map[string]echoResult) {
	sh, ls := res[pathShare], echo[pathShare]
	rateSpread := func(baseline string) string {
		return fmtSpread(res[baseline].rates(), sh.rates(), mibRate) + " MiB/s"
	}
	p99Spread := func(baseline string) string {
		return "p99 " + fmtSpread(p99s(echo[baseline].rounds), p99s(ls.rounds), fmtMs) + " ms"
	}
	echoCell := func(name string, e echoResult) string {
		return name + " " + fmtMs(e.p50()) + " / " + fmtMs(e.p99()) + " ms"
	}
	echoRatio := func(e echoResult) string {
		return fmtRatio(ls.p50()/e.p50()) + " / " + fmtRatio(ls.p99()/e.p99())
	}
	fl, lf := res[pathFloor], echo[pathFloor]
	b.r.add(row{fig: "7", measure: "throughput vs the floor (WebSocket→PTY in-process, no Kubernetes)",
		baseline: "floor " + mibPerSecond(fl.rate()), ours: "share " + mibPerSecond(sh.rate()), ratio: fmtRatio(sh.rate() / fl.rate()), spread: rateSpread(pathFloor)})
	b.r.add(row{fig: "7", measure: "throughput of the Kubernetes exec path vs the floor",
		baseline: "floor " + mibPerSecond(fl.rate()), ours: "direct exec " + mibPerSecond(res[pathExec].rate()), ratio: fmtRatio(res[pathExec].rate() / fl.rate()),
		spread: fmtSpread(fl.rates(), res[pathExec].rates(), mibRate) + " MiB/s"})
	b.r.add(row{fig: "7", measure: "echo p50 / p99 vs the floor",
		baseline: echoCell("floor", lf), ours: echoCell("share", ls), ratio: echoRatio(lf), spread: p99Spread(pathFloor)})
	wt, ok := res[pathWetty]
	if !ok {
		return
	}
	b.r.add(row{fig: "7", measure: "throughput vs WeTTY " + b.wettyVersion + " (local shell)",
		baseline: "WeTTY " + mibPerSecond(wt.rate()), ours: "share " + mibPerSecond(sh.rate()), ratio: fmtRatio(sh.rate() / wt.rate()), spread: rateSpread(pathWetty)})
	b.r.add(row{fig: "7", measure: "echo p50 / p99 vs WeTTY",
		baseline: echoCell("WeTTY", echo[pathWetty]), ours: echoCell("share", ls), ratio: echoRatio(echo[pathWetty]), spread: p99Spread(pathWetty)})
}
