package app

import (
	"fmt"

	"github.com/spf13/cobra"
	cliflag "k8s.io/component-base/cli/flag"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/component-base/term"
)

// NewControllerCommand returns the controller's command, whose flags fill o
// (see NewOptions for the defaults). It runs until the command's context is
// done.
func NewControllerCommand(o *Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Keeps each Agent's Deployment, share Secret and status",
		Long: `The kubeopencode controller reconciles Agents: it runs each Agent as a
Deployment named after it, keeps the share Secret holding the token of the
Agent's share link while sharing is enabled and deletes it when not, and
reports the Ready and ShareReady conditions, status.share and Events.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := logsapi.ValidateAndApply(o.Logs, nil); err != nil {
				return fmt.Errorf("configuring logging: %w", err)
			}
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	fss := o.flagSets()
	fs := cmd.Flags()
	for _, f := range fss.FlagSets {
		fs.AddFlagSet(f)
	}
	cols, _, _ := term.TerminalSize(cmd.OutOrStdout())
	cliflag.SetUsageAndHelpFunc(cmd, fss, cols)
	return cmd
}
