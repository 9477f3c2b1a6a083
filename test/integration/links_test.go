package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

// shareRequest calls the agents/share subresource as the user, with a query
// such as "?link=qa", and returns the status code and the body.
func (s *system) shareRequest(t *testing.T, method string, agent types.NamespacedName, query, body string) (int, []byte) {
	t.Helper()
	httpClient, err := rest.HTTPClientFor(s.user)
	if err != nil {
		t.Fatal(err)
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, s.user.Host+apiSharePath(agent.Namespace, agent.Name)+query, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// shareLink calls the subresource about one link and decodes the answer.
func (s *system) shareLink(t *testing.T, method string, agent types.NamespacedName, link, body string) *subresourcesv1alpha1.AgentShare {
	t.Helper()
	query := ""
	if link != "" && method != http.MethodPost {
		query = "?link=" + url.QueryEscape(link)
	}
	code, b := s.shareRequest(t, method, agent, query, body)
	if code >= 300 {
		t.Fatalf("%s share%s: %d %s", method, query, code, b)
	}
	out := &subresourcesv1alpha1.AgentShare{}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// execInPod runs a command in the Agent's pod through pods/exec, as the
// cluster admin, and returns its output.
func (s *system) execInPod(t *testing.T, agent types.NamespacedName, command ...string) string {
	t.Helper()
	pods := &corev1.PodList{}
	if err := s.admin.List(t.Context(), pods, client.InNamespace(agent.Namespace), client.MatchingLabels{share.LabelAgent: agent.Name}); err != nil || len(pods.Items) == 0 {
		t.Fatalf("the Agent's pod: %v (%d pods)", err, len(pods.Items))
	}
	pod := &pods.Items[0]
	ex := newExecutor(t, s.cp.Config(), clientFor(t, s.cp.Config()), pod, "fallback",
		&corev1.PodExecOptions{Container: "agent", Command: command, Stdout: true, Stderr: true})
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut}); err != nil {
		t.Fatalf("exec %q: %v\n%s", command, err, errOut.String())
	}
	return out.String()
}

// viewers returns the viewer count in the Agent's status of a link: the
// default link's for "", a named link's otherwise.
func (s *system) viewers(ctx context.Context, agent types.NamespacedName, link string) (int32, bool) {
	a := &kubeopencodev1alpha1.Agent{}
	if err := s.admin.Get(ctx, agent, a); err != nil || a.Status.Share == nil {
		return 0, false
	}
	if link == "" {
		return a.Status.Share.Viewers, true
	}
	for _, l := range a.Status.Share.Links {
		if l.Name == link {
			return l.Viewers, true
		}
	}
	return 0, false
}

func (s *system) waitViewers(t *testing.T, agent types.NamespacedName, link string, want int32) {
	t.Helper()
	s.waitFor(t, fmt.Sprintf("status viewers of link %q to be %d", share.LinkDisplayName(link), want), func(ctx context.Context) (bool, error) {
		n, ok := s.viewers(ctx, agent, link)
		return ok && n == want, nil
	})
}

// eventMessages returns the notes of the Agent's Events with a reason.
func (s *system) eventMessages(t *testing.T, agent types.NamespacedName, reason string) []string {
	t.Helper()
	events := &corev1.EventList{}
	if err := s.admin.List(t.Context(), events, client.InNamespace(agent.Namespace)); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range events.Items {
		if e.Reason == reason && e.InvolvedObject.Name == agent.Name {
			out = append(out, e.Message)
		}
	}
	return out
}

// runKubeoc runs kubeoc as the user "sharer".
func (s *system) runKubeoc(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, buildKubeoc(t), append([]string{"--kubeconfig", s.userKubeconfig(t)}, args...)...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running kubeoc: %v", err)
	}
	return out.String(), errOut.String(), code
}

