package sharehttp

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/sharehttp/access"
	"github.com/kubeopencode/share/pkg/sharehttp/podexec"
	"github.com/kubeopencode/share/pkg/sharehttp/replica"
	"github.com/kubeopencode/share/pkg/sharehttp/session"
	"github.com/kubeopencode/share/pkg/sharehttp/web"
)

// EventComponent is the source of the Events the listener records.
const EventComponent = "kubeopencode-share"

// contentSecurityPolicy allows nothing but the listener's own scripts,
// styles and WebSocket, and no framing. The page's response replaces it
// with web.PageContentSecurityPolicy, the same but for a per-response nonce
// that lets xterm.js's <style> elements apply (see there why).
const contentSecurityPolicy = web.ContentSecurityPolicy

// Server is the public share listener: the terminal page at /s/<token>, the
// Agent's name at /s/<token>/info and the terminal WebSocket at
// /s/<token>/terminal. Every request is treated as hostile: the token is
// the only credential, and it is checked against the caches on each request
// and for the life of each session.
type Server struct {
	opts     *Options
	resolver *access.Resolver
	clientIP access.ClientIPResolver
	limiter  *access.RateLimiter
	slots    *access.Slots
	sessions *session.Registry
	viewers  *access.Viewers
	audit    *auditor
	exec     podexec.Executor
	// replicas, when the listener runs in several replicas, settles which
	// one runs each Agent's session and forwards pages to it; nil alone.
	replicas *replica.Replicas
	clock    clock.Clock
	events   record.EventBroadcaster
	// origins are the serialized origins (scheme://host) of pages served
	// under --public-url.
	origins  map[string]bool
	upgrader websocket.Upgrader

	// pages are the connections of live terminal pages, so that shutdown
	// can end them and wait for them; once closing, a page that starts is
	// ended at once. ended is closed when the last one leaves, for
	// waitPages. Not a sync.WaitGroup: a page let in as shutdown begins
	// still joins, and a WaitGroup may not grow from zero while it is
	// waited on.
	mu      sync.Mutex
	pages   map[*pageConn]struct{}
	closing bool
	ended   chan struct{}
}

// NewServer returns a share listener. config is the server's own identity:
// it reads share Secrets, Agents and pods, execs into pods and records audit
// Events on Agents.
//
// keys are the system's share signing keys: only a Secret whose token they
// prove opens a terminal.
func NewServer(opts *Options, config *rest.Config, keys share.Keys, clk clock.Clock) (*Server, error) {
	if errs := opts.Validate(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	exec, err := podexec.NewClient(config)
	if err != nil {
		return nil, err
	}
	resolver, err := access.NewResolver(config, keys, clk)
	if err != nil {
		return nil, err
	}
	events, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, err
	}
	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: events.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(clientscheme.Scheme, corev1.EventSource{Component: EventComponent})
	replicas, err := newReplicas(opts, config)
	if err != nil {
		return nil, err
	}
	if opts.Replicas != nil && opts.Replicas.Name != "" {
		resolver.CountViewersAs(opts.Replicas.Name, replicas != nil)
	}
	s := newServer(opts, resolver, exec, recorder, clk)
	s.events = broadcaster
	s.replicas = replicas
	return s, nil
}

// newServer assembles a Server from its parts.
func newServer(opts *Options, resolver *access.Resolver, exec podexec.Executor, recorder record.EventRecorder, clk clock.Clock) *Server {
	proxies, _ := opts.trustedProxies()
	s := &Server{
		opts:     opts,
		resolver: resolver,
		clientIP: access.ClientIPResolver{TrustedProxies: proxies},
		limiter:  access.NewRateLimiter(opts.RequestsPerSecond, opts.RequestBurst, opts.MaxTrackedClients),
		slots:    access.NewSlots(opts.MaxSessions, opts.MaxSessionsPerAgent),
		sessions: session.NewRegistry(opts.SessionTuning),
		viewers:  access.NewViewers(resolver),
		audit:    newAuditor(recorder),
		exec:     exec,
		clock:    clk,
		origins:  map[string]bool{},
		pages:    map[*pageConn]struct{}{},
	}
	if opts.PublicURL != "" {
		u, _ := url.Parse(opts.PublicURL)
		s.origins[originOf(u.Scheme, u.Host)] = true
	}
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   4096,
		WriteBufferSize:  16384,
		// Write buffers go back to the pool between messages: most
		// sessions are idle most of the time.
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     s.checkOrigin,
	}
	RegisterMetrics()
	return s
}

