package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kubeopencode/share/internal/testenv"
	"github.com/kubeopencode/share/pkg/sharehttp/replica"
)

// Names of the paths of figure 8.
const (
	pathOwner     = "owner"
	pathForwarded = "forwarded"
	// pathRelayed is a page through a bare TCP relay process to the
	// owner: the cost of one more process and hop, without the forwarder.
	pathRelayed = "relayed"
)

// replicaFigures measures figure 8: a page through a replica that forwards
// it to the session's owner against a page straight on the owner, with
// the same cat and echo commands as figures 1 and 2. Every session has a
// holder page on the owner, opened first so that the owner starts the
// session and holds its Lease; the measured page then joins it, through
// the other replica or through the owner itself.
func (b *bench) replicaFigures(ctx context.Context) error {
	s := b.sys
	pair, err := s.startReplicaPair(ctx)
	if err != nil {
		return err
	}
	defer pair.stop()
	links, err := b.makeRelayAgents(ctx, pair)
	if err != nil {
		return err
	}
	paths := replicaPaths(pair, links)
	step("figure 8: throughput, cat of %s, %d runs each", fmtMiB(float64(b.o.payloadSize)), b.o.reps)
	throughput, err := b.compareThroughput(ctx, paths[:2])
	if err != nil {
		return err
	}
	step("figure 8: keystroke echo, %d rounds of %d round trips each", b.o.echoRounds, b.o.echoPerRound())
	echo, err := b.echoRounds(ctx, pair, paths)
	if err != nil {
		return err
	}
	b.reportReplicas(throughput, echo)
	return nil
}

// makeRelayAgents makes the Agents of figure 8, enables their links and
// waits until both replicas answer them.
func (b *bench) makeRelayAgents(ctx context.Context, pair *replicaPair) (map[string]relayLink, error) {
	s := b.sys
	commands := map[string][]string{
		"relay-echo": echoCommand(b.o.echoBytes()),
		"relay-cat":  relayCatCommand(b.o.payload),
	}
	links := map[string]relayLink{}
	var tokens []string
	for name, cmd := range commands {
		agent := benchAgent(name, cmd)
		if err := s.admin.Create(ctx, agent); err != nil {
			return nil, err
		}
		a := &agentInfo{key: types.NamespacedName{Namespace: benchNamespace, Name: name}}
		s.agents[name] = a
		if err := s.waitReady(ctx, a); err != nil {
			return nil, fmt.Errorf("waiting for Agent %s: %w", name, err)
		}
		if err := s.enableLink(ctx, name); err != nil {
			return nil, err
		}
		tokens = append(tokens, a.token)
		links[name] = relayLink{token: a.token, agent: a.key,
			lease: types.NamespacedName{Namespace: testenv.SystemNamespace, Name: replica.LeaseName(agent.UID)}}
	}
	return links, pair.waitLinks(ctx, tokens...)
}

// replicaPaths are the paths of figure 8, the owner's and the forwarded
// page's first; each counts the CPU time of both replicas, the bare relay
// and the harness.
func replicaPaths(pair *replicaPair, links map[string]relayLink) []path {
	procs := map[string]int{
		"owner replica": pair.owner.srv.Pid(), "forwarding replica": pair.forwarder.srv.Pid(), "benchmark process": os.Getpid(),
	}
	var paths []path
	if pair.relayProc != nil {
		procs["bare TCP relay"] = pair.relayProc.Pid()
	}
	for _, via := range []struct {
		name string
		r    replicaServer
	}{{pathOwner, pair.owner}, {pathForwarded, pair.forwarder}, {pathRelayed, pair.relay}} {
		echo, cat := pair.openers(via.r, links["relay-echo"], links["relay-cat"])
		paths = append(paths, path{name: via.name, echo: echo, cat: cat, procs: procs,
			settled: func(ctx context.Context) error { return sessionSettled(ctx, pair.admin, links["relay-echo"].agent) }})
	}
	return paths
}

