package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/kubectl/pkg/util/templates"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/apis/kubeopencode/validation"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
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

		Run on a link that is already enabled, share changes only the settings
		given on the command line and keeps the others (expiry, allowed
		addresses, mode, limits), then prints what changed. --allowed-ips=""
		allows every address again; --reset sets the link from the flags alone,
		clearing every setting they do not give, which is what the API's create
		does.

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

		# Later, extend it by two hours: the allowed networks stay
		kubeoc agent share team-agent --expires-in 2h

		# Allow every address again
		kubeoc agent share team-agent --allowed-ips=""

		# Set the link from these flags alone, clearing the others
		kubeoc agent share team-agent --reset --expires-in 1h

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
	Reset      bool
	MaxUses    int32
	Link       string
	ReadOnly   bool
	MaxViewers int32

	Name      string
	Namespace string

	// expiresInSet is true when --expires-in was given, so that an explicit
	// zero is refused instead of silently meaning "no expiry".
	expiresInSet  bool
	allowedIPsSet bool
	readOnlySet   bool
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
		PrintFlags: genericclioptions.NewPrintFlags("").WithTypeSetter(clientscheme.Scheme),
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
		Use:                   "share NAME [--link LINK] [--read-only] [--expires-in DURATION | --expires-at TIME] [--allowed-ips CIDR,...] [--max-uses N] [--max-viewers N] [--rotate] [--reset] [--show]",
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
	cmd.Flags().StringSliceVar(&o.AllowedIPs, "allowed-ips", nil, "Comma-separated CIDR ranges or addresses that may use the link; an enabled link keeps its own unless given, and --allowed-ips=\"\" allows all.")
	cmd.Flags().BoolVar(&o.Show, "show", false, "Show the existing link instead of enabling it.")
	cmd.Flags().BoolVar(&o.Rotate, "rotate", false, "Replace the token of an enabled link.")
	cmd.Flags().BoolVar(&o.Reset, "reset", false, "Set the link from the flags given alone: settings they do not give are cleared instead of kept.")
	cmd.Flags().Int32Var(&o.MaxUses, "max-uses", 0, "How many terminal connections the link opens before it stops working; 1 makes a one-time link. Opening the page alone uses nothing.")
	cmd.Flags().StringVar(&o.Link, "link", "", "The named link to enable or show, with its own token; empty means the Agent's default link.")
	cmd.Flags().BoolVar(&o.ReadOnly, "read-only", false, "Make a view link: its holders watch the terminal and cannot type into it.")
	cmd.Flags().Int32Var(&o.MaxViewers, "max-viewers", 0, "How many pages may have the link's terminal open at once.")
	cmd.ValidArgsFunction = agentNameCompletion(configFlags)
	registerLinkCompletion(cmd, configFlags)
	registerOutputCompletion(cmd, o.PrintFlags.AllowedFormats())
	return cmd
}

