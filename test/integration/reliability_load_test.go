package integration

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/sharehttp"
	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// TestReliabilityLoad runs sessions, a flood of requests and slow clients
// against one listener.
func TestReliabilityLoad(t *testing.T) {
	s := startSystemWith(t, systemConfig{listenerArgs: loadListenerArgs(fastSizes)})
	t.Run("concurrent sessions stream output across Agents", func(t *testing.T) { s.testConcurrentSessions(t, fastSizes) })
	t.Run("a flood of random tokens from many addresses", func(t *testing.T) { s.testTokenFlood(t, fastSizes) })
	t.Run("slow clients are cut off by their timeouts without affecting others", s.testSlowClients)
}

// loadListenerArgs configure the listener for load: the test stands for a
// proxy in front of it (127.0.0.1 is trusted to tell the client address), so
// that every session and flooding request has an address of its own.
func loadListenerArgs(sz reliabilitySizes) []string {
	perAgent := sz.sessions/sz.agents + 4
	return []string{
		"--trusted-proxies=127.0.0.1/32",
		"--share-max-sessions=" + strconv.Itoa(sz.sessions+20),
		"--share-max-sessions-per-agent=" + strconv.Itoa(perAgent),
		"--share-requests-per-second=5",
		"--share-request-burst=20",
		"--share-max-tracked-clients=1000",
	}
}

// counterCommand prints n=1, n=2, … four times a second, from one process.
func counterCommand() []string {
	if _, err := exec.LookPath("perl"); err == nil {
		return []string{"perl", "-e", `$| = 1; for ($i = 1; ; $i++) { print "n=$i\n"; select(undef, undef, undef, 0.25) }`}
	}
	return []string{"sh", "-c", `i=0; while :; do i=$((i+1)); echo n=$i; sleep 0.25; done`}
}

