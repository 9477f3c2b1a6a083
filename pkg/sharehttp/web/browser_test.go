package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/kubeopencode/share/internal/browsertest"
	"github.com/kubeopencode/share/pkg/sharehttp/terminal"
	"github.com/kubeopencode/share/pkg/sharehttp/web"
	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

const flowWindow = 64 << 10

// pageServer serves the page as the listener does, under its CSP, with a
// fake shell behind the terminal WebSocket. Links:
//
//	good   a working link
//	bad    an unknown link: /info and /terminal answer 404
//	flaky  /info works, the WebSocket handshake is refused without a reason
//	later  /info works once, then the link is gone
type pageServer struct {
	noCSP    bool
	presence int // when not 0, each session is told this many viewers

	mu        sync.Mutex
	sessions  []*terminal.Session
	sizes     []remotecommand.TerminalSize // every size the shells got, in order
	lines     []string                     // every line the shells read
	infoCalls map[string]int
	dials     map[string]int
}

func (p *pageServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /s/{token}", func(w http.ResponseWriter, r *http.Request) {
		if p.noCSP {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write(web.Page(web.NewNonce()))
			return
		}
		web.WritePage(w, http.StatusOK)
	})
	mux.HandleFunc("GET /s/{token}/info", func(w http.ResponseWriter, r *http.Request) {
		token := r.PathValue("token")
		p.mu.Lock()
		p.infoCalls[token]++
		calls := p.infoCalls[token]
		p.mu.Unlock()
		if token == "bad" || token == "later" && calls > 1 {
			writeJSON(w, http.StatusNotFound, map[string]string{"reason": "NotFound", "message": "This share link does not exist or was disabled."})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"name": "team-agent", "namespace": "default"})
	})
	mux.HandleFunc("GET /s/{token}/terminal", p.serveTerminal)
	mux.Handle("GET "+web.StaticPrefix, web.StaticHandler())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.noCSP {
			w.Header().Set("Content-Security-Policy", web.ContentSecurityPolicy)
		}
		w.Header().Set("Cache-Control", "no-store")
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (p *pageServer) serveTerminal(w http.ResponseWriter, r *http.Request) {
	token := r.PathValue("token")
	p.mu.Lock()
	p.dials[token]++
	p.mu.Unlock()
	switch token {
	case "good":
	case "flaky":
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"reason": "AgentNotReady"})
		return
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"reason": "NotFound"})
		return
	}
	ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	s := terminal.New(context.Background(), terminal.NewWebSocketConn(ws, terminal.WebSocketOptions{}), terminal.Options{FlowWindow: flowWindow})
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if _, err := s.WaitForSize(ctx); err != nil {
		s.Close(wire.ClosePolicy, wire.Status{Reason: wire.ReasonProtocolError})
		return
	}
	p.mu.Lock()
	p.sessions = append(p.sessions, s)
	p.mu.Unlock()
	if p.presence != 0 {
		s.SendPresence(p.presence)
	}
	go func() {
		for size := s.Next(); size != nil; size = s.Next() {
			p.mu.Lock()
			p.sizes = append(p.sizes, *size)
			p.mu.Unlock()
		}
	}()
	p.shell(s)
}

