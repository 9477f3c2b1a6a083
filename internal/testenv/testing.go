package testenv

import (
	"context"
	"testing"
	"time"
)

// StartTimeout bounds how long RunControlPlane waits for a control plane,
// not counting a first build of the binaries or the wait for another
// process's real node.
const StartTimeout = 3 * time.Minute

// RunControlPlane starts a control plane for a test, failing the test if it
// cannot, and stops it when the test ends. When the test has failed it logs
// the end of each component's log first. A panicking test still stops it:
// cleanups run, and the components die with the test process regardless.
func RunControlPlane(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	// The binaries may need building first, which Start's deadline does not
	// cover; findBinDir takes no context.
	binDir, err := findBinDir(opts.BinDir)
	if err != nil {
		t.Fatalf("control-plane binaries: %v", err)
	}
	opts.BinDir = binDir
	if opts.RealNode && CheckRealNodeHost() == nil {
		// Another process's real node (a test of another package, make
		// dev) may run for minutes: waiting for it is not starting, and
		// only the test's own deadline bounds it.
		if opts.nodeLock, err = acquireNodeLock(t.Context()); err != nil {
			t.Fatalf("starting the control plane: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), StartTimeout)
	defer cancel()
	start := time.Now()
	cp, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("starting the control plane: %v", err)
	}
	t.Logf("control plane up in %s at %s (state in %s)", time.Since(start).Round(time.Millisecond), cp.Host(), cp.Dir())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control-plane logs (ends):\n%s", cp.LogTails())
		}
		cp.Stop()
	})
	return cp
}
