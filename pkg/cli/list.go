package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/client-go/rest"
	"k8s.io/kubectl/pkg/util/templates"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
)

var listExample = templates.Examples(`
	# List the Agents of the current namespace
	kubeoc agent list

	# List the Agents of every namespace
	kubeoc agent list -A`)

// tableAccept asks the server for the Agent CRD's printer columns.
const tableAccept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"

// ListOptions holds the inputs of `kubeoc agent list`.
type ListOptions struct {
	PrintFlags    *genericclioptions.PrintFlags
	AllNamespaces bool
	Namespace     string

	rest    rest.Interface
	printer printers.ResourcePrinter
	genericiooptions.IOStreams
}

// NewCmdList returns `kubeoc agent list`.
func NewCmdList(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &ListOptions{PrintFlags: genericclioptions.NewPrintFlags("").WithTypeSetter(scheme), IOStreams: streams}
	cmd := &cobra.Command{
		Use:     "list [-A]",
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
	cmd.Flags().BoolVarP(&o.AllNamespaces, "all-namespaces", "A", false, "List the Agents of every namespace.")
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
	if *o.PrintFlags.OutputFormat != "" {
		if o.printer, err = o.PrintFlags.ToPrinter(); err != nil {
			return err
		}
	}
	config, err := toRESTConfig(configFlags)
	if err != nil {
		return err
	}
	cfg := rest.CopyConfig(config)
	cfg.GroupVersion = &kubeopencodev1alpha1.SchemeGroupVersion
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = codecs.WithoutConversion()
	o.rest, err = rest.RESTClientFor(cfg)
	return err
}

// Run lists the Agents.
func (o *ListOptions) Run(ctx context.Context) error {
	req := o.rest.Get().Namespace(o.Namespace).Resource("agents")
	if o.printer != nil {
		list := &kubeopencodev1alpha1.AgentList{}
		if err := req.Do(ctx).Into(list); err != nil {
			return explainList(err, o.Namespace)
		}
		return o.printer.PrintObj(list, o.Out)
	}
	table := &metav1.Table{}
	if err := req.SetHeader("Accept", tableAccept).Do(ctx).Into(table); err != nil {
		return explainList(err, o.Namespace)
	}
	if len(table.Rows) == 0 {
		if o.AllNamespaces {
			fmt.Fprintln(o.ErrOut, "No Agents found.")
		} else {
			fmt.Fprintf(o.ErrOut, "No Agents found in namespace %s.\n", o.Namespace)
		}
		return nil
	}
	return printers.NewTablePrinter(printers.PrintOptions{WithNamespace: o.AllNamespaces}).PrintObj(table, o.Out)
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
