package cli

import (
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func TestUnshareFlagValidation(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "default link", args: []string{"team-agent"}},
		{name: "named link", args: []string{"team-agent", "--link", "qa"}},
		{name: "bad link name", args: []string{"team-agent", "--link", "q_a"}, wantErr: `invalid --link "q_a"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			streams, _, out, _ := genericiooptions.NewTestIOStreams()
			configFlags := genericclioptions.NewConfigFlags(false)
			server := "https://127.0.0.1:1"
			configFlags.APIServer = &server
			cmd := NewCmdUnshare(configFlags, streams)
			cmd.SetArgs(tc.args)
			cmd.SetOut(out)
			cmd.SetErr(out)
			err := cmd.Execute()
			want := tc.wantErr
			if want == "" {
				want = "cannot reach the Kubernetes API server"
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error = %v, want one containing %q", err, want)
			}
		})
	}
}
