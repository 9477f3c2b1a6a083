package agentshare

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	agentvalidation "github.com/kubeopencode/share/pkg/apis/kubeopencode/validation"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

func (f *fixture) linkToken(t *testing.T, link string) string {
	t.Helper()
	s := &corev1.Secret{}
	err := f.client.Get(context.Background(), types.NamespacedName{Namespace: testNamespace, Name: share.LinkSecretName(testName, link)}, s)
	if apierrors.IsNotFound(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(s.Data[share.SecretTokenKey])
}

func (f *fixture) get(link string) (*subresourcesv1alpha1.AgentShare, error) {
	obj, err := f.rest.Get(testCtx(), testName, &subresourcesv1alpha1.AgentShareOptions{Link: link})
	if err != nil {
		return nil, err
	}
	return obj.(*subresourcesv1alpha1.AgentShare), nil
}

func (f *fixture) disable(link string) (*subresourcesv1alpha1.AgentShare, error) {
	obj, _, err := f.rest.Delete(withLink(testCtx(), link), testName, nil, &metav1.DeleteOptions{})
	if err != nil {
		return nil, err
	}
	return obj.(*subresourcesv1alpha1.AgentShare), nil
}

func TestNamedLinks(t *testing.T) {
	f := newFixture(t, nil, testAgent(nil))
	def, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{})
	if err != nil {
		t.Fatal(err)
	}
	qa, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{Link: "qa", ExpiresIn: in(time.Hour), AllowedIPs: []string{"10.0.0.0/8"}})
	if err != nil {
		t.Fatal(err)
	}
	two := int32(2)
	demo, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{Link: "demo", Mode: "view", MaxViewers: &two})
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{"": def.Status.Token, "qa": qa.Status.Token, "demo": demo.Status.Token}
	for link, token := range tokens {
		if !share.ValidToken(token) || f.linkToken(t, link) != token {
			t.Fatalf("link %q: token %q, Secret holds %q", link, token, f.linkToken(t, link))
		}
	}
	if tokens[""] == tokens["qa"] || tokens["qa"] == tokens["demo"] {
		t.Fatal("links share a token")
	}
	if demo.Status.Mode != "view" || demo.Status.Link != "demo" || demo.Status.MaxViewers == nil || *demo.Status.MaxViewers != 2 {
		t.Errorf("demo link: %+v", demo.Status)
	}
	// Enabling again keeps the token; changing the default link keeps the
	// named ones.
	if again, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{Link: "qa", ExpiresIn: in(time.Hour), AllowedIPs: []string{"10.0.0.0/8"}}); err != nil || again.Status.Token != tokens["qa"] {
		t.Fatalf("enabling qa again: %v, token changed %v", err, again.Status.Token != tokens["qa"])
	}
	if _, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{Mode: "view"}); err != nil {
		t.Fatal(err)
	}
	spec := f.agent(t).Spec.Share
	if spec.Mode != kubeopencodev1alpha1.ShareModeView || len(spec.Links) != 2 || spec.Links[0].Name != "qa" || spec.Links[1].Mode != kubeopencodev1alpha1.ShareModeView {
		t.Fatalf("spec.share %+v", spec)
	}

	shown, err := f.get("")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(shown.Status.Links, ",") != "qa,demo" || shown.Status.Mode != "view" || shown.Status.Token != tokens[""] {
		t.Errorf("GET of the default link: %+v", shown.Status)
	}
	if shown, err := f.get("qa"); err != nil || shown.Status.Token != tokens["qa"] || shown.Status.Links != nil || shown.Status.Link != "qa" {
		t.Errorf("GET ?link=qa: %+v, %v", shown, err)
	}

	// Revoking one link leaves the others alone.
	if out, err := f.disable("qa"); err != nil || out.Status.Reason != share.ReasonDisabled {
		t.Fatalf("disabling qa: %+v, %v", out, err)
	}
	if f.linkToken(t, "qa") != "" || f.linkToken(t, "demo") != tokens["demo"] || f.linkToken(t, "") != tokens[""] {
		t.Fatal("disabling qa touched other links")
	}
	if _, err := f.get("qa"); !apierrors.IsNotFound(err) {
		t.Errorf("GET of a disabled named link: %v, want 404", err)
	}
	if _, err := f.disable("qa"); !apierrors.IsNotFound(err) {
		t.Errorf("disabling qa twice: %v, want 404", err)
	}
	// Disabling the default link keeps the named ones.
	if _, err := f.disable(""); err != nil {
		t.Fatal(err)
	}
	if spec := f.agent(t).Spec.Share; spec.Enabled || len(spec.Links) != 1 || f.linkToken(t, "demo") != tokens["demo"] || f.linkToken(t, "") != "" {
		t.Fatalf("after disabling the default link: %+v", spec)
	}
}

func TestLinkBadInput(t *testing.T) {
	f := newFixture(t, nil, testAgent(nil))
	zero := int32(0)
	tests := []struct {
		name  string
		spec  subresourcesv1alpha1.AgentShareSpec
		field string
	}{
		{name: "upper case link", spec: subresourcesv1alpha1.AgentShareSpec{Link: "QA"}, field: "spec.link"},
		{name: "link with a slash", spec: subresourcesv1alpha1.AgentShareSpec{Link: "a/b"}, field: "spec.link"},
		{name: "long link", spec: subresourcesv1alpha1.AgentShareSpec{Link: strings.Repeat("a", 64)}, field: "spec.link"},
		{name: "unknown mode", spec: subresourcesv1alpha1.AgentShareSpec{Mode: "admin"}, field: "spec.mode"},
		{name: "zero viewers", spec: subresourcesv1alpha1.AgentShareSpec{MaxViewers: &zero}, field: "spec.maxViewers"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.create(t, tc.spec)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("err = %v, want 422 naming %s", err, tc.field)
			}
		})
	}
	for _, link := range []string{"QA", "../x"} {
		if _, err := f.get(link); !apierrors.IsInvalid(err) {
			t.Errorf("GET ?link=%s: %v, want 422", link, err)
		}
		if _, err := f.disable(link); !apierrors.IsInvalid(err) {
			t.Errorf("DELETE ?link=%s: %v, want 422", link, err)
		}
	}
	if _, err := f.get("nope"); !apierrors.IsNotFound(err) || !strings.Contains(err.Error(), `no share link named "nope"`) {
		t.Errorf("GET of an unknown link: %v", err)
	}
	if f.agent(t).Spec.Share != nil {
		t.Errorf("bad input changed the Agent: %+v", f.agent(t).Spec.Share)
	}
	// At most MaxLinks named links.
	for i := range agentvalidation.MaxLinks {
		if _, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{Link: "l" + string(rune('a'+i))}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{Link: "one-more"}); !apierrors.IsInvalid(err) {
		t.Errorf("link %d: %v, want 422", agentvalidation.MaxLinks+1, err)
	}
}

func TestWithLinkParameter(t *testing.T) {
	tests := []struct {
		method, query, want string
	}{
		{http.MethodDelete, "?link=qa", "qa"},
		{http.MethodDelete, "", ""},
		{http.MethodDelete, "?link=", ""},
		// Only a DELETE takes it from here: a get has AgentShareOptions.
		{http.MethodGet, "?link=qa", ""},
	}
	for _, tc := range tests {
		var got string
		h := WithLinkParameter(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = LinkFrom(r.Context()) }))
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(tc.method, "/apis/x/share"+tc.query, nil))
		if got != tc.want {
			t.Errorf("%s %s: link %q, want %q", tc.method, tc.query, got, tc.want)
		}
	}
}
