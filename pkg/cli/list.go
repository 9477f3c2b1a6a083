package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/client-go/rest"
	"k8s.io/kubectl/pkg/util/templates"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
)

var listExample = templates.Examples(`
	# List the Agents of the current namespace
	kubeoc agent list

	# List the Agents of every namespace, with their share mode, viewers,
	# allowed addresses and named links
	kubeoc agent list -A -o wide

	# Names only, for scripts
	kubeoc agent list -l team=a -o name

	# Watch the Agents' readiness and share state change
	kubeoc agent list -w`)

// tableAccept asks the server for the Agent CRD's printer columns.
const tableAccept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"

// ListOptions holds the inputs of `kubeoc agent list`. The flags are those
// of kubectl get that make sense for one resource.
type ListOptions struct {
	PrintFlags    *genericclioptions.PrintFlags
	AllNamespaces bool
	LabelSelector string
	FieldSelector string
	NoHeaders     bool
	ShowLabels    bool
	Watch         bool
	WatchOnly     bool

	Namespace string

	rest rest.Interface
	// printer prints objects for -o json, yaml, name and templates; nil
	// means a table, from the server's printer columns.
	printer printers.ResourcePrinter
	wide    bool
	genericiooptions.IOStreams
}

// NewCmdList returns `kubeoc agent list`.
func NewCmdList(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &ListOptions{PrintFlags: genericclioptions.NewPrintFlags("").WithTypeSetter(clientscheme.Scheme), IOStreams: streams}
	cmd := &cobra.Command{
		Use:     "list [-A] [-l SELECTOR] [-o wide|name|json|yaml|...] [-w]",
		Aliases: []string{"ls"},
		Short:   "List Agents with their readiness and share links",
		Example: listExample,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(configFlags); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.PrintFlags.AddFlags(cmd)
	// PrintFlags knows the machine formats; wide is a table, as in kubectl get.
	cmd.Flags().Lookup("output").Usage = fmt.Sprintf("Output format. One of: (wide, %s).", strings.Join(o.PrintFlags.AllowedFormats(), ", "))
	registerOutputCompletion(cmd, append([]string{"wide"}, o.PrintFlags.AllowedFormats()...))
	cmd.Flags().BoolVarP(&o.AllNamespaces, "all-namespaces", "A", false, "List the Agents of every namespace.")
	cmd.Flags().StringVarP(&o.LabelSelector, "selector", "l", "", "Selector (label query) to filter on, supports '=', '==', '!=', 'in', 'notin'.")
	cmd.Flags().StringVar(&o.FieldSelector, "field-selector", "", "Selector (field query) to filter on, such as metadata.name=team-agent.")
	cmd.Flags().BoolVar(&o.NoHeaders, "no-headers", false, "When using the default or wide output format, don't print headers.")
	cmd.Flags().BoolVar(&o.ShowLabels, "show-labels", false, "When printing, show all labels as the last column.")
	cmd.Flags().BoolVarP(&o.Watch, "watch", "w", false, "After listing the Agents, watch for changes.")
	cmd.Flags().BoolVar(&o.WatchOnly, "watch-only", false, "Watch for changes to the Agents, without listing them first.")
	return cmd
}

// Complete fills in the options from the command line and kubeconfig.
func (o *ListOptions) Complete(configFlags *genericclioptions.ConfigFlags) error {
	var err error
	if o.Namespace, _, err = configFlags.ToRawKubeConfigLoader().Namespace(); err != nil {
		return err
	}
	if o.AllNamespaces {
		o.Namespace = ""
	}
	switch format := *o.PrintFlags.OutputFormat; format {
	case "", "wide":
		o.wide = format == "wide"
	default:
		if o.printer, err = o.PrintFlags.ToPrinter(); err != nil {
			return err
		}
	}
	config, err := toRESTConfig(configFlags)
	if err != nil {
		return err
	}
	o.rest, err = restClientFor(config, kubeopencodev1alpha1.SchemeGroupVersion)
	return err
}

// Run lists the Agents, and watches them with -w.
func (o *ListOptions) Run(ctx context.Context) error {
	if o.printer == nil {
		return o.runTable(ctx)
	}
	return o.runObjects(ctx)
}

func (o *ListOptions) request(resourceVersion string, watch bool) *rest.Request {
	return o.rest.Get().Namespace(o.Namespace).Resource("agents").VersionedParams(&metav1.ListOptions{
		LabelSelector:   o.LabelSelector,
		FieldSelector:   o.FieldSelector,
		ResourceVersion: resourceVersion,
		Watch:           watch,
	}, metav1.ParameterCodec)
}

// runTable prints the server's table of Agents, with kubeoc's wide columns,
// through the table printer kubectl get uses; watch events arrive as tables
// of one row, printed under the same columns.
func (o *ListOptions) runTable(ctx context.Context) error {
	printer := printers.NewTablePrinter(printers.PrintOptions{
		WithNamespace: o.AllNamespaces,
		Wide:          o.wide,
		NoHeaders:     o.NoHeaders,
		ShowLabels:    o.ShowLabels,
	})
	// One tab writer for the list and every event keeps their columns
	// aligned, as kubectl get -w does.
	w := printers.GetNewTabWriter(o.Out)
	resourceVersion := ""
	if !o.WatchOnly {
		table := &metav1.Table{}
		// includeObject=Object brings each Agent, whose namespace, labels
		// and share settings the table printer and the wide columns need.
		err := o.request("", false).SetHeader("Accept", tableAccept).Param("includeObject", string(metav1.IncludeObject)).Do(ctx).Into(table)
		if err != nil {
			return explainList(err, o.Namespace)
		}
		if err := addWideColumns(table); err != nil {
			return err
		}
		if len(table.Rows) == 0 && !o.Watch {
			o.printNone()
			return nil
		}
		if err := printer.PrintObj(table, w); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
		resourceVersion = table.ResourceVersion
	}
	if !o.Watch && !o.WatchOnly {
		return nil
	}
	watcher, err := o.request(resourceVersion, true).SetHeader("Accept", tableAccept).Param("includeObject", string(metav1.IncludeObject)).Watch(ctx)
	if err != nil {
		return explainList(err, o.Namespace)
	}
	return o.eachEvent(ctx, watcher, func(obj runtime.Object) error {
		table, ok := obj.(*metav1.Table)
		if !ok {
			return fmt.Errorf("the watch sent a %T, not a Table", obj)
		}
		if err := addWideColumns(table); err != nil {
			return err
		}
		if err := printer.PrintObj(table, w); err != nil {
			return err
		}
		return w.Flush()
	})
}

// runObjects prints Agents for -o json, yaml, name and templates. A list is
// printed whole, except for name printing, which takes one object at a time,
// and with -w, where each object is printed as it comes, as kubectl get does.
func (o *ListOptions) runObjects(ctx context.Context) error {
	resourceVersion := ""
	if !o.WatchOnly {
		list := &kubeopencodev1alpha1.AgentList{}
		if err := o.request("", false).Do(ctx).Into(list); err != nil {
			return explainList(err, o.Namespace)
		}
		if len(list.Items) == 0 && !o.Watch {
			o.printNone()
		}
		// PrintFlags wraps the name printer in a type setter, so ask the
		// flag rather than the printer.
		byName := *o.PrintFlags.OutputFormat == "name"
		if !byName && !o.Watch {
			if len(list.Items) == 0 {
				return nil
			}
			return o.printer.PrintObj(list, o.Out)
		}
		for i := range list.Items {
			if err := o.printer.PrintObj(&list.Items[i], o.Out); err != nil {
				return err
			}
		}
		resourceVersion = list.ResourceVersion
	}
	if !o.Watch && !o.WatchOnly {
		return nil
	}
	watcher, err := o.request(resourceVersion, true).Watch(ctx)
	if err != nil {
		return explainList(err, o.Namespace)
	}
	return o.eachEvent(ctx, watcher, func(obj runtime.Object) error {
		return o.printer.PrintObj(obj, o.Out)
	})
}

// eachEvent hands the object of each watch event to handle until the server
// ends the watch or ctx is done.
func (o *ListOptions) eachEvent(ctx context.Context, watcher watch.Interface, handle func(runtime.Object) error) error {
	defer watcher.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case event, ok := <-watcher.ResultChan():
			if !ok {
				return nil
			}
			if event.Type == watch.Error {
				return explainList(apierrors.FromObject(event.Object), o.Namespace)
			}
			if err := handle(event.Object); err != nil {
				return err
			}
		}
	}
}

