package cli

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/resource"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
)

// agentResource names the Agent CRD with its group. The aggregated API
// serves agents/share in subresources.kubeopencode.io, so discovery knows
// two "agents"; the full name keeps completion on the CRD.
const agentResource = "agents.kubeopencode.io"

// completionTimeout bounds the requests of a completion: a shell waiting on
// an unreachable cluster after TAB is worse than no completion.
const completionTimeout = 5 * time.Second

// The completions below are kubectl's (k8s.io/kubectl/pkg/util/completion
// and registerCompletionFuncForGlobalFlags in k8s.io/kubectl/pkg/cmd), made
// with cli-runtime's resource builder instead of kubectl's Factory and get
// command: those bring kubectl's describe, validation and i18n packages,
// four more modules and a third more binary for listing names.

// registerGlobalFlagCompletion completes the kubeconfig flags as kubectl's
// root command does: namespaces from the cluster, contexts, clusters and
// users from the kubeconfig.
func registerGlobalFlagCompletion(cmd *cobra.Command, configFlags *genericclioptions.ConfigFlags) {
	fromConfig := func(names func(*clientcmdapi.Config) []string) func(string) []string {
		return func(toComplete string) []string {
			raw, err := configFlags.ToRawKubeConfigLoader().RawConfig()
			if err != nil {
				return nil
			}
			return withPrefix(names(&raw), toComplete)
		}
	}
	for flag, fn := range map[string]func(string) []string{
		"namespace": func(toComplete string) []string { return resourceNames(configFlags, "namespaces", toComplete) },
		"context":   fromConfig(func(c *clientcmdapi.Config) []string { return sortedKeys(c.Contexts) }),
		"cluster":   fromConfig(func(c *clientcmdapi.Config) []string { return sortedKeys(c.Clusters) }),
		"user":      fromConfig(func(c *clientcmdapi.Config) []string { return sortedKeys(c.AuthInfos) }),
	} {
		cobra.CheckErr(cmd.RegisterFlagCompletionFunc(flag, func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			return fn(toComplete), cobra.ShellCompDirectiveNoFileComp
		}))
	}
}

// agentNameCompletion completes the NAME argument of share and unshare with
// the Agents of the namespace, and nothing after it, as kubectl's
// ResourceNameCompletionFunc does.
func agentNameCompletion(configFlags *genericclioptions.ConfigFlags) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return resourceNames(configFlags, agentResource, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// resourceNames lists the names of a resource in the namespace of
// configFlags (or cluster-wide for a cluster-scoped one) that begin with
// toComplete, as `kubectl get RESOURCE` finds them: discovery, then a list.
// Errors, forbidden included, complete nothing, as in kubectl.
func resourceNames(configFlags *genericclioptions.ConfigFlags, res, toComplete string) []string {
	namespace, _, err := configFlags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil
	}
	timeout := configFlags.Timeout
	if timeout == nil || *timeout == "" || *timeout == "0" {
		configFlags.Timeout = ptr.To(completionTimeout.String())
	}
	infos, err := resource.NewBuilder(configFlags).
		Unstructured().
		NamespaceParam(namespace).DefaultNamespace().
		ResourceTypeOrNameArgs(true, res).
		Latest().
		Flatten().
		Do().Infos()
	if err != nil {
		return nil
	}
	var names []string
	for _, info := range infos {
		if strings.HasPrefix(info.Name, toComplete) {
			names = append(names, info.Name)
		}
	}
	return names
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// registerOutputCompletion completes -o with formats, as kubectl get's
// PrintFlags do; cli-runtime's PrintFlags, which kubeoc uses, register none.
func registerOutputCompletion(cmd *cobra.Command, formats []string) {
	cobra.CheckErr(cmd.RegisterFlagCompletionFunc("output", func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		return withPrefix(formats, toComplete), cobra.ShellCompDirectiveNoFileComp
	}))
}

// registerLinkCompletion completes --link with the named links of the Agent
// given as the argument. kubectl's template helper cannot do it: a go
// template fails on an Agent without status.share, and an enabled link is in
// spec before the controller reports it in status.
func registerLinkCompletion(cmd *cobra.Command, configFlags *genericclioptions.ConfigFlags) {
	cobra.CheckErr(cmd.RegisterFlagCompletionFunc("link", func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		agent, err := getAgent(ctx, configFlags, args[0])
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return withPrefix(linkNames(agent), toComplete), cobra.ShellCompDirectiveNoFileComp
	}))
}

// getAgent reads an Agent of the namespace of configFlags.
func getAgent(ctx context.Context, configFlags *genericclioptions.ConfigFlags, name string) (*kubeopencodev1alpha1.Agent, error) {
	namespace, _, err := configFlags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, err
	}
	config, err := toRESTConfig(configFlags)
	if err != nil {
		return nil, err
	}
	c, err := restClientFor(config, kubeopencodev1alpha1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	agent := &kubeopencodev1alpha1.Agent{}
	err = c.Get().Namespace(namespace).Resource("agents").Name(name).Do(ctx).Into(agent)
	return agent, err
}

// linkNames is the sorted names of an Agent's named links, wanted (spec)
// or reported (status).
func linkNames(a *kubeopencodev1alpha1.Agent) []string {
	seen := map[string]bool{}
	if s := a.Spec.Share; s != nil {
		for _, l := range s.Links {
			seen[l.Name] = true
		}
	}
	if s := a.Status.Share; s != nil {
		for _, l := range s.Links {
			seen[l.Name] = true
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func withPrefix(all []string, prefix string) []string {
	var out []string
	for _, s := range all {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out
}
