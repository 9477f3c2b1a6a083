package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/kubectl/pkg/util/templates"

	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/apis/subresources/validation"
	"github.com/kubeopencode/share/pkg/share"
)

var (
	shareLong = templates.LongDesc(`
		Enable, show or rotate the share link of an Agent.

		The link, https://SERVER/s/TOKEN, opens the Agent's terminal in a browser
		without Kubernetes credentials: whoever holds it has a shell in the Agent's
		pod. Share it through secure channels and limit it with --expires-in and
		--allowed-ips. Enabling is idempotent: an enabled link keeps its token
		unless --rotate is given.

		An Agent has a default link and may have named ones (--link NAME), each
		with its own token, mode, expiry, allowed addresses and limits, shown and
		disabled one by one. A --read-only link lets its holders watch the
		terminal but never type into it: the share server drops their input.`)

	shareExample = templates.Examples(`
		# Enable the share link of an Agent
		kubeoc agent share team-agent -n default

		# A one-time link: the first terminal connection uses it up
		kubeoc agent share team-agent --max-uses 1

		# Enable it for a day, from two networks only
		kubeoc agent share team-agent --expires-in 24h --allowed-ips 10.0.0.0/8,192.168.1.0/24

		# Show the existing link
		kubeoc agent share team-agent --show

		# Replace the token; sessions opened with the old one end
		kubeoc agent share team-agent --rotate

		# A second, read-only link for a demo audience, for at most 50 pages
		kubeoc agent share team-agent --link demo --read-only --max-viewers 50

		# Show a named link; the default link's --show lists the named ones
		kubeoc agent share team-agent --link demo --show`)
)

// ShareOptions holds the inputs of `kubeoc agent share`.
type ShareOptions struct {
	PrintFlags *genericclioptions.PrintFlags

	ExpiresIn  time.Duration
	ExpiresAt  string
	AllowedIPs []string
	Show       bool
	Rotate     bool
	MaxUses    int32
	Link       string
	ReadOnly   bool
	MaxViewers int32

	Name      string
	Namespace string

	// expiresInSet is true when --expires-in was given, so that an explicit
	// zero is refused instead of silently meaning "no expiry".
	expiresInSet  bool
	maxUsesSet    bool
	maxViewersSet bool
	expiresAt     *metav1.Time
	client        *shareClient
	printer       printers.ResourcePrinter
	// now is the clock of flag validation; tests replace it.
	now func() time.Time

	genericiooptions.IOStreams
}

// NewShareOptions returns ShareOptions with defaults.
func NewShareOptions(streams genericiooptions.IOStreams) *ShareOptions {
	return &ShareOptions{
		PrintFlags: genericclioptions.NewPrintFlags("").WithTypeSetter(scheme),
		IOStreams:  streams,
		now:        time.Now,
	}
}

// NewCmdShare returns `kubeoc agent share`.
func NewCmdShare(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	return newCmdShare(configFlags, NewShareOptions(streams))
}

