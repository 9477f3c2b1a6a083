package agentshare

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/klog/v2"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

var (
	agentShareKind      = subresourcesv1alpha1.SchemeGroupVersion.WithKind("AgentShare").GroupKind()
	agentsShareResource = subresourcesv1alpha1.Resource("agents/share")
)

// linkNotFound is the answer about a named link the Agent does not have.
func linkNotFound(agent, link string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure,
		Code:   http.StatusNotFound,
		Reason: metav1.StatusReasonNotFound,
		Details: &metav1.StatusDetails{
			Group: subresourcesv1alpha1.GroupName,
			Kind:  "agents/share",
			Name:  link,
		},
		Message: fmt.Sprintf("Agent %s has no share link named %q", agent, link),
	}}
}

// secretError turns an error of ensuring the share Secret into an API error.
func secretError(ctx context.Context, agent *kubeopencodev1alpha1.Agent, link string, err error) error {
	if errors.Is(err, share.ErrForeignSecret) {
		return apierrors.NewConflict(agentsShareResource, agent.Name,
			fmt.Errorf("a Secret named %s exists in namespace %s and does not belong to the Agent; delete or rename it", share.LinkSecretName(agent.Name, link), agent.Namespace))
	}
	return apiError(ctx, err, agent.Name)
}

// apiError turns an error of reading or writing the cluster into the answer
// of the request. A missing Agent is 404 NotFound for agents.kubeopencode.io;
// conflicts, rejected input and the cluster's transient failures pass
// through; a refusal of the server's own identity is the operator's to fix and
// answers 500, as does anything unexpected.
func apiError(ctx context.Context, err error, name string) error {
	var status apierrors.APIStatus
	switch {
	case apierrors.IsNotFound(err) && isAgentError(err):
		return apierrors.NewNotFound(kubeopencodev1alpha1.Resource("agents"), name)
	case apierrors.IsConflict(err), apierrors.IsInvalid(err), apierrors.IsBadRequest(err),
		apierrors.IsTimeout(err), apierrors.IsServerTimeout(err), apierrors.IsTooManyRequests(err),
		apierrors.IsServiceUnavailable(err):
		if errors.As(err, &status) {
			return status.(error)
		}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return apierrors.NewTimeoutError(fmt.Sprintf("the request ended before the share link of %s was settled", name), 0)
	}
	klog.FromContext(ctx).Error(err, "Share request failed", "agent", klog.KRef(genericapirequest.NamespaceValue(ctx), name))
	return apierrors.NewInternalError(err)
}

// isAgentError reports whether a NotFound error is about the Agent rather than
// another object, such as its Secret.
func isAgentError(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	d := status.Status().Details
	return d != nil && d.Group == kubeopencodev1alpha1.GroupName && d.Kind == "agents"
}
