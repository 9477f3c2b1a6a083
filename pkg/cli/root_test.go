package cli

import (
	"bytes"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// TestPluginHelp checks that the kubectl plugin's help names the command
// the user types, `kubectl agent …`, and never kubeoc's.
func TestPluginHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"kubectl agent [command]", "kubectl agent [command] --help"}},
		{[]string{"share", "--help"}, []string{"kubectl agent share NAME [--link LINK]", "kubectl agent share team-agent --show"}},
		{[]string{"unshare", "--help"}, []string{"kubectl agent unshare NAME [--link LINK]", "kubectl agent unshare team-agent && kubectl agent share team-agent"}},
		{[]string{"list", "--help"}, []string{"kubectl agent list [-A]", "kubectl agent list -A -o wide"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			cmd := NewPluginCommand(genericiooptions.IOStreams{Out: &out, ErrOut: &out})
			cmd.SetOut(&out)
			cmd.SetArgs(tc.args)
			if err := cmd.Execute(); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("help lacks %q:\n%s", w, out.String())
				}
			}
			if strings.Contains(out.String(), "kubeoc agent") {
				t.Errorf("the plugin's help names kubeoc:\n%s", out.String())
			}
		})
	}
}