// Handler returns the listener's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /s/{token}", s.servePage)
	mux.HandleFunc("GET /s/{token}/info", s.serveInfo)
	mux.HandleFunc("GET /s/{token}/terminal", s.serveTerminal)
	// Any other request under /s/ (another method, another sub-path) is
	// answered as a link that does not exist.
	mux.HandleFunc("/s/", s.serveNoLink)
	mux.Handle("GET "+web.StaticPrefix, web.StaticHandler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	return securityHeaders(s.shareRoutes(mux))
}

// shareRoutes answers every request for a path under /s/ that is not one of
// the listener's own in canonical form as a link that does not exist,
// before the mux sees it: the mux would redirect a path with "..", "." or
// "//" to its cleaned form, and answer "/s" with a plain-text 404. Probes
// then learn nothing from the shape of an answer, only that there is no
// link.
func (s *Server) shareRoutes(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if (p == "/s" || strings.HasPrefix(p, "/s/")) && !canonicalSharePath(p) {
			s.serveNoLink(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// canonicalSharePath reports whether p is /s/<token>, /s/<token>/info or
// /s/<token>/terminal with a token that is one clean path segment.
func canonicalSharePath(p string) bool {
	rest, ok := strings.CutPrefix(p, "/s/")
	if !ok || path.Clean(p) != p {
		return false
	}
	token, sub, nested := strings.Cut(rest, "/")
	if token == "" {
		return false
	}
	return !nested || sub == "info" || sub == "terminal"
}

// serveNoLink answers a request under /s/ that names no link exactly as
// the page of an unknown token is answered.
func (s *Server) serveNoLink(w http.ResponseWriter, r *http.Request) {
	r.SetPathValue("token", "")
	s.servePage(w, r)
}

// securityHeaders sets the headers every response of the listener carries.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Robots-Tag", "noindex, nofollow")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if r.TLS != nil {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		next.ServeHTTP(w, r)
	})
}

// admit applies the per-address rate limit and resolves the token. On
// refusal it has written the answer.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, asJSON bool) (*access.Grant, netip.Addr, bool) {
	grant, client, _, ok := s.admitForwarded(w, r, asJSON)
	return grant, client, ok
}

// admitForwarded is admit, which also reports whether another replica
// forwarded the request.
func (s *Server) admitForwarded(w http.ResponseWriter, r *http.Request, asJSON bool) (_ *access.Grant, _ netip.Addr, forwarded, _ bool) {
	client, forwarded, ok := s.clientAddress(w, r, asJSON)
	if !ok {
		return nil, client, forwarded, false
	}
	// A forwarded request was counted against its client by the replica
	// that received it; counted here again, a client whose pages are
	// forwarded would get half the rate of one whose are not.
	if !forwarded {
		if ok, retry := s.limiter.Allow(client, s.clock.Now()); !ok {
			s.audit.refused(nil, client.String(), access.ReasonTooManyRequest)
			w.Header().Set("Retry-After", retryAfterSeconds(retry))
			writeRefusal(w, &access.Refusal{Reason: access.ReasonTooManyRequest, Code: http.StatusTooManyRequests,
				Message: "Too many requests. Wait a moment and try again."}, asJSON)
			return nil, client, forwarded, false
		}
	}
	grant, refusal := s.resolver.Resolve(r.Context(), r.PathValue("token"), client)
	if refusal != nil {
		s.audit.refused(refusal.Agent, client.String(), refusal.Reason)
		writeRefusal(w, refusal, asJSON)
		return nil, client, forwarded, false
	}
	return grant, client, forwarded, true
}

