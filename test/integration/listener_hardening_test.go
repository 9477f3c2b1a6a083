package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubeopencode/share/pkg/share"
)

// The tests of this file attack the share listener as a stranger, or a
// careless client, would: with hand-written requests on a raw connection,
// sent exactly as written (no path cleaning, headers as given).

// rawAnswer is what the listener answered a raw request.
type rawAnswer struct {
	code   int
	header http.Header
	body   string
}

// shape is the answer without what differs between any two requests (the
// date), for comparing answers.
// pageNonce matches the style nonce of a page (docs/security.md): fresh in
// every answer, so shape compares everything but its value.
var pageNonce = regexp.MustCompile(`(nonce-|nonce=")[A-Za-z0-9_-]+`)

// shape is the answer as a probe sees it: status, headers but Date, body,
// with the per-answer style nonce replaced by a placeholder.
func (a rawAnswer) shape() string {
	keys := make([]string, 0, len(a.header))
	for k := range a.header {
		if k != "Date" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%d\n", a.code)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\n", k, strings.Join(a.header[k], ", "))
	}
	b.WriteString("\n" + a.body)
	return pageNonce.ReplaceAllString(b.String(), "${1}N")
}

// rawRequest sends "method target HTTP/1.1" with the given header lines on a
// connection of its own and returns the answer; the connection is closed
// after it, so a WebSocket it opened is dropped without a word.
func rawRequest(t *testing.T, hostPort, method, target string, header []string) rawAnswer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", hostPort, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	req := method + " " + target + " HTTP/1.1\r\nHost: " + hostPort + "\r\n"
	for _, h := range header {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %.80s: %v", method, target, err)
	}
	defer resp.Body.Close()
	body := ""
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
	}
	return rawAnswer{code: resp.StatusCode, header: resp.Header, body: body}
}

