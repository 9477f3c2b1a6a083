package integration

// The reliability suite: the system under faults, load and hostile input,
// each scenario asserting the safe outcome. make test runs the scenarios at
// the sizes below; make test-stress runs them at the sizes of the issue
// (stress_test.go, build tag stress). docs/reliability.md lists them.

import (
	"time"
)

// reliabilitySizes are the sizes of the scenarios.
type reliabilitySizes struct {
	// cycles of enable and disable, with the controller killed at random
	// points among them.
	cycles int
	// outage is how long the kube-apiserver stays down.
	outage time.Duration
	// sessions stream output across agents for streamFor.
	sessions, agents int
	streamFor        time.Duration
	// requests with random tokens from sources addresses.
	requests, sources int
}

// fastSizes fit make test on two shared cores.
var fastSizes = reliabilitySizes{
	cycles:    8,
	outage:    8 * time.Second,
	sessions:  24,
	agents:    6,
	streamFor: 10 * time.Second,
	requests:  10000,
	sources:   2000,
}

// stressSizes are the numbers of the issue.
var stressSizes = reliabilitySizes{
	cycles:    50,
	outage:    30 * time.Second,
	sessions:  500,
	agents:    50,
	streamFor: 60 * time.Second,
	requests:  100000,
	sources:   20000,
}