// metric returns the value of an unlabelled metric of the aggregated API
// server, which the share listener's metrics are part of.
func (s *system) metric(t *testing.T, name string) float64 {
	t.Helper()
	for line := range strings.Lines(s.metricsText(t)) {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// metricsText returns the aggregated API server's /metrics, which the
// share listener's metrics are part of.
func (s *system) metricsText(t *testing.T) string {
	t.Helper()
	cfg := s.cp.Config()
	cfg.Host = fmt.Sprintf("https://127.0.0.1:%d", s.apiPort)
	cfg.CAData, cfg.Insecure = nil, true
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Get(cfg.Host + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// forwardedFor returns the header a trusted proxy adds for a client.
func forwardedFor(addr string) http.Header {
	return http.Header{"X-Forwarded-For": []string{addr}}
}

func (s *system) testConcurrentSessions(t *testing.T, sz reliabilitySizes) {
	ctx := t.Context()
	ns := s.newNamespace(t)
	var keys []types.NamespacedName
	for i := range sz.agents {
		key := types.NamespacedName{Namespace: ns, Name: fmt.Sprintf("load-%d", i)}
		s.createAgent(t, key, nil, counterCommand()...)
		keys = append(keys, key)
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		list := &kubeopencodev1alpha1.AgentList{}
		if err := s.admin.List(ctx, list, client.InNamespace(ns)); err != nil {
			return false, nil
		}
		ready := 0
		for i := range list.Items {
			if isReady(&list.Items[i]) {
				ready++
			}
		}
		return ready == sz.agents, nil
	}); err != nil {
		t.Fatalf("the Agents did not become Ready: %v", err)
	}
	tokens := make([]string, len(keys))
	for i, key := range keys {
		tokens[i] = s.enable(t, key, "")
	}

	http.DefaultClient.CloseIdleConnections()
	baseGoroutines, baseHeap, baseStacks := runtime.NumGoroutine(), heapInUse(), goroutineStacks()
	t.Logf("before: %d goroutines, %d MiB of heap", baseGoroutines, baseHeap>>20)

	sessions := make([]*session, sz.sessions)
	opened := make([]time.Time, sz.sessions)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
	)
	sem := make(chan struct{}, 16)
	start := time.Now()
	for i := range sz.sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			addr := fmt.Sprintf("10.%d.%d.1", i/250, i%250)
			sess, code, err := openSession(ctx, s.shareLn, tokens[i%len(tokens)], forwardedFor(addr))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures = append(failures, fmt.Sprintf("session %d: %d %v", i, code, err))
				return
			}
			sessions[i], opened[i] = sess, time.Now()
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, sess := range sessions {
			if sess != nil {
				sess.close()
			}
		}
	})
	if len(failures) > 0 {
		t.Fatalf("%d of %d sessions did not open: %v", len(failures), sz.sessions, failures[:min(len(failures), 10)])
	}
	t.Logf("%d sessions across %d Agents open in %s", sz.sessions, sz.agents, time.Since(start).Round(100*time.Millisecond))

	// Stream for a while, watching memory.
	openHeap := heapInUse()
	peakHeap := openHeap
	for end := time.Now().Add(sz.streamFor); time.Now().Before(end); {
		time.Sleep(2 * time.Second)
		if h := heapInUse(); h > peakHeap {
			peakHeap = h
		}
	}
	peakGoroutines := runtime.NumGoroutine()
	if path := os.Getenv("KUBEOPENCODE_HEAP_PROFILE"); path != "" {
		// For a look at where a session's memory goes:
		// go tool pprof -sample_index=inuse_space -top <path>
		if f, err := os.Create(path); err == nil {
			_ = pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	if active := s.metric(t, "kubeopencode_share_active_sessions"); int(active) != sz.sessions {
		t.Errorf("the listener counts %v active sessions, want %d", active, sz.sessions)
	}
	// None dropped: every session is open, and its output arrived in order
	// and kept coming.
	var dropped, gappy, slow []string
	var totalLines, totalBytes int64
	for i, sess := range sessions {
		if sess.isClosed() {
			code, st, _ := sess.waitClosed(0)
			dropped = append(dropped, fmt.Sprintf("%d (%d %+v)", i, code, st))
			continue
		}
		if g := sess.gaps.Load(); g > 0 {
			gappy = append(gappy, fmt.Sprintf("%d (%d gaps)", i, g))
		}
		// Four lines a second; a quarter of that on two busy cores.
		if want := int64(time.Since(opened[i]).Seconds()); sess.counter.Load() < want {
			slow = append(slow, fmt.Sprintf("%d (%d lines in %s)", i, sess.counter.Load(), time.Since(opened[i]).Round(time.Second)))
		}
		totalLines += sess.counter.Load()
		totalBytes += sess.bytesOut.Load()
	}
	if len(dropped) > 0 {
		t.Errorf("%d sessions dropped: %v", len(dropped), dropped[:min(len(dropped), 10)])
	}
	if len(gappy) > 0 {
		t.Errorf("%d sessions lost output: %v", len(gappy), gappy[:min(len(gappy), 10)])
	}
	if len(slow) > 0 {
		t.Errorf("%d sessions stalled: %v", len(slow), slow[:min(len(slow), 10)])
	}
	t.Logf("streamed %d lines, %d KiB; heap %d MiB with the sessions open, peaked at %d MiB (+%d MiB over the start, %d KiB a session); %d goroutines",
		totalLines, totalBytes>>10, openHeap>>20, peakHeap>>20, int64(peakHeap-baseHeap)>>20, int64(peakHeap-baseHeap)/int64(sz.sessions)>>10, peakGoroutines)
	// Memory bounded: it does not grow with the output streamed, and each
	// session holds a bounded amount: its buffers (output in flight up to the
	// flow window, the WebSocket buffers) and, in this same process, the
	// stand-in kubelet's side of its stream and the test's client.
	if grew := int64(peakHeap) - int64(openHeap); grew > 32<<20 {
		t.Errorf("the heap grew by %d MiB while the sessions streamed", grew>>20)
	}
	if perSession := int64(peakHeap-baseHeap) / int64(sz.sessions); perSession > 2<<20 {
		t.Errorf("each session holds %d KiB of heap, more than 2 MiB", perSession>>10)
	}

	for _, sess := range sessions {
		sess.close()
	}
	if err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return s.metric(t, "kubeopencode_share_active_sessions") == 0, nil
	}); err != nil {
		t.Errorf("sessions left open after every page closed: %v", s.metric(t, "kubeopencode_share_active_sessions"))
	}
	if grown := goroutineGrowth(baseStacks); len(grown) > 0 {
		t.Logf("goroutines left as the last session ended:\n%s", strings.Join(grown[:min(len(grown), 8)], "\n"))
	}
	// No goroutine leak: back to where it was, give or take the idle
	// connections and timers of the moment. With hundreds of sessions
	// closing at once on two cores, the stand-in kubelet's SPDY connections
	// wait for their streams to close, and client-go's exec heartbeats for
	// pings blocked on a busy kube-apiserver (61s each): give them time.
	http.DefaultClient.CloseIdleConnections()
	const slack = 40
	settleStart := time.Now()
	n := settledGoroutines(ctx, baseGoroutines+slack, 5*time.Minute)
	t.Logf("settled in %s", time.Since(settleStart).Round(time.Second))
	if n > baseGoroutines+slack {
		t.Errorf("%d goroutines after the sessions closed, %d before", n, baseGoroutines)
	} else {
		t.Logf("%d goroutines after the sessions closed, %d before", n, baseGoroutines)
	}
	if grown := goroutineGrowth(baseStacks); len(grown) > 0 {
		t.Logf("goroutines that stayed:\n%s", strings.Join(grown[:min(len(grown), 8)], "\n"))
	}
	after := heapInUse()
	if path := os.Getenv("KUBEOPENCODE_HEAP_PROFILE"); path != "" {
		if f, err := os.Create(path + ".after"); err == nil {
			_ = pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	t.Logf("heap after: %d MiB", after>>20)
	if after > baseHeap+64<<20 {
		t.Errorf("the heap grew from %d MiB to %d MiB and stayed", baseHeap>>20, after>>20)
	}
}

// refusalEvents returns how many ShareAccessRefused Events the listener
// recorded in a namespace, counting repeats.
func (s *system) refusalEvents(ctx context.Context, t *testing.T, ns string) int {
	t.Helper()
	list := &corev1.EventList{}
	if err := s.admin.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range list.Items {
		if e.Reason == sharehttp.EventAccessRefused {
			n += max(int(e.Count), 1)
		}
	}
	return n
}

func (s *system) testTokenFlood(t *testing.T, sz reliabilitySizes) {
	ctx := t.Context()
	// A real link that lets none of the flooding addresses in: its
	// refusals name a known Agent, and could become Events.
	key := s.readyAgent(t, "flooded")
	known := s.enable(t, key, `{"spec":{"allowedIPs":["192.0.2.1"]}}`)
	eventsBefore := s.refusalEvents(ctx, t, key.Namespace)

	sources := make([]string, sz.sources)
	for i := range sources {
		if i%2 == 0 {
			sources[i] = fmt.Sprintf("198.18.%d.%d", (i/2)/250, (i/2)%250+1)
		} else {
			// Each in a /64 of its own: the limiter groups IPv6 by /64.
			sources[i] = fmt.Sprintf("2001:db8:%x:%x::1", (i/2)>>16, (i/2)&0xffff)
		}
	}
	type kind struct {
		name  string
		path  func() string
		codes map[int]bool
	}
	random := func() string { tok, _ := share.NewToken(); return tok }
	kinds := []kind{
		{name: "info of a random token", path: func() string { return "/s/" + random() + "/info" }, codes: map[int]bool{404: true, 429: true}},
		{name: "page of a random token", path: func() string { return "/s/" + random() }, codes: map[int]bool{404: true, 429: true}},
		{name: "malformed token", path: func() string { return "/s/" + random()[:20] + "%2e%2e/info" }, codes: map[int]bool{404: true, 429: true}},
		{name: "terminal of a random token", path: func() string { return "/s/" + random() + "/terminal" }, codes: map[int]bool{400: true, 404: true, 429: true}},
		{name: "a real link from outside its allowedIPs", path: func() string { return "/s/" + known + "/info" }, codes: map[int]bool{403: true, 429: true}},
	}
	httpClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}, Timeout: 30 * time.Second}
	defer httpClient.CloseIdleConnections()
	baseHeap := heapInUse()

	var (
		next       atomic.Int64
		mu         sync.Mutex
		codes      = make([]map[int]int, len(kinds))
		unexpected []string
		wg         sync.WaitGroup
	)
	for i := range codes {
		codes[i] = map[int]int{}
	}
	start := time.Now()
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			for {
				i := next.Add(1)
				if i > int64(sz.requests) {
					return
				}
				k := rnd.IntN(len(kinds))
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.shareLn+kinds[k].path(), nil)
				// Most requests come from a few addresses, as from a
				// scanner; the rest from everywhere.
				src := sources[rnd.IntN(len(sources))]
				if rnd.IntN(2) == 0 {
					src = sources[rnd.IntN(8)]
				}
				req.Header.Set("X-Forwarded-For", src)
				resp, err := httpClient.Do(req)
				code := 0
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				codes[k][code]++
				if !kinds[k].codes[code] && len(unexpected) < 20 {
					unexpected = append(unexpected, fmt.Sprintf("%s from %s: %d %v", kinds[k].name, src, code, err))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	for i, k := range kinds {
		t.Logf("%s: %v", k.name, codeTally(codes[i]))
	}
	t.Logf("%d requests from %d addresses in %s (%.0f/s)", sz.requests, sz.sources, took.Round(100*time.Millisecond), float64(sz.requests)/took.Seconds())
	if len(unexpected) > 0 {
		t.Errorf("answers other than 404, 403 or 429: %v", unexpected)
	}
	limited := 0
	for i := range kinds {
		limited += codes[i][http.StatusTooManyRequests]
	}
	if limited == 0 {
		t.Error("no request was rate limited")
	}

	// The limiter remembers a bounded number of addresses, whatever their
	// number: the heap does not keep what the flood brought.
	if after := heapInUse(); after > baseHeap+64<<20 {
		t.Errorf("the heap grew from %d MiB to %d MiB", baseHeap>>20, after>>20)
	}
	// No Event flood: refusals of unknown tokens record nothing, and those
	// of a known Agent are rate limited (a burst of 3, then 6 a minute).
	time.Sleep(3 * time.Second)
	events := s.refusalEvents(ctx, t, key.Namespace) - eventsBefore
	allowed := 3 + int(took.Minutes()*6) + 1
	t.Logf("%d ShareAccessRefused Event(s) for %d refusals of the real link", events, codes[len(kinds)-1][http.StatusForbidden])
	if events > allowed {
		t.Errorf("%d refusal Events, more than %d", events, allowed)
	}
	// The link still works from its allowed address.
	if code := s.infoCode(ctx, known, forwardedFor("192.0.2.1")); code != http.StatusOK {
		t.Errorf("the real link answers %d from its allowed address after the flood", code)
	}
}

