package cli

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	componentversion "k8s.io/component-base/version"
	"sigs.k8s.io/yaml"
)

// VersionOptions holds the inputs of `kubeoc version`.
type VersionOptions struct {
	Output string
	genericiooptions.IOStreams
}

// Version is what `kubeoc version -o json|yaml` prints. It has kubectl
// version's shape, so that scripts reading .clientVersion.gitVersion work on
// both.
type Version struct {
	ClientVersion *version.Info `json:"clientVersion,omitempty"`
}

func newCmdVersion(streams genericiooptions.IOStreams) *cobra.Command {
	o := &VersionOptions{IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the kubeoc version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run()
		},
	}
	cmd.Flags().StringVarP(&o.Output, "output", "o", o.Output, "One of 'yaml' or 'json'.")
	registerOutputCompletion(cmd, []string{"json", "yaml"})
	return cmd
}

// Validate checks --output.
func (o *VersionOptions) Validate() error {
	if o.Output != "" && o.Output != "yaml" && o.Output != "json" {
		return fmt.Errorf("--output must be 'yaml' or 'json'")
	}
	return nil
}

// Run prints the version.
func (o *VersionOptions) Run() error {
	v := componentversion.Get()
	if strings.Contains(v.GitVersion, "$Format") {
		// Built without the version linked in, as `go run` does.
		v.GitVersion = "dev"
	}
	if strings.Contains(v.GitCommit, "$Format") {
		v.GitCommit = ""
	}
	switch o.Output {
	case "json":
		b, err := json.MarshalIndent(Version{ClientVersion: &v}, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(o.Out, string(b))
		return err
	case "yaml":
		b, err := yaml.Marshal(Version{ClientVersion: &v})
		if err != nil {
			return err
		}
		_, err = o.Out.Write(b)
		return err
	}
	_, err := fmt.Fprintf(o.Out, "kubeoc %s (%s, %s)\n", v.GitVersion, v.GoVersion, v.Platform)
	return err
}
