package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/controller"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/signingkey"
)

// plantedToken is the token an attacker chooses for the Secrets they plant.
const plantedToken = "PLANTEDplantedPLANTEDplantedPLANTEDplantedA"

// attacker is a namespace user holding only the permissions a test grants.
type attacker struct {
	name string
	c    client.Client
}

// attackerWith creates a user whose only permissions in the namespace are
// rules, and a client acting as that user.
func (s *system) attackerWith(t *testing.T, ns, name string, rules ...rbacv1.PolicyRule) *attacker {
	t.Helper()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Rules: rules}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: name}},
	}
	for _, obj := range []client.Object{role, binding} {
		if err := s.admin.Create(t.Context(), obj); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := s.cp.UserConfig(name, "system:authenticated")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: s.admin.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return &attacker{name: name, c: c}
}

func rule(group, resource string, verbs ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{APIGroups: []string{group}, Resources: []string{resource}, Verbs: verbs}
}

// plantedSecret is the share Secret of the Agent's link as an attacker would
// forge it: every label, annotation and owner reference the system writes,
// the announcement fingerprint computed as the controller computes it, and a
// token of their choosing, with a proof made up or copied from elsewhere.
func plantedSecret(agent *kubeopencodev1alpha1.Agent, link, token, proof string) *corev1.Secret {
	labels := map[string]string{share.LabelShareSecret: "true", share.LabelAgent: agent.Name}
	if link != "" {
		labels[share.LabelShareLink] = link
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: agent.Namespace,
			Name:      share.LinkSecretName(agent.Name, link),
			Labels:    labels,
			Annotations: map[string]string{
				share.AnnotationAgentUID:              string(agent.UID),
				controller.AnnotationTokenFingerprint: share.TokenHash(token)[:16],
				share.AnnotationTokenProof:            proof,
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: kubeopencodev1alpha1.SchemeGroupVersion.String(), Kind: "Agent",
				Name: agent.Name, UID: agent.UID, Controller: ptrTo(true),
			}},
		},
		Data: map[string][]byte{share.SecretTokenKey: []byte(token)},
	}
}

func ptrTo[T any](v T) *T { return &v }

func (s *system) agent(t *testing.T, key types.NamespacedName) *kubeopencodev1alpha1.Agent {
	t.Helper()
	a := &kubeopencodev1alpha1.Agent{}
	if err := s.admin.Get(t.Context(), key, a); err != nil {
		t.Fatal(err)
	}
	return a
}

// expectClosed checks that a token opens nothing, on the page, the info and
// the terminal.
func (s *system) expectClosed(t *testing.T, token, what string) {
	t.Helper()
	if code := s.infoCode(t.Context(), token, nil); code != http.StatusNotFound {
		t.Errorf("%s: /info answered %d, want 404", what, code)
	}
	if term, code := s.dial(t, token, nil); term != nil || code != http.StatusNotFound {
		if term != nil {
			term.conn.Close()
		}
		t.Errorf("%s: the terminal answered %d, want 404", what, code)
	}
}

// waitShown waits until agents/share shows the owner a token that opens the
// link, and returns it.
func (s *system) waitShown(t *testing.T, agent types.NamespacedName, not ...string) string {
	t.Helper()
	var token string
	s.waitFor(t, "agents/share to show a working token", func(ctx context.Context) (bool, error) {
		got := s.shareCall(t, http.MethodGet, agent, "")
		token = got.Status.Token
		if token == "" {
			return false, nil
		}
		for _, n := range not {
			if token == n {
				return false, nil
			}
		}
		return s.infoCode(t.Context(), token, nil) == http.StatusOK, nil
	})
	return token
}

// expectRejectedEvent waits for the Warning about a rejected share Secret
// and checks that it does not echo the planted token.
func (s *system) expectRejectedEvent(t *testing.T, agent types.NamespacedName) {
	t.Helper()
	s.waitForEvent(t, agent, share.ReasonShareSecretRejected)
	for _, m := range s.eventMessages(t, agent, share.ReasonShareSecretRejected) {
		if strings.Contains(m, plantedToken) {
			t.Errorf("the Event echoes the planted token: %q", m)
		}
	}
}