func newCmdShare(configFlags *genericclioptions.ConfigFlags, o *ShareOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:                   "share NAME [--link LINK] [--read-only] [--expires-in DURATION | --expires-at TIME] [--allowed-ips CIDR,...] [--max-uses N] [--max-viewers N] [--rotate] [--show]",
		DisableFlagsInUseLine: true,
		Short:                 "Enable or show the share link of an Agent",
		Long:                  shareLong,
		Example:               shareExample,
		Args:                  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(configFlags, cmd, args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.PrintFlags.AddFlags(cmd)
	cmd.Flags().DurationVar(&o.ExpiresIn, "expires-in", 0, "How long the link works, such as 24h.")
	cmd.Flags().StringVar(&o.ExpiresAt, "expires-at", "", "When the link stops working, as an RFC 3339 time such as 2026-05-01T00:00:00Z.")
	cmd.Flags().StringSliceVar(&o.AllowedIPs, "allowed-ips", nil, "Comma-separated CIDR ranges or addresses that may use the link; empty allows all.")
	cmd.Flags().BoolVar(&o.Show, "show", false, "Show the existing link instead of enabling it.")
	cmd.Flags().BoolVar(&o.Rotate, "rotate", false, "Replace the token of an enabled link.")
	cmd.Flags().Int32Var(&o.MaxUses, "max-uses", 0, "How many terminal connections the link opens before it stops working; 1 makes a one-time link. Opening the page alone uses nothing.")
	cmd.Flags().StringVar(&o.Link, "link", "", "The named link to enable or show, with its own token; empty means the Agent's default link.")
	cmd.Flags().BoolVar(&o.ReadOnly, "read-only", false, "Make a view link: its holders watch the terminal and cannot type into it.")
	cmd.Flags().Int32Var(&o.MaxViewers, "max-viewers", 0, "How many pages may have the link's terminal open at once.")
	return cmd
}

// Complete fills in the options from the command line and kubeconfig.
func (o *ShareOptions) Complete(configFlags *genericclioptions.ConfigFlags, cmd *cobra.Command, args []string) error {
	o.Name = args[0]
	o.expiresInSet = cmd.Flags().Changed("expires-in")
	o.maxUsesSet = cmd.Flags().Changed("max-uses")
	o.maxViewersSet = cmd.Flags().Changed("max-viewers")
	var err error
	if o.Namespace, _, err = configFlags.ToRawKubeConfigLoader().Namespace(); err != nil {
		return err
	}
	if o.ExpiresAt != "" {
		t, err := time.Parse(time.RFC3339, o.ExpiresAt)
		if err != nil {
			return fmt.Errorf("invalid --expires-at %q: want an RFC 3339 time such as 2026-05-01T00:00:00Z", o.ExpiresAt)
		}
		mt := metav1.NewTime(t)
		o.expiresAt = &mt
	}
	if o.PrintFlags.OutputFormat != nil && *o.PrintFlags.OutputFormat != "" {
		if o.printer, err = o.PrintFlags.ToPrinter(); err != nil {
			return err
		}
	}
	config, err := toRESTConfig(configFlags)
	if err != nil {
		return err
	}
	o.client, err = newShareClient(config)
	return err
}

// Validate checks the flags before any request is made.
func (o *ShareOptions) Validate() error {
	if o.Show && (o.Rotate || o.MaxUses != 0 || o.expiresInSet || o.ExpiresAt != "" || len(o.AllowedIPs) > 0 || o.ReadOnly || o.maxViewersSet) {
		return fmt.Errorf("--show takes no other share flags but --link")
	}
	if err := validateLinkFlag(o.Name, o.Link); err != nil {
		return err
	}
	if o.maxViewersSet && (o.MaxViewers < 1 || o.MaxViewers > validation.MaxViewers) {
		return fmt.Errorf("invalid --max-viewers %d: must be between 1 and %d", o.MaxViewers, validation.MaxViewers)
	}
	if o.expiresInSet && o.ExpiresAt != "" {
		return fmt.Errorf("--expires-in and --expires-at may not be used together")
	}
	if o.expiresInSet && o.ExpiresIn <= 0 {
		return fmt.Errorf("invalid --expires-in %s: must be positive", o.ExpiresIn)
	}
	if o.expiresAt != nil && !o.expiresAt.After(o.now()) {
		return fmt.Errorf("invalid --expires-at %s: must be in the future", o.ExpiresAt)
	}
	if o.maxUsesSet && (o.MaxUses < 1 || o.MaxUses > validation.MaxUses) {
		return fmt.Errorf("invalid --max-uses %d: must be between 1 and %d", o.MaxUses, validation.MaxUses)
	}
	if errs := validation.ValidateAllowedIPs(o.AllowedIPs, nil); len(errs) > 0 {
		return fmt.Errorf("invalid --allowed-ips: %s", strings.TrimPrefix(errs[0].ErrorBody(), "Invalid value: "))
	}
	return nil
}

// Run enables or shows the link and prints it.
func (o *ShareOptions) Run(ctx context.Context) error {
	var (
		share *subresourcesv1alpha1.AgentShare
		err   error
		verb  = "create"
	)
	if o.Show {
		verb = "get"
		share, err = o.client.Get(ctx, o.Namespace, o.Name, o.Link)
	} else {
		req := &subresourcesv1alpha1.AgentShare{
			ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace},
			Spec: subresourcesv1alpha1.AgentShareSpec{
				ExpiresAt:  o.expiresAt,
				AllowedIPs: o.AllowedIPs,
				Rotate:     o.Rotate,
				Link:       o.Link,
			},
		}
		if o.ReadOnly {
			req.Spec.Mode = "view"
		}
		if o.maxViewersSet {
			req.Spec.MaxViewers = &o.MaxViewers
		}
		if o.expiresInSet {
			req.Spec.ExpiresIn = &metav1.Duration{Duration: o.ExpiresIn}
		}
		if o.maxUsesSet {
			req.Spec.MaxUses = &o.MaxUses
		}
		share, err = o.client.Create(ctx, o.Namespace, o.Name, req)
	}
	if err != nil {
		return explainLink(err, verb, o.Namespace, o.Name, o.Link)
	}
	if o.printer != nil {
		return o.printer.PrintObj(share, o.Out)
	}
	heading := "Share link enabled for agent"
	switch {
	case o.Show:
		heading = "Share link for agent"
	case o.Rotate:
		heading = "Share link rotated for agent"
	}
	if o.Link != "" {
		heading = strings.Replace(heading, "Share link", fmt.Sprintf("Share link %q", o.Link), 1)
	}
	fmt.Fprintf(o.Out, "%s %s/%s\n\n", heading, o.Namespace, o.Name)
	PrintShare(o.Out, o.Namespace, o.Name, share)
	return nil
}

