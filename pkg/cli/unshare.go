package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/kubectl/pkg/util/templates"
)

var (
	unshareLong = templates.LongDesc(`
		Disable the share link of an Agent. The token stops working at once and
		open terminal sessions are closed.`)

	unshareExample = templates.Examples(`
		# Disable the share link of an Agent
		kubeoc agent unshare team-agent -n default

		# Rotate the token by disabling and enabling again
		kubeoc agent unshare team-agent && kubeoc agent share team-agent`)
)

// UnshareOptions holds the inputs of `kubeoc agent unshare`.
type UnshareOptions struct {
	Name      string
	Namespace string

	client *shareClient
	genericiooptions.IOStreams
}

// NewCmdUnshare returns `kubeoc agent unshare`.
func NewCmdUnshare(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &UnshareOptions{IOStreams: streams}
	return &cobra.Command{
		Use:                   "unshare NAME",
		DisableFlagsInUseLine: true,
		Short:                 "Disable the share link of an Agent",
		Long:                  unshareLong,
		Example:               unshareExample,
		Args:                  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(configFlags, args); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
}

// Complete fills in the options from the command line and kubeconfig.
func (o *UnshareOptions) Complete(configFlags *genericclioptions.ConfigFlags, args []string) error {
	o.Name = args[0]
	var err error
	if o.Namespace, _, err = configFlags.ToRawKubeConfigLoader().Namespace(); err != nil {
		return err
	}
	config, err := configFlags.ToRESTConfig()
	if err != nil {
		return err
	}
	o.client, err = newShareClient(config)
	return err
}

// Run disables the link.
func (o *UnshareOptions) Run(ctx context.Context) error {
	if err := o.client.Delete(ctx, o.Namespace, o.Name); err != nil {
		return explain(err, "delete", o.Namespace, o.Name)
	}
	fmt.Fprintf(o.Out, "Share link disabled for agent %s/%s\n", o.Namespace, o.Name)
	return nil
}
