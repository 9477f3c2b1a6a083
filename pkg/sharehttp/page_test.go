package sharehttp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/gorilla/websocket"
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
		// As client-go's WebSocket executor reports an API server that died.
		{name: "stream broke off", err: fmt.Errorf("error reading from error stream: %w", fmt.Errorf("next reader: %w", &websocket.CloseError{Code: websocket.CloseAbnormalClosure, Text: "unexpected EOF"})), want: true},
		{name: "stream ended early", err: fmt.Errorf("error reading from error stream: %w", io.ErrUnexpectedEOF), want: true},
		{name: "stream closed by the API server", err: fmt.Errorf("next reader: %w", &websocket.CloseError{Code: websocket.CloseInternalServerErr, Text: "error dialing backend"}), want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := clusterUnreachable(tc.err); got != tc.want {
				t.Errorf("clusterUnreachable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
