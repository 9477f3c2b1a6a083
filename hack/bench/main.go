// Command bench measures the share path against baselines measured in the
// same run, prints a table and writes it to docs/benchmarks.md. hack/bench.sh
// (make bench) builds it and the servers and runs it; see docs/benchmarks.md
// for what each figure is.
//
// It is also its own helper: "bench exec-holder" holds direct exec streams,
// the baseline of figure 3, and "bench tcp-relay" is the bare hop that
// figure 8 measures the forwarding replica against.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "exec-holder" {
		return runExecHolder(args[1:])
	}
	if len(args) > 0 && args[0] == "tcp-relay" {
		return runTCPRelay(args[1:])
	}
	o := newOptions()
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	o.addFlags(fs)
	klog.InitFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	fs.Visit(func(f *flag.Flag) { o.docSet = o.docSet || f.Name == "doc" })
	// controller-runtime's clients log through klog, like the rest; unset,
	// controller-runtime prints a stack trace that looks like a crash.
	ctrl.SetLogger(klog.Background())
	if err := o.complete(); err != nil {
		return err
	}
	if err := o.validate(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return newBench(o).run(ctx)
}
