package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/secrets"
)

// Reasons of the Events on an Agent about its share link.
const (
	// EventShareEnabled reports a new token: the share was enabled.
	EventShareEnabled = "ShareEnabled"
	// EventShareDisabled reports that the share was disabled and its token
	// deleted.
	EventShareDisabled = "ShareDisabled"
	// EventShareExpired reports that the share link passed its expiry.
	EventShareExpired = "ShareExpired"
	// EventShareRotated reports that the token was replaced by a new one.
	EventShareRotated = "ShareRotated"
	// EventSecretConflict (a Warning) reports a Secret with the share
	// Secret's name that does not belong to the Agent.
	EventSecretConflict = share.ReasonSecretConflict
	// EventShareUsedUp: a link limited by maxUses opened its last terminal
	// connection.
	EventShareUsedUp = "ShareUsedUp"
	// EventShareSecretRejected (a Warning) reports a Secret that claimed to
	// be a link's share Secret without proof that this system minted its
	// token: planted or edited by someone who may write Secrets. It was
	// replaced by a Secret with a newly minted token.
	EventShareSecretRejected = share.ReasonShareSecretRejected
)

// AnnotationTokenFingerprint is kept by the controller on a share Secret: the
// fingerprint of the token it last announced with an Event. A Secret without
// it holds a token not yet announced (ShareEnabled); one whose fingerprint
// does not match its token was rotated (ShareRotated). The fingerprint is the
// first 16 hex digits of the token's SHA-256: it tells tokens apart and gives
// nothing away, and it lives on the Secret, which holds the token anyway.
const AnnotationTokenFingerprint = "kubeopencode.io/token-fingerprint"

// fingerprint returns the fingerprint of a token.
func fingerprint(token string) string {
	return share.TokenHash(token)[:16]
}

// secretState is what the controller found of an enabled share's Secret.
type secretState int

const (
	// secretAbsent: the share is disabled and its Secret is gone.
	secretAbsent secretState = iota
	// secretOwned: the Secret belongs to the Agent and holds a valid token.
	secretOwned
	// secretForeign: a Secret of that name belongs to something else.
	secretForeign
)

// shareReconciler keeps the Secrets of an Agent's share links, its
// ShareReady condition and status.share.
type shareReconciler struct {
	client    client.Client
	apiReader client.Reader
	recorder  recorder.EventRecorder
	keys      share.Keys
	publicURL string
}

// reportedEnabled reports whether the Agent's status, as the API server has
// it, still says the share is not disabled.
func (s *shareReconciler) reportedEnabled(ctx context.Context, sc *scope) bool {
	prev := sc.prevCondition(v1alpha1.ConditionShareReady)
	if prev == nil || prev.Reason == share.ReasonDisabled {
		return false
	}
	live := &v1alpha1.Agent{}
	if err := s.apiReader.Get(ctx, client.ObjectKeyFromObject(sc.agent), live); err != nil {
		// Announcing twice is better than not at all.
		return true
	}
	cond := meta.FindStatusCondition(live.Status.Conditions, v1alpha1.ConditionShareReady)
	return cond != nil && cond.Reason != share.ReasonDisabled
}

// reconcile keeps the Secret of each link of the Agent, the default one and
// the named ones, in one loop, deletes the Secrets of links the spec no longer
// has, and writes the ShareReady condition and status.share: the default
// link's state in the condition and the fields of status.share, each named
// link's in status.share.links.
func (s *shareReconciler) reconcile(ctx context.Context, sc *scope) (reconcile.Result, error) {
	agent := sc.agent
	var (
		status *v1alpha1.ShareStatus
		result reconcile.Result
	)
	// keepLinks leaves the named links' part of the status as read, for a
	// reconcile that stops before it has looked at all of them.
	keepLinks := func() {
		if status == nil {
			return
		}
		status.Links = nil
		if sc.prev.Share != nil {
			status.Links = sc.prev.Share.Links
		}
	}
	listed := map[string]bool{}
	for _, l := range share.Links(agent) {
		listed[l.Name] = true
		found, err := s.reconcileLink(ctx, sc, l)
		if errors.Is(err, errStale) {
			sc.stale = true
			keepLinks()
			return reconcile.Result{}, nil
		}
		if err != nil {
			keepLinks()
			return reconcile.Result{}, err
		}
		result = earliest(result, found.requeue)
		if l.Name == "" {
			// share.Links returns the default link first.
			status = s.defaultStatus(sc, found)
		} else {
			status.Links = append(status.Links, found.linkStatus(l))
		}
	}
	err := s.deleteRemoved(ctx, sc, listed)
	if errors.Is(err, errStale) {
		sc.stale = true
		keepLinks()
		return reconcile.Result{}, nil
	}
	if err != nil {
		keepLinks()
		return reconcile.Result{}, err
	}
	return result, nil
}