// shell is a tiny line-oriented shell: exit N, revoke, flood N, and any
// other line is answered with its length.
func (p *pageServer) shell(s *terminal.Session) {
	out := s.Stdout()
	fmt.Fprint(out, "\x1b[31mRED\x1b[0m \x1b[1;32mGREEN\x1b[0m \x1b[44mBLUE\x1b[0m "+
		"\x1b[38;2;255;128;0mORANGE\x1b[0m \x1b[48;2;0;0;128mNAVY\x1b[0m ready\r\n$ ")
	var line []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := s.Stdin().Read(buf)
		if err != nil {
			return
		}
		for _, c := range buf[:n] {
			if c != '\r' {
				line = append(line, c)
				continue
			}
			cmd := string(line)
			line = line[:0]
			p.mu.Lock()
			p.lines = append(p.lines, cmd)
			p.mu.Unlock()
			fields := strings.Fields(cmd)
			switch {
			case len(fields) == 2 && fields[0] == "exit":
				code, _ := strconv.Atoi(fields[1])
				s.Close(wire.CloseNormal, wire.Status{Reason: wire.ReasonExited, Message: fmt.Sprintf("The session ended with exit code %d.", code), ExitCode: &code})
				return
			case len(fields) == 1 && fields[0] == "revoke":
				s.Close(wire.ClosePolicy, wire.Status{Reason: wire.ReasonRevoked, Message: "This share link was disabled or replaced."})
				return
			case len(fields) == 2 && fields[0] == "flood":
				total, _ := strconv.Atoi(fields[1])
				row := strings.Repeat("0123456789", 7) + "\r\n"
				for sent := 0; sent < total; sent += len(row) {
					if _, err := fmt.Fprint(out, row); err != nil {
						return
					}
				}
				fmt.Fprint(out, "flood done\r\n$ ")
			default:
				fmt.Fprintf(out, "\r\ngot %d bytes\r\n$ ", len(cmd))
			}
		}
	}
}

func (p *pageServer) last() *terminal.Session {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sessions[len(p.sessions)-1]
}

func (p *pageServer) sessionCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sessions)
}

func (p *pageServer) count(m map[string]int, token string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return m[token]
}

// JavaScript expressions that read the page.
const (
	rowsText    = `(document.querySelector('.xterm-rows') || {}).innerText || ''`
	stateClass  = `document.getElementById('state').className`
	noticeTitle = `document.getElementById('overlay').hidden ? '' : document.getElementById('overlay-title').textContent`
	noticeText  = `[document.getElementById('overlay-title').textContent, document.getElementById('overlay-message').textContent,
		document.getElementById('overlay-detail').textContent, document.getElementById('reconnect').hidden ? 'no-reconnect' : 'reconnect',
		document.getElementById('overlay').className].join(' | ')`
	focusTerminal = `document.querySelector('.xterm-helper-textarea').focus()`
)

func colorOf(text string) string {
	return fmt.Sprintf(`(() => { const s = [...document.querySelectorAll('.xterm-rows span')].find(s => s.textContent === %q);
		return s ? getComputedStyle(s).color + ' / ' + getComputedStyle(s).backgroundColor + ' / ' + getComputedStyle(s).fontWeight : ''; })()`, text)
}

func contains(s string) func(string) bool {
	return func(v string) bool { return strings.Contains(v, s) }
}
func equals(s string) func(string) bool { return func(v string) bool { return v == s } }

