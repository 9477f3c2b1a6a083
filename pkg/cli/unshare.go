package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/kubectl/pkg/util/templates"
)

var (
	unshareLong = templates.LongDesc(`
		Disable the share link of an Agent, or one of its named links with
		--link. The token stops working at once and the terminal sessions
		opened with it are closed; the Agent's other links go on working.

		As with kubectl delete, disabling a link that is not enabled (or an
		Agent that does not exist) is an error, for the default link and named
		links alike, unless --ignore-not-found is given.`)

	unshareExample = templates.Examples(`
		# Disable the share link of an Agent
		kubeoc agent unshare team-agent -n default

		# Disable the named link demo only
		kubeoc agent unshare team-agent --link demo

		# Make sure the link is off, whether or not it was on
		kubeoc agent unshare team-agent --ignore-not-found

		# Rotate the token by disabling and enabling again
		kubeoc agent unshare team-agent && kubeoc agent share team-agent`)
)

// UnshareOptions holds the inputs of `kubeoc agent unshare`.
type UnshareOptions struct {
	Name           string
	Link           string
	Namespace      string
	IgnoreNotFound bool

	client *shareClient
	genericiooptions.IOStreams
}

// NewCmdUnshare returns `kubeoc agent unshare`.
func NewCmdUnshare(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &UnshareOptions{IOStreams: streams}
	cmd := &cobra.Command{
		Use:                   "unshare NAME [--link LINK]",
		DisableFlagsInUseLine: true,
		Short:                 "Disable the share link of an Agent",
		Long:                  unshareLong,
		Example:               unshareExample,
		Args:                  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(configFlags, args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&o.Link, "link", "", "The named link to disable; empty means the Agent's default link.")
	cmd.Flags().BoolVar(&o.IgnoreNotFound, "ignore-not-found", false, "Treat a link that is not enabled, or an Agent that does not exist, as a successful unshare.")
	cmd.ValidArgsFunction = agentNameCompletion(configFlags)
	registerLinkCompletion(cmd, configFlags)
	return cmd
}

// Validate checks the flags before any request is made.
func (o *UnshareOptions) Validate() error {
	return validateLinkFlag(o.Name, o.Link)
}

// Complete fills in the options from the command line and kubeconfig.
func (o *UnshareOptions) Complete(configFlags *genericclioptions.ConfigFlags, args []string) error {
	o.Name = args[0]
	var err error
	if o.Namespace, _, err = configFlags.ToRawKubeConfigLoader().Namespace(); err != nil {
		return err
	}
	config, err := toRESTConfig(configFlags)
	if err != nil {
		return err
	}
	o.client, err = newShareClient(config)
	return err
}

// Run disables the link.
//
// The API's delete is declarative for the default link (deleting a disabled
// link succeeds) and answers 404 for a named link that does not exist.
// kubeoc gives both kubectl delete's rule: a link that is not enabled is not
// found, exit 1, unless --ignore-not-found. It reads the link first for that;
// a user allowed to delete but not to get links gets the API's own answer.
func (o *UnshareOptions) Run(ctx context.Context) error {
	current, err := o.client.Get(ctx, o.Namespace, o.Name, o.Link)
	switch {
	case err == nil && current.Status.Token == "":
		if o.IgnoreNotFound {
			return nil
		}
		if o.Link != "" {
			return fmt.Errorf("agent %s/%s has no share link named %q", o.Namespace, o.Name, o.Link)
		}
		return fmt.Errorf("agent %s/%s has no enabled share link", o.Namespace, o.Name)
	case err != nil && apierrors.IsNotFound(err) && o.IgnoreNotFound:
		return nil
	case err != nil && !apierrors.IsForbidden(err):
		return explainLink(err, "get", o.Namespace, o.Name, o.Link)
	}
	if err := o.client.Delete(ctx, o.Namespace, o.Name, o.Link); err != nil {
		if apierrors.IsNotFound(err) && o.IgnoreNotFound {
			return nil
		}
		return explainLink(err, "delete", o.Namespace, o.Name, o.Link)
	}
	if o.Link != "" {
		fmt.Fprintf(o.Out, "Share link %q disabled for agent %s/%s\n", o.Link, o.Namespace, o.Name)
		return nil
	}
	fmt.Fprintf(o.Out, "Share link disabled for agent %s/%s\n", o.Namespace, o.Name)
	return nil
}
