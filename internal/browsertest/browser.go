package browsertest

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Browser is one headless Chromium with one page, driven by one test
// goroutine.
type Browser struct {
	t    testing.TB
	conn *websocket.Conn
	id   int

	// Timeout bounds each call and each WaitFor. Default 30 s.
	Timeout time.Duration

	exceptions []string
	console    []string
	errors     []string
}

// reportViolations is evaluated in every document before its own scripts:
// it turns each Content-Security-Policy violation into a console error, so
// that one the browser does not log (or logs only to its own console) is
// still seen by Errors.
const reportViolations = `document.addEventListener('securitypolicyviolation', function (e) {
  console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline') +
    (e.sample ? ' (' + e.sample + ')' : '') + ' at ' + e.sourceFile + ':' + e.lineNumber);
}, true);`

// Start starts chromium with a window of width×height pixels and connects
// to its page. It is stopped when the test ends.
func Start(t testing.TB, width, height int) *Browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed; .ci/run installs it")
		}
		t.Skip("chromium is not installed (apt-get install chromium)")
	}
	profile, err := os.MkdirTemp("", "browsertest-")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
		"--user-data-dir="+profile, "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
		fmt.Sprintf("--window-size=%d,%d", width, height), "about:blank")
	// Its own process group, so that its renderer and helper processes
	// stop with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
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
		// Helpers may still be writing their last files as they die.
		for range 50 {
			if os.RemoveAll(profile) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	endpoint := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stderr)
		re := regexp.MustCompile(`DevTools listening on ws://([^/\s]+)/`)
		for s.Scan() {
			if m := re.FindStringSubmatch(s.Text()); m != nil {
				endpoint <- m[1]
			}
		}
	}()
	var host string
	select {
	case host = <-endpoint:
	case <-time.After(30 * time.Second):
		t.Fatal("chromium did not open its DevTools endpoint")
	}
	var pageURL string
	for deadline := time.Now().Add(10 * time.Second); pageURL == "" && time.Now().Before(deadline); {
		pageURL = pageTarget(host)
		if pageURL == "" {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if pageURL == "" {
		t.Fatal("chromium lists no page")
	}
	conn, _, err := websocket.DefaultDialer.Dial(pageURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	b := &Browser{t: t, conn: conn, Timeout: 30 * time.Second}
	b.Call("Runtime.enable", nil)
	b.Call("Page.enable", nil)
	b.Call("Log.enable", nil)
	b.Call("Page.addScriptToEvaluateOnNewDocument", map[string]any{"source": reportViolations})
	return b
}

func pageTarget(host string) string {
	resp, err := http.Get("http://" + host + "/json/list")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var targets []struct {
		Type                 string `json:"type"`
		WebSocketDebuggerURL string `json:"webSocketDebuggerUrl"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&targets)
	for _, tg := range targets {
		if tg.Type == "page" {
			return tg.WebSocketDebuggerURL
		}
	}
	return ""
}

// Call sends one DevTools command and returns its result. Events that
// arrive meanwhile are recorded: uncaught exceptions and console messages.
func (b *Browser) Call(method string, params any) json.RawMessage {
	b.t.Helper()
	b.id++
	if err := b.conn.WriteJSON(map[string]any{"id": b.id, "method": method, "params": params}); err != nil {
		b.t.Fatalf("%s: %v", method, err)
	}
	_ = b.conn.SetReadDeadline(time.Now().Add(b.Timeout))
	for {
		var msg struct {
			ID     int             `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := b.conn.ReadJSON(&msg); err != nil {
			b.t.Fatalf("%s: %v", method, err)
		}
		if msg.ID == 0 {
			b.record(msg.Method, msg.Params)
			continue
		}
		if msg.ID != b.id {
			continue
		}
		if msg.Error != nil {
			b.t.Fatalf("%s: %s", method, msg.Error.Message)
		}
		return msg.Result
	}
}

func (b *Browser) record(method string, params json.RawMessage) {
	switch method {
	case "Runtime.exceptionThrown":
		var p struct {
			Details struct {
				Text      string `json:"text"`
				Exception struct {
					Description string `json:"description"`
				} `json:"exception"`
			} `json:"exceptionDetails"`
		}
		_ = json.Unmarshal(params, &p)
		ex := strings.TrimSpace(p.Details.Text + " " + p.Details.Exception.Description)
		b.exceptions = append(b.exceptions, ex)
		b.errors = append(b.errors, "exception: "+ex)
	case "Runtime.consoleAPICalled":
		var p struct {
			Type string `json:"type"`
			Args []struct {
				Value       any    `json:"value"`
				Description string `json:"description"`
			} `json:"args"`
		}
		_ = json.Unmarshal(params, &p)
		parts := []string{p.Type + ":"}
		for _, a := range p.Args {
			if a.Value != nil {
				parts = append(parts, fmt.Sprint(a.Value))
			} else {
				parts = append(parts, a.Description)
			}
		}
		b.console = append(b.console, strings.Join(parts, " "))
		if p.Type == "error" || p.Type == "assert" {
			b.errors = append(b.errors, strings.Join(parts, " "))
		}
	case "Log.entryAdded":
		var p struct {
			Entry struct {
				Source string `json:"source"`
				Level  string `json:"level"`
				Text   string `json:"text"`
				URL    string `json:"url"`
			} `json:"entry"`
		}
		_ = json.Unmarshal(params, &p)
		line := p.Entry.Level + ": " + p.Entry.Text
		if p.Entry.URL != "" {
			line += " (" + p.Entry.URL + ")"
		}
		b.console = append(b.console, line)
		if p.Entry.Level == "error" {
			b.errors = append(b.errors, p.Entry.Source+" "+line)
		}
	}
}

// Exceptions returns the uncaught exceptions seen so far.
func (b *Browser) Exceptions() []string { return b.exceptions }

// Console returns the console and log messages seen so far.
func (b *Browser) Console() []string { return b.console }

// Errors returns every error the page has shown so far: console errors,
// the browser's own error log (a refused resource, a Content-Security-Policy
// violation) and uncaught exceptions. Events are read as calls are made, so
// a test should make one (Eval) after the last action it checks.
func (b *Browser) Errors() []string { return b.errors }

// ClearErrors forgets the errors seen so far, for a test that caused some
// on purpose.
func (b *Browser) ClearErrors() { b.errors = nil }

// Navigate opens url in the page.
func (b *Browser) Navigate(url string) {
	b.t.Helper()
	b.Call("Page.navigate", map[string]any{"url": url})
}

// Eval evaluates a JavaScript expression in the page and returns its value
// formatted with fmt.Sprint, awaiting it when it is a promise; "" for null
// or undefined. An exception fails
// the test.
func (b *Browser) Eval(expr string) string {
	b.t.Helper()
	v, err := b.eval(expr)
	if err != nil {
		b.t.Fatal(err)
	}
	return v
}

func (b *Browser) eval(expr string) (string, error) {
	b.t.Helper()
	var res struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(b.Call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}), &res); err != nil {
		return "", err
	}
	if d := res.ExceptionDetails; d != nil {
		return "", fmt.Errorf("evaluating %s: %s %s", expr, d.Text, d.Exception.Description)
	}
	if res.Result.Value == nil {
		return "", nil
	}
	return fmt.Sprint(res.Result.Value), nil
}

