package access

import (
	"context"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/sharetest"
	"github.com/kubeopencode/share/pkg/sharehttp/access/accesstest"
)

func TestResolveNamedLinks(t *testing.T) {
	agent := &v1alpha1.Agent{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "agent", UID: "agent-uid"},
		Spec: v1alpha1.AgentSpec{Image: "busybox", Share: &v1alpha1.ShareSpec{
			// The default link is off; the named links work without it.
			Links: []v1alpha1.NamedShareLink{
				{Name: "qa", ShareLinkSpec: v1alpha1.ShareLinkSpec{AllowedIPs: []v1alpha1.IPOrCIDR{"10.0.0.0/8"}}},
				{Name: "demo", ShareLinkSpec: v1alpha1.ShareLinkSpec{Mode: v1alpha1.ShareModeView, MaxViewers: ptr.To[int32](3)}},
			},
		}},
		Status: v1alpha1.AgentStatus{Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue}}},
	}
	tokens := map[string]string{}
	var objs []client.Object
	for _, link := range []string{"", "qa", "demo", "removed"} {
		tok, err := share.NewToken()
		if err != nil {
			t.Fatal(err)
		}
		tokens[link] = tok
		secret := sharetest.Secret(agent, link, tok)
		if link == "demo" {
			// Another replica has two pages on it.
			secret.Annotations[share.ViewersAnnotation("other-replica")] = "2"
		}
		objs = append(objs, secret)
	}
	// A Secret that claims to be qa's under another name opens nothing.
	forgedTok, _ := share.NewToken()
	forged := sharetest.Secret(agent, "qa", forgedTok)
	forged.Name = "agent-share-forged"
	objs = append(objs, agent, forged)
	c := fake.NewClientBuilder().WithScheme(clientscheme.Scheme).WithObjects(objs...).
		WithIndex(&corev1.Secret{}, TokenHashIndex, func(obj client.Object) []string {
			return []string{share.TokenHash(string(obj.(*corev1.Secret).Data[share.SecretTokenKey]))}
		}).Build()
	links := NewResolverFor(accesstest.NewCache(c, clientscheme.Scheme), c, sharetest.Keys(), clock.RealClock{}, nil)

	tests := []struct {
		name         string
		token        string
		client       string
		wantRefusal  string
		wantLink     string
		wantReadOnly bool
		wantMax      int32
	}{
		{name: "default link disabled", token: tokens[""], client: "10.1.1.1", wantRefusal: ReasonNotFound},
		{name: "named edit link", token: tokens["qa"], client: "10.1.1.1", wantLink: "qa"},
		{name: "named link's own allowedIPs", token: tokens["qa"], client: "192.168.1.1", wantRefusal: ReasonIPNotAllowed},
		{name: "named view link", token: tokens["demo"], client: "192.168.1.1", wantLink: "demo", wantReadOnly: true, wantMax: 3},
		{name: "link no longer in the spec", token: tokens["removed"], client: "10.1.1.1", wantRefusal: ReasonNotFound},
		{name: "Secret under another name", token: forgedTok, client: "10.1.1.1", wantRefusal: ReasonNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, refusal := links.Resolve(context.Background(), tc.token, netip.MustParseAddr(tc.client))
			if tc.wantRefusal != "" {
				if refusal == nil || refusal.Reason != tc.wantRefusal {
					t.Fatalf("refusal %v, want %s", refusal, tc.wantRefusal)
				}
				return
			}
			if refusal != nil {
				t.Fatalf("refused: %v", refusal)
			}
			if g.Link != tc.wantLink || g.ReadOnly != tc.wantReadOnly || g.MaxViewers != tc.wantMax || g.SecretName != share.LinkSecretName("agent", tc.wantLink) {
				t.Errorf("grant %+v", g)
			}
			// The live check agrees.
			if _, refusal := links.Confirm(context.Background(), g, tc.token, netip.MustParseAddr(tc.client)); refusal != nil {
				t.Errorf("Confirm refused: %v", refusal)
			}
		})
	}

	// maxViewers counts the pages of every replica: two elsewhere, so one
	// here fills the link.
	g, _ := links.Resolve(context.Background(), tokens["demo"], netip.MustParseAddr("10.1.1.1"))
	v := newViewers(nil)
	leave, refusal := v.Join(g, true)
	if refusal != nil {
		t.Fatal("the third page was refused")
	}
	if _, refusal := v.Join(g, true); refusal == nil || refusal.Reason != ReasonTooManyViewers || refusal.Code != http.StatusTooManyRequests {
		t.Fatalf("the fourth page was not refused with 429 %s: %+v", ReasonTooManyViewers, refusal)
	}
	// A page resuming its session is not refused.
	leaveResumed, refusal := v.Join(g, false)
	if refusal != nil {
		t.Fatal("a resuming page was refused")
	}
	leaveResumed()
	leave()
	leave() // twice changes nothing
	if n := v.count(g); n != 0 {
		t.Errorf("count %d after everyone left", n)
	}
}