func (o *ListOptions) printNone() {
	if o.Namespace == "" {
		fmt.Fprintln(o.ErrOut, "No Agents found.")
		return
	}
	fmt.Fprintf(o.ErrOut, "No Agents found in namespace %s.\n", o.Namespace)
}

// wideColumns are what `-o wide` adds to the Agent CRD's printer columns:
// the share settings a user checks before sending a link. They are priority
// 1, so that the table printer shows them only when wide.
var wideColumns = []metav1.TableColumnDefinition{
	{Name: "Mode", Type: "string", Priority: 1, Description: "The default link's mode, edit or view."},
	{Name: "Viewers", Type: "integer", Priority: 1, Description: "Pages that have the default link open."},
	{Name: "Allowed IPs", Type: "string", Priority: 1, Description: "Addresses that may use the default link."},
	{Name: "Links", Type: "string", Priority: 1, Description: "The Agent's named links."},
}

// addWideColumns decodes the Agent of each row, which the table printer needs
// for the namespace and labels, and appends the cells of wideColumns. A
// watch event's table has rows but no column definitions, which the printer
// takes from the table before; it gets the cells all the same.
func addWideColumns(table *metav1.Table) error {
	if len(table.ColumnDefinitions) > 0 {
		table.ColumnDefinitions = append(table.ColumnDefinitions, wideColumns...)
	}
	for i := range table.Rows {
		row := &table.Rows[i]
		if row.Object.Object == nil && len(row.Object.Raw) > 0 {
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(row.Object.Raw); err != nil {
				return fmt.Errorf("decoding an Agent of the table: %w", err)
			}
			row.Object.Object = u
		}
		agent := &kubeopencodev1alpha1.Agent{}
		if u, ok := row.Object.Object.(*unstructured.Unstructured); ok {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, agent); err != nil {
				return fmt.Errorf("decoding an Agent of the table: %w", err)
			}
		}
		row.Cells = append(row.Cells, wideCells(agent)...)
	}
	return nil
}

func wideCells(a *kubeopencodev1alpha1.Agent) []interface{} {
	mode, viewers, ips, links := "<none>", int64(0), "<none>", "<none>"
	if s := a.Status.Share; s != nil {
		if s.Mode != "" {
			mode = string(s.Mode)
		}
		viewers = int64(s.Viewers)
		var names []string
		for _, l := range s.Links {
			names = append(names, l.Name)
		}
		if len(names) > 0 {
			links = strings.Join(names, ",")
		}
	}
	if s := a.Spec.Share; s != nil && len(s.AllowedIPs) > 0 {
		var all []string
		for _, ip := range s.AllowedIPs {
			all = append(all, string(ip))
		}
		ips = strings.Join(all, ",")
	}
	return []interface{}{mode, viewers, ips, links}
}

func explainList(err error, namespace string) error {
	where := fmt.Sprintf("in namespace %q", namespace)
	if namespace == "" {
		where = "in any namespace"
	}
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("forbidden: you may not list agents in API group %q %s", kubeopencodev1alpha1.GroupName, where)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("the Agent API (%s) is not installed on this cluster", kubeopencodev1alpha1.SchemeGroupVersion)
	}
	return explain(err, "list", namespace, "")
}