// linkState is what the controller found of one link of an Agent.
type linkState struct {
	// secret is what was found of the link's Secret.
	secret secretState
	// owned is the link's Secret while it belongs to the Agent.
	owned *corev1.Secret
	// decision says whether the link gives access: the link's evaluation,
	// turned off when its Secret is missing, foreign or used up.
	decision share.Decision
	// requeue asks to look again at the link's expiry or, for a foreign
	// Secret, after conflictRecheck.
	requeue reconcile.Result
}

// reconcileLink keeps the Secret of one link of the Agent: deletes it while
// the link is disabled, mints, replaces or signs it again while the link is
// enabled, announces a new token, and queues the Events of the link's
// transitions. It returns errStale when the Agent on the API server is no
// longer the one read.
func (s *shareReconciler) reconcileLink(ctx context.Context, sc *scope, l share.Link) (linkState, error) {
	logger := klog.FromContext(ctx)
	agent := sc.agent
	secretName := share.LinkSecretName(agent.Name, l.Name)
	if !l.Enabled {
		// Only the default link is listed while it is disabled; a named
		// link is disabled by leaving the list (deleteRemoved).
		deleted, err := s.deleteSecret(ctx, agent, l.Name)
		if err != nil {
			return linkState{}, err
		}
		if deleted {
			logger.Info("Deleted share Secret: share disabled", "agent", klog.KObj(agent), "link", l.DisplayName(), "secret", klog.KRef(agent.Namespace, secretName))
		}
		// Announce the end of a share that was reported or had a token:
		// deleted by this reconcile, or by a replica that stopped before it
		// wrote the status. The cache may not yet hold the status this
		// controller wrote after deleting it, so ask the API server before
		// announcing it a second time.
		if deleted || s.reportedEnabled(ctx, sc) {
			sc.events = append(sc.events, event{
				eventType: corev1.EventTypeNormal, reason: EventShareDisabled, action: "Disable",
				note: linkWords(l.Name) + " disabled; its token no longer works",
			})
		}
		return linkState{secret: secretAbsent, decision: share.Decision{Reason: share.ReasonDisabled, Message: linkWords(l.Name) + " is disabled"}}, nil
	}

	secret, token, created, err := s.ensureSecret(ctx, sc, l.Name)
	switch {
	case errors.Is(err, share.ErrForeignSecret):
		// The Warning Event tells the user, once; the log says it at each look.
		logger.V(2).Info("Share Secret name taken by a Secret that does not belong to the Agent", "agent", klog.KObj(agent), "link", l.DisplayName(), "secret", klog.KRef(agent.Namespace, secretName))
		found := linkState{secret: secretForeign, requeue: reconcile.Result{RequeueAfter: conflictRecheck},
			decision: share.Decision{Reason: share.ReasonSecretConflict, Message: conflictMessage(agent, l.Name)}}
		s.linkEvent(sc, l.Name, found.decision.Reason, event{eventType: corev1.EventTypeWarning, reason: EventSecretConflict, action: "EnsureSecret", note: found.decision.Message})
		return found, nil
	case err != nil:
		return linkState{}, err
	}
	if err := s.announceToken(ctx, agent, l.Name, secret, token, created); err != nil {
		return linkState{}, err
	}
	found := linkState{secret: secretOwned, owned: secret, decision: share.Evaluate(agent, l, sc.now)}
	d := &found.decision
	if d.Active && share.UsedUp(l, secret) {
		d.Active, d.Reason = false, share.ReasonUsedUp
		d.Message = fmt.Sprintf("%s has opened all of its %d terminal connections", linkWords(l.Name), *l.MaxUses)
		s.linkEvent(sc, l.Name, d.Reason, event{eventType: corev1.EventTypeNormal, reason: EventShareUsedUp, action: "UseUp", note: d.Message})
	}
	if d.Reason == share.ReasonExpired {
		s.linkEvent(sc, l.Name, d.Reason, event{eventType: corev1.EventTypeNormal, reason: EventShareExpired, action: "Expire", note: d.Message})
	} else if d.ExpiresAt != nil {
		found.requeue = reconcile.Result{RequeueAfter: d.ExpiresAt.Sub(sc.now)}
	}
	return found, nil
}