func TestViewerCountsCoalesceWrites(t *testing.T) {
	var mu sync.Mutex
	var writes []int32
	v := newViewers(func(_ context.Context, _ linkRef, n int32) error {
		mu.Lock()
		defer mu.Unlock()
		writes = append(writes, n)
		return nil
	})
	v.delay = 50 * time.Millisecond
	g := &Grant{Link: "qa", SecretName: "agent-share-qa"}
	var leaves []func()
	for range 10 {
		leave, _ := v.Join(g, true)
		leaves = append(leaves, leave)
	}
	v.Wait(context.Background())
	for _, leave := range leaves[:7] {
		leave()
	}
	v.Wait(context.Background())
	mu.Lock()
	defer mu.Unlock()
	if len(writes) != 2 || writes[0] != 10 || writes[1] != 3 {
		t.Errorf("writes %v, want [10 3]: one write per burst with the count after it", writes)
	}
}

func TestRecordViewers(t *testing.T) {
	f := newResolverFixture(t)
	ref := linkRef{agent: types.NamespacedName{Namespace: f.agent.Namespace, Name: f.agent.Name}, uid: f.agent.UID, secret: share.SecretName(f.agent.Name)}
	read := func() *corev1.Secret {
		s := &corev1.Secret{}
		if err := f.client.Get(context.Background(), client.ObjectKey{Namespace: "team", Name: ref.secret}, s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if err := f.resolver.recordViewers(context.Background(), ref, 3); err != nil {
		t.Fatal(err)
	}
	if n := share.Viewers(read()); n != 3 {
		t.Fatalf("viewers %d, want 3", n)
	}
	if err := f.resolver.recordViewers(context.Background(), ref, 0); err != nil {
		t.Fatal(err)
	}
	if s := read(); share.Viewers(s) != 0 || len(s.Annotations) != 2 { // the Agent UID and the token proof
		t.Fatalf("annotations after the last page left: %v", s.Annotations)
	}
	// A Secret of another Agent is left alone.
	other := ref
	other.uid = "other"
	if err := f.resolver.recordViewers(context.Background(), other, 5); err != nil || share.Viewers(read()) != 0 {
		t.Fatalf("recorded on a Secret of another Agent: %v", err)
	}
}

// TestViewerCountsOfReplicas checks the two ways replicas count a link's
// pages: added up, when each replica runs sessions of its own; the
// owner's alone, when they share sessions, which clears counts a killed
// owner left behind.
func TestViewerCountsOfReplicas(t *testing.T) {
	tests := []struct {
		name           string
		sole           bool
		wantElsewhere  int32
		wantAfterWrite int32 // the link's count once this replica wrote 1
	}{
		{name: "each replica its own sessions", wantElsewhere: 2, wantAfterWrite: 3},
		{name: "one shared session, on its owner", sole: true, wantElsewhere: 0, wantAfterWrite: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newResolverFixture(t)
			f.resolver.CountViewersAs("replica-b", tt.sole)
			key := client.ObjectKey{Namespace: "team", Name: share.SecretName(f.agent.Name)}
			secret := &corev1.Secret{}
			if err := f.client.Get(context.Background(), key, secret); err != nil {
				t.Fatal(err)
			}
			// The count of a replica that was killed with two pages open.
			secret.Annotations[share.ViewersAnnotation("replica-a")] = "2"
			if err := f.client.Update(context.Background(), secret); err != nil {
				t.Fatal(err)
			}
			grant, refusal := f.resolver.Resolve(context.Background(), f.token, netip.MustParseAddr("192.0.2.1"))
			if refusal != nil {
				t.Fatalf("refused: %+v", refusal)
			}
			if grant.viewersElsewhere != tt.wantElsewhere {
				t.Errorf("pages counted elsewhere against maxViewers: %d, want %d", grant.viewersElsewhere, tt.wantElsewhere)
			}
			if err := f.resolver.recordViewers(context.Background(), refFor(grant), 1); err != nil {
				t.Fatal(err)
			}
			if err := f.client.Get(context.Background(), key, secret); err != nil {
				t.Fatal(err)
			}
			if n := share.Viewers(secret); n != tt.wantAfterWrite {
				t.Errorf("the link's viewers after this replica wrote 1: %d, want %d (annotations %v)", n, tt.wantAfterWrite, secret.Annotations)
			}
			if got := secret.Annotations[share.ViewersAnnotation("replica-b")]; got != "1" {
				t.Errorf("this replica's count is %q, want it under its own name", got)
			}
		})
	}
}

func TestClearViewersAtStart(t *testing.T) {
	f := newResolverFixture(t)
	key := client.ObjectKey{Namespace: "team", Name: share.SecretName(f.agent.Name)}
	secret := &corev1.Secret{}
	if err := f.client.Get(context.Background(), key, secret); err != nil {
		t.Fatal(err)
	}
	// Counts left by this replica before a restart, and by another one.
	secret.Annotations[f.resolver.viewers.annotation] = "4"
	secret.Annotations[share.ViewersAnnotation("other-replica")] = "2"
	if err := f.client.Update(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	f.resolver.ClearViewers(context.Background())
	if err := f.client.Get(context.Background(), key, secret); err != nil {
		t.Fatal(err)
	}
	if _, ok := secret.Annotations[f.resolver.viewers.annotation]; ok || share.Viewers(secret) != 2 {
		t.Errorf("annotations after clearing: %v; want only the other replica's count", secret.Annotations)
	}
}
