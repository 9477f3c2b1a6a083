package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestEchoResult(t *testing.T) {
	rounds := func(p99s ...float64) echoResult {
		var e echoResult
		for _, p := range p99s {
			e.rounds = append(e.rounds, latency{n: 400, p50: p / 2, p99: p})
		}
		return e
	}
	for _, tc := range []struct {
		name        string
		share, exec echoResult
		wantP99     float64
		wantAdded   []float64
		wantRange   string
	}{
		{
			name:  "one slow round does not decide the median",
			share: rounds(1.0, 1.2, 4.8, 1.1, 1.0), exec: rounds(0.9, 1.0, 1.0, 1.0, 0.9),
			wantP99: 1.1, wantAdded: []float64{0.1, 0.2, 3.8, 0.1, 0.1}, wantRange: "+0.10 to +3.80 ms",
		},
		{
			name:  "a round faster than its baseline adds a negative latency",
			share: rounds(0.8, 1.0), exec: rounds(1.0, 0.9),
			wantP99: 0.8, wantAdded: []float64{-0.2, 0.1}, wantRange: "−0.20 to +0.10 ms",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.share.p99(); got != tc.wantP99 {
				t.Errorf("p99() = %v, want %v", got, tc.wantP99)
			}
			added := tc.share.addedP99(tc.exec)
			if diff := cmp.Diff(tc.wantAdded, added, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
				t.Errorf("addedP99 (-want +got):\n%s", diff)
			}
			if got := fmtDeltaRange(added); got != tc.wantRange {
				t.Errorf("fmtDeltaRange = %q, want %q", got, tc.wantRange)
			}
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		change  func(*options)
		wantErr bool
	}{
		{name: "defaults", change: func(*options) {}},
		{name: "figures by name", change: func(o *options) { o.only = "terminal, tokens" }},
		{name: "an unknown figure", change: func(o *options) { o.only = "echo" }, wantErr: true},
		{name: "no echo round", change: func(o *options) { o.echoRounds = 0 }, wantErr: true},
		{name: "fewer round trips than rounds", change: func(o *options) { o.echoSamples = 3 }, wantErr: true},
		{name: "no controller run", change: func(o *options) { o.controllerReps = 0 }, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOptions()
			tc.change(o)
			if err := o.validate(); (err != nil) != tc.wantErr {
				t.Errorf("validate() = %v, want an error: %v", err, tc.wantErr)
			}
		})
	}
}