// echoRounds measures o.echoRounds rounds of round trips on each path, the
// paths in turn within each round, each round after a collection in the
// harness and both replicas, on a machine at rest, with the harness's
// collector paused (see compareEcho and settle); each path after the first
// once the session before it has settled (see sessionSettled).
func (b *bench) echoRounds(ctx context.Context, pair *replicaPair, paths []path) (map[string]echoResult, error) {
	o := b.o
	out := map[string]echoResult{}
	for round := range o.echoRounds {
		runtime.GC()
		for _, r := range []replicaServer{pair.owner, pair.forwarder} {
			// Fetching a heap profile with gc=1 collects its garbage.
			if _, err := b.sys.secureGet(ctx, r.srv.Port, "/debug/pprof/heap?gc=1"); err != nil {
				step("  collecting the garbage of %s: %v", r.name, err)
			}
		}
		busy := quiesce(5 * time.Second)
		resumeGC := pauseGC()
		var parts []string
		for _, p := range paths {
			s, err := echoOnceSettled(ctx, p, o.echoPerRound())
			if err != nil {
				resumeGC()
				return nil, fmt.Errorf("%s echo (round %d): %w", p.name, round+1, err)
			}
			l := summarize(s)
			out[p.name] = echoResult{rounds: append(out[p.name].rounds, l)}
			parts = append(parts, fmt.Sprintf("%s %s", p.name, l))
		}
		resumeGC()
		step("  round %d (machine %.0f%% busy before it): %s", round+1, busy*100, strings.Join(parts, "; "))
	}
	return out, nil
}

// reportReplicas adds the rows of figure 8: each run's and each round's
// forwarded page against the owner's page beside it.
func (b *bench) reportReplicas(res map[string]*throughputResult, echo map[string]echoResult) {
	o := b.o
	ow, fw := res[pathOwner], res[pathForwarded]
	var pairs []float64
	for i, r := range fw.rates() {
		pairs = append(pairs, r/ow.rates()[i])
	}
	ratio := fw.rate() / ow.rate()
	b.r.add(row{fig: "8", measure: "throughput of a page forwarded by a second replica to the session's owner, cat " + fmtMiB(float64(o.payloadSize)) + " (median of " + strconv.Itoa(o.reps) + " runs; ratio of each run to the owner run beside it)",
		baseline: "on the owner " + mibPerSecond(ow.rate()), ours: "forwarded " + mibPerSecond(fw.rate()),
		ratio:  fmt.Sprintf("%.3f (runs %s)", ratio, fmtRange(pairs, func(r float64) string { return fmt.Sprintf("%.3f", r) })),
		spread: fmtSpread(ow.rates(), fw.rates(), mibRate) + " MiB/s",
		goal:   "≥ 0.9", met: yesNo(ratio >= 0.9)})
	eo, ef, er := echo[pathOwner], echo[pathForwarded], echo[pathRelayed]
	added, relayed := ef.addedP99(eo), er.addedP99(eo)
	b.r.add(row{fig: "8", measure: fmt.Sprintf("keystroke echo p99 of a forwarded page (median of %d rounds of %d round trips; the added p99 is the median of each round's forwarded − owner)", o.echoRounds, o.echoPerRound()),
		baseline: "on the owner " + fmtMs(eo.p99()) + " ms", ours: "forwarded " + fmtMs(ef.p99()) + " ms",
		ratio:  fmtRatio(ef.p99()/eo.p99()) + " (added " + fmtDelta(median(added)) + "; rounds " + fmtDeltaRange(added) + ")",
		spread: fmtSpread(p99s(eo.rounds), p99s(ef.rounds), fmtMs) + " ms",
		goal:   "forwarding adds < 1 ms", met: yesNo(median(added) < 1)})
	b.r.add(row{fig: "8", measure: "keystroke echo p99 through a bare TCP relay process in the forwarding replica's place, the cost of one more process and hop on this machine (as above)",
		baseline: "on the owner " + fmtMs(eo.p99()) + " ms", ours: "relayed " + fmtMs(er.p99()) + " ms",
		ratio:  fmtRatio(er.p99()/eo.p99()) + " (added " + fmtDelta(median(relayed)) + "; rounds " + fmtDeltaRange(relayed) + ")",
		spread: fmtSpread(p99s(eo.rounds), p99s(er.rounds), fmtMs) + " ms",
		goal:   "—", met: "—"})
}
