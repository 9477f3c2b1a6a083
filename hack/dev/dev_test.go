package main

import (
	"strings"
	"testing"
)

func TestNodeFlag(t *testing.T) {
	for _, node := range []string{"", "Real", "standin", "yes"} {
		o := NewOptions()
		o.Node = node
		if err := o.Complete(); err != nil {
			t.Fatal(err)
		}
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "--node=") || !strings.Contains(err.Error(), "auto, real or stand-in") {
			t.Errorf("--node=%q: Validate() = %v, want an error naming the flag and its values", node, err)
		}
	}

	o := NewOptions()
	o.Node = nodeStandin
	if err := o.Complete(); err != nil || o.Validate() != nil || o.realNode {
		t.Errorf("--node=stand-in: realNode %v, Validate() = %v", o.realNode, o.Validate())
	}

	// auto and real follow what this machine allows.
	hostErr := realNodeHost()
	o = NewOptions()
	if err := o.Complete(); err != nil || o.Validate() != nil {
		t.Fatalf("--node=auto: Complete or Validate fails: %v", o.Validate())
	}
	if o.Node != nodeAuto || o.realNode != (hostErr == nil) || (o.standinReason == nil) != (hostErr == nil) {
		t.Errorf("--node=auto: realNode %v, standinReason %v; realNodeHost() = %v", o.realNode, o.standinReason, hostErr)
	}
	o = NewOptions()
	o.Node = nodeReal
	if err := o.Complete(); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); (err == nil) != (hostErr == nil) || err != nil && !strings.Contains(err.Error(), hostErr.Error()) {
		t.Errorf("--node=real: Validate() = %v; realNodeHost() = %v", err, hostErr)
	}
}
