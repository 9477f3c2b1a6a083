package access

import (
	"io"
	"net/http"
	"path"
	"sync"
	"time"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/utils/clock"
)

// watchGrace is how long the watch of a resource may be down before the
// listener stops trusting its cache. A watch the API server ends in the
// normal way (every few minutes) is opened again at once, from where it
// left off, so nothing is missed in such a gap; a watch that stays down
// means the cache may lag behind revocations.
const watchGrace = 3 * time.Second

// watchedResources are the resources whose watches keep the share cache
// current.
var watchedResources = []string{"secrets", "pods", "agents"}

// watchHealth follows the watches of the share cache through its
// transport: for each resource, how many watch streams are open, and since
// when none has been. The informers' own error handlers are not enough:
// when the API server goes away, a watch ends like one the server closed
// and is retried quietly, with a backoff of up to a minute, and when the API
// server is back the cache lags until the retry.
type watchHealth struct {
	clock clock.PassiveClock
	grace time.Duration

	mu        sync.Mutex
	open      map[string]int
	downSince map[string]time.Time
}

func newWatchHealth(clk clock.PassiveClock, grace time.Duration, resources ...string) *watchHealth {
	h := &watchHealth{clock: clk, grace: grace, open: map[string]int{}, downSince: map[string]time.Time{}}
	now := clk.Now()
	for _, r := range resources {
		h.downSince[r] = now
	}
	return h
}

// healthy reports whether every resource has a watch open, or had one a
// moment ago.
func (h *watchHealth) healthy() bool {
	now := h.clock.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for r, since := range h.downSince {
		if h.open[r] == 0 && now.Sub(since) >= h.grace {
			return false
		}
	}
	return true
}

// synced starts the grace of the resources whose watch is not open yet: the
// cache has just been filled, and their watches follow at once.
func (h *watchHealth) synced() {
	now := h.clock.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for r := range h.downSince {
		if h.open[r] == 0 {
			h.downSince[r] = now
		}
	}
}

func (h *watchHealth) opened(resource string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.open[resource]++
}

func (h *watchHealth) closed(resource string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.open[resource]--; h.open[resource] <= 0 {
		h.open[resource] = 0
		h.downSince[resource] = h.clock.Now()
	}
}

// tracks reports whether the resource is one whose watch counts.
func (h *watchHealth) tracks(resource string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.downSince[resource]
	return ok
}

// Reads refused at the connection are retried in the transport every
// refusedRetryPeriod for up to refusedRetryFor. client-go backs off a watch
// refused at the connection for up to a minute between tries, so after an
// outage of the kube-apiserver the caches, and with them every link, would
// wait that long; a read held here instead goes through as soon as the API
// server listens again.
const (
	refusedRetryPeriod = time.Second
	refusedRetryFor    = 30 * time.Second
)

// wrap returns a transport that reports the watches made through rt.
func (h *watchHealth) wrap(rt http.RoundTripper) http.RoundTripper {
	return &watchTracker{health: h, next: rt, retryPeriod: refusedRetryPeriod, retryFor: refusedRetryFor}
}

type watchTracker struct {
	health                *watchHealth
	next                  http.RoundTripper
	retryPeriod, retryFor time.Duration
}

func (t *watchTracker) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.roundTripRetryingRefused(req)
	if err != nil || resp.StatusCode != http.StatusOK || !isWatch(req) {
		return resp, err
	}
	resource := path.Base(req.URL.Path)
	if !t.health.tracks(resource) {
		return resp, nil
	}
	t.health.opened(resource)
	resp.Body = &watchBody{ReadCloser: resp.Body, done: func() { t.health.closed(resource) }}
	return resp, nil
}

// roundTripRetryingRefused sends req, again while it is a read that the API
// server refuses at the connection: nothing was sent, so nothing is done
// twice.
func (t *watchTracker) roundTripRetryingRefused(req *http.Request) (*http.Response, error) {
	deadline := time.Now().Add(t.retryFor)
	for {
		resp, err := t.next.RoundTrip(req)
		if err == nil || req.Method != http.MethodGet || req.Body != nil || !utilnet.IsConnectionRefused(err) || time.Now().After(deadline) {
			return resp, err
		}
		timer := time.NewTimer(t.retryPeriod)
		select {
		case <-req.Context().Done():
			timer.Stop()
			return nil, err
		case <-timer.C:
		}
	}
}

// WrappedRoundTripper lets client-go find the transport underneath.
func (t *watchTracker) WrappedRoundTripper() http.RoundTripper { return t.next }

func isWatch(req *http.Request) bool {
	w := req.URL.Query().Get("watch")
	return w == "true" || w == "1"
}

// watchBody is the stream of a watch; it ends at its first read error (the
// end of the stream included) or when it is closed.
type watchBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *watchBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.once.Do(b.done)
	}
	return n, err
}

func (b *watchBody) Close() error {
	b.once.Do(b.done)
	return b.ReadCloser.Close()
}
