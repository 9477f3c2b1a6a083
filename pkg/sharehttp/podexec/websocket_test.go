package podexec

import (
	"errors"
	"testing"

	"k8s.io/client-go/util/exec"
)

func TestDecodeExecStatus(t *testing.T) {
	tests := []struct {
		name     string
		message  string
		wantErr  bool
		wantCode int // 0: not an exit code error
	}{
		{name: "no status: the stream closed cleanly", message: ""},
		{name: "success", message: `{"metadata":{},"status":"Success"}`},
		{name: "exit code", message: `{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}`, wantErr: true, wantCode: 3},
		{name: "failure with a message", message: `{"metadata":{},"status":"Failure","message":"container not found"}`, wantErr: true},
		{name: "exit code without details", message: `{"metadata":{},"status":"Failure","reason":"NonZeroExitCode"}`, wantErr: true},
		{name: "exit code out of range", message: `{"metadata":{},"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"300"}]}}`, wantErr: true},
		{name: "not JSON", message: `oops`, wantErr: true},
		{name: "unknown status", message: `{"metadata":{},"status":"Maybe"}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var message []byte
			if tt.message != "" {
				message = []byte(tt.message)
			}
			err := decodeExecStatus(message)
			if (err != nil) != tt.wantErr {
				t.Fatalf("decodeExecStatus() = %v, want error %v", err, tt.wantErr)
			}
			var exitErr exec.CodeExitError
			isExit := errors.As(err, &exitErr)
			if tt.wantCode != 0 && (!isExit || exitErr.Code != tt.wantCode) {
				t.Fatalf("decodeExecStatus() = %v, want exit code %d", err, tt.wantCode)
			}
			if tt.wantCode == 0 && isExit {
				t.Fatalf("decodeExecStatus() = %v, want no exit code", err)
			}
		})
	}
}