func TestShareLinks(t *testing.T) {
	// More sessions per Agent than the default system allows: the tests
	// open several pages on one Agent.
	s := startSystemWith(t, systemConfig{listenerArgs: []string{"--share-max-sessions-per-agent=8"}})

	t.Run("two named links on one Agent are revoked independently", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		qa := s.shareLink(t, http.MethodPost, agent, "", `{"spec":{"link":"qa"}}`)
		demo := s.shareLink(t, http.MethodPost, agent, "", `{"spec":{"link":"demo","expiresIn":"1h"}}`)
		if qa.Status.Token == demo.Status.Token || !share.ValidToken(qa.Status.Token) || !share.ValidToken(demo.Status.Token) {
			t.Fatalf("tokens %q and %q", qa.Status.Token, demo.Status.Token)
		}
		// Each is its own Secret; the default link stays off.
		for link, token := range map[string]string{"qa": qa.Status.Token, "demo": demo.Status.Token} {
			secret := &corev1.Secret{}
			if err := s.admin.Get(t.Context(), types.NamespacedName{Namespace: agent.Namespace, Name: "team-agent-share-" + link}, secret); err != nil || string(secret.Data["token"]) != token {
				t.Fatalf("Secret of %s: %v", link, err)
			}
		}
		if shown := s.shareLink(t, http.MethodGet, agent, "", ""); shown.Status.Active || strings.Join(shown.Status.Links, ",") != "qa,demo" {
			t.Fatalf("GET of the default link: %+v", shown.Status)
		}
		if shown := s.shareLink(t, http.MethodGet, agent, "demo", ""); shown.Status.Token != demo.Status.Token || shown.Status.ExpiresAt == nil {
			t.Fatalf("GET ?link=demo: %+v", shown.Status)
		}

		a, _ := s.dial(t, qa.Status.Token, nil)
		a.resize(80, 24)
		a.typeText("echo q''a-ready\r")
		a.waitForOutput("qa-ready")
		b, code := s.dial(t, demo.Status.Token, nil)
		if b == nil {
			t.Fatalf("the demo link's terminal answers %d", code)
		}
		b.resize(80, 24)
		b.waitForPresence(2)

		s.shareLink(t, http.MethodDelete, agent, "qa", "")
		if code, st, _ := a.waitClosed(5 * time.Second); code != websocket.ClosePolicyViolation || st == nil || st.Reason != "Revoked" {
			t.Fatalf("the qa session closed with %d, %+v; want 1008 Revoked", code, st)
		}
		if resp, _ := s.get(t, "/s/"+qa.Status.Token+"/info", nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("the revoked qa link answers %d", resp.StatusCode)
		}
		// The other link keeps working, in the same shell.
		b.waitForPresence(1)
		b.typeText("echo de''mo-still-$((6*7))\r")
		b.waitForOutput("demo-still-42")
		if resp, _ := s.get(t, "/s/"+demo.Status.Token+"/info", nil); resp.StatusCode != http.StatusOK {
			t.Errorf("the demo link answers %d", resp.StatusCode)
		}
		if code, body := s.shareRequest(t, http.MethodGet, agent, "?link=qa", ""); code != http.StatusNotFound || !strings.Contains(string(body), `no share link named \"qa\"`) {
			t.Errorf("GET of the revoked link: %d %s", code, body)
		}
		s.waitFor(t, "the qa Secret to be gone and the status to list demo alone", func(ctx context.Context) (bool, error) {
			a := &kubeopencodev1alpha1.Agent{}
			if err := s.admin.Get(ctx, agent, a); err != nil || a.Status.Share == nil {
				return false, nil
			}
			return len(a.Status.Share.Links) == 1 && a.Status.Share.Links[0].Name == "demo" && a.Status.Share.Links[0].Active, nil
		})
		s.waitFor(t, "a ShareDisabled Event naming the qa link", func(ctx context.Context) (bool, error) {
			for _, m := range s.eventMessages(t, agent, "ShareDisabled") {
				if strings.Contains(m, `"qa"`) {
					return true, nil
				}
			}
			return false, nil
		})
	})

	t.Run("a one-time named link opens one terminal and then answers 410, and the other links go on", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		once := s.shareLink(t, http.MethodPost, agent, "", `{"spec":{"link":"once","maxUses":1}}`)
		other := s.shareLink(t, http.MethodPost, agent, "", `{"spec":{"link":"other"}}`)
		// A link preview fetches the page: it uses nothing.
		if resp, _ := s.get(t, "/s/"+once.Status.Token, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("page of the one-time link: %d", resp.StatusCode)
		}
		c, code := s.dial(t, once.Status.Token, nil)
		if c == nil {
			t.Fatalf("the one-time link's first terminal answers %d", code)
		}
		c.resize(80, 24)
		c.typeText("echo once-''only\r")
		c.waitForOutput("once-only")
		if _, code := s.dial(t, once.Status.Token, nil); code != http.StatusGone {
			t.Fatalf("its second terminal answers %d, want 410", code)
		}
		if shown := s.shareLink(t, http.MethodGet, agent, "once", ""); shown.Status.Active || shown.Status.Reason != share.ReasonUsedUp || shown.Status.Uses != 1 {
			t.Errorf("GET ?link=once shows %+v", shown.Status)
		}
		// Its uses are its own: the other link opens as many as it likes.
		for range 2 {
			if o, code := s.dial(t, other.Status.Token, nil); o == nil {
				t.Fatalf("the other link's terminal answers %d", code)
			}
		}
		// And the session it opened goes on.
		c.typeText("echo still-''open\r")
		c.waitForOutput("still-open")
	})

	t.Run("a read-only viewer's keystrokes never reach the pod while an edit viewer types", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		edit := s.shareLink(t, http.MethodPost, agent, "", `{}`)
		view := s.shareLink(t, http.MethodPost, agent, "", `{"spec":{"link":"watch","mode":"view"}}`)
		if view.Status.Mode != "view" || edit.Status.Mode != "edit" {
			t.Fatalf("modes %q and %q", edit.Status.Mode, view.Status.Mode)
		}
		if resp, body := s.get(t, "/s/"+view.Status.Token+"/info", nil); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"mode":"view"`) {
			t.Fatalf("/info of the view link: %d %s", resp.StatusCode, body)
		}
		editor, _ := s.dial(t, edit.Status.Token, nil)
		editor.resize(80, 24)
		editor.typeText("echo edit''or-ready\r")
		editor.waitForOutput("editor-ready")
		watcher, code := s.dial(t, view.Status.Token, nil)
		if watcher == nil {
			t.Fatalf("the view link's terminal answers %d", code)
		}
		watcher.resize(80, 24)
		watcher.waitForPresence(2)

		// The watcher types, through the WebSocket as a modified page
		// would: none of it may reach the shell.
		watcher.typeText("touch typed-by-''watcher; echo watcher-''typed\r")
		watcher.typeText("\x03exit\r")
		time.Sleep(time.Second)
		editor.typeText("touch typed-by-''editor; echo editor-''typed\r")
		editor.waitForOutput("editor-typed")
		// The watcher sees what the editor does.
		watcher.waitForOutput("editor-typed")
		for _, c := range []*terminalClient{editor, watcher} {
			if strings.Contains(c.text(), "watcher") {
				t.Errorf("the watcher's input reached the shell: %q", c.text())
			}
		}
		// Checked in the pod itself.
		files := s.execInPod(t, agent, "sh", "-c", "ls")
		if !strings.Contains(files, "typed-by-editor") || strings.Contains(files, "typed-by-watcher") {
			t.Fatalf("files in the pod: %q; want typed-by-editor and not typed-by-watcher", files)
		}
		// Switching the editor's link to view ends its session at once; the
		// watcher's goes on.
		if again := s.shareLink(t, http.MethodPost, agent, "", `{"spec":{"mode":"view"}}`); again.Status.Token != edit.Status.Token {
			t.Fatal("changing the mode replaced the token")
		}
		if code, st, _ := editor.waitClosed(5 * time.Second); code != websocket.ClosePolicyViolation || st == nil || st.Reason != "ModeChanged" {
			t.Fatalf("the editor's session closed with %d, %+v; want 1008 ModeChanged", code, st)
		}
		watcher.waitForPresence(1)
	})

	t.Run("status viewers go up and back down, per link, and maxViewers refuses more", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		def := s.enable(t, agent, "")
		qa := s.shareLink(t, http.MethodPost, agent, "", `{"spec":{"link":"qa","maxViewers":2}}`)
		var pages []*terminalClient
		for range 2 {
			c, code := s.dial(t, qa.Status.Token, nil)
			if c == nil {
				t.Fatalf("a qa page was refused: %d", code)
			}
			c.resize(80, 24)
			pages = append(pages, c)
		}
		if _, code := s.dial(t, qa.Status.Token, nil); code != http.StatusTooManyRequests {
			t.Fatalf("a third qa page answers %d, want 429 (maxViewers 2)", code)
		}
		d, _ := s.dial(t, def, nil)
		d.resize(80, 24)
		d.waitForPresence(3)
		s.waitViewers(t, agent, "qa", 2)
		s.waitViewers(t, agent, "", 1)
		if shown := s.shareLink(t, http.MethodGet, agent, "qa", ""); shown.Status.Viewers != 2 || shown.Status.MaxViewers == nil || *shown.Status.MaxViewers != 2 {
			t.Errorf("GET ?link=qa: %+v", shown.Status)
		}
		pages[0].conn.Close()
		s.waitViewers(t, agent, "qa", 1)
		pages[1].conn.Close()
		d.conn.Close()
		s.waitViewers(t, agent, "qa", 0)
		s.waitViewers(t, agent, "", 0)
		// Join and leave are Events that name the link.
		s.waitFor(t, "session Events naming the qa link", func(ctx context.Context) (bool, error) {
			started, ended := 0, 0
			for _, m := range s.eventMessages(t, agent, "ShareSessionStarted") {
				if strings.Contains(m, `link "qa"`) {
					started++
				}
			}
			for _, m := range s.eventMessages(t, agent, "ShareSessionEnded") {
				if strings.Contains(m, `link "qa"`) {
					ended++
				}
			}
			return started >= 1 && ended >= 1, nil
		})
	})

	t.Run("a read-only page in a real browser cannot type", s.testReadOnlyBrowser)

	t.Run("kubeoc --link and --read-only", func(t *testing.T) {
		agent := s.readyAgent(t, "cli-agent")
		ns := agent.Namespace
		out, stderr, code := s.runKubeoc(t, "agent", "share", agent.Name, "-n", ns, "--link", "demo", "--read-only", "--max-viewers", "5")
		if code != 0 {
			t.Fatalf("kubeoc share --link demo --read-only: %d %s", code, stderr)
		}
		for _, want := range []string{`Share link "demo" enabled for agent ` + ns + "/cli-agent", "Link:   demo", "Mode:   view (read-only)", "Viewers: 0 of 5"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		token := tokenFrom(t, out)
		if resp, body := s.get(t, "/s/"+token+"/info", nil); !strings.Contains(string(body), `"mode":"view"`) {
			t.Errorf("/info of the kubeoc view link: %d %s", resp.StatusCode, body)
		}
		if out, _, _ := s.runKubeoc(t, "agent", "share", agent.Name, "-n", ns); !strings.Contains(out, "Named links: demo") || strings.Contains(out, "read-only") {
			t.Errorf("the default link's output:\n%s", out)
		}
		if out, _, _ := s.runKubeoc(t, "agent", "share", agent.Name, "-n", ns, "--link", "demo", "--show"); tokenFrom(t, out) != token {
			t.Errorf("--show --link demo:\n%s", out)
		}
		if _, stderr, code := s.runKubeoc(t, "agent", "share", agent.Name, "-n", ns, "--link", "nope", "--show"); code == 0 || !strings.Contains(stderr, `has no share link named "nope"`) {
			t.Errorf("--show of an unknown link: %d %s", code, stderr)
		}
		if _, stderr, code := s.runKubeoc(t, "agent", "share", agent.Name, "-n", ns, "--link", "Bad_Name"); code == 0 || !strings.Contains(stderr, "invalid --link") {
			t.Errorf("a bad --link: %d %s", code, stderr)
		}
		if out, stderr, code := s.runKubeoc(t, "agent", "unshare", agent.Name, "-n", ns, "--link", "demo"); code != 0 || !strings.Contains(out, `Share link "demo" disabled`) {
			t.Fatalf("unshare --link demo: %d %s %s", code, out, stderr)
		}
		if resp, _ := s.get(t, "/s/"+token+"/info", nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("the unshared link answers %d", resp.StatusCode)
		}
		// The default link was not touched by unsharing demo.
		if out, _, code := s.runKubeoc(t, "agent", "share", agent.Name, "-n", ns, "--show"); code != 0 || !strings.Contains(out, "Active: true") {
			t.Errorf("the default link after unsharing demo:\n%s", out)
		}
	})

	t.Run("bad link input through the subresource and kubectl changes nothing", func(t *testing.T) {
		agent := s.readyAgent(t, "team-agent")
		s.shareLink(t, http.MethodPost, agent, "", `{"spec":{"link":"qa"}}`)
		before := &kubeopencodev1alpha1.Agent{}
		if err := s.admin.Get(t.Context(), agent, before); err != nil {
			t.Fatal(err)
		}
		kubeconfig := s.userKubeconfig(t)
		path := "/apis/subresources.kubeopencode.io/v1alpha1/namespaces/" + agent.Namespace + "/agents/" + agent.Name + "/share"
		kubectl := func(args ...string) (string, error) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			_, stderr, err := s.cp.Kubectl(ctx, kubeconfig, nil, args...)
			return stderr, err
		}
		bodies := map[string]string{
			"upper case": `{"apiVersion":"subresources.kubeopencode.io/v1alpha1","kind":"AgentShare","spec":{"link":"QA"}}`,
			"too long":   `{"apiVersion":"subresources.kubeopencode.io/v1alpha1","kind":"AgentShare","spec":{"link":"` + strings.Repeat("a", 64) + `"}}`,
			"bad mode":   `{"apiVersion":"subresources.kubeopencode.io/v1alpha1","kind":"AgentShare","spec":{"link":"ok","mode":"admin"}}`,
		}
		for name, body := range bodies {
			file := filepath.Join(t.TempDir(), "share.json")
			apiWriteFile(t, file, []byte(body))
			stderr, err := kubectl("create", "--raw", path, "-f", file)
			if err == nil || !strings.Contains(stderr, "spec.") || !strings.Contains(stderr, "Invalid") && !strings.Contains(stderr, "invalid") {
				t.Errorf("%s: kubectl create --raw: %v %s", name, err, stderr)
			}
			code, b := s.shareRequest(t, http.MethodPost, agent, "", body)
			if code != http.StatusUnprocessableEntity {
				t.Errorf("%s: POST answers %d %s", name, code, b)
			}
		}
		if stderr, err := kubectl("get", "--raw", path+"?link=nope"); err == nil || !strings.Contains(stderr, "NotFound") {
			t.Errorf("kubectl get --raw ?link=nope: %v %s", err, stderr)
		}
		if stderr, err := kubectl("delete", "--raw", path+"?link=nope"); err == nil || !strings.Contains(stderr, "NotFound") {
			t.Errorf("kubectl delete --raw ?link=nope: %v %s", err, stderr)
		}
		for _, q := range []string{"?link=Bad_Name", "?link=" + strings.Repeat("a", 64)} {
			for _, method := range []string{http.MethodGet, http.MethodDelete} {
				if code, b := s.shareRequest(t, method, agent, q, ""); code != http.StatusUnprocessableEntity || !strings.Contains(string(b), `"field":"link"`) {
					t.Errorf("%s %s: %d %s", method, q, code, b)
				}
			}
		}
		// kubectl works with a good link name, and GET shows it.
		if out := func() string {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			stdout, stderr, err := s.cp.Kubectl(ctx, kubeconfig, nil, "get", "--raw", path+"?link=qa")
			if err != nil {
				t.Fatalf("kubectl get --raw ?link=qa: %v %s", err, stderr)
			}
			return stdout
		}(); !strings.Contains(out, `"link":"qa"`) || !strings.Contains(out, `"token":"`) {
			t.Errorf("kubectl get --raw ?link=qa: %s", out)
		}
		// The Agent's schema refuses bad links too.
		bad := before.DeepCopy()
		bad.Spec.Share.Links = append(bad.Spec.Share.Links, kubeopencodev1alpha1.NamedShareLink{Name: "Bad_Name"}, kubeopencodev1alpha1.NamedShareLink{Name: "ok", ShareLinkSpec: kubeopencodev1alpha1.ShareLinkSpec{Mode: "admin"}})
		if err := s.admin.Patch(t.Context(), bad, client.MergeFrom(before)); err == nil || !strings.Contains(err.Error(), "spec.share.links[1].name") || !strings.Contains(err.Error(), "spec.share.links[2].mode") {
			t.Errorf("updating the Agent with bad links: %v", err)
		}
		after := &kubeopencodev1alpha1.Agent{}
		if err := s.admin.Get(t.Context(), agent, after); err != nil {
			t.Fatal(err)
		}
		if after.Generation != before.Generation {
			t.Errorf("bad input changed the Agent: generation %d -> %d, spec.share %+v", before.Generation, after.Generation, after.Spec.Share)
		}
	})
}
