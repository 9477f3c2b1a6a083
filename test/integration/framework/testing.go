package framework

import (
	"context"
	"testing"
	"time"
)

// RunControlPlane starts a control plane for a test and stops it when the
// test ends, printing the end of each component's log if the test failed.
func RunControlPlane(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	cp, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("starting the control plane: %v", err)
	}
	t.Logf("control plane up in %s at %s", time.Since(start).Round(time.Millisecond), cp.Host())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control-plane logs:\n%s", cp.logTails())
		}
		cp.Stop()
	})
	return cp
}