func (s *system) testSlowClients(t *testing.T) {
	ctx := t.Context()
	// The slow clients use a link of their own: the pages of one link share
	// one terminal, and what a slow page types there is everyone's.
	key := s.readyAgent(t, "slow")
	token := s.enable(t, key, "")
	steady := s.readyAgent(t, "steady")
	steadyToken := s.enable(t, steady, "")
	normal := s.mustOpen(t, steadyToken)

	// The others: a working session of another link and that link's
	// /info, checked all along.
	stop := make(chan struct{})
	var (
		othersWG   sync.WaitGroup
		othersMu   sync.Mutex
		othersBad  []string
		roundTrips int
	)
	othersWG.Add(1)
	go func() {
		defer othersWG.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
			begin := time.Now()
			mark := fmt.Sprintf("still-%d-", i)
			err := normal.typeText("echo " + mark + "''here\r")
			if err == nil {
				err = normal.waitFor(ctx, mark+"here")
			}
			code := s.infoCode(ctx, steadyToken, nil)
			othersMu.Lock()
			roundTrips++
			if err != nil || code != http.StatusOK || time.Since(begin) > 5*time.Second {
				othersBad = append(othersBad, fmt.Sprintf("%s: echo %v, /info %d, %s", time.Now().Format("15:04:05"), err, code, time.Since(begin).Round(time.Millisecond)))
			}
			othersMu.Unlock()
		}
	}()

	// Slowloris: request headers a byte at a time, never finished.
	const lorises = 20
	lorisDone := make(chan time.Duration, lorises)
	for i := range lorises {
		go func() {
			begin := time.Now()
			conn, err := net.Dial("tcp", s.shareLn)
			if err != nil {
				lorisDone <- -1
				return
			}
			defer conn.Close()
			closed := make(chan struct{})
			go func() { _, _ = io.Copy(io.Discard, conn); close(closed) }()
			header := fmt.Sprintf("GET /s/%s/info HTTP/1.1\r\nHost: x\r\nX-Slow-%d: ", token, i)
			for j := 0; ; j++ {
				b := byte('a')
				if j < len(header) {
					b = header[j]
				}
				if _, err := conn.Write([]byte{b}); err != nil {
					break
				}
				select {
				case <-closed:
				case <-time.After(time.Second):
					if time.Since(begin) < 2*time.Minute {
						continue
					}
				}
				break
			}
			lorisDone <- time.Since(begin)
		}()
	}

	active := func() float64 { return s.metric(t, "kubeopencode_share_active_sessions") }
	base := active()
	// cutOff waits for the listener to end the slow session, and returns
	// how long it took.
	cutOff := func(what string, within time.Duration) time.Duration {
		t.Helper()
		begin := time.Now()
		if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, within, true, func(context.Context) (bool, error) {
			return active() <= base, nil
		}); err != nil {
			t.Errorf("%s was not cut off within %s", what, within)
		}
		return time.Since(begin)
	}
	dialRaw := func() *websocket.Conn {
		t.Helper()
		conn, _, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+s.shareLn+"/s/"+token+"/terminal", http.Header{"Origin": []string{"http://" + s.shareLn}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if err := conn.WriteMessage(websocket.BinaryMessage, wire.EncodeResize(wire.Size{Cols: 80, Rows: 24})); err != nil {
			t.Fatal(err)
		}
		if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			return active() > base, nil
		}); err != nil {
			t.Fatal("the slow session did not start")
		}
		return conn
	}
	// The system pings every 2s and takes a page silent for 4s for gone;
	// a write may block 10s.
	const pongTimeout, writeTimeout, slackBound = 4 * time.Second, 10 * time.Second, 10 * time.Second

	// A page that stops reading and rendering: output stops at the flow
	// window, and its pongs stop too.
	c := dialRaw()
	_ = c.WriteMessage(websocket.BinaryMessage, wire.EncodeData([]byte("yes\r")))
	took := cutOff("a reader that never reads", pongTimeout+slackBound)
	t.Logf("a reader that never reads nor acknowledges: cut off after %s", took.Round(100*time.Millisecond))

	// A page that never reads but claims to render everything: the server
	// keeps writing until the connection is full, and the write times out.
	c = dialRaw()
	_ = c.WriteMessage(websocket.BinaryMessage, wire.EncodeData([]byte("yes\r")))
	ackStop := make(chan struct{})
	go func() {
		for {
			select {
			case <-ackStop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if c.WriteMessage(websocket.BinaryMessage, wire.EncodeAck(32<<10)) != nil {
				return
			}
		}
	}()
	took = cutOff("a reader that never reads and acknowledges blindly", writeTimeout+pongTimeout+slackBound)
	close(ackStop)
	t.Logf("a reader that never reads but acknowledges: cut off after %s", took.Round(100*time.Millisecond))

	// A page that reads everything but never answers a ping.
	c = dialRaw()
	c.SetPingHandler(func(string) error { return nil })
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	took = cutOff("a peer that never answers pings", pongTimeout+slackBound)
	t.Logf("a peer that never answers pings: cut off after %s", took.Round(100*time.Millisecond))

	// A page that stops taking output shares its link with one that does:
	// the other page's output goes on, held up at most while the server
	// waits for the slow one (its pong timeout here, else the shared session's SlowViewerTimeout of 5s).
	counter := types.NamespacedName{Namespace: key.Namespace, Name: "slow-counter"}
	s.createAgent(t, counter, nil, counterCommand()...)
	s.waitAgent(t, counter, 2*time.Minute, "Ready", isReady)
	counterToken := s.enable(t, counter, "")
	peer, code, err := openSession(ctx, s.shareLn, counterToken, nil)
	if err != nil {
		t.Fatalf("opening the page that shares the link: %d %v", code, err)
	}
	t.Cleanup(peer.close)
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return peer.counter.Load() > 0, nil
	}); err != nil {
		t.Fatal("no output on the page that shares the link")
	}
	base = active()
	c = dialRaw2(t, ctx, s.shareLn, counterToken)
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return active() > base, nil
	}); err != nil {
		t.Fatal("the slow page did not join")
	}
	var longestGap time.Duration
	last, lastAt := peer.counter.Load(), time.Now()
	for end := time.Now().Add(pongTimeout + slackBound); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if n := peer.counter.Load(); n != last {
			last, lastAt = n, time.Now()
		} else if gap := time.Since(lastAt); gap > longestGap {
			longestGap = gap
		}
	}
	t.Logf("the page sharing a link with a page that takes nothing: longest wait for output %s", longestGap.Round(10*time.Millisecond))
	const hubWait = 5 * time.Second
	if longestGap > hubWait+slackBound {
		t.Errorf("the page sharing the link waited %s for output", longestGap)
	}
	if peer.isClosed() || peer.gaps.Load() > 0 {
		t.Errorf("the page sharing the link was closed or lost output (gaps %d)", peer.gaps.Load())
	}

	// The lorises are cut off by the header timeout (10s).
	for range lorises {
		if d := <-lorisDone; d < 0 || d > 10*time.Second+slackBound {
			t.Errorf("a slowloris connection lasted %s", d)
		}
	}
	close(stop)
	othersWG.Wait()
	if len(othersBad) > 0 {
		t.Errorf("the other clients were affected: %v", othersBad)
	}
	t.Logf("the working session and /info answered %d times meanwhile", roundTrips)
	if normal.isClosed() {
		t.Error("the working session was closed")
	}
}

// dialRaw2 opens a terminal that sends its size and then neither reads nor
// writes anything.
func dialRaw2(t *testing.T, ctx context.Context, hostPort, token string) *websocket.Conn {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+hostPort+"/s/"+token+"/terminal", http.Header{"Origin": []string{"http://" + hostPort}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.WriteMessage(websocket.BinaryMessage, wire.EncodeResize(wire.Size{Cols: 80, Rows: 24})); err != nil {
		t.Fatal(err)
	}
	return conn
}
