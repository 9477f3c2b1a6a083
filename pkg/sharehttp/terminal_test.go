package sharehttp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilexec "k8s.io/utils/exec"
)

func TestClusterUnreachable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{name: "connection refused", err: fmt.Errorf("exec: %w", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}), want: true},
		{name: "api server unavailable", err: apierrors.NewServiceUnavailable("try later"), want: true},
		{name: "api server timeout", err: apierrors.NewServerTimeout(schema.GroupResource{Resource: "pods"}, "exec", 1), want: true},
		{name: "exit code", err: utilexec.CodeExitError{Err: errors.New("exit 3"), Code: 3}, want: false},
		{name: "forbidden", err: apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "p", errors.New("no")), want: false},
		{name: "pod not found", err: apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, "p"), want: false},
		{name: "canceled", err: context.Canceled, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := clusterUnreachable(tc.err); got != tc.want {
				t.Errorf("clusterUnreachable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestParseResumePoint(t *testing.T) {
	id := "0123456789abcdef0123456789abcdef"
	tests := []struct {
		in   string
		want *ResumePoint
	}{
		{in: id + ":0", want: &ResumePoint{Session: id, Offset: 0}},
		{in: id + ":123456", want: &ResumePoint{Session: id, Offset: 123456}},
		{in: ""},
		{in: id},
		{in: id + ":-1"},
		{in: id + ":x"},
		{in: "short:1"},
		{in: "0123456789ABCDEF0123456789ABCDEF:1"},
		{in: id + ":99999999999999999999"},
	}
	for _, tc := range tests {
		got, ok := ParseResumePoint(tc.in)
		if (tc.want == nil) == ok || (ok && *got != *tc.want) {
			t.Errorf("ParseResumePoint(%q) = %+v, %v; want %+v", tc.in, got, ok, tc.want)
		}
	}
}