// Complete fills in the options from the command line and kubeconfig.
func (o *ShareOptions) Complete(configFlags *genericclioptions.ConfigFlags, cmd *cobra.Command, args []string) error {
	o.Name = args[0]
	if err := o.completeFlags(cmd.Flags()); err != nil {
		return err
	}
	var err error
	if o.Namespace, _, err = configFlags.ToRawKubeConfigLoader().Namespace(); err != nil {
		return err
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

// completeFlags records which flags were given, since a link that exists
// keeps the settings whose flags were not, and parses --expires-at.
func (o *ShareOptions) completeFlags(flags *pflag.FlagSet) error {
	o.expiresInSet = flags.Changed("expires-in")
	o.allowedIPsSet = flags.Changed("allowed-ips")
	o.readOnlySet = flags.Changed("read-only")
	o.maxUsesSet = flags.Changed("max-uses")
	o.maxViewersSet = flags.Changed("max-viewers")
	if o.ExpiresAt != "" {
		t, err := time.Parse(time.RFC3339, o.ExpiresAt)
		if err != nil {
			return fmt.Errorf("invalid --expires-at %q: want an RFC 3339 time such as 2026-05-01T00:00:00Z", o.ExpiresAt)
		}
		mt := metav1.NewTime(t)
		o.expiresAt = &mt
	}
	return nil
}

// Validate checks the flags before any request is made.
func (o *ShareOptions) Validate() error {
	if o.Show && (o.Rotate || o.Reset || o.maxUsesSet || o.expiresInSet || o.ExpiresAt != "" || o.allowedIPsSet || o.readOnlySet || o.maxViewersSet) {
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
	if o.Show {
		share, err := o.client.Get(ctx, o.Namespace, o.Name, o.Link)
		if err != nil {
			return explainLink(err, "get", o.Namespace, o.Name, o.Link)
		}
		return o.print(share, "Share link for agent", nil)
	}

	// The API's create is declarative: its body is the whole link, and what
	// it leaves out is cleared. A user re-running share to extend a link
	// would silently drop its allowed addresses, so kubeoc reads the link
	// first and sends back what the command line does not change. Another
	// writer between the read and the create is not detected; the printed
	// result is what the server kept.
	// With --reset the link is read all the same, to say what changed.
	var current *subresourcesv1alpha1.AgentShareStatus
	got, err := o.client.Get(ctx, o.Namespace, o.Name, o.Link)
	switch {
	case err == nil:
		if got.Status.Token != "" {
			current = &got.Status
		}
	case isNoSuchLink(err):
		// A named link that does not exist yet has nothing to keep.
	case apierrors.IsForbidden(err) && o.Reset:
		// Nothing to keep, so nothing to read; the changes go unsaid.
	case apierrors.IsForbidden(err):
		return o.explainGetForbidden(ctx, err)
	default:
		return explainLink(err, "get", o.Namespace, o.Name, o.Link)
	}
	keep := current
	if o.Reset {
		keep = nil
	}
	share, err := o.client.Create(ctx, o.Namespace, o.Name, o.request(keep), false)
	if err != nil {
		return explainLink(err, "create", o.Namespace, o.Name, o.Link)
	}
	changes := shareChanges(current, &share.Status)
	heading := "Share link enabled for agent"
	switch {
	case o.Rotate:
		heading = "Share link rotated for agent"
	case current != nil && len(changes) > 0:
		heading = "Share link updated for agent"
	case current != nil:
		heading = "Share link unchanged for agent"
	}
	return o.print(share, heading, changes)
}

// request is the body of the create: the flags given, and for the rest the
// settings of the current link when there is one.
func (o *ShareOptions) request(current *subresourcesv1alpha1.AgentShareStatus) *subresourcesv1alpha1.AgentShare {
	spec := subresourcesv1alpha1.AgentShareSpec{Rotate: o.Rotate, Link: o.Link}
	switch {
	case o.expiresInSet:
		spec.ExpiresIn = &metav1.Duration{Duration: o.ExpiresIn}
	case o.expiresAt != nil:
		spec.ExpiresAt = o.expiresAt
	case current != nil && current.ExpiresAt != nil && current.ExpiresAt.After(o.now()):
		// An expired link gets a new expiry from the server rather than a
		// past one that it would refuse.
		spec.ExpiresAt = current.ExpiresAt.DeepCopy()
	}
	switch {
	case o.allowedIPsSet:
		spec.AllowedIPs = o.AllowedIPs
	case current != nil:
		spec.AllowedIPs = current.AllowedIPs
	}
	switch {
	case o.readOnlySet && o.ReadOnly:
		spec.Mode = "view"
	case o.readOnlySet:
		spec.Mode = "edit"
	case current != nil && current.Mode == "view":
		spec.Mode = "view"
	}
	switch {
	case o.maxUsesSet:
		spec.MaxUses = &o.MaxUses
	case current != nil:
		spec.MaxUses = current.MaxUses
	}
	switch {
	case o.maxViewersSet:
		spec.MaxViewers = &o.MaxViewers
	case current != nil:
		spec.MaxViewers = current.MaxViewers
	}
	return &subresourcesv1alpha1.AgentShare{
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace},
		Spec:       spec,
	}
}

// explainGetForbidden answers a user who may not read the link, so kubeoc
// cannot keep its settings. A user who may not create it either is told
// that, as before; a dry-run create tells the two apart without changing
// anything.
func (o *ShareOptions) explainGetForbidden(ctx context.Context, getErr error) error {
	if _, err := o.client.Create(ctx, o.Namespace, o.Name, o.request(nil), true); err != nil {
		return explainLink(err, "create", o.Namespace, o.Name, o.Link)
	}
	return fmt.Errorf("%v; kubeoc reads a link to keep the settings not given on the command line: pass --reset to set the link from the flags alone",
		explainLink(getErr, "get", o.Namespace, o.Name, o.Link))
}

// print writes the link as -o asks, or as text under heading with the
// changes made.
func (o *ShareOptions) print(share *subresourcesv1alpha1.AgentShare, heading string, changes []string) error {
	if o.printer != nil {
		return o.printer.PrintObj(share, o.Out)
	}
	if o.Link != "" {
		heading = strings.Replace(heading, "Share link", fmt.Sprintf("Share link %q", o.Link), 1)
	}
	fmt.Fprintf(o.Out, "%s %s/%s\n", heading, o.Namespace, o.Name)
	for _, c := range changes {
		fmt.Fprintf(o.Out, "  %s\n", c)
	}
	fmt.Fprintln(o.Out)
	PrintShare(o.Out, o.Namespace, o.Name, share)
	return nil
}

// shareChanges lists, one line each, the settings that differ between the
// link as it was (nil when it was not enabled) and as it is. A new link has
// no changes: it is printed whole.
func shareChanges(before, after *subresourcesv1alpha1.AgentShareStatus) []string {
	if before == nil {
		return nil
	}
	var out []string
	add := func(what, from, to string) {
		if from != to {
			out = append(out, fmt.Sprintf("%s: %s -> %s", what, from, to))
		}
	}
	add("Mode", modeText(before.Mode), modeText(after.Mode))
	add("Expires", timeText(before.ExpiresAt), timeText(after.ExpiresAt))
	add("Allowed IPs", ipsText(before.AllowedIPs), ipsText(after.AllowedIPs))
	add("Max uses", limitText(before.MaxUses), limitText(after.MaxUses))
	add("Max viewers", limitText(before.MaxViewers), limitText(after.MaxViewers))
	if before.Token != after.Token {
		out = append(out, "Token: replaced")
	}
	return out
}

func modeText(mode kubeopencodev1alpha1.ShareMode) string {
	if mode == "" {
		return string(kubeopencodev1alpha1.ShareModeEdit)
	}
	return string(mode)
}

func timeText(t *metav1.Time) string {
	if t == nil {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

func ipsText(ips []string) string {
	if len(ips) == 0 {
		return "any"
	}
	return strings.Join(ips, ",")
}

func limitText(n *int32) string {
	if n == nil {
		return "none"
	}
	return fmt.Sprint(*n)
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
