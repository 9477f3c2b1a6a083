package app

import (
	"fmt"

	"github.com/spf13/cobra"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/cli/globalflag"
	"k8s.io/component-base/logs"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/component-base/term"
)

// NewServerCommand returns the command that runs the aggregated API server
// with the given options, which its flags fill in. It runs until the
// command's context ends: main passes a context that ends on SIGTERM, tests
// their own. Tests may also set o.SecureServing.Listener to serve on a
// listener they opened.
func NewServerCommand(o *Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "aggregated-apiserver",
		Short: "Serve the agents/share subresource of KubeOpenCode Agents",
		Long: `aggregated-apiserver serves the subresources.kubeopencode.io API group behind
the Kubernetes aggregation layer. Its agents/share subresource enables (create),
shows (get) and disables (delete) the share link of an Agent; RBAC on that
subresource alone governs who may do so.

Whoever holds a share link has a terminal in the Agent's pod: create and get
on agents/share are as powerful as pods/exec on that pod.

The server authenticates and authorizes requests by delegation to the
Kubernetes API server and keeps no state of its own: the Agent's spec.share
and its share Secret are the state.`,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("%q takes no arguments, got %q", cmd.CommandPath(), args)
			}
			// Logging is set up first, so that everything after it logs in
			// the configured format.
			if err := logsapi.ValidateAndApply(o.Logs, utilfeature.DefaultFeatureGate); err != nil {
				return err
			}
			cliflag.PrintFlags(cmd.Flags())
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}

	fss := o.Flags()
	globalflag.AddGlobalFlags(fss.FlagSet("global"), cmd.Name(), logs.SkipLoggingConfigurationFlags())
	fs := cmd.Flags()
	for _, f := range fss.FlagSets {
		fs.AddFlagSet(f)
	}
	cols, _, _ := term.TerminalSize(cmd.OutOrStdout())
	cliflag.SetUsageAndHelpFunc(cmd, fss, cols)
	return cmd
}