// defaultStatus writes the ShareReady condition and status.share from what
// was found of the default link, and returns status.share.
func (s *shareReconciler) defaultStatus(sc *scope, found linkState) *v1alpha1.ShareStatus {
	agent := sc.agent
	cond, status, _ := shareState(agent, found.secret, s.publicURL, sc.now)
	if cond.Status == metav1.ConditionTrue && found.decision.Reason == share.ReasonUsedUp {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, found.decision.Reason, found.decision.Message
		status.Active = false
	}
	sc.setCondition(cond)
	if status.SecretName != "" {
		def, _ := share.FindLink(agent, "")
		status.Mode = def.ModeOrDefault()
		status.Viewers = share.Viewers(found.owned)
	}
	agent.Status.Share = status
	return status
}

// linkStatus is the status of a named link from what was found of it.
func (found linkState) linkStatus(l share.Link) v1alpha1.LinkStatus {
	st := v1alpha1.LinkStatus{Name: l.Name, Mode: l.ModeOrDefault(), ExpiresAt: l.ExpiresAt.DeepCopy(), Reason: found.decision.Reason}
	if found.secret == secretOwned {
		st.SecretName, st.Active, st.Viewers = found.owned.Name, found.decision.Active, share.Viewers(found.owned)
	}
	return st
}

// conflictMessage says that a link's Secret name is taken and what to do.
func conflictMessage(agent *v1alpha1.Agent, link string) string {
	if link == "" {
		return fmt.Sprintf("Secret %s exists and does not belong to this Agent; delete it or rename the Agent to enable sharing", share.SecretName(agent.Name))
	}
	return fmt.Sprintf("Secret %s exists and does not belong to this Agent; delete it or rename the link %q to enable it", share.LinkSecretName(agent.Name, link), link)
}

// errStale means the Agent changed on the API server since it was read.
var errStale = errors.New("the Agent changed since it was read")

// current reports whether the Agent as read is still the Agent on the API
// server, same object and same spec. Before the controller creates or deletes
// a token it asks the API server, not the cache: the Agent in the cache may
// lag behind an enable whose Secret the cache already holds, or a disable
// that already deleted the Secret.
func (s *shareReconciler) current(ctx context.Context, agent *v1alpha1.Agent) (bool, error) {
	live := &v1alpha1.Agent{}
	err := s.apiReader.Get(ctx, types.NamespacedName{Namespace: agent.Namespace, Name: agent.Name}, live)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading Agent %s: %w", klog.KObj(agent), err)
	}
	if live.UID != agent.UID || live.Generation != agent.Generation {
		klog.FromContext(ctx).V(2).Info("Agent changed since it was read; waiting for the newer version", "agent", klog.KObj(agent))
		return false, nil
	}
	return true, nil
}