// TestShareSecretsOnlyTheSystemMints plants and edits share Secrets as a
// namespace user with no agents/share and no pods/exec would, and checks
// that no token they chose or saw elsewhere opens a terminal or reaches the
// owner.
func TestShareSecretsOnlyTheSystemMints(t *testing.T) {
	if !share.ValidToken(plantedToken) {
		t.Fatal("the planted token must have a token's form, or it tests nothing")
	}
	s := startSystem(t)
	secretWriter := []rbacv1.PolicyRule{rule("", "secrets", "create"), rule(kubeopencodev1alpha1.GroupName, "agents", "get")}

	t.Run("planted before the owner enables in the spec", func(t *testing.T) {
		key := s.readyAgent(t, "planted-spec")
		mallory := s.attackerWith(t, key.Namespace, "mallory", secretWriter...)
		if err := mallory.c.Create(t.Context(), plantedSecret(s.agent(t, key), "", plantedToken, "")); err != nil {
			t.Fatalf("planting: %v", err)
		}
		s.setShareEnabled(t, key, true)
		s.expectRejectedEvent(t, key)
		token := s.waitShown(t, key, plantedToken)
		s.expectClosed(t, plantedToken, "the planted token")
		if token == plantedToken {
			t.Fatal("agents/share handed the planted token to the owner")
		}
	})

	t.Run("planted before the owner enables through agents/share", func(t *testing.T) {
		key := s.readyAgent(t, "planted-api")
		mallory := s.attackerWith(t, key.Namespace, "mallory", secretWriter...)
		if err := mallory.c.Create(t.Context(), plantedSecret(s.agent(t, key), "", plantedToken, "")); err != nil {
			t.Fatalf("planting: %v", err)
		}
		token := s.enable(t, key, "")
		if token == plantedToken {
			t.Fatal("agents/share handed the planted token to the owner")
		}
		s.expectClosed(t, plantedToken, "the planted token")
		if code := s.infoCode(t.Context(), token, nil); code != http.StatusOK {
			t.Errorf("the token the owner got: /info %d", code)
		}
		s.expectRejectedEvent(t, key)
	})

	t.Run("planted in a loop while the owner enables", func(t *testing.T) {
		key := s.readyAgent(t, "planted-race")
		mallory := s.attackerWith(t, key.Namespace, "mallory", secretWriter...)
		agent := s.agent(t, key)
		ctx, stop := context.WithCancel(t.Context())
		var (
			wg      sync.WaitGroup
			planted atomic.Int32
		)
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := mallory.c.Create(ctx, plantedSecret(agent, "", plantedToken, "")); err == nil {
					planted.Add(1)
				}
			}
		})
		for try := range 5 {
			code, body := s.shareRequest(t, http.MethodPost, key, "", "{}")
			switch code {
			case http.StatusOK, http.StatusCreated:
				got := &subresourcesv1alpha1.AgentShare{}
				if err := json.Unmarshal(body, got); err != nil {
					t.Fatal(err)
				}
				if got.Status.Token == plantedToken {
					t.Fatalf("try %d: agents/share handed the planted token to the owner", try)
				}
				if !share.ValidToken(got.Status.Token) {
					t.Fatalf("try %d: no token: %s", try, body)
				}
			case http.StatusConflict:
				// Losing to a writer that keeps changing the Secret is an
				// honest answer; handing its token back is not.
			default:
				t.Fatalf("try %d: %d %s", try, code, body)
			}
			if code := s.infoCode(t.Context(), plantedToken, nil); code != http.StatusNotFound {
				t.Fatalf("try %d: the planted token answered %d", try, code)
			}
			s.shareRequest(t, http.MethodDelete, key, "", "")
		}
		stop()
		wg.Wait()
		t.Logf("the attacker planted the Secret %d times", planted.Load())
		if planted.Load() == 0 {
			t.Fatal("the attacker never got a Secret in: the race was not run")
		}
		s.enable(t, key, "")
		s.waitShown(t, key, plantedToken)
		s.expectClosed(t, plantedToken, "the planted token")
	})

	t.Run("the token of an active link edited by hand", func(t *testing.T) {
		key := s.readyAgent(t, "edited")
		mallory := s.attackerWith(t, key.Namespace, "mallory", rule("", "secrets", "patch"))
		before := s.enable(t, key, "")
		patch := fmt.Sprintf(`{"stringData":{%q:%q}}`, share.SecretTokenKey, plantedToken)
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: share.SecretName(key.Name)}}
		if err := mallory.c.Patch(t.Context(), secret, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			t.Fatalf("editing the token: %v", err)
		}
		s.expectClosed(t, plantedToken, "the edited-in token")
		s.expectRejectedEvent(t, key)
		after := s.waitShown(t, key, plantedToken, before)
		s.expectClosed(t, plantedToken, "the edited-in token, once replaced")
		if after == before {
			t.Error("the replaced Secret holds the token from before the edit")
		}
	})

	t.Run("a copy of another link's proof", func(t *testing.T) {
		key := s.readyAgent(t, "proof-donor")
		victim := types.NamespacedName{Namespace: key.Namespace, Name: "proof-victim"}
		s.createAgent(t, victim, nil)
		mallory := s.attackerWith(t, key.Namespace, "mallory",
			rule("", "secrets", "get", "create"), rule(kubeopencodev1alpha1.GroupName, "agents", "get"))
		donorToken := s.enable(t, key, "")
		donor := &corev1.Secret{}
		if err := mallory.c.Get(t.Context(), types.NamespacedName{Namespace: key.Namespace, Name: share.SecretName(key.Name)}, donor); err != nil {
			t.Fatal(err)
		}
		proof := donor.Annotations[share.AnnotationTokenProof]
		if proof == "" {
			t.Fatal("the system's Secret carries no proof")
		}
		// The donor's token and proof, relabelled for the victim, and a
		// named link of the donor itself holding the donor's token.
		for _, forged := range []*corev1.Secret{
			plantedSecret(s.agent(t, victim), "", donorToken, proof),
			plantedSecret(s.agent(t, key), "copy", donorToken, proof),
		} {
			if err := mallory.c.Create(t.Context(), forged); err != nil {
				t.Fatalf("planting %s: %v", forged.Name, err)
			}
		}
		s.setShareEnabled(t, victim, true)
		s.expectRejectedEvent(t, victim)
		victimToken := s.waitShown(t, victim, donorToken)
		if victimToken == donorToken {
			t.Fatal("the victim's link took the donor's token")
		}
		// The donor's token still opens the donor, and only the donor.
		resp, body := s.get(t, share.Path(donorToken)+"/info", nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"name":"proof-donor"`) {
			t.Errorf("the donor's token: %d %s", resp.StatusCode, body)
		}
	})
}

// TestSigningKeyRotationAndLoss rotates the signing key as the operator
// guide says, then loses it, and checks what links do each time.
func TestSigningKeyRotationAndLoss(t *testing.T) {
	s := startSystem(t)
	key := s.readyAgent(t, "rotation")
	token := s.enable(t, key, "")
	keySecret := types.NamespacedName{Namespace: signingkey.DefaultNamespace, Name: signingkey.DefaultName}
	proofKey := func() string {
		secret := &corev1.Secret{}
		if err := s.admin.Get(t.Context(), types.NamespacedName{Namespace: key.Namespace, Name: share.SecretName(key.Name)}, secret); err != nil {
			return ""
		}
		id, _, _ := strings.Cut(secret.Annotations[share.AnnotationTokenProof], ":")
		return id
	}
	ks := &corev1.Secret{}
	if err := s.admin.Get(t.Context(), keySecret, ks); err != nil {
		t.Fatalf("the key Secret was not made at start: %v", err)
	}
	old := proofKey()
	if _, ok := ks.Data[old]; !ok || old == "" {
		t.Fatalf("the link is proven by key %q, not one of the key Secret", old)
	}

	// Step 1: add a key that sorts after the old one. The controller signs
	// the link again with it; the token does not change.
	newID := "9999-rotated"
	ks.Data[newID] = []byte(strings.Repeat("n", share.MinSigningKeyBytes))
	if err := s.admin.Update(t.Context(), ks); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, "the link to be signed with the new key", func(context.Context) (bool, error) {
		return proofKey() == newID, nil
	})
	if code := s.infoCode(t.Context(), token, nil); code != http.StatusOK {
		t.Fatalf("during the overlap the link answered %d", code)
	}

	// Step 2: retire the old key. The link keeps working with its token.
	if err := s.admin.Get(t.Context(), keySecret, ks); err != nil {
		t.Fatal(err)
	}
	delete(ks.Data, old)
	if err := s.admin.Update(t.Context(), ks); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if code := s.infoCode(t.Context(), token, nil); code != http.StatusOK {
		t.Fatalf("after the old key was retired the link answered %d", code)
	}
	if shown := s.shareCall(t, http.MethodGet, key, "").Status.Token; shown != token {
		t.Errorf("rotating the key changed the link's token")
	}

	// Step 3: lose the key. The link stops; the system makes a new key and
	// mints a new token, which the owner sees.
	if err := s.admin.Delete(t.Context(), ks); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, "the old token to stop", func(context.Context) (bool, error) {
		return s.infoCode(t.Context(), token, nil) == http.StatusNotFound, nil
	})
	s.expectRejectedEvent(t, key)
	fresh := s.waitShown(t, key, token)
	if fresh == token {
		t.Fatal("the token proven by the lost key came back")
	}
	if err := s.admin.Get(t.Context(), keySecret, ks); err != nil || share.NewKeyRing(ks.Data).Empty() {
		t.Fatalf("no new key was made: %v", err)
	}
}

// TestNamespacePermissionsAndLinks gives a user each permission of the table
// in docs/security.md, alone, and checks what it can and cannot do to a
// link.
func TestNamespacePermissionsAndLinks(t *testing.T) {
	s := startSystem(t)
	keySecret := types.NamespacedName{Namespace: signingkey.DefaultNamespace, Name: signingkey.DefaultName}
	cannotReadKey := func(t *testing.T, a *attacker) {
		t.Helper()
		if err := a.c.Get(t.Context(), keySecret, &corev1.Secret{}); !apierrors.IsForbidden(err) {
			t.Errorf("%s read the signing key: %v", a.name, err)
		}
	}
	cannotSeeToken := func(t *testing.T, a *attacker, key types.NamespacedName) {
		t.Helper()
		err := a.c.Get(t.Context(), types.NamespacedName{Namespace: key.Namespace, Name: share.SecretName(key.Name)}, &corev1.Secret{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("%s read the share Secret: %v", a.name, err)
		}
	}

	t.Run("Secrets delete", func(t *testing.T) {
		key := s.readyAgent(t, "secret-delete")
		a := s.attackerWith(t, key.Namespace, "deleter", rule("", "secrets", "delete"))
		before := s.enable(t, key, "")
		term, code := s.dial(t, before, nil)
		if term == nil {
			t.Fatalf("the terminal answered %d", code)
		}
		defer term.conn.Close()
		term.resize(80, 24)
		term.typeText("echo rea''dy\r")
		term.waitForOutput("ready")
		if err := a.c.Delete(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: share.SecretName(key.Name)}}); err != nil {
			t.Fatal(err)
		}
		if _, status, _ := term.waitClosed(10 * time.Second); status == nil || status.Reason != "Revoked" {
			t.Errorf("the session ended with %+v, want Revoked", status)
		}
		s.waitFor(t, "the deleted token to stop", func(ctx context.Context) (bool, error) {
			return s.infoCode(ctx, before, nil) == http.StatusNotFound, nil
		})
		after := s.waitShown(t, key, before)
		if after == before {
			t.Error("the token came back")
		}
		cannotSeeToken(t, a, key)
		cannotReadKey(t, a)
	})

	t.Run("Secrets get", func(t *testing.T) {
		key := s.readyAgent(t, "secret-get")
		a := s.attackerWith(t, key.Namespace, "reader", rule("", "secrets", "get", "list"))
		token := s.enable(t, key, "")
		secret := &corev1.Secret{}
		if err := a.c.Get(t.Context(), types.NamespacedName{Namespace: key.Namespace, Name: share.SecretName(key.Name)}, secret); err != nil {
			t.Fatal(err)
		}
		// The token is the credential: reading it is exec-equivalent,
		// which is why users should not have get on Secrets.
		if string(secret.Data[share.SecretTokenKey]) != token {
			t.Error("the share Secret does not hold the link's token")
		}
		cannotReadKey(t, a)
	})

	t.Run("Agents update", func(t *testing.T) {
		key := s.readyAgent(t, "agent-update")
		a := s.attackerWith(t, key.Namespace, "agent-editor", rule(kubeopencodev1alpha1.GroupName, "agents", "get", "update", "patch"))
		agent := &kubeopencodev1alpha1.Agent{}
		if err := a.c.Get(t.Context(), key, agent); err != nil {
			t.Fatal(err)
		}
		agent.Spec.Share = &kubeopencodev1alpha1.ShareSpec{Enabled: true}
		if err := a.c.Update(t.Context(), agent); err != nil {
			t.Fatal(err)
		}
		// The link is on, and the token is where the user cannot look.
		s.waitShown(t, key)
		cannotSeeToken(t, a, key)
		cfg, err := s.cp.UserConfig(a.name, "system:authenticated")
		if err != nil {
			t.Fatal(err)
		}
		httpClient, err := rest.HTTPClientFor(cfg)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := httpClient.Get(cfg.Host + apiSharePath(key.Namespace, key.Name))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET agents/share as %s: %d, want 403", a.name, resp.StatusCode)
		}
		cannotReadKey(t, a)
	})

	t.Run("agents/status update", func(t *testing.T) {
		key := s.readyAgent(t, "status-update")
		a := s.attackerWith(t, key.Namespace, "status-writer",
			rule(kubeopencodev1alpha1.GroupName, "agents", "get"), rule(kubeopencodev1alpha1.GroupName, "agents/status", "update", "patch"))
		token := s.enable(t, key, "")
		s.shareCall(t, http.MethodDelete, key, "")
		// The controller writes the status of the disable meanwhile; the
		// forged status is written over the latest one, read again after
		// a conflict.
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			agent := &kubeopencodev1alpha1.Agent{}
			if err := a.c.Get(t.Context(), key, agent); err != nil {
				return err
			}
			agent.Status.Share = &kubeopencodev1alpha1.ShareStatus{Active: true, SecretName: share.SecretName(key.Name)}
			for i, c := range agent.Status.Conditions {
				if c.Type == kubeopencodev1alpha1.ConditionShareReady {
					agent.Status.Conditions[i].Status, agent.Status.Conditions[i].Reason = metav1.ConditionTrue, share.ReasonActive
				}
			}
			return a.c.Status().Update(t.Context(), agent)
		})
		if err != nil {
			t.Fatal(err)
		}
		s.expectClosed(t, token, "a disabled link whose status says it is active")
		cannotReadKey(t, a)
	})

	t.Run("Events create", func(t *testing.T) {
		key := s.readyAgent(t, "events-create")
		a := s.attackerWith(t, key.Namespace, "event-writer", rule("", "events", "create"))
		token := s.enable(t, key, "")
		agent := s.agent(t, key)
		for _, reason := range []string{controller.EventShareDisabled, controller.EventShareRotated} {
			e := &corev1.Event{
				ObjectMeta:     metav1.ObjectMeta{Namespace: key.Namespace, GenerateName: "forged-"},
				InvolvedObject: corev1.ObjectReference{APIVersion: kubeopencodev1alpha1.SchemeGroupVersion.String(), Kind: "Agent", Namespace: key.Namespace, Name: key.Name, UID: agent.UID},
				Reason:         reason, Message: "forged", Type: corev1.EventTypeNormal,
				Source: corev1.EventSource{Component: controller.Name},
			}
			if err := a.c.Create(t.Context(), e); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Second)
		if code := s.infoCode(t.Context(), token, nil); code != http.StatusOK {
			t.Errorf("after forged Events the link answered %d", code)
		}
		if shown := s.shareCall(t, http.MethodGet, key, "").Status.Token; shown != token {
			t.Error("forged Events changed the token")
		}
		cannotReadKey(t, a)
	})

	t.Run("pods/exec", func(t *testing.T) {
		key := s.readyAgent(t, "pods-exec")
		a := s.attackerWith(t, key.Namespace, "execer", rule("", "pods", "get", "list"), rule("", "pods/exec", "get", "create"))
		s.enable(t, key, "")
		cannotSeeToken(t, a, key)
		cannotReadKey(t, a)
	})

	t.Run("Deployments update", func(t *testing.T) {
		key := s.readyAgent(t, "deploy-update")
		a := s.attackerWith(t, key.Namespace, "deployer", rule("apps", "deployments", "get", "update", "patch"))
		token := s.enable(t, key, "")
		d := &appsv1.Deployment{}
		if err := a.c.Get(t.Context(), key, d); err != nil {
			t.Fatal(err)
		}
		image := d.Spec.Template.Spec.Containers[0].Image
		d.Spec.Template.Spec.Containers[0].Image = "attacker/image:1"
		if err := a.c.Update(t.Context(), d); err != nil {
			t.Fatal(err)
		}
		s.waitFor(t, "the controller to restore the Deployment", func(ctx context.Context) (bool, error) {
			got := &appsv1.Deployment{}
			if err := s.admin.Get(ctx, key, got); err != nil {
				return false, nil
			}
			return got.Spec.Template.Spec.Containers[0].Image == image, nil
		})
		if shown := s.shareCall(t, http.MethodGet, key, "").Status.Token; shown != token {
			t.Error("a Deployment edit changed the token")
		}
		cannotSeeToken(t, a, key)
		cannotReadKey(t, a)
	})
}