// upgradeHeader is a browser's WebSocket handshake from the page at origin,
// without the header lines named in drop.
func upgradeHeader(origin string, drop ...string) []string {
	all := []string{"Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13",
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Origin: " + origin}
	var out []string
	for _, h := range all {
		name, _, _ := strings.Cut(h, ":")
		keep := true
		for _, d := range drop {
			keep = keep && !strings.EqualFold(name, d)
		}
		if keep {
			out = append(out, h)
		}
	}
	return out
}

// linkUses returns the uses the Secret of an Agent's link records.
func (s *system) linkUses(ctx context.Context, t *testing.T, agent types.NamespacedName, link string) int32 {
	t.Helper()
	n, err := s.tryLinkUses(ctx, agent, link)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (s *system) tryLinkUses(ctx context.Context, agent types.NamespacedName, link string) (int32, error) {
	secret := &corev1.Secret{}
	if err := s.admin.Get(ctx, types.NamespacedName{Namespace: agent.Namespace, Name: share.LinkSecretName(agent.Name, link)}, secret); err != nil {
		return 0, err
	}
	return share.Uses(secret), nil
}

// waitLinkKnown waits until the listener's caches know a link just enabled.
func (s *system) waitLinkKnown(t *testing.T, token string) {
	t.Helper()
	s.waitFor(t, "the listener to know the link", func(ctx context.Context) (bool, error) {
		return s.infoCode(ctx, token, nil) == http.StatusOK, nil
	})
}

// dialFreeSlot opens a terminal and sends its size, waiting for a session
// slot while sessions closed a moment ago are still on their way out. It
// returns nil when the link answers 410.
func (s *system) dialFreeSlot(t *testing.T, token string) *terminalClient {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		c, code := s.dial(t, token, nil)
		switch {
		case c != nil:
			c.resize(80, 24)
			return c
		case code == http.StatusGone:
			return nil
		case code != http.StatusTooManyRequests || time.Now().After(deadline):
			t.Fatalf("terminal refused: %d", code)
		}
	}
}

// A one-time link is meant for one person. Attempts that open no terminal,
// whoever makes them, must leave it to that person.
func TestOneTimeLinkSurvivesRefusedAttempts(t *testing.T) {
	s := startSystem(t)

	tests := []struct {
		name string
		// attempt is made on the one-time link once before the person's;
		// other is a link of the same Agent without a limit.
		attempt  func(t *testing.T, agent types.NamespacedName, once, other string)
		wantCode int
	}{
		{
			name: "a malformed upgrade without Sec-WebSocket-Key",
			attempt: func(t *testing.T, _ types.NamespacedName, once, _ string) {
				got := rawRequest(t, s.shareLn, http.MethodGet, "/s/"+once+"/terminal", upgradeHeader("http://"+s.shareLn, "Sec-WebSocket-Key"))
				if got.code != http.StatusBadRequest {
					t.Fatalf("answered %d %s, want 400", got.code, got.body)
				}
			},
		},
		{
			name: "an attempt refused 429 by the per-Agent session limit",
			attempt: func(t *testing.T, agent types.NamespacedName, once, other string) {
				var open []*terminalClient
				for i := range systemMaxSessionsPerAgent {
					c, code := s.dial(t, other, nil)
					if c == nil {
						t.Fatalf("session %d of the other link answers %d", i, code)
					}
					c.resize(80, 24)
					open = append(open, c)
				}
				s.waitViewers(t, agent, "other", systemMaxSessionsPerAgent)
				got := rawRequest(t, s.shareLn, http.MethodGet, "/s/"+once+"/terminal", upgradeHeader("http://"+s.shareLn))
				if got.code != http.StatusTooManyRequests || !strings.Contains(got.body, `"reason":"TooManyRequests"`) {
					t.Fatalf("answered %d %s, want 429 TooManyRequests", got.code, got.body)
				}
				for _, c := range open {
					c.conn.Close()
				}
				// The sessions' slots are free once the link's pages are
				// counted out.
				s.waitViewers(t, agent, "other", 0)
			},
		},
		{
			name: "an attempt from a foreign Origin",
			attempt: func(t *testing.T, _ types.NamespacedName, once, _ string) {
				if got := rawRequest(t, s.shareLn, http.MethodGet, "/s/"+once+"/terminal", upgradeHeader("https://evil.example")); got.code != http.StatusForbidden {
					t.Fatalf("answered %d %s, want 403", got.code, got.body)
				}
			},
		},
		{
			name: "a connection dropped before its terminal started",
			attempt: func(t *testing.T, agent types.NamespacedName, once, _ string) {
				// The handshake succeeds; the client goes before sending
				// the page's size, so no terminal ever opened.
				if got := rawRequest(t, s.shareLn, http.MethodGet, "/s/"+once+"/terminal", upgradeHeader("http://"+s.shareLn)); got.code != http.StatusSwitchingProtocols {
					t.Fatalf("answered %d %s, want 101", got.code, got.body)
				}
				// The listener gives the use back when it sees the
				// connection go, well before the person tries.
				if err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
					n, err := s.tryLinkUses(ctx, agent, "once")
					return err == nil && n == 0, nil
				}); err != nil {
					t.Fatalf("the dropped connection's use was not given back: %d uses", s.linkUses(t.Context(), t, agent, "once"))
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name+", then the person opens the link", func(t *testing.T) {
			agent := s.readyAgent(t, "team-agent")
			once := s.shareLink(t, http.MethodPost, agent, "", `{"spec":{"link":"once","maxUses":1}}`).Status.Token
			other := s.shareLink(t, http.MethodPost, agent, "", `{"spec":{"link":"other"}}`).Status.Token
			s.waitLinkKnown(t, once)
			s.waitLinkKnown(t, other)

			tc.attempt(t, agent, once, other)
			if n := s.linkUses(t.Context(), t, agent, "once"); n != 0 {
				t.Fatalf("the refused attempt left the link with %d uses", n)
			}
			if resp, body := s.get(t, "/s/"+once+"/info", nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("/info after the refused attempt: %d %s", resp.StatusCode, body)
			}

			c, code := s.dial(t, once, nil)
			if c == nil {
				t.Fatalf("the person's terminal answers %d, want 101", code)
			}
			c.resize(80, 24)
			c.typeText("echo mine-''at-last\r")
			c.waitForOutput("mine-at-last")
			if n := s.linkUses(t.Context(), t, agent, "once"); n != 1 {
				t.Errorf("%d uses after the person's terminal opened, want 1", n)
			}
			// It is still a one-time link.
			if _, code := s.dial(t, once, nil); code != http.StatusGone {
				t.Errorf("a second terminal answers %d, want 410", code)
			}
		})
	}

}

// Many attempts on a limited link at once, far more than its uses and with
// room for all of them under the session limits, so that they race for the
// uses themselves.
func TestLimitedLinkUnderConcurrentAttempts(t *testing.T) {
	s := startSystemWith(t, systemConfig{listenerArgs: []string{"--share-max-sessions-per-agent=100"}})

	t.Run("never more terminals than maxUses, and attempts that open none spend nothing", func(t *testing.T) {
		const maxUses = 2
		agent := s.readyAgent(t, "team-agent")
		token := s.shareLink(t, http.MethodPost, agent, "", fmt.Sprintf(`{"spec":{"link":"limited","maxUses":%d}}`, maxUses)).Status.Token
		s.waitLinkKnown(t, token)

		var (
			mu     sync.Mutex
			opened []*terminalClient
			codes  = map[string]map[int]int{}
		)
		count := func(kind string, code int) {
			mu.Lock()
			defer mu.Unlock()
			if codes[kind] == nil {
				codes[kind] = map[int]int{}
			}
			codes[kind][code]++
		}
		// burst makes n attempts of each given kind at once: people who
		// open the terminal and keep it, strangers who drop the
		// connection before the terminal starts, malformed upgrades.
		burst := func(n int, kinds ...string) {
			var wg sync.WaitGroup
			for range n {
				for _, kind := range kinds {
					wg.Go(func() {
						switch kind {
						case "page":
							c, code := s.dial(t, token, nil)
							count(kind, code)
							if c != nil {
								c.resize(80, 24)
								mu.Lock()
								opened = append(opened, c)
								mu.Unlock()
							}
						case "dropped":
							count(kind, rawRequest(t, s.shareLn, http.MethodGet, "/s/"+token+"/terminal", upgradeHeader("http://"+s.shareLn)).code)
						case "malformed":
							count(kind, rawRequest(t, s.shareLn, http.MethodGet, "/s/"+token+"/terminal", upgradeHeader("http://"+s.shareLn, "Sec-WebSocket-Key")).code)
						}
					})
				}
			}
			wg.Wait()
			t.Logf("answers by kind of attempt so far: %v", codes)
			if len(opened) > maxUses {
				t.Fatalf("%d terminals opened on a link of %d uses", len(opened), maxUses)
			}
		}
		// settled waits until the link records one use for each open
		// terminal: the attempts that opened none have given theirs back.
		settled := func() {
			t.Helper()
			if err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
				n, err := s.tryLinkUses(ctx, agent, "limited")
				return err == nil && n == int32(len(opened)), nil
			}); err != nil {
				t.Fatalf("the link records %d uses for %d open terminals: attempts that opened nothing spent uses", s.linkUses(t.Context(), t, agent, "limited"), len(opened))
			}
		}

		// Strangers first, then everyone at once.
		burst(12, "dropped", "malformed")
		settled()
		burst(12, "page", "dropped", "malformed")
		for _, c := range opened {
			c.typeText("echo open-''terminal\r")
			c.waitForOutput("open-terminal")
		}
		settled()
		// The people still waiting open exactly the rest, and not one more.
		for {
			c := s.dialFreeSlot(t, token)
			if c == nil {
				break
			}
			c.typeText("echo open-''terminal\r")
			c.waitForOutput("open-terminal")
			opened = append(opened, c)
			if len(opened) > maxUses {
				t.Fatalf("%d terminals opened on a link of %d uses", len(opened), maxUses)
			}
		}
		if len(opened) != maxUses {
			t.Fatalf("%d terminals opened before the link answered 410, want %d: refused attempts spent its uses", len(opened), maxUses)
		}
		if n := s.linkUses(t.Context(), t, agent, "limited"); n != maxUses {
			t.Errorf("the Secret records %d uses, want %d", n, maxUses)
		}
	})
}