// ensureSecret returns the Agent's share Secret and token, minting them if
// there are none, and reports whether it created the Secret. The cache
// answers in the steady state; a Secret that the cache does not show as the
// Agent's, with a token this system minted, is decided on with the API
// server, so a token is stored only when the API server has no Secret or an
// unproven one, which is replaced and reported with a Warning Event. A
// Secret proven by a key other than the one that signs now is signed again,
// so that the old key can be retired. It returns errStale when the Agent on
// the API server is no longer the one read.
func (s *shareReconciler) ensureSecret(ctx context.Context, sc *scope, link string) (*corev1.Secret, string, bool, error) {
	agent := sc.agent
	key := types.NamespacedName{Namespace: agent.Namespace, Name: share.LinkSecretName(agent.Name, link)}
	cached := &corev1.Secret{}
	cacheErr := s.client.Get(ctx, key, cached)
	if cacheErr == nil {
		if token, keyID, err := share.VerifySecret(s.keys.KeyRing(), cached, agent); err == nil {
			secret, err := s.resign(ctx, agent, link, cached, token, keyID)
			return secret, token, false, err
		}
	} else if !apierrors.IsNotFound(cacheErr) {
		return nil, "", false, fmt.Errorf("reading share Secret %s: %w", key, cacheErr)
	}
	current, err := s.current(ctx, agent)
	if err != nil {
		return nil, "", false, err
	}
	if !current {
		return nil, "", false, errStale
	}
	if apierrors.IsNotFound(cacheErr) {
		// Neither the cache nor, most likely, the API server has a Secret:
		// the Agent is new or was just enabled. Creating it at once rather
		// than reading first saves a request per Agent; the create is
		// atomic, so a Secret the cache does not show yet makes it fail
		// with AlreadyExists and is decided on below, exactly as
		// secrets.Ensure decides. The fingerprint goes in with the
		// token: creating the Secret is the write that records the
		// announcement, so no second write (and no conflict with the
		// watch event of the first) is needed.
		secret, token, err := s.mint(ctx, agent, link)
		if err == nil {
			return secret, token, true, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, "", false, err
		}
	}
	secret, token, rejected, err := secrets.Ensure(ctx, s.apiReader, s.client, s.keys, agent, link)
	if rejected {
		// The planted token is never echoed: the Event names the Secret only.
		klog.FromContext(ctx).Info("Rejected a share Secret whose token this system did not mint", "agent", klog.KObj(agent), "link", share.LinkDisplayName(link), "secret", klog.KRef(key.Namespace, key.Name), "replaced", err == nil)
		s.recorder.Eventf(agent, nil, corev1.EventTypeWarning, EventShareSecretRejected, "Reject",
			"Secret %s was rejected: its token carries no proof that this system minted it (planted or edited by hand). %s",
			key.Name, rejectedOutcome(err))
	}
	return secret, token, false, err
}

// rejectedOutcome says what became of the link after its Secret was rejected.
func rejectedOutcome(err error) string {
	if err != nil {
		return "It could not be replaced yet; the link stays closed until it is."
	}
	return "A new token was minted; the rejected one never opened the link."
}

// mint creates the Secret of a link with a newly minted token and its
// announcement fingerprint.
func (s *shareReconciler) mint(ctx context.Context, agent *v1alpha1.Agent, link string) (*corev1.Secret, string, error) {
	ring, err := share.SigningRing(ctx, s.keys)
	if err != nil {
		return nil, "", err
	}
	secret, token, err := share.MintSecret(ring, agent, link)
	if err != nil {
		return nil, "", err
	}
	secret.Annotations[AnnotationTokenFingerprint] = fingerprint(token)
	if err := s.client.Create(ctx, secret); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return nil, "", err
		}
		return nil, "", fmt.Errorf("creating share Secret %s: %w", client.ObjectKeyFromObject(secret), err)
	}
	return secret, token, nil
}

