package agentshare

import (
	"context"
	"errors"
	"fmt"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	agentvalidation "github.com/kubeopencode/share/pkg/apis/kubeopencode/validation"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/secrets"
)

// enabler writes share links: it is to agents/share what the token issuer is
// to serviceaccounts/token. It sets a link in the Agent's spec.share and
// makes the link's Secret hold its token, or takes both away, with the
// server's own identity. Every error it returns is already an API error.
type enabler struct {
	client   client.Client
	keys     share.Keys
	recorder record.EventRecorder
}

// agent reads the Agent.
func (e *enabler) agent(ctx context.Context, key types.NamespacedName) (*kubeopencodev1alpha1.Agent, error) {
	agent := &kubeopencodev1alpha1.Agent{}
	if err := e.client.Get(ctx, key, agent); err != nil {
		return nil, apiError(ctx, err, key.Name)
	}
	return agent, nil
}

// enable sets the desired link in the Agent's spec.share and, unless on a dry
// run, makes sure the link's Secret holds a token, a new one with rotate. It
// returns the Agent as written and the token.
func (e *enabler) enable(ctx context.Context, key types.NamespacedName, desired share.Link, rotate, dryRun bool) (*kubeopencodev1alpha1.Agent, string, error) {
	link := desired.Name
	agent, err := e.patchAgent(ctx, key, dryRun, func(a *kubeopencodev1alpha1.Agent) (bool, error) {
		return e.setEnabled(ctx, a, desired, dryRun)
	})
	if err != nil || dryRun {
		return agent, "", err
	}
	token, err := e.ensureToken(ctx, agent, link, rotate)
	if err != nil {
		return nil, "", secretError(ctx, agent, link, err)
	}
	if err := e.confirmEnabled(ctx, agent, link); err != nil {
		return nil, "", err
	}
	return agent, token, nil
}

// setEnabled is the mutation of enable: it sets the desired link in the
// Agent and reports whether that changed it.
func (e *enabler) setEnabled(ctx context.Context, a *kubeopencodev1alpha1.Agent, desired share.Link, dryRun bool) (bool, error) {
	if a.DeletionTimestamp != nil {
		// Its link would open nothing (share.Evaluate), and a Secret made
		// now would only wait for the garbage collector.
		return false, apierrors.NewConflict(agentsShareResource, a.Name, errors.New("the Agent is being deleted"))
	}
	link := desired.Name
	current, enabled := share.FindLink(a, link)
	enabled = enabled && current.Enabled
	if enabled && apiequality.Semantic.DeepEqual(current, desired) {
		return false, nil
	}
	if !enabled && link != "" && a.Spec.Share != nil && len(a.Spec.Share.Links) >= agentvalidation.MaxLinks {
		return false, apierrors.NewInvalid(agentShareKind, a.Name, field.ErrorList{field.Invalid(field.NewPath("spec", "link"), link,
			fmt.Sprintf("the Agent has %d named links, the most it may have; disable one first", agentvalidation.MaxLinks))})
	}
	if !enabled && !dryRun {
		// A Secret left over from an earlier link must not come back to
		// life: remove it while the link is still disabled, so that any
		// Secret present once the patch succeeds holds a new token.
		if err := e.deleteLeftover(ctx, a, link); err != nil {
			return false, err
		}
	}
	return setLink(a, desired), nil
}

// disable takes the link out of the Agent's spec.share and, unless on a dry
// run, deletes its Secret. validate, when not nil, may refuse the Agent as
// read. A named link the Agent does not have is 404 NotFound.
func (e *enabler) disable(ctx context.Context, key types.NamespacedName, link string, validate func(*kubeopencodev1alpha1.Agent) error, dryRun bool) (*kubeopencodev1alpha1.Agent, error) {
	agent, err := e.patchAgent(ctx, key, dryRun, func(a *kubeopencodev1alpha1.Agent) (bool, error) {
		if _, ok := share.FindLink(a, link); !ok {
			return false, linkNotFound(a.Name, link)
		}
		if validate != nil {
			if err := validate(a); err != nil {
				return false, err
			}
		}
		return setLink(a, share.Link{NamedShareLink: kubeopencodev1alpha1.NamedShareLink{Name: link}}), nil
	})
	if err != nil || dryRun {
		return agent, err
	}
	deleted, err := secrets.Delete(ctx, e.client, e.client, agent, link)
	if err != nil {
		return nil, apiError(ctx, err, key.Name)
	}
	klog.FromContext(ctx).Info("Share link disabled", "agent", klog.KObj(agent), "link", share.LinkDisplayName(link), "user", userName(ctx), "secretDeleted", deleted)
	return agent, nil
}

// patchAgent reads the Agent, lets mutate change it, and writes the change as
// a merge patch guarded by the resourceVersion it read, reading again and
// retrying when the Agent changed in between. It writes nothing when mutate
// reports no change or on a dry run, and returns the Agent as it now is (or
// would be). An error of mutate ends the attempt and is returned as it is.
func (e *enabler) patchAgent(ctx context.Context, key types.NamespacedName, dryRun bool, mutate func(*kubeopencodev1alpha1.Agent) (bool, error)) (*kubeopencodev1alpha1.Agent, error) {
	var result *kubeopencodev1alpha1.Agent
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		current := &kubeopencodev1alpha1.Agent{}
		if err := e.client.Get(ctx, key, current); err != nil {
			return err
		}
		updated := current.DeepCopy()
		changed, err := mutate(updated)
		if err != nil {
			return mutateError{err}
		}
		result = updated
		if !changed || dryRun {
			return nil
		}
		return e.client.Patch(ctx, updated, client.MergeFromWithOptions(current, client.MergeFromWithOptimisticLock{}))
	})
	var m mutateError
	if errors.As(err, &m) {
		if _, ok := m.err.(apierrors.APIStatus); ok {
			return nil, m.err
		}
		return nil, apiError(ctx, m.err, key.Name)
	}
	if err != nil {
		return nil, apiError(ctx, err, key.Name)
	}
	return result, nil
}

// mutateError carries an error of a mutation through the retry loop, which
// must not retry it even when it is a conflict.
type mutateError struct{ err error }

func (m mutateError) Error() string { return m.err.Error() }
