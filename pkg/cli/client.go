package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"

	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
)

// shareClient calls the agents/share subresource.
type shareClient struct {
	rest rest.Interface
}

func newShareClient(config *rest.Config) (*shareClient, error) {
	c, err := restClientFor(config, subresourcesv1alpha1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	return &shareClient{rest: c}, nil
}

// restClientFor returns a REST client of one of the project's API group
// versions, decoding with the clients' scheme.
//
// kubeoc has no generated, typed clientset, and needs none: it lists Agents
// as the server's Tables (kubectl get's printer columns), which a typed List
// cannot ask for, and it calls agents/share with the link query parameter,
// which client-gen's subresource verbs cannot carry.
func restClientFor(config *rest.Config, gv schema.GroupVersion) (*rest.RESTClient, error) {
	cfg := rest.CopyConfig(config)
	cfg.GroupVersion = &gv
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = clientscheme.Codecs.WithoutConversion()
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	return rest.RESTClientFor(cfg)
}

func (c *shareClient) request(verb, namespace, name string) *rest.Request {
	return c.rest.Verb(verb).Namespace(namespace).Resource("agents").Name(name).SubResource("share")
}

// Create enables or changes a link; a dry run changes nothing and answers
// whether it would be allowed.
func (c *shareClient) Create(ctx context.Context, namespace, name string, in *subresourcesv1alpha1.AgentShare, dryRun bool) (*subresourcesv1alpha1.AgentShare, error) {
	out := &subresourcesv1alpha1.AgentShare{}
	req := c.request("POST", namespace, name).Body(in)
	if dryRun {
		req = req.Param("dryRun", metav1.DryRunAll)
	}
	err := req.Do(ctx).Into(out)
	return out, err
}

func (c *shareClient) Get(ctx context.Context, namespace, name, link string) (*subresourcesv1alpha1.AgentShare, error) {
	out := &subresourcesv1alpha1.AgentShare{}
	err := withLink(c.request("GET", namespace, name), link).Do(ctx).Into(out)
	return out, err
}

func (c *shareClient) Delete(ctx context.Context, namespace, name, link string) error {
	return withLink(c.request("DELETE", namespace, name), link).Do(ctx).Error()
}

// withLink names a link with the link query parameter; the default link
// has none.
func withLink(r *rest.Request, link string) *rest.Request {
	if link == "" {
		return r
	}
	return r.Param("link", link)
}

// isNoSuchLink is whether err says that the Agent exists but has no link of
// the name asked for.
func isNoSuchLink(err error) bool {
	status, ok := err.(apierrors.APIStatus)
	if !ok || !apierrors.IsNotFound(err) {
		return false
	}
	d := status.Status().Details
	return d != nil && d.Kind == "agents/share"
}

// explainLink is explain for a request about a link: a named link the Agent
// does not have is said so.
func explainLink(err error, verb, namespace, name, link string) error {
	if link != "" && isNoSuchLink(err) {
		return fmt.Errorf("agent %s/%s has no share link named %q", namespace, name, link)
	}
	return explain(err, verb, namespace, name)
}

// explain turns an error from the API into the one line a user needs.
func explain(err error, verb, namespace, name string) error {
	if err == nil {
		return nil
	}
	var netErr *net.OpError
	var urlErr *url.Error
	switch {
	case apierrors.IsNotFound(err):
		if status, ok := err.(apierrors.APIStatus); ok {
			if d := status.Status().Details; d != nil && d.Name != "" {
				return fmt.Errorf("agent %q not found in namespace %q", name, namespace)
			}
		}
		return fmt.Errorf("the share API (%s) is not installed on this cluster: is the KubeOpenCode APIService registered?", subresourcesv1alpha1.SchemeGroupVersion)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("forbidden: you may not %s agents/share in API group %q in namespace %q; ask for the kubeopencode-share-editor role there",
			verb, subresourcesv1alpha1.GroupName, namespace)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("unauthorized: the cluster did not accept your credentials; check your kubeconfig")
	case apierrors.IsServiceUnavailable(err):
		return fmt.Errorf("the share API (%s) is unavailable: is the kubeopencode-apiserver running? (%s)", subresourcesv1alpha1.SchemeGroupVersion, err)
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err), apierrors.IsConflict(err):
		return err
	case errors.As(err, &netErr), errors.As(err, &urlErr):
		return fmt.Errorf("cannot reach the Kubernetes API server: %w", err)
	}
	return err
}