func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	client, _, ok := s.clientAddress(w, r, false)
	if !ok {
		// Refused: a forwarded address without a proof, or none at all.
		return
	}
	if allowed, retry := s.limiter.Allow(client, s.clock.Now()); !allowed {
		w.Header().Set("Retry-After", retryAfterSeconds(retry))
		refusalsTotal.WithLabelValues(access.ReasonTooManyRequest).Inc()
		http.Error(w, "Too many requests. Wait a moment and try again.", http.StatusTooManyRequests)
		return
	}
	// The page is the same for every token and finds out the link's state
	// from /info, so an invalid link still shows a clear message. Its status
	// code still tells crawlers and scripts that the link does not work.
	code := http.StatusOK
	if _, refusal := s.resolver.Resolve(r.Context(), r.PathValue("token"), client); refusal != nil {
		code = refusal.Code
	}
	web.WritePage(w, code)
}

func (s *Server) serveInfo(w http.ResponseWriter, r *http.Request) {
	grant, _, ok := s.admit(w, r, true)
	if !ok {
		return
	}
	mode := "edit"
	if grant.ReadOnly {
		mode = "view"
	}
	writeJSON(w, http.StatusOK, map[string]string{"name": grant.Agent.Name, "namespace": grant.Agent.Namespace, "mode": mode})
}

// checkOrigin decides whether a WebSocket handshake may open a terminal as
// far as its Origin goes. The token is in the URL, not in a cookie, so the
// Origin check is not what keeps strangers out; it keeps a page of another
// site that has learnt a token from opening the terminal through a
// visitor's browser, and so from the visitor's address, which allowedIPs
// trusts.
//
// A present Origin must be exactly the page's: the scheme and host of the
// request itself (https when the listener serves TLS, else http), or of
// --public-url, which is what a listener behind a TLS-terminating proxy
// must be told. A handshake without Origin is let in: browsers send it on
// every WebSocket handshake and a page cannot remove it, so its absence
// means a client that is not a browser, which can only be using a token it
// holds itself (and could send any Origin it liked). An empty, "null" or
// repeated Origin is no browser page's and is refused.
func (s *Server) checkOrigin(r *http.Request) bool {
	values := r.Header.Values("Origin")
	if len(values) == 0 {
		return true
	}
	if len(values) != 1 {
		return false
	}
	u, err := url.Parse(values[0])
	if err != nil || u.Host == "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
		return false
	}
	origin := originOf(u.Scheme, u.Host)
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return origin == originOf(scheme, r.Host) || s.origins[origin]
}

// originOf returns the serialized origin of a scheme and host, as compared.
func originOf(scheme, host string) string {
	return strings.ToLower(scheme) + "://" + strings.ToLower(host)
}

