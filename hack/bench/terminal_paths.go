package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/kubeopencode/share/internal/testenv"
)

// opener opens one session of a kind under test, its output going to out.
type opener func(ctx context.Context, out sink) (terminal, error)

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
	// settled, when set, waits until the path's last echo session has
	// nothing left in flight, before the next path is measured.
	settled func(context.Context) error
}

// Names of the paths, which key the figures' results.
const (
	pathShare = "share"
	pathExec  = "direct exec"
	pathFloor = "floor"
	pathWetty = "WeTTY"
)

// terminalPaths starts what figures 1, 2 and 7 compare: the share path, the
// direct exec, the in-process floor and, when it is installed, WeTTY. The
// function returned stops the servers it started.
func (b *bench) terminalPaths(ctx context.Context) ([]path, func(), error) {
	paths := []path{b.execPath(), b.sharePath()}
	floor, err := startFloor(b.o.payload, b.o.echoBytes())
	if err != nil {
		return nil, nil, err
	}
	paths = append(paths, floorPath(floor))
	wetty, stopWetty := b.startWetty(ctx)
	if wetty != nil {
		paths = append(paths, *wetty)
	}
	return paths, func() { stopWetty(); floor.stop() }, nil
}

func (b *bench) sharePath() path {
	s := b.sys
	return path{
		name:  pathShare,
		procs: map[string]int{"kube-apiserver": b.apiserverPid, "share server": s.server.Pid(), "benchmark process": os.Getpid()},
		echo: func(ctx context.Context, out sink) (terminal, error) {
			return s.dialShare(ctx, s.agents["echo"].token, out)
		},
		cat: func(ctx context.Context, out sink) (terminal, error) {
			return s.dialShare(ctx, s.agents["cat"].token, out)
		},
		settled: func(ctx context.Context) error { return sessionSettled(ctx, s.admin, s.agents["echo"].key) },
	}
}

func (b *bench) execPath() path {
	s := b.sys
	return path{
		name:  pathExec,
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
	return path{name: pathFloor, echo: dial("/echo"), cat: dial("/cat"), procs: map[string]int{"benchmark process": os.Getpid()}}
}

// wettyServer is a WeTTY server on loopback running one command.
type wettyServer struct {
	addr string
	proc *testenv.Process
}

// startWettyServer runs WeTTY with node on a free loopback port, serving
// command, and waits until it listens.
func (b *bench) startWettyServer(node, name string, command []string) (*wettyServer, error) {
	port, err := testenv.FreePort()
	if err != nil {
		return nil, err
	}
	c, err := testenv.StartProcess(b.o.logDir, name, node, b.o.wettyMain, "--host", "127.0.0.1", "--port", strconv.Itoa(port),
		"--command", shellJoin(command), "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && !c.Exited() {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			return &wettyServer{addr: addr, proc: c}, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.Stop()
	return nil, fmt.Errorf("WeTTY did not listen on %s within 30s (log %s)", addr, c.LogPath())
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
	echo, err := b.startWettyServer(node, "wetty-echo", echoCommand(b.o.echoBytes()))
	if err != nil {
		b.r.note("WeTTY was not measured: %v", err)
		return nil, nothing
	}
	cat, err := b.startWettyServer(node, "wetty-cat", catCommand(b.o.payload))
	if err != nil {
		echo.proc.Stop()
		b.r.note("WeTTY was not measured: %v", err)
		return nil, nothing
	}
	stop := func() { echo.proc.Stop(); cat.proc.Stop() }
	dial := func(addr string) opener {
		return func(ctx context.Context, out sink) (terminal, error) { return dialWetty(ctx, addr, out) }
	}
	p := &path{name: pathWetty, echo: dial(echo.addr), cat: dial(cat.addr), lossy: true,
		procs: map[string]int{"WeTTY (node)": cat.proc.Pid(), "benchmark process": os.Getpid()}}
	// One session first: a WeTTY that starts but cannot spawn a terminal
	// (node-pty not built for this Node) is reported, not measured.
	if _, err := echoOnce(ctx, p.echo, 5); err != nil {
		stop()
		b.r.note("WeTTY was not measured: it started but a session failed: %v (log %s)", err, echo.proc.LogPath())
		return nil, nothing
	}
	b.r.note("WeTTY %s on Node %s, two servers on loopback, each with --command running the same command as the other paths", b.wettyVersion, b.nodeVersion)
	return p, stop
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