// WaitFor evaluates expr until ok accepts its value, and returns the value.
// Exceptions count as not yet, as while a page loads.
func (b *Browser) WaitFor(what, expr string, ok func(string) bool) string {
	b.t.Helper()
	var last string
	ctx, cancel := context.WithTimeout(context.Background(), b.Timeout)
	defer cancel()
	for ctx.Err() == nil {
		v, err := b.eval(expr)
		if err != nil {
			last = err.Error()
		} else if last = v; ok(v) {
			return v
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.t.Fatalf("waiting for %s; last %q; exceptions %q", what, last, b.exceptions)
	return ""
}

// Type inserts text as if typed, into the focused element.
func (b *Browser) Type(text string) {
	b.t.Helper()
	b.Call("Input.insertText", map[string]any{"text": text})
}

// Key presses and releases a key, given as its DOM key and code, the
// Windows virtual key code and the text it produces, with modifiers as
// DevTools counts them (Alt 1, Ctrl 2, Meta 4, Shift 8).
func (b *Browser) Key(key, code string, keyCode int, text string, modifiers int) {
	b.t.Helper()
	for _, typ := range []string{"keyDown", "keyUp"} {
		params := map[string]any{"type": typ, "key": key, "code": code, "windowsVirtualKeyCode": keyCode, "modifiers": modifiers}
		if typ == "keyDown" && text != "" {
			params["text"] = text
		}
		b.Call("Input.dispatchKeyEvent", params)
	}
}

// Screenshot returns a PNG of the page.
func (b *Browser) Screenshot() []byte {
	b.t.Helper()
	var res struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(b.Call("Page.captureScreenshot", map[string]any{"format": "png"}), &res); err != nil {
		b.t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(res.Data)
	if err != nil {
		b.t.Fatal(err)
	}
	return png
}
