//go:build stress

package integration

// The reliability scenarios at the sizes of the issue: make test-stress
// (go test -tags stress ./test/integration/ -run Stress). Bounded in time by
// the target's -timeout.

import "testing"

func TestStressControllerCycles(t *testing.T) {
	s := startSystem(t)
	s.ctl.stop(t)
	s.testControllerKilledInCycles(t, stressSizes.cycles)
}

func TestStressAPIServerOutage(t *testing.T) {
	testAPIServerOutage(t, stressSizes.outage)
}

func TestStressSessions(t *testing.T) {
	s := startSystemWith(t, systemConfig{listenerArgs: loadListenerArgs(stressSizes)})
	s.testConcurrentSessions(t, stressSizes)
}

func TestStressTokenFlood(t *testing.T) {
	s := startSystemWith(t, systemConfig{listenerArgs: loadListenerArgs(stressSizes)})
	s.testTokenFlood(t, stressSizes)
}