func writeRefusal(w http.ResponseWriter, refusal *access.Refusal, asJSON bool) {
	if asJSON {
		writeJSON(w, refusal.Code, map[string]string{"reason": refusal.Reason, "message": refusal.Message})
		return
	}
	http.Error(w, refusal.Message, refusal.Code)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func retryAfterSeconds(d time.Duration) string {
	secs := int((d + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	return strconv.Itoa(secs)
}

// Run fills the caches, then serves until ctx ends; then it stops taking
// requests, ends live sessions with "going away" and waits for them. It
// serves on opts.Listener when set, else on BindAddress:Port.
func (s *Server) Run(ctx context.Context) error {
	if s.events != nil {
		defer s.events.Shutdown()
	}
	ln := s.opts.Listener
	if ln == nil {
		var err error
		addr := net.JoinHostPort(s.opts.BindAddress, strconv.Itoa(s.opts.Port))
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("share listener: %w", err)
		}
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cacheErr := make(chan error, 1)
	go func() { cacheErr <- s.resolver.Run(ctx) }()
	if !s.resolver.WaitForCacheSync(ctx) {
		ln.Close()
		cancel()
		if err := <-cacheErr; err != nil && parent.Err() == nil {
			return err
		}
		return nil
	}
	if s.replicas != nil {
		// Forwarded pages are proven with the peer key: it must be there
		// before the first page.
		if err := s.replicas.Start(ctx); err != nil {
			ln.Close()
			cancel()
			// The replicas' failure is the one to report; the cache only
			// stopped because of it.
			if cerr := <-cacheErr; cerr != nil {
				klog.ErrorS(cerr, "Share listener's caches stopped")
			}
			return err
		}
	}
	// A listener that restarted in the same pod starts with no pages:
	// counts it recorded before are cleared before it serves.
	clearCtx, clearCancel := context.WithTimeout(ctx, 10*time.Second)
	s.resolver.ClearViewers(clearCtx)
	clearCancel()
	err := s.serve(ctx, ln)
	cancel()
	if cerr := <-cacheErr; err == nil {
		err = cerr
	}
	return err
}

func (s *Server) serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          nil,
		// Requests keep ctx's values but not its end: at shutdown the
		// sessions are ended by closePages, which tells each page why,
		// rather than by their context, which would end them as Closed.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if s.opts.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.opts.TLSCertFile, s.opts.TLSKeyFile)
		if err != nil {
			return fmt.Errorf("share listener certificate: %w", err)
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	klog.InfoS("Serving share links", "address", ln.Addr().String(), "tls", s.opts.TLSCertFile != "")

	errCh := make(chan error, 1)
	go func() { errCh <- srv.Serve(ln) }()
	select {
	case err := <-errCh:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Shutdown stops taking connections at once but then waits for every
	// connection that has not finished a request, up to its timeout: a
	// client trickling its headers holds it for seconds. Terminal sessions
	// are hijacked connections, which it does not wait for, so they are
	// ended meanwhile rather than after it, and no page waits for a slow
	// stranger to learn that the server is going.
	shutdownErr := make(chan error, 1)
	go func() { shutdownErr <- srv.Shutdown(shutdownCtx) }()
	forwarded := make(chan struct{})
	go func() {
		defer close(forwarded)
		if s.replicas != nil {
			// Pages forwarded to other replicas go on there: they are
			// told to reconnect, which resumes them through a replica
			// that stays.
			s.replicas.Forwarder.Close(shutdownCtx)
		}
	}()
	s.closePages()
	s.waitPages()
	<-forwarded
	// Sessions waiting for a page to come back end too, and the Leases of
	// this replica's sessions go, so that the next page of their Agents
	// starts a new session on a replica that stays at once.
	s.sessions.CloseAll()
	if s.replicas != nil {
		s.replicas.Leases.Close()
	}
	err := <-shutdownErr
	// The pages are gone: record it on the links' Secrets before leaving.
	s.viewers.Wait(shutdownCtx)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// shutdownMessage is what a page shows when the listener stops.
const shutdownMessage = "The share server is restarting. Reconnect in a moment."

func (s *Server) track(page *pageConn) (untrack func()) {
	s.mu.Lock()
	s.pages[page] = struct{}{}
	closing := s.closing
	s.mu.Unlock()
	if closing {
		// It was let in as the listener began to stop.
		page.end(closeGoingAway, "ServerShutdown", shutdownMessage)
	}
	return func() {
		s.mu.Lock()
		delete(s.pages, page)
		if len(s.pages) == 0 && s.ended != nil {
			close(s.ended)
			s.ended = nil
		}
		s.mu.Unlock()
	}
}

// waitPages waits until no page is connected, including those let in while
// it waits.
func (s *Server) waitPages() {
	s.mu.Lock()
	if len(s.pages) == 0 {
		s.mu.Unlock()
		return
	}
	if s.ended == nil {
		s.ended = make(chan struct{})
	}
	ended := s.ended
	s.mu.Unlock()
	<-ended
}

// closePages ends every page's connection, and every one that starts from
// now on, with ServerShutdown: the page offers to reconnect. Each end waits
// a moment for its page to answer the close, so they run in parallel and
// without holding s.mu, which ending pages take to untrack themselves.
func (s *Server) closePages() {
	s.mu.Lock()
	s.closing = true
	live := make([]*pageConn, 0, len(s.pages))
	for page := range s.pages {
		live = append(live, page)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, page := range live {
		wg.Go(func() { page.end(closeGoingAway, "ServerShutdown", shutdownMessage) })
	}
	wg.Wait()
}

// pageCount returns the number of connected pages of an Agent, or of all
// Agents for an empty name.
func (s *Server) pageCount(agent types.NamespacedName) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for page := range s.pages {
		if agent.Name == "" || page.grant.Agent == agent {
			n++
		}
	}
	return n
}
