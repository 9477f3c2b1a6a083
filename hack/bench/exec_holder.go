package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeopencode/share/internal/testenv"
)

// The exec holder is a process of the harness ("bench exec-holder") that
// holds direct exec streams to a pod with the listener's own exec client:
// the baseline of figure 3, the exec stream's own cost. It is a process of
// its own so that its memory is the streams' alone. It reads commands on
// stdin and answers each on stdout with a line that starts with the
// command's name:
//
//	open N             opens N more streams; "open" once each is live
//	mem                "mem <heap in use> <stacks in use>" after a collection
//	goroutines FILE    writes its goroutines (debug=1) to FILE; "goroutines ok"
//	profile PREFIX     writes heap and goroutine profiles; "profile ok"
//	close              closes every stream; "closed" once each has ended

// execHolder is the state of the exec-holder subcommand.
type execHolder struct {
	open opener
	held []terminal
	out  io.Writer
}

func runExecHolder(args []string) error {
	fs := flag.NewFlagSet("exec-holder", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the identity that execs")
	namespace := fs.String("namespace", "", "namespace of the pod")
	pod := fs.String("pod", "", "pod to exec into")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	ex, err := newListenerExecutor(cfg)
	if err != nil {
		return err
	}
	h := &execHolder{out: os.Stdout, open: func(ctx context.Context, out sink) (terminal, error) {
		return startExec(ctx, ex, *namespace, *pod, idleCommand(), out), nil
	}}
	return h.serve(context.Background(), os.Stdin)
}

// serve warms the exec client up, says "idle", then runs the commands of in
// until it ends.
func (h *execHolder) serve(ctx context.Context, in io.Reader) error {
	// One stream first, so that the code and buffers every stream shares
	// are in the baseline.
	warm, err := openIdle(ctx, 1, 1, h.open)
	if err != nil {
		return err
	}
	closeAll(warm)
	fmt.Fprintln(h.out, "idle")
	defer func() { closeAll(h.held) }()
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		if err := h.command(ctx, strings.Fields(sc.Text())); err != nil {
			return err
		}
	}
	return sc.Err()
}

func (h *execHolder) command(ctx context.Context, f []string) error {
	switch {
	case len(f) == 2 && f[0] == "open":
		n, err := strconv.Atoi(f[1])
		if err != nil {
			return err
		}
		more, err := openIdle(ctx, n, 8, h.open)
		h.held = append(h.held, more...)
		if err != nil {
			fmt.Fprintln(h.out, "error", err)
			return nil
		}
		fmt.Fprintln(h.out, "open")
	case len(f) == 1 && f[0] == "mem":
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Fprintln(h.out, "mem", ms.HeapInuse, ms.StackInuse)
	case len(f) == 2 && f[0] == "goroutines":
		result := "ok"
		if err := writeGoroutines(f[1]); err != nil {
			result = err.Error()
		}
		fmt.Fprintln(h.out, "goroutines", result)
	case len(f) == 2 && f[0] == "profile":
		// Heap and goroutine profiles of the streams held, to set beside
		// the listener's (bench -profiles).
		fmt.Fprintln(h.out, "profile", writeProfiles(f[1]))
	case len(f) == 1 && f[0] == "close":
		closeAll(h.held)
		for _, t := range h.held {
			<-t.done()
		}
		h.held = nil
		fmt.Fprintln(h.out, "closed")
	}
	return nil
}

// writeProfiles writes this process's heap profile, after a collection,
// and its goroutines to prefix-heap.pprof and prefix-goroutines.txt, and
// returns "ok" or what failed.
func writeProfiles(prefix string) string {
	runtime.GC()
	for suffix, name := range map[string]string{"-heap.pprof": "heap", "-goroutines.txt": "goroutine"} {
		debug := 0
		if name == "goroutine" {
			debug = 1
		}
		if err := writeProfile(prefix+suffix, name, debug); err != nil {
			return err.Error()
		}
	}
	return "ok"
}

func writeGoroutines(file string) error { return writeProfile(file, "goroutine", 1) }

func writeProfile(file, name string, debug int) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	err = pprof.Lookup(name).WriteTo(f, debug)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// holderClient drives an exec holder from the harness.
type holderClient struct {
	p      *testenv.Process
	logDir string
}

// startExecHolder starts an exec holder on pod, as the identity of
// kubeconfig, and waits until it is warm.
func startExecHolder(o *options, kubeconfig, namespace, pod string) (*holderClient, error) {
	p, err := testenv.StartInteractiveProcess(o.logDir, "exec-holder", o.self, "exec-holder",
		"-kubeconfig", kubeconfig, "-namespace", namespace, "-pod", pod)
	if err != nil {
		return nil, err
	}
	if err := p.Expect("idle", 2*time.Minute); err != nil {
		p.Stop()
		return nil, err
	}
	return &holderClient{p: p, logDir: o.logDir}, nil
}

// openTo opens streams until the holder holds n, counting have.
func (h *holderClient) openTo(have, n int) error {
	if err := h.p.Send(fmt.Sprintf("open %d", n-have)); err != nil {
		return err
	}
	return h.p.Expect("open", 10*time.Minute)
}

// stop closes the streams and stops the holder.
func (h *holderClient) stop() {
	_ = h.p.Send("close")
	_ = h.p.Expect("closed", 2*time.Minute)
	h.p.Stop()
}

// memory samples the holder's memory.
func (h *holderClient) memory() (memory, error) {
	return sampleMemory(h.p.Pid(), func() (float64, float64, error) {
		if err := h.p.Send("mem"); err != nil {
			return 0, 0, err
		}
		line, err := h.p.ReadLine("mem ", time.Minute)
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

// goroutines returns the holder's goroutines by site.
func (h *holderClient) goroutines() (map[string]float64, error) {
	file := filepath.Join(h.logDir, "exec-holder-goroutines.txt")
	if err := h.p.Send("goroutines " + file); err != nil {
		return nil, err
	}
	if _, err := h.p.ReadLine("goroutines ", time.Minute); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return goroutineSites(b), nil
}

// saveProfiles has the holder write its profiles to dir/name-*.
func (h *holderClient) saveProfiles(dir, name string) {
	_ = h.p.Send("profile " + filepath.Join(dir, name))
	_, _ = h.p.ReadLine("profile ", time.Minute)
}
