package cli

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
)

func TestLinkNames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		agent kubeopencodev1alpha1.Agent
		want  []string
	}{
		{name: "no share", want: []string{}},
		{
			name: "spec and status, merged and sorted",
			agent: kubeopencodev1alpha1.Agent{
				Spec: kubeopencodev1alpha1.AgentSpec{Share: &kubeopencodev1alpha1.ShareSpec{
					Links: []kubeopencodev1alpha1.NamedShareLink{{Name: "qa"}, {Name: "demo"}},
				}},
				Status: kubeopencodev1alpha1.AgentStatus{Share: &kubeopencodev1alpha1.ShareStatus{
					Links: []kubeopencodev1alpha1.LinkStatus{{Name: "demo"}, {Name: "old"}},
				}},
			},
			want: []string{"demo", "old", "qa"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := linkNames(&tc.agent); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("linkNames = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestStaticCompletion asks the commands for the completions that need no
// cluster, through cobra's __complete as a shell does.
func TestStaticCompletion(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"list -o", []string{"agent", "list", "-o", ""}, []string{"wide", "json", "yaml", "kyaml", "name", "go-template", "go-template-file", "template", "templatefile", "jsonpath", "jsonpath-as-json", "jsonpath-file"}},
		{"list -o with a prefix", []string{"agent", "list", "-o", "w"}, []string{"wide"}},
		{"share -o", []string{"agent", "share", "x", "-o", "y"}, []string{"yaml"}},
		{"share --output=", []string{"agent", "share", "x", "--output", "js"}, []string{"json", "jsonpath", "jsonpath-as-json", "jsonpath-file"}},
		{"version -o", []string{"version", "-o", ""}, []string{"json", "yaml"}},
		{"--link without an Agent", []string{"agent", "share", "--link", ""}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			cmd := NewCommand(genericiooptions.IOStreams{Out: &out, ErrOut: &bytes.Buffer{}})
			cmd.SetOut(&out)
			cmd.SetErr(&bytes.Buffer{})
			cmd.SetArgs(append([]string{"__complete"}, tc.args...))
			if err := cmd.Execute(); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if last := lines[len(lines)-1]; last != ":4" {
				t.Errorf("directive %q, want :4 (no file completion)", last)
			}
			var got []string
			for _, l := range lines[:len(lines)-1] {
				got = append(got, strings.SplitN(l, "\t", 2)[0])
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("completions %q, want %q", got, tc.want)
			}
		})
	}
}
