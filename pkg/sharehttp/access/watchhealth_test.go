package access

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/cache/informertest"

	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/sharetest"
)

// fakeAPI answers every request with status code; a watch's body is a pipe
// the test ends.
type fakeAPI struct {
	code    int
	streams []*io.PipeWriter
}

func (f *fakeAPI) RoundTrip(req *http.Request) (*http.Response, error) {
	if f.code != http.StatusOK || !isWatch(req) {
		return &http.Response{StatusCode: f.code, Body: io.NopCloser(strings.NewReader("{}"))}, nil
	}
	r, w := io.Pipe()
	f.streams = append(f.streams, w)
	return &http.Response{StatusCode: http.StatusOK, Body: r}, nil
}

func request(t *testing.T, rt http.RoundTripper, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestWatchHealthFollowsWatchStreams(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	h := newWatchHealth(clk, watchGrace, watchedResources...)
	api := &fakeAPI{code: http.StatusOK}
	rt := h.wrap(api)
	const base = "https://api.example/"

	// Until the caches are filled and watched, the start-up counts as a
	// moment without a watch.
	if !h.healthy() {
		t.Fatal("unhealthy at start")
	}
	clk.Step(watchGrace)
	if h.healthy() {
		t.Fatal("healthy without any watch past the grace")
	}
	h.synced()
	if !h.healthy() {
		t.Fatal("unhealthy right after the caches were filled")
	}
	// Lists, failed watches and watches of other resources do not count.
	request(t, rt, base+"api/v1/secrets?limit=500")
	api.code = http.StatusForbidden
	request(t, rt, base+"api/v1/secrets?watch=true")
	api.code = http.StatusOK
	request(t, rt, base+"api/v1/configmaps?watch=true")
	clk.Step(watchGrace)
	if h.healthy() {
		t.Fatal("healthy with no watch of secrets, pods and agents")
	}

	api.streams = nil
	var bodies []io.ReadCloser
	for _, path := range []string{"api/v1/secrets", "api/v1/pods", "apis/kubeopencode.io/v1alpha1/agents"} {
		bodies = append(bodies, request(t, rt, base+path+"?allowWatchBookmarks=true&watch=true").Body)
	}
	if !h.healthy() {
		t.Fatal("unhealthy with every watch open")
	}
	// The API server goes away: the stream ends, the reader sees it.
	_ = api.streams[0].CloseWithError(io.ErrUnexpectedEOF)
	if _, err := bodies[0].Read(make([]byte, 8)); err == nil {
		t.Fatal("read from a closed stream")
	}
	if !h.healthy() {
		t.Fatal("unhealthy within the grace")
	}
	clk.Step(watchGrace)
	if h.healthy() {
		t.Fatal("healthy with the watch of secrets down past the grace")
	}
	// The reflector watches again.
	bodies[0] = request(t, rt, base+"api/v1/secrets?watch=1").Body
	if !h.healthy() {
		t.Fatal("unhealthy with every watch open again")
	}
	// A watch the reflector stops itself counts as closed once.
	_ = bodies[1].Close()
	_ = bodies[1].Close()
	clk.Step(watchGrace)
	if h.healthy() {
		t.Fatal("healthy with the watch of pods closed")
	}
	bodies[1] = request(t, rt, base+"api/v1/namespaces/team/pods?watch=true").Body
	if !h.healthy() {
		t.Fatal("a namespaced watch of pods does not count")
	}
}

// refusingAPI refuses the connection for its first refusals requests.
type refusingAPI struct {
	refusals int
	calls    int
}

func (f *refusingAPI) RoundTrip(*http.Request) (*http.Response, error) {
	f.calls++
	if f.calls <= f.refusals {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader("{}"))}, nil
}

func TestReadsRefusedAtTheConnectionAreRetried(t *testing.T) {
	h := newWatchHealth(clocktesting.NewFakeClock(time.Now()), watchGrace, watchedResources...)
	newTracker := func(api http.RoundTripper, retryFor time.Duration) *watchTracker {
		return &watchTracker{health: h, next: api, retryPeriod: time.Millisecond, retryFor: retryFor}
	}

	// The API server comes back while a watch waits: the watch goes through.
	api := &refusingAPI{refusals: 3}
	resp := request(t, newTracker(api, time.Minute), "https://api.example/api/v1/secrets?watch=true")
	if resp.StatusCode != http.StatusOK || api.calls != 4 {
		t.Fatalf("status %d after %d calls, want 200 after 4", resp.StatusCode, api.calls)
	}

	// Not for ever: the refusal reaches the reflector in the end.
	api = &refusingAPI{refusals: 1 << 30}
	req, _ := http.NewRequest(http.MethodGet, "https://api.example/api/v1/secrets?watch=true", nil)
	if _, err := newTracker(api, 20*time.Millisecond).RoundTrip(req); !utilnet.IsConnectionRefused(err) {
		t.Fatalf("err = %v, want the refusal", err)
	}

	// Nor when the caller gives up.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	api = &refusingAPI{refusals: 1 << 30}
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, "https://api.example/api/v1/pods?watch=true", nil)
	if _, err := newTracker(api, time.Minute).RoundTrip(req); err == nil || api.calls != 1 {
		t.Fatalf("err = %v after %d calls, want the refusal after 1", err, api.calls)
	}

	// Writes and other failures are not retried.
	api = &refusingAPI{refusals: 1}
	req, _ = http.NewRequest(http.MethodPost, "https://api.example/api/v1/namespaces/team/events", strings.NewReader("{}"))
	if _, err := newTracker(api, time.Minute).RoundTrip(req); err == nil || api.calls != 1 {
		t.Fatalf("a write was retried: err %v, %d calls", err, api.calls)
	}
}

func TestBrokenWatchFailsClosed(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	watches := newWatchHealth(clk, watchGrace, "secrets")
	r := NewResolverFor(&informertest.FakeInformers{}, nil, sharetest.Keys(), clock.RealClock{}, watches.healthy)
	token, _ := share.NewToken()
	// get is the status code the listener answers a request for the
	// token with: that of the refusal, as the token is unknown.
	get := func() int {
		_, refusal := r.Resolve(context.Background(), token, netip.MustParseAddr("192.0.2.1"))
		return refusal.Code
	}
	watches.opened("secrets")
	if code := get(); code != http.StatusNotFound {
		t.Fatalf("healthy cache: %d, want 404", code)
	}
	// A watch that ends and is opened again at once loses nothing.
	watches.closed("secrets")
	if code := get(); code != http.StatusNotFound {
		t.Fatalf("a watch down for a moment: %d, want 404", code)
	}
	// While a watch is broken the listener cannot see revocations: it must
	// refuse rather than answer from what may be stale.
	clk.Step(watchGrace)
	if code := get(); code != http.StatusServiceUnavailable {
		t.Fatalf("broken watch: %d, want 503", code)
	}
	watches.opened("secrets")
	if code := get(); code != http.StatusNotFound {
		t.Fatalf("watch open again: %d, want 404", code)
	}
}
