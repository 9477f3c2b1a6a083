package cli

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"k8s.io/kubectl/pkg/util/templates"
)

// ErrExit is returned by a command that has already said everything it had to
// say (help on a command group run without a subcommand): the caller exits 1
// and prints nothing more, as kubectl's cmdutil.ErrExit does.
var ErrExit = errors.New("exit")

// NewDefaultCommand returns the kubeoc root command on the process's
// standard streams.
func NewDefaultCommand() *cobra.Command {
	return NewCommand(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
}

// NewCommand returns the kubeoc root command.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	configFlags := newConfigFlags()
	cmd := &cobra.Command{
		Use:   "kubeoc",
		Short: "Manage KubeOpenCode Agents and their share links",
		Long: templates.LongDesc(`
			kubeoc manages KubeOpenCode Agents and the links that share an Agent's
			terminal with people who have no Kubernetes credentials.`),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	addGlobalFlags(cmd, configFlags)

	cmd.AddCommand(newCmdAgent(configFlags, streams))
	cmd.AddCommand(newCmdVersion(streams))
	return cmd
}

// PluginName is the name of kubeoc's kubectl plugin binary. kubectl runs
// kubectl-agent for `kubectl agent …`, so `kubectl agent share NAME` is
// `kubeoc agent share NAME`: the plugin is kubeoc's agent command group.
const PluginName = "kubectl-agent"

// pluginDisplayName is how the plugin's help names it, since users type
// it as a kubectl subcommand.
const pluginDisplayName = "kubectl agent"

// NewDefaultPluginCommand returns the kubectl-agent root command on the
// process's standard streams.
func NewDefaultPluginCommand() *cobra.Command {
	return NewPluginCommand(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
}

// NewPluginCommand returns the root command of the kubectl plugin
// kubectl-agent: kubeoc's agent command group, with kubeoc's global flags
// and version, whose help says `kubectl agent` where kubeoc's says
// `kubeoc agent`.
func NewPluginCommand(streams genericiooptions.IOStreams) *cobra.Command {
	configFlags := newConfigFlags()
	cmd := newCmdAgent(configFlags, streams)
	cmd.Use = PluginName
	// cobra names the root in usage lines and paths by this annotation,
	// the way kubectl plugins are meant to present themselves.
	cmd.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: pluginDisplayName}
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	// kubectl completes plugins itself, through kubectl_complete-agent
	// calling `kubectl-agent __complete`; a `kubectl agent completion`
	// script would compete with kubectl's own.
	cmd.CompletionOptions.DisableDefaultCmd = true
	addGlobalFlags(cmd, configFlags)
	cmd.AddCommand(newCmdVersion(streams))
	renameExamples(cmd, "kubeoc agent", pluginDisplayName)
	return cmd
}

// renameExamples replaces from with to in the examples and long help of cmd
// and its subcommands, which are written for kubeoc.
func renameExamples(cmd *cobra.Command, from, to string) {
	cmd.Example = strings.ReplaceAll(cmd.Example, from, to)
	cmd.Long = strings.ReplaceAll(cmd.Long, from, to)
	for _, c := range cmd.Commands() {
		renameExamples(c, from, to)
	}
}

func newConfigFlags() *genericclioptions.ConfigFlags {
	return genericclioptions.NewConfigFlags(true).WithDeprecatedPasswordFlag().WithDiscoveryBurst(300)
}

// addGlobalFlags adds the kubeconfig flags and -v to the root command, and
// completes them.
func addGlobalFlags(cmd *cobra.Command, configFlags *genericclioptions.ConfigFlags) {
	flags := cmd.PersistentFlags()
	configFlags.AddFlags(flags)
	addKlogVerbosity(flags)
	registerGlobalFlagCompletion(cmd, configFlags)
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
		// cobra prints help and succeeds for an unknown subcommand of a
		// command that is not runnable, so `kubeoc agent frob` in a script
		// would pass. Like kubectl's command groups, refuse arguments and exit
		// 1 after the help when run bare.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unknown command %q for %q\nSee '%s -h' for help and examples", args[0], cmd.CommandPath(), cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SetOut(streams.ErrOut)
			if err := cmd.Help(); err != nil {
				return err
			}
			return ErrExit
		},
	}
	cmd.AddCommand(NewCmdShare(configFlags, streams))
	cmd.AddCommand(NewCmdUnshare(configFlags, streams))
	cmd.AddCommand(NewCmdList(configFlags, streams))
	return cmd
}

// toRESTConfig is configFlags.ToRESTConfig, except that when no kubeconfig
// was found at all it says so, instead of letting client-go fall back to
// http://localhost:8080 and fail there with a connection refused that names
// neither KUBECONFIG nor --kubeconfig.
func toRESTConfig(configFlags *genericclioptions.ConfigFlags) (*rest.Config, error) {
	loader := configFlags.ToRawKubeConfigLoader()
	raw, err := loader.RawConfig()
	if err != nil {
		return nil, err
	}
	serverFlag := configFlags.APIServer != nil && *configFlags.APIServer != ""
	inCluster := os.Getenv("KUBERNETES_SERVICE_HOST") != "" && os.Getenv("KUBERNETES_SERVICE_PORT") != ""
	if len(raw.Clusters) == 0 && !serverFlag && !inCluster {
		where := strings.Join(clientcmd.NewDefaultClientConfigLoadingRules().GetLoadingPrecedence(), ", ")
		if configFlags.KubeConfig != nil && *configFlags.KubeConfig != "" {
			where = *configFlags.KubeConfig
		}
		return nil, fmt.Errorf("no Kubernetes cluster is configured (no kubeconfig with a cluster in %s): set KUBECONFIG to your kubeconfig file, or pass --kubeconfig", where)
	}
	return configFlags.ToRESTConfig()
}
