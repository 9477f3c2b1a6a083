package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/component-base/version"
)

func newCmdVersion(streams genericiooptions.IOStreams) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the kubeoc version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			v := version.Get()
			name := v.GitVersion
			if strings.Contains(name, "$Format") {
				// Built without the version linked in, as `go run` does.
				name = "dev"
			}
			_, err := fmt.Fprintf(streams.Out, "kubeoc %s (%s, %s)\n", name, v.GoVersion, v.Platform)
			return err
		},
	}
}
