// Command dev runs the whole system on a local control plane and prints a
// share link that works in a browser. `make dev` runs it; Ctrl-C, or SIGINT
// or SIGTERM to it or to the make that started it, stops everything it
// started.
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
	o := NewOptions()
	o.AddFlags(flag.CommandLine)
	flag.Parse()
	if err := o.Complete(); err != nil {
		fmt.Fprintf(os.Stderr, "make dev: %v\n", err)
		os.Exit(2)
	}
	if err := o.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "make dev: %v\n", err)
		os.Exit(2)
	}
	// The clients of controller-runtime log through klog, like the rest;
	// unset, controller-runtime prints a stack trace that looks like a crash.
	ctrl.SetLogger(klog.Background())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stopWithParent()
	if err := o.Run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "make dev: %v\n", err)
		os.Exit(1)
	}
}
