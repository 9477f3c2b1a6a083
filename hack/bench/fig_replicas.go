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
		parts, err := echoRound(ctx, paths, o.echoPerRound(), out)
		if err != nil {
			resumeGC()
			return nil, fmt.Errorf("round %d: %w", round+1, err)
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
	b.r.add(pairedThroughputRow("8", "throughput of a page forwarded by a second replica to the session's owner, cat "+fmtMiB(float64(o.payloadSize))+" (median of "+strconv.Itoa(o.reps)+" runs; ratio of each run to the owner run beside it)",
		"on the owner", res[pathOwner], "forwarded", res[pathForwarded], 0.9))
	eo := echo[pathOwner]
	b.r.add(addedP99Row("8", fmt.Sprintf("keystroke echo p99 of a forwarded page (median of %d rounds of %d round trips; the added p99 is the median of each round's forwarded − owner)", o.echoRounds, o.echoPerRound()),
		"on the owner", eo, "forwarded", echo[pathForwarded], "forwarding adds < 1 ms"))
	b.r.add(addedP99Row("8", "keystroke echo p99 through a bare TCP relay process in the forwarding replica's place, the cost of one more process and hop on this machine (as above)",
		"on the owner", eo, "relayed", echo[pathRelayed], ""))
}
