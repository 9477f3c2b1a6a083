package cli

import (
	"flag"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/klog/v2"
	"k8s.io/kubectl/pkg/util/templates"
)

// NewDefaultCommand returns the kubeoc root command on the process's
// standard streams.
func NewDefaultCommand() *cobra.Command {
	return NewCommand(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
}

// NewCommand returns the kubeoc root command.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	configFlags := genericclioptions.NewConfigFlags(true).WithDeprecatedPasswordFlag().WithDiscoveryBurst(300)
	cmd := &cobra.Command{
		Use:   "kubeoc",
		Short: "Manage KubeOpenCode Agents and their share links",
		Long: templates.LongDesc(`
			kubeoc manages KubeOpenCode Agents and the links that share an Agent's
			terminal with people who have no Kubernetes credentials.`),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	flags := cmd.PersistentFlags()
	configFlags.AddFlags(flags)
	addKlogVerbosity(flags)

	cmd.AddCommand(newCmdAgent(configFlags, streams))
	cmd.AddCommand(newCmdVersion(streams))
	return cmd
}

// addKlogVerbosity exposes klog's -v, so that -v=6 shows the requests kubeoc
// makes, as it does for kubectl.
func addKlogVerbosity(flags *pflag.FlagSet) {
	goflags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(goflags)
	flags.AddGoFlag(goflags.Lookup("v"))
}

func newCmdAgent(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Manage Agents and their share links",
	}
	cmd.AddCommand(NewCmdShare(configFlags, streams))
	cmd.AddCommand(NewCmdUnshare(configFlags, streams))
	cmd.AddCommand(NewCmdList(configFlags, streams))
	return cmd
}