// resign signs a proven Secret's token again with the key that signs now,
// when another key proved it, so that an operator can retire the old key once
// every Secret is signed by the new one.
func (s *shareReconciler) resign(ctx context.Context, agent *v1alpha1.Agent, link string, secret *corev1.Secret, token, keyID string) (*corev1.Secret, error) {
	ring := s.keys.KeyRing()
	if keyID == ring.SignerID() {
		return secret, nil
	}
	proof, err := ring.Prove(agent.Namespace, agent.UID, link, token)
	if err != nil {
		return nil, err
	}
	patched := secret.DeepCopy()
	patched.Annotations[share.AnnotationTokenProof] = proof
	// The optimistic lock makes sure the proof is of the token the Secret
	// holds at the time of the write.
	if err := s.client.Patch(ctx, patched, client.MergeFromWithOptions(secret, client.MergeFromWithOptimisticLock{})); err != nil {
		return nil, fmt.Errorf("signing share Secret %s with the current key: %w", klog.KObj(secret), err)
	}
	klog.FromContext(ctx).V(2).Info("Signed a share Secret with the current key", "secret", klog.KObj(secret), "previousKey", keyID, "key", ring.SignerID())
	return patched, nil
}

// deleteSecret deletes the Agent's share Secret if there is one that belongs
// to the Agent, and reports whether it did. It returns errStale when the
// Agent on the API server is no longer the one read.
func (s *shareReconciler) deleteSecret(ctx context.Context, agent *v1alpha1.Agent, link string) (bool, error) {
	key := types.NamespacedName{Namespace: agent.Namespace, Name: share.LinkSecretName(agent.Name, link)}
	cached := &corev1.Secret{}
	if err := s.client.Get(ctx, key, cached); err != nil {
		if apierrors.IsNotFound(err) {
			// A Secret created later is watched and brings another reconcile.
			return false, nil
		}
		return false, fmt.Errorf("reading share Secret %s: %w", key, err)
	}
	if !share.OwnedBy(cached, agent.UID) {
		return false, nil
	}
	current, err := s.current(ctx, agent)
	if err != nil {
		return false, err
	}
	if !current {
		return false, errStale
	}
	return secrets.Delete(ctx, s.apiReader, s.client, agent, link)
}

// announceToken emits ShareEnabled for a token not announced before and
// ShareRotated for a token that replaced an announced one, and records the
// token's fingerprint on the Secret. The Event follows the write that records
// it, so a retry after a failed write announces once. A Secret the
// controller has just created (created) holds the fingerprint already: its
// creation was that write.
func (s *shareReconciler) announceToken(ctx context.Context, agent *v1alpha1.Agent, link string, secret *corev1.Secret, token string, created bool) error {
	reason, action, note := EventShareEnabled, "Enable", linkWords(link)+" enabled with a new token"
	if !created {
		fp := fingerprint(token)
		announced, ok := secret.Annotations[AnnotationTokenFingerprint]
		if ok && announced == fp {
			return nil
		}
		patched := secret.DeepCopy()
		if patched.Annotations == nil {
			patched.Annotations = map[string]string{}
		}
		patched.Annotations[AnnotationTokenFingerprint] = fp
		// The optimistic lock makes sure the fingerprint is of the token the
		// Secret holds at the time of the write.
		if err := s.client.Patch(ctx, patched, client.MergeFromWithOptions(secret, client.MergeFromWithOptimisticLock{})); err != nil {
			return fmt.Errorf("recording the token fingerprint on share Secret %s: %w", klog.KObj(secret), err)
		}
		secret = patched
		if ok {
			reason, action, note = EventShareRotated, "Rotate", linkWords(link)+" token rotated; the previous token no longer works"
		}
	}
	klog.FromContext(ctx).Info("Announced share token", "agent", klog.KObj(agent), "link", share.LinkDisplayName(link), "secret", klog.KObj(secret), "event", reason)
	s.recorder.Eventf(agent, secret, corev1.EventTypeNormal, reason, action, "%s", note)
	return nil
}