func TestShareListenerHardening(t *testing.T) {
	s := startSystem(t)
	agent := s.readyAgent(t, "team-agent")
	token := s.enable(t, agent, "")
	s.waitLinkKnown(t, token)
	host := s.shareLn

	t.Run("a present WebSocket Origin must be the page's own, scheme and host", func(t *testing.T) {
		forbidden := `"reason":"Forbidden"`
		tests := []struct {
			name   string
			origin []string // the Origin header lines; none for a client that is not a browser
			want   int
		}{
			{name: "the page's own origin", origin: []string{"Origin: http://" + host}, want: http.StatusSwitchingProtocols},
			{name: "no Origin: a client that is not a browser, with the token", want: http.StatusSwitchingProtocols},
			{name: "a foreign site", origin: []string{"Origin: https://evil.example"}, want: http.StatusForbidden},
			{name: "the right host over https, which this plain listener does not serve", origin: []string{"Origin: https://" + host}, want: http.StatusForbidden},
			{name: "an empty Origin", origin: []string{"Origin: "}, want: http.StatusForbidden},
			{name: "null, as a sandboxed frame or a data: page sends", origin: []string{"Origin: null"}, want: http.StatusForbidden},
			{name: "the page's origin with a path", origin: []string{"Origin: http://" + host + "/evil"}, want: http.StatusForbidden},
			{name: "the page's origin and a foreign one", origin: []string{"Origin: http://" + host, "Origin: https://evil.example"}, want: http.StatusForbidden},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				header := append(upgradeHeader("", "Origin"), tc.origin...)
				got := rawRequest(t, host, http.MethodGet, "/s/"+token+"/terminal", header)
				if got.code != tc.want {
					t.Fatalf("answered %d %s, want %d", got.code, got.body, tc.want)
				}
				if tc.want == http.StatusForbidden && !strings.Contains(got.body, forbidden) {
					t.Errorf("body %s, want %s", got.body, forbidden)
				}
			})
		}
		// A client that is not a browser runs a terminal without Origin.
		conn, resp, err := websocket.DefaultDialer.DialContext(t.Context(), "ws://"+host+"/s/"+token+"/terminal", nil)
		if err != nil {
			t.Fatalf("a client without Origin: %v (%v)", err, resp)
		}
		c := &terminalClient{t: t, conn: conn, closed: make(chan struct{})}
		t.Cleanup(func() { conn.Close() })
		go c.readLoop()
		c.resize(80, 24)
		c.typeText("echo no-''origin\r")
		c.waitForOutput("no-origin")
		conn.Close()
	})

	t.Run("every odd path under /s/ is answered exactly as an unknown token", func(t *testing.T) {
		unknown, err := share.NewToken()
		if err != nil {
			t.Fatal(err)
		}
		want := rawRequest(t, host, http.MethodGet, "/s/"+unknown, nil)
		if want.code != http.StatusNotFound {
			t.Fatalf("an unknown token answers %d", want.code)
		}
		// Built around the working token, so that an answer that differed
		// would tell a probe about it.
		for _, tc := range []struct{ method, target string }{
			{http.MethodGet, "/s/" + token + "/x"},
			{http.MethodGet, "/s/" + token + "/"},
			{http.MethodGet, "/s/" + token + "/info/"},
			{http.MethodGet, "/s/" + token + "/info/x"},
			{http.MethodGet, "/s/" + token + "/terminal/x"},
			{http.MethodGet, "/s//" + token},
			{http.MethodGet, "/s//" + token + "/info"},
			{http.MethodGet, "/s/./" + token},
			{http.MethodGet, "/s/../s/" + token},
			{http.MethodGet, "/s/" + token + "/../" + token + "/info"},
			{http.MethodGet, "/s/%2e%2e/s/" + token},
			{http.MethodGet, "/s/" + token + "%2Finfo"},
			{http.MethodGet, "/s"},
			{http.MethodGet, "/s/"},
			{http.MethodGet, "/s//"},
			{http.MethodGet, "/s/" + token + "/" + strings.Repeat("a", 16<<10)},
			{http.MethodHead, "/s/" + token + "/x"},
			{http.MethodPost, "/s/" + token},
			{http.MethodPost, "/s/" + token + "/info"},
			{http.MethodPut, "/s/" + token + "/terminal"},
			{http.MethodOptions, "/s/" + token},
		} {
			name := strings.ReplaceAll(tc.target, token, "<token>")
			if len(name) > 64 {
				name = fmt.Sprintf("%s…(%d bytes)", name[:32], len(tc.target))
			}
			t.Run(tc.method+" "+name, func(t *testing.T) {
				header := []string{"Content-Length: 0"}
				got := rawRequest(t, host, tc.method, tc.target, header)
				w := want
				if tc.method == http.MethodHead {
					w = rawRequest(t, host, http.MethodHead, "/s/"+unknown, header)
				}
				if got.shape() != w.shape() {
					t.Errorf("answered\n%s\nwant the unknown token's answer\n%s", truncate(got.shape()), truncate(w.shape()))
				}
			})
		}
		// A request head over the listener's limit (16 KiB, and the 4 KiB
		// Go's server allows beyond it) is refused before any route is
		// looked at: the same 431 whatever the path and whether or not the
		// token works.
		pad := strings.Repeat("a", 24<<10)
		long := rawRequest(t, host, http.MethodGet, "/s/"+token+"/"+pad, nil)
		if other := rawRequest(t, host, http.MethodGet, "/s/"+unknown+"/"+pad, nil); long.shape() != other.shape() || long.code != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("an oversized path answers\n%s\nwith the working token and\n%s\nwith an unknown one", truncate(long.shape()), truncate(other.shape()))
		}
	})

	// Last: it stops the listener.
	t.Run("a stopping listener closes every page at once, however slow another client is", func(t *testing.T) {
		var pages []*terminalClient
		for range 2 {
			c := s.dialFreeSlot(t, token)
			c.resize(80, 24)
			pages = append(pages, c)
		}
		pages[0].typeText("echo rea''dy\r")
		for _, c := range pages {
			c.waitForOutput("ready")
		}
		// A client that sends its request a byte at a time, and never
		// finishes it.
		slow, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Close()
		go func() {
			for _, b := range []byte("GET /s/" + token + " HTTP/1.1\r\nHost: " + host + "\r\nX-Slow: " + strings.Repeat("a", 1000)) {
				if _, err := slow.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
		time.Sleep(500 * time.Millisecond)

		start := time.Now()
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			s.api.stop(t)
		}()
		for i, c := range pages {
			code, st, _ := c.waitClosed(30 * time.Second)
			took := time.Since(start)
			t.Logf("page %d closed %s after the stop began", i, took.Round(time.Millisecond))
			if code != websocket.CloseGoingAway || st == nil || st.Reason != "ServerShutdown" {
				t.Errorf("page %d closed with %d %+v, want 1001 ServerShutdown", i, code, st)
			}
			if took > time.Second {
				t.Errorf("page %d was closed %s after the listener began to stop, want within 1s", i, took.Round(time.Millisecond))
			}
		}
		<-stopped
	})
}

// truncate shortens an answer for a failure message.
func truncate(s string) string {
	if len(s) > 600 {
		return s[:600] + "…"
	}
	return s
}