func TestPageInBrowser(t *testing.T) {
	b := browsertest.Start(t, 1000, 600)
	p := &pageServer{infoCalls: map[string]int{}, dials: map[string]int{}}
	srv := httptest.NewServer(p.handler())
	defer srv.Close()
	defer func() {
		if ex := b.Exceptions(); len(ex) > 0 {
			t.Errorf("uncaught exceptions in the page: %q", ex)
		}
		if t.Failed() {
			t.Logf("console:\n%s", strings.Join(b.Console(), "\n"))
		}
	}()
	typeLine := func(s string) {
		t.Helper()
		b.Eval(focusTerminal)
		b.Type(s)
		b.Key("Enter", "Enter", 13, "\r", 0)
	}

	b.Navigate(srv.URL + "/s/good")
	b.WaitFor("the page to connect", stateClass, equals("state connected"))
	b.WaitFor("the banner", rowsText, contains("ready"))

	t.Run("the header names the Agent", func(t *testing.T) {
		if got := b.Eval(`document.getElementById('title').textContent`); got != "default/team-agent" {
			t.Errorf("title bar %q", got)
		}
		if got := b.Eval(`document.title`); !strings.HasPrefix(got, "default/team-agent") {
			t.Errorf("document title %q", got)
		}
	})

	t.Run("colours and attributes render under the CSP", func(t *testing.T) {
		// xterm.js's default palette; bold green is drawn bright.
		for text, want := range map[string]string{
			"RED":   "rgb(204, 0, 0) / rgba(0, 0, 0, 0) / 400",
			"GREEN": "rgb(138, 226, 52) / rgba(0, 0, 0, 0) / 700",
			"BLUE":  "rgb(255, 255, 255) / rgb(52, 101, 164) / 400",
			// 24-bit colours are style attributes, which the CSP refuses too.
			"ORANGE": "rgb(255, 128, 0) / rgba(0, 0, 0, 0) / 400",
			"NAVY":   "rgb(255, 255, 255) / rgb(0, 0, 128) / 400",
		} {
			if got := b.WaitFor(text, colorOf(text), func(v string) bool { return v != "" }); got != want {
				t.Errorf("%s renders as %s, want %s", text, got, want)
			}
		}
	})

	t.Run("Ctrl+Shift+C copies the selection, Ctrl+Shift+V pastes it", func(t *testing.T) {
		b.Call("Emulation.setFocusEmulationEnabled", map[string]any{"enabled": true})
		b.Call("Browser.grantPermissions", map[string]any{"origin": srv.URL, "permissions": []string{"clipboardReadWrite", "clipboardSanitizedWrite"}})
		b.Eval(focusTerminal)
		// Drag across the start of the first row, then copy.
		for _, ev := range []map[string]any{
			{"type": "mousePressed", "x": 8, "y": 36, "button": "left", "clickCount": 1},
			{"type": "mouseMoved", "x": 120, "y": 36, "button": "left"},
			{"type": "mouseReleased", "x": 120, "y": 36, "button": "left", "clickCount": 1},
		} {
			b.Call("Input.dispatchMouseEvent", ev)
		}
		b.Key("C", "KeyC", 67, "", 2|8)
		copied := b.WaitFor("the copy", `navigator.clipboard.readText()`, contains("RED GREEN"))
		b.Key("V", "KeyV", 86, "", 2|8)
		b.Key("Enter", "Enter", 13, "\r", 0)
		b.WaitFor("the answer to the paste", rowsText, contains(fmt.Sprintf("got %d bytes", len(copied))))
		p.mu.Lock()
		defer p.mu.Unlock()
		if got := p.lines[len(p.lines)-1]; got != copied {
			t.Errorf("the shell read %q, want the copied %q", got, copied)
		}
	})

	t.Run("the first message carries the size that fills the window", func(t *testing.T) {
		p.mu.Lock()
		first := p.sizes[0]
		p.mu.Unlock()
		// 1000×600 pixels less the header, in cells of about 8×17 pixels.
		if first.Width < 100 || first.Width > 130 || first.Height < 25 || first.Height > 40 {
			t.Errorf("first size %+v does not fill a 1000×600 window", first)
		}
		b.Call("Emulation.setDeviceMetricsOverride", map[string]any{"width": 600, "height": 400, "deviceScaleFactor": 1, "mobile": false})
		defer b.Call("Emulation.clearDeviceMetricsOverride", nil)
		deadline := time.Now().Add(10 * time.Second)
		for {
			p.mu.Lock()
			last := p.sizes[len(p.sizes)-1]
			p.mu.Unlock()
			if last.Width < first.Width && last.Height < first.Height {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no smaller size after the window shrank; last %+v", last)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("typing and a large paste reach the shell", func(t *testing.T) {
		typeLine("echo hello")
		b.WaitFor("the answer", rowsText, contains("got 10 bytes"))
		// More than a protocol message may carry: the page splits it.
		typeLine(strings.Repeat("x", 150_000))
		b.WaitFor("the answer to the paste", rowsText, contains("got 150000 bytes"))
	})

	t.Run("heavy output is rendered and acknowledged", func(t *testing.T) {
		s := p.last()
		before := s.BytesOut()
		typeLine("flood 3000000")
		b.WaitFor("the end of the flood", rowsText, contains("flood done"))
		if sent := s.BytesOut() - before; sent < 3_000_000 {
			t.Errorf("%d bytes sent", sent)
		}
		// Everything rendered is acknowledged, so the window is free again.
		deadline := time.Now().Add(5 * time.Second)
		for s.Unacknowledged() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d bytes still unacknowledged", s.Unacknowledged())
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("the exit code is shown and Reconnect starts a new session", func(t *testing.T) {
		shot(t, b, "share-page.png")
		typeLine("exit 3")
		got := b.WaitFor("the notice", noticeText, contains("exit code"))
		if want := "Session ended | The session ended with exit code 3. |  | reconnect | overlay ended"; got != want {
			t.Errorf("notice %q, want %q", got, want)
		}
		if got := b.Eval(rowsText); !strings.Contains(got, "flood done") {
			t.Error("the terminal's output is gone after the session ended")
		}
		shot(t, b, "share-page-exited.png")
		sessions := p.sessionCount()
		b.Eval(`document.getElementById('reconnect').click()`)
		b.WaitFor("the new session", stateClass, equals("state connected"))
		b.WaitFor("the new banner", rowsText, contains("ready"))
		if got := b.Eval(noticeTitle); got != "" {
			t.Errorf("notice %q still shown", got)
		}
		if n := p.sessionCount(); n != sessions+1 {
			t.Errorf("%d sessions after reconnecting, want %d", n, sessions+1)
		}
	})

	t.Run("revocation is final", func(t *testing.T) {
		typeLine("revoke")
		got := b.WaitFor("the notice", noticeText, contains("revoked"))
		if want := "This link was revoked | This share link was disabled or replaced. |  | no-reconnect | overlay ended"; got != want {
			t.Errorf("notice %q, want %q", got, want)
		}
	})

	for _, tc := range []struct {
		token, want string
		dials       int
	}{
		{token: "bad", want: "This link does not work | This share link does not exist or was disabled. |  | no-reconnect | overlay", dials: 0},
		{token: "later", want: "This link does not work | This share link does not exist or was disabled. |  | no-reconnect | overlay", dials: 1},
		{token: "flaky", want: "Connection lost | The connection to the share server was lost. |  | reconnect | overlay", dials: 1},
	} {
		t.Run("link "+tc.token, func(t *testing.T) {
			b.Navigate(srv.URL + "/s/" + tc.token)
			b.WaitFor("the page to give up", stateClass, equals("state ended"))
			if got := b.Eval(noticeText); got != tc.want {
				t.Errorf("notice %q, want %q", got, tc.want)
			}
			// One look at /info, and once more after a refused
			// handshake; never a retry loop.
			time.Sleep(300 * time.Millisecond)
			if n := p.count(p.dials, tc.token); n != tc.dials {
				t.Errorf("%d WebSocket dials, want %d", n, tc.dials)
			}
			if n, max := p.count(p.infoCalls, tc.token), 1+tc.dials; n > max {
				t.Errorf("%d /info calls, want at most %d", n, max)
			}
			if tc.token == "bad" {
				shot(t, b, "share-page-bad-link.png")
			}
		})
	}
}

// shot saves a screenshot to $KUBEOPENCODE_TEST_ARTIFACTS, or to the
// test's temporary folder.
func shot(t *testing.T, b *browsertest.Browser, name string) {
	t.Helper()
	dir := os.Getenv("KUBEOPENCODE_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b.Screenshot(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// styleSheets tells, for every <style> in the page, whether the browser
// applied it: "applied N" or "refused N" in document order.
const styleSheets = `[...document.querySelectorAll('style')].map(s => (s.sheet ? 'applied ' : 'refused ') + (s.sheet ? s.sheet.cssRules.length : 0)).join(', ')`

// viewersText reads what the header says of the people watching.
const viewersText = `document.getElementById('viewers').hidden ? '' : document.getElementById('viewers').textContent`

// TestPageHasNoConsoleErrors drives the page through what a person does with
// it, under the listener's headers, and fails on any error the browser shows
// in its console: a Content-Security-Policy violation (the browser's log or
// a securitypolicyviolation event), a console.error or an uncaught
// exception. xterm.js creates <style> elements and style attributes as it
// renders, resizes and selects, so each step is one that makes it restyle.
func TestPageHasNoConsoleErrors(t *testing.T) {
	b := browsertest.Start(t, 1000, 600)
	p := &pageServer{infoCalls: map[string]int{}, dials: map[string]int{}, presence: 2}
	srv := httptest.NewServer(p.handler())
	defer srv.Close()
	defer func() {
		if t.Failed() {
			t.Logf("console:\n%s", strings.Join(b.Console(), "\n"))
		}
	}()
	typeLine := func(s string) {
		b.Eval(focusTerminal)
		b.Type(s)
		b.Key("Enter", "Enter", 13, "\r", 0)
	}
	for _, step := range []struct {
		name string
		do   func(t *testing.T)
	}{
		{"the page loads and renders colours, 24-bit ones too", func(t *testing.T) {
			b.Navigate(srv.URL + "/s/good")
			b.WaitFor("the page to connect", stateClass, equals("state connected"))
			b.WaitFor("the banner", rowsText, contains("ready"))
			if got := b.WaitFor("ORANGE", colorOf("ORANGE"), func(v string) bool { return v != "" }); got != "rgb(255, 128, 0) / rgba(0, 0, 0, 0) / 400" {
				t.Errorf("ORANGE renders as %s", got)
			}
			// A refused <style> stays in the document without a sheet.
			if got := b.Eval(styleSheets); !strings.HasPrefix(got, "applied ") || strings.Contains(got, "refused") {
				t.Errorf("xterm.js's <style> elements: %s", got)
			}
			if got := b.WaitFor("the viewer count", viewersText, func(v string) bool { return v != "" }); got != "2 viewers" {
				t.Errorf("the header says %q, want 2 viewers", got)
			}
		}},
		{"typing is echoed", func(t *testing.T) {
			typeLine("echo hello")
			b.WaitFor("the answer", rowsText, contains("got 10 bytes"))
		}},
		{"heavy output scrolls", func(t *testing.T) {
			typeLine("flood 200000")
			b.WaitFor("the end of the flood", rowsText, contains("flood done"))
		}},
		{"a selection is drawn", func(t *testing.T) {
			for _, ev := range []map[string]any{
				{"type": "mousePressed", "x": 8, "y": 60, "button": "left", "clickCount": 1},
				{"type": "mouseMoved", "x": 200, "y": 90, "button": "left"},
				{"type": "mouseReleased", "x": 200, "y": 90, "button": "left", "clickCount": 1},
			} {
				b.Call("Input.dispatchMouseEvent", ev)
			}
			b.WaitFor("a selection", `document.querySelectorAll('.xterm-selection div').length`, func(v string) bool { return v != "0" })
		}},
		{"the window is resized", func(t *testing.T) {
			before := b.Eval(`document.querySelector('.xterm-screen').offsetWidth`)
			b.Call("Emulation.setDeviceMetricsOverride", map[string]any{"width": 600, "height": 400, "deviceScaleFactor": 1, "mobile": false})
			defer b.Call("Emulation.clearDeviceMetricsOverride", nil)
			b.WaitFor("the terminal to shrink", `document.querySelector('.xterm-screen').offsetWidth`, func(v string) bool { return v != before })
			typeLine("echo small")
			b.WaitFor("the answer", rowsText, contains("got 10 bytes"))
		}},
		{"a revocation clears the viewer count", func(t *testing.T) {
			typeLine("revoke")
			b.WaitFor("the notice", noticeText, contains("revoked"))
			if got := b.Eval(viewersText); got != "" {
				t.Errorf("after the revocation the header still says %q", got)
			}
		}},
	} {
		t.Run(step.name, func(t *testing.T) {
			step.do(t)
			b.Eval(`0`) // read the events the step caused
			for _, e := range b.Errors() {
				t.Errorf("the browser reports: %s", e)
			}
			b.ClearErrors()
		})
	}
}