// shareState returns the ShareReady condition and status.share of an enabled
// or disabled share, given what was found of its Secret. It reads the
// Agent's Ready condition, which must be current. The duration is the time
// until the link expires, zero when there is no expiry ahead to wait for.
func shareState(agent *v1alpha1.Agent, secret secretState, publicURL string, now time.Time) (metav1.Condition, *v1alpha1.ShareStatus, time.Duration) {
	def, _ := share.FindLink(agent, "")
	d := share.Evaluate(agent, def, now)
	cond := metav1.Condition{Type: v1alpha1.ConditionShareReady, Status: metav1.ConditionFalse, Reason: d.Reason, Message: d.Message}
	if d.Reason == share.ReasonDisabled || secret == secretAbsent {
		cond.Reason, cond.Message = share.ReasonDisabled, "Share link is disabled"
		return cond, &v1alpha1.ShareStatus{Active: false}, 0
	}
	status := &v1alpha1.ShareStatus{ExpiresAt: d.ExpiresAt.DeepCopy()}
	if secret == secretForeign {
		cond.Reason = share.ReasonSecretConflict
		cond.Message = conflictMessage(agent, "")
		return cond, status, 0
	}
	status.SecretName = share.SecretName(agent.Name)
	status.URL = publicURL
	status.Active = d.Active
	if d.Active {
		cond.Status = metav1.ConditionTrue
	}
	var untilExpiry time.Duration
	if d.ExpiresAt != nil && d.Reason != share.ReasonExpired {
		untilExpiry = d.ExpiresAt.Sub(now)
	}
	return cond, status, untilExpiry
}

// linkWords names a link at the start of an Event's note: "Share link" for
// the default link, as before links had names, and `Share link "qa"` for a
// named one.
func linkWords(link string) string {
	if link == "" {
		return "Share link"
	}
	return fmt.Sprintf("Share link %q", link)
}

// deleteRemoved deletes the Secrets of named links the spec no longer lists,
// so that their tokens stop working, and announces the end of each link that
// was reported or had a Secret. It returns errStale when the Agent on the API
// server is no longer the one read.
func (s *shareReconciler) deleteRemoved(ctx context.Context, sc *scope, listed map[string]bool) error {
	agent := sc.agent
	// A link that was reported and is no longer listed was disabled,
	// whoever deleted its Secret (the aggregated API deletes it itself).
	disabled := map[string]bool{}
	if sc.prev.Share != nil {
		for _, prev := range sc.prev.Share.Links {
			if !listed[prev.Name] {
				disabled[prev.Name] = true
			}
		}
	}
	secrets := &corev1.SecretList{}
	if err := s.client.List(ctx, secrets, client.InNamespace(agent.Namespace), client.MatchingLabels{share.LabelAgent: agent.Name}); err != nil {
		return fmt.Errorf("listing the share Secrets of Agent %s: %w", klog.KObj(agent), err)
	}
	for i := range secrets.Items {
		secret := &secrets.Items[i]
		link := secret.Labels[share.LabelShareLink]
		if link == "" || listed[link] || secret.Name != share.LinkSecretName(agent.Name, link) || !share.OwnedBy(secret, agent.UID) {
			continue
		}
		deleted, err := s.deleteSecret(ctx, agent, link)
		if err != nil {
			return err
		}
		if deleted {
			klog.FromContext(ctx).Info("Deleted share Secret: link removed", "agent", klog.KObj(agent), "link", link, "secret", klog.KObj(secret))
			disabled[link] = true
		}
	}
	names := make([]string, 0, len(disabled))
	for link := range disabled {
		names = append(names, link)
	}
	sort.Strings(names)
	for _, link := range names {
		sc.events = append(sc.events, event{eventType: corev1.EventTypeNormal, reason: EventShareDisabled, action: "Disable",
			note: linkWords(link) + " disabled; its token no longer works"})
	}
	return nil
}

// linkEvent queues an Event about a link for when the status is written,
// unless the link already had the reason before this reconcile: the default
// link's reason is that of the ShareReady condition, a named link's that of
// its entry in status.share.links.
func (s *shareReconciler) linkEvent(sc *scope, link, reason string, e event) {
	if link == "" {
		sc.eventOnTransition(v1alpha1.ConditionShareReady, reason, e)
		return
	}
	if sc.prev.Share != nil {
		for _, prev := range sc.prev.Share.Links {
			if prev.Name == link && prev.Reason == reason {
				return
			}
		}
	}
	sc.events = append(sc.events, e)
}