// PrintShare writes the text form of a share link.
func PrintShare(w io.Writer, namespace, name string, share *subresourcesv1alpha1.AgentShare) {
	s := share.Status
	fmt.Fprintf(w, "Agent:  %s/%s\n", namespace, name)
	if s.Link != "" {
		fmt.Fprintf(w, "Link:   %s\n", s.Link)
	}
	fmt.Fprintf(w, "Active: %t\n", s.Active)
	if !s.Active && s.Reason != "" {
		fmt.Fprintf(w, "Reason: %s\n", s.Reason)
	}
	if s.Token != "" {
		fmt.Fprintf(w, "Token:  %s\n", s.Token)
	}
	if s.Path != "" {
		fmt.Fprintf(w, "Path:   %s\n", s.Path)
	}
	if s.URL != "" {
		fmt.Fprintf(w, "URL:    %s\n", s.URL)
	}
	if s.ExpiresAt != nil {
		fmt.Fprintf(w, "Expires: %s\n", s.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if len(s.AllowedIPs) > 0 {
		fmt.Fprintf(w, "Allowed IPs: %s\n", strings.Join(s.AllowedIPs, ","))
	}
	if s.MaxUses != nil {
		fmt.Fprintf(w, "Uses: %d of %d\n", s.Uses, *s.MaxUses)
	}
	if s.Mode == "view" {
		fmt.Fprintf(w, "Mode:   view (read-only)\n")
	}
	if s.MaxViewers != nil {
		fmt.Fprintf(w, "Viewers: %d of %d\n", s.Viewers, *s.MaxViewers)
	} else if s.Viewers > 0 {
		fmt.Fprintf(w, "Viewers: %d\n", s.Viewers)
	}
	if len(s.Links) > 0 {
		fmt.Fprintf(w, "Named links: %s\n", strings.Join(s.Links, ","))
	}
}

// validateLinkFlag checks --link before any request is made.
func validateLinkFlag(agent, link string) error {
	if link == "" {
		return nil
	}
	if errs := share.ValidateLinkName(agent, link, nil); len(errs) > 0 {
		return fmt.Errorf("invalid --link %q: %s", link, strings.TrimPrefix(errs[0].Detail, "must be the name of a link: "))
	}
	return nil
}
