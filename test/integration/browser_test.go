package integration

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubeopencode/share/internal/browsertest"
)

// screenshot saves a PNG of the page as a test artifact and returns its
// path.
func screenshot(t *testing.T, b *browsertest.Browser, name string) string {
	t.Helper()
	dir := os.Getenv("KUBEOPENCODE_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(shared.root, "_output", "test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b.Screenshot(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// testBrowser opens a share link in headless Chromium, types a command into
// the rendered terminal and reads its output from the page.
func (s *system) testBrowser(t *testing.T) {
	b := browsertest.Start(t, 1000, 600)
	agent := s.readyAgent(t, "team-agent")
	token := s.enable(t, agent, "")
	link := "http://" + s.shareLn + "/s/" + token

	b.Navigate(link)
	b.WaitFor("the page to connect", `document.getElementById('state').className`,
		func(v string) bool { return v == "state connected" })
	if title := b.Eval(`document.getElementById('title').textContent`); title != agent.Namespace+"/"+agent.Name {
		t.Errorf("the page shows %q, want %s/%s", title, agent.Namespace, agent.Name)
	}
	rows := `(document.querySelector('.xterm-rows') || {}).innerText || ''`
	b.WaitFor("a shell prompt", rows, func(v string) bool { return strings.ContainsAny(v, "$#") })

	b.Eval(`document.querySelector('.xterm-helper-textarea').focus()`)
	b.Type("echo typed-in-''the-browser-$((6*7))")
	b.Key("Enter", "Enter", 13, "\r", 0)
	b.WaitFor("the command's output", rows, func(v string) bool { return strings.Contains(v, "typed-in-the-browser-42") })
	t.Logf("screenshot: %s", screenshot(t, b, "share-page.png"))

	if got := b.Eval(viewersText); got != "1 viewer" {
		t.Errorf("the header says %q of the people watching, want 1 viewer", got)
	}
	// Resizing makes xterm.js rewrite its <style> elements.
	b.Call("Emulation.setDeviceMetricsOverride", map[string]any{"width": 700, "height": 450, "deviceScaleFactor": 1, "mobile": false})
	b.Eval(`document.querySelector('.xterm-helper-textarea').focus()`)
	b.Type("echo after-''the-resize")
	b.Key("Enter", "Enter", 13, "\r", 0)
	b.WaitFor("the command's output after the resize", rows, func(v string) bool { return strings.Contains(v, "after-the-resize") })
	b.Call("Emulation.clearDeviceMetricsOverride", nil)

	// Disabling the link shows the person why the terminal stopped, and
	// the header no longer counts anyone watching.
	s.shareCall(t, http.MethodDelete, agent, "")
	msg := b.WaitFor("the revoked message", `document.getElementById('overlay').hidden ? '' : document.getElementById('overlay-title').textContent`,
		func(v string) bool { return v != "" })
	if msg != "This link was revoked" {
		t.Errorf("the page says %q after the link was disabled", msg)
	}
	if got := b.Eval(viewersText); got != "" {
		t.Errorf("after the link was disabled the header still says %q", got)
	}
	if got := b.Eval(`document.getElementById('state').getAttribute('aria-label')`); got != "Disconnected" {
		t.Errorf("after the link was disabled the header's state says %q", got)
	}
	screenshot(t, b, "share-page-revoked.png")
	// Under the listener's real headers the page shows no error at all:
	// no CSP violation (xterm.js's <style> elements carry the page's
	// nonce), no console error, no exception.
	for _, e := range b.Errors() {
		t.Errorf("the browser reports: %s", e)
	}
}

// viewersText reads what the page's header says of the people watching.
const viewersText = `document.getElementById('viewers').hidden ? '' : document.getElementById('viewers').textContent`

// testReadOnlyBrowser opens a view link in headless Chromium next to an edit
// session on the same Agent: the page says read-only, shows what the editor
// does, and what is typed into it never reaches the pod.
func (s *system) testReadOnlyBrowser(t *testing.T) {
	b := browsertest.Start(t, 1000, 600)
	agent := s.readyAgent(t, "team-agent")
	editToken := s.enable(t, agent, "")
	view := s.shareLink(t, http.MethodPost, agent, "", `{"spec":{"link":"watch","mode":"view"}}`)

	editor, _ := s.dial(t, editToken, nil)
	editor.resize(100, 30)
	editor.typeText("echo edit''or-ready\r")
	editor.waitForOutput("editor-ready")

	b.Navigate("http://" + s.shareLn + "/s/" + view.Status.Token)
	b.WaitFor("the page to connect", `document.getElementById('state').className`,
		func(v string) bool { return v == "state connected" })
	if mode := b.Eval(`document.getElementById('mode').hidden ? 'hidden' : document.getElementById('mode').textContent`); mode != "read-only" {
		t.Errorf("the page's mode badge shows %q, want read-only", mode)
	}
	rows := `(document.querySelector('.xterm-rows') || {}).innerText || ''`
	b.WaitFor("the editor's output, replayed", rows, func(v string) bool { return strings.Contains(v, "editor-ready") })

	b.Eval(`document.querySelector('.xterm-helper-textarea').focus()`)
	b.Type("touch typed-in-''the-browser")
	b.Key("Enter", "Enter", 13, "\r", 0)
	time.Sleep(time.Second)
	editor.typeText("echo after-''browser\r")
	editor.waitForOutput("after-browser")
	out := b.WaitFor("what the editor typed", rows, func(v string) bool { return strings.Contains(v, "after-browser") })
	if strings.Contains(out, "typed-in") || strings.Contains(editor.text(), "typed-in") {
		t.Errorf("the read-only page's typing reached the shell:\npage:\n%s\neditor:\n%s", out, editor.text())
	}
	if files := s.execInPod(t, agent, "sh", "-c", "ls"); strings.Contains(files, "typed-in-the-browser") {
		t.Errorf("the read-only page's command ran in the pod: %q", files)
	}
	t.Logf("screenshot: %s", screenshot(t, b, "share-page-read-only.png"))
	for _, e := range b.Errors() {
		t.Errorf("the browser reports: %s", e)
	}
}

// testTwoBrowsers opens one link in two headless Chromiums, one after the
// other: the second is shown what happened before it came, both see what
// either types, and both say two people are there.
func (s *system) testTwoBrowsers(t *testing.T) {
	agent := s.readyAgent(t, "team-agent")
	token := s.enable(t, agent, "")
	link := "http://" + s.shareLn + "/s/" + token
	rows := `(document.querySelector('.xterm-rows') || {}).innerText || ''`
	viewers := `document.getElementById('viewers').hidden ? '' : document.getElementById('viewers').textContent`
	typeInto := func(b *browsertest.Browser, line string) {
		b.Eval(`document.querySelector('.xterm-helper-textarea').focus()`)
		b.Type(line)
		b.Key("Enter", "Enter", 13, "\r", 0)
	}

	first := browsertest.Start(t, 1000, 600)
	first.Navigate(link)
	first.WaitFor("a shell prompt in the first browser", rows, func(v string) bool { return strings.ContainsAny(v, "$#") })
	typeInto(first, "echo before-''the-second-$((6*7))")
	first.WaitFor("the first browser's output", rows, func(v string) bool { return strings.Contains(v, "before-the-second-42") })

	second := browsertest.Start(t, 1000, 600)
	second.Navigate(link)
	second.WaitFor("the output from before it joined, in the second browser", rows,
		func(v string) bool { return strings.Contains(v, "before-the-second-42") })
	for name, b := range map[string]*browsertest.Browser{"first": first, "second": second} {
		b.WaitFor("two viewers in the "+name+" browser", viewers, func(v string) bool { return v == "2 viewers" })
	}

	typeInto(second, "echo from-the-''second-$((7*8))")
	for name, b := range map[string]*browsertest.Browser{"first": first, "second": second} {
		b.WaitFor("the second browser's command in the "+name+" browser", rows,
			func(v string) bool { return strings.Contains(v, "from-the-second-56") })
	}
	t.Logf("screenshots: %s, %s", screenshot(t, first, "share-page-first-of-two.png"), screenshot(t, second, "share-page-second-of-two.png"))
	for name, b := range map[string]*browsertest.Browser{"first": first, "second": second} {
		for _, e := range b.Errors() {
			t.Errorf("the browser reports in the %s page: %s", name, e)
		}
	}
}
