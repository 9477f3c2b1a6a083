package integration

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// browser is headless Chromium driven through the DevTools protocol.
type browser struct {
	t    *testing.T
	cmd  *exec.Cmd
	conn *websocket.Conn
	id   int
}

// startBrowser starts Debian's chromium. Without it the test is skipped
// locally and fails in CI, which installs it.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed; .ci/run installs it")
		}
		t.Skip("chromium is not installed (apt-get install chromium)")
	}
	cmd := exec.Command(path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
		"--user-data-dir="+t.TempDir(), "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
		"--window-size=1000,600", "about:blank")
	// Chromium's helpers (zygote, renderers, crash handler) write into the
	// profile folder too: the browser runs in a process group of its own,
	// which is killed as a whole before the folder is removed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		// The group's last members may take a moment to die.
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if syscall.Kill(-cmd.Process.Pid, 0) != nil {
				break
			}
		}
	})
	endpoint := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stderr)
		re := regexp.MustCompile(`DevTools listening on (ws://\S+)`)
		for s.Scan() {
			if m := re.FindStringSubmatch(s.Text()); m != nil {
				endpoint <- m[1]
			}
		}
	}()
	var browserURL string
	select {
	case browserURL = <-endpoint:
	case <-time.After(30 * time.Second):
		t.Fatal("chromium did not open its DevTools endpoint")
	}
	// The page target is listed on the same host:port.
	host := regexp.MustCompile(`ws://([^/]+)/`).FindStringSubmatch(browserURL)[1]
	var pageURL string
	for deadline := time.Now().Add(10 * time.Second); pageURL == "" && time.Now().Before(deadline); {
		resp, err := http.Get("http://" + host + "/json/list")
		if err == nil {
			var targets []struct {
				Type                 string `json:"type"`
				WebSocketDebuggerURL string `json:"webSocketDebuggerUrl"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&targets)
			resp.Body.Close()
			for _, tg := range targets {
				if tg.Type == "page" {
					pageURL = tg.WebSocketDebuggerURL
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if pageURL == "" {
		t.Fatal("chromium lists no page")
	}
	conn, _, err := websocket.DefaultDialer.Dial(pageURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &browser{t: t, cmd: cmd, conn: conn}
}

// call sends one DevTools command and returns its result.
func (b *browser) call(method string, params any) json.RawMessage {
	b.t.Helper()
	b.id++
	if err := b.conn.WriteJSON(map[string]any{"id": b.id, "method": method, "params": params}); err != nil {
		b.t.Fatalf("%s: %v", method, err)
	}
	_ = b.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		var msg struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := b.conn.ReadJSON(&msg); err != nil {
			b.t.Fatalf("%s: %v", method, err)
		}
		if msg.ID != b.id {
			continue // an event
		}
		if msg.Error != nil {
			b.t.Fatalf("%s: %s", method, msg.Error.Message)
		}
		return msg.Result
	}
}

// eval evaluates a JavaScript expression in the page and returns its value
// as a string.
func (b *browser) eval(expr string) string {
	b.t.Helper()
	var res struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
	}
	if err := json.Unmarshal(b.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}), &res); err != nil {
		b.t.Fatal(err)
	}
	if res.Result.Value == nil {
		return ""
	}
	return fmt.Sprint(res.Result.Value)
}

func (b *browser) waitFor(what, expr string, ok func(string) bool) string {
	b.t.Helper()
	var last string
	ctx, cancel := context.WithTimeout(b.t.Context(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if last = b.eval(expr); ok(last) {
			return last
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.t.Fatalf("waiting for %s; last %q", what, last)
	return ""
}

func (b *browser) screenshot(name string) string {
	b.t.Helper()
	var res struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(b.call("Page.captureScreenshot", map[string]any{"format": "png"}), &res); err != nil {
		b.t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(res.Data)
	if err != nil {
		b.t.Fatal(err)
	}
	dir := os.Getenv("KUBEOPENCODE_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(shared.root, "_output", "test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return path
}

// testBrowser opens a share link in headless Chromium, types a command into
// the rendered terminal and reads its output from the page.
func (s *system) testBrowser(t *testing.T) {
	b := startBrowser(t)
	agent := s.readyAgent(t, "team-agent")
	token := s.enable(t, agent, "")
	link := "http://" + s.shareLn + "/s/" + token

	b.call("Page.enable", nil)
	b.call("Page.navigate", map[string]any{"url": link})
	b.waitFor("the page to connect", `document.getElementById('state') && document.getElementById('state').className`,
		func(v string) bool { return v == "state connected" })
	if title := b.eval(`document.getElementById('title').textContent`); title != agent.Namespace+"/"+agent.Name {
		t.Errorf("the page shows %q, want %s/%s", title, agent.Namespace, agent.Name)
	}
	rows := `(document.querySelector('.xterm-rows') || {}).innerText || ''`
	b.waitFor("a shell prompt", rows, func(v string) bool { return strings.ContainsAny(v, "$#") })

	b.eval(`document.querySelector('.xterm-helper-textarea').focus()`)
	b.call("Input.insertText", map[string]any{"text": "echo typed-in-''the-browser-$((6*7))"})
	for _, typ := range []string{"keyDown", "keyUp"} {
		b.call("Input.dispatchKeyEvent", map[string]any{"type": typ, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"})
	}
	b.waitFor("the command's output", rows, func(v string) bool { return strings.Contains(v, "typed-in-the-browser-42") })
	t.Logf("screenshot: %s", b.screenshot("share-page.png"))

	// Disabling the link shows the person why the terminal stopped.
	s.shareCall(t, http.MethodDelete, agent, "")
	msg := b.waitFor("the revoked message", `document.getElementById('overlay').hidden ? '' : document.getElementById('overlay-title').textContent`,
		func(v string) bool { return v != "" })
	if msg != "This link was revoked" {
		t.Errorf("the page says %q after the link was disabled", msg)
	}
	b.screenshot("share-page-revoked.png")
}
