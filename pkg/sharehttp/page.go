package sharehttp

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	utilexec "k8s.io/utils/exec"

	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/sharehttp/access"
	"github.com/kubeopencode/share/pkg/sharehttp/podexec"
	"github.com/kubeopencode/share/pkg/sharehttp/replica"
	"github.com/kubeopencode/share/pkg/sharehttp/session"
	"github.com/kubeopencode/share/pkg/sharehttp/terminal"
	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// WebSocket close codes the listener uses.
const (
	closeNormal      = terminal.CloseNormal
	closeGoingAway   = terminal.CloseGoingAway
	closePolicy      = terminal.ClosePolicy
	closeServerError = terminal.CloseServerError
)

// slowViewerStatus ends the connection of a page that stopped taking output.
var slowViewerStatus = wire.Status{Reason: "TooSlow", Message: "This page fell too far behind the terminal's output and was disconnected. Reconnect to catch up."}

// handshakeTimeout bounds the wait for the page's first message, which
// carries the terminal size.
const handshakeTimeout = 15 * time.Second

// pageConn is one page's connection: a browser terminal on its Agent's
// shared session.
type pageConn struct {
	grant  *access.Grant
	token  string
	client netip.Addr
	pod    string
	term   *terminal.Session
	cancel context.CancelFunc

	mu     sync.Mutex
	reason string
}

// end closes the page's connection with a status the page shows. Only the first call
// counts; it reports whether it was the first.
func (pc *pageConn) end(code int, reason, message string) bool {
	return pc.endWith(code, wire.Status{Reason: reason, Message: message})
}

func (pc *pageConn) endWith(code int, status wire.Status) bool {
	pc.mu.Lock()
	if pc.reason != "" {
		pc.mu.Unlock()
		return false
	}
	pc.reason = status.Reason
	pc.mu.Unlock()
	// Stop the exec first: Close waits for the page to answer.
	pc.cancel()
	pc.term.Close(code, status)
	return true
}

func (pc *pageConn) endedBy() string {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.reason
}

func (s *Server) serveTerminal(w http.ResponseWriter, r *http.Request) {
	// The whole handshake is checked before anything else, so that a
	// malformed upgrade is refused like any other bad request and never gets
	// as far as taking a use of a one-time link.
	if !validUpgrade(r) {
		writeRefusal(w, &access.Refusal{Reason: "BadRequest", Code: http.StatusBadRequest, Message: "A WebSocket upgrade is required."}, true)
		return
	}
	if !s.checkOrigin(r) {
		client, _ := s.clientIP.ClientIP(r)
		s.audit.refused(nil, client.String(), "ForeignOrigin")
		writeRefusal(w, &access.Refusal{Reason: "Forbidden", Code: http.StatusForbidden, Message: "Cross-origin requests are not allowed."}, true)
		return
	}
	grant, client, forwarded, ok := s.admitForwarded(w, r, true)
	if !ok {
		return
	}
	// With several replicas, one runs the Agent's session: a page that
	// reached another is forwarded to it, before this replica checks more
	// than a forwarder must; the owner checks everything below itself.
	var claim *replica.Claim
	if s.replicas != nil {
		var handled bool
		if claim, handled = s.routeToOwner(w, r, grant, client, forwarded); handled {
			return
		}
		defer claim.Release()
	}
	pod, ok := s.resolver.ReadyPod(r.Context(), grant.Agent)
	if !ok {
		s.audit.refused(&grant.Agent, client.String(), access.ReasonNoPod)
		writeRefusal(w, &access.Refusal{Reason: share.ReasonAgentNotReady, Code: http.StatusServiceUnavailable,
			Message: "The Agent has no running pod. Try again when it is ready."}, true)
		return
	}
	// The caches said yes; the API server must too, so that a revocation
	// whose watch event is still on its way opens nothing.
	grant, refusal := s.resolver.Confirm(r.Context(), grant, r.PathValue("token"), client)
	if refusal != nil {
		s.audit.refused(refusal.Agent, client.String(), refusal.Reason)
		writeRefusal(w, refusal, true)
		return
	}
	resume, _ := session.ParseResumePoint(r.URL.Query().Get("resume"))
	resumed := s.sessions.Resumable(grant.AgentUID, resume)
	release, ok := s.slots.Acquire(grant.Agent)
	if !ok {
		s.audit.refused(&grant.Agent, client.String(), access.ReasonTooManyRequest)
		w.Header().Set("Retry-After", "10")
		writeRefusal(w, &access.Refusal{Reason: access.ReasonTooManyRequest, Code: http.StatusTooManyRequests,
			Message: "Too many terminal sessions are open. Try again later."}, true)
		return
	}
	defer release()
	// Each link counts its pages, for its maxViewers and its status.
	leave, refusal := s.viewers.Join(grant, !resumed)
	if refusal != nil {
		s.audit.refused(refusal.Agent, client.String(), refusal.Reason)
		w.Header().Set("Retry-After", "10")
		writeRefusal(w, refusal, true)
		return
	}
	defer leave()
	// A link limited by maxUses is used by each new terminal connection,
	// never by the page or /info (which link previews fetch), nor by a page
	// resuming the session it lost. The use is taken last, once nothing
	// but the connection itself can fail, and given back if it does.
	var use *access.Use
	if !resumed {
		if use, refusal = s.resolver.TakeUse(r.Context(), grant, r.PathValue("token")); refusal != nil {
			s.audit.refused(refusal.Agent, client.String(), refusal.Reason)
			writeRefusal(w, refusal, true)
			return
		}
	}
	defer use.GiveBack()
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// The upgrader has answered the client.
		return
	}
	s.runPage(r.Context(), conn, grant, r.PathValue("token"), client, pod, resume, use, claim)
}

// validUpgrade reports whether r is a WebSocket handshake the upgrader will
// accept, as far as the request alone tells: the checks of
// websocket.Upgrader.Upgrade but for the origin, which checkOrigin makes.
func validUpgrade(r *http.Request) bool {
	if r.Method != http.MethodGet || !websocket.IsWebSocketUpgrade(r) || !headerHasToken(r.Header, "Sec-Websocket-Version", "13") {
		return false
	}
	// RFC 6455 4.1: the base64 encoding of 16 random bytes.
	key, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-Websocket-Key"))
	return err == nil && len(key) == 16
}

// headerHasToken reports whether a comma-separated header holds token,
// ignoring case.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// runPage runs a page's terminal. use, the use of a one-time link the
// connection took, is kept once the page's terminal starts.
func (s *Server) runPage(parent context.Context, conn *websocket.Conn, grant *access.Grant, token string, client netip.Addr, pod string, resume *session.ResumePoint, use *access.Use, claim *replica.Claim) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	// The page's input goes straight into the command, from the read loop
	// of its connection, once the page has joined its session.
	input := newPageInput()
	defer input.connect(io.Discard)
	// The session outlives ctx, which end() cancels to stop the exec
	// before the status goes out.
	term := terminal.New(parent, terminal.NewWebSocketConn(conn, terminal.WebSocketOptions{
		PingInterval: s.opts.PingInterval,
		PongTimeout:  2 * s.opts.PingInterval,
		WriteTimeout: 10 * time.Second,
	}), terminal.Options{
		FlowWindow:  s.opts.FlowWindow,
		IdleTimeout: s.opts.IdleTimeout,
		Input:       input,
	})
	page := &pageConn{grant: grant, token: token, client: client, pod: pod, term: term, cancel: cancel}
	defer s.track(page)()
	activeSessions.Inc()
	defer activeSessions.Dec()

	handshakeCtx, handshakeCancel := context.WithTimeout(ctx, handshakeTimeout)
	size, err := term.WaitForSize(handshakeCtx)
	handshakeCancel()
	if err != nil {
		if !page.end(closePolicy, "ProtocolError", "The terminal did not start: the page sent no terminal size.") {
			// The server ended it first, at shutdown.
			sessionsTotal.WithLabelValues(page.endedBy()).Inc()
			return
		}
		sessionsTotal.WithLabelValues("handshake_failed").Inc()
		return
	}
	// The page has its terminal: from here on the link has been used,
	// however the session ends.
	use.Keep()

	// Every page of an Agent's links shares one command: the first to
	// arrive starts it, later ones join and are shown the recent output
	// first.
	shared, v, first := s.sessions.Join(grant.AgentUID, term, size, resume, grant.ReadOnly, func() { page.endWith(closeServerError, slowViewerStatus) })
	input.connect(shared.Input(v))
	// A page whose connection dropped, rather than one the server ended,
	// may come back to resume: the command waits for it a while.
	linger := false
	defer func() { shared.Leave(v, linger) }()
	if first {
		// With several replicas, the session holds its Lease while it
		// runs, past this page.
		var sessionClaim *replica.Claim
		if claim != nil {
			sessionClaim = claim.Another()
		}
		go s.runSession(shared, grant, pod, sessionClaim)
	}

	changes, unsubscribe := s.resolver.Subscribe(grant.Agent)
	defer unsubscribe()

	start := s.clock.Now()
	s.audit.sessionStarted(grant, pod, client.String())
	// In this goroutine rather than one of its own: most sessions sit idle.
	s.watchLink(ctx, page, changes, shared.Done())
	var outcome string
	select {
	case <-shared.Done():
		// The page sees the command's last output before its status.
		drain := time.NewTimer(s.opts.SessionTuning.DrainTimeout)
		select {
		case <-v.Drained():
		case <-term.Done():
		case <-ctx.Done():
		case <-drain.C:
		}
		drain.Stop()
		outcome = s.finish(ctx, page, shared.Err())
	case <-ctx.Done():
		outcome = s.finish(ctx, page, ctx.Err())
	case <-term.Done():
		linger = term.Status() == nil
		outcome = s.finish(ctx, page, context.Canceled)
	}
	bytesTotal.WithLabelValues("in").Add(float64(term.BytesIn()))
	bytesTotal.WithLabelValues("out").Add(float64(term.BytesOut()))
	sessionsTotal.WithLabelValues(outcome).Inc()
	s.audit.sessionEnded(grant, client.String(), outcome, s.clock.Since(start), term.BytesIn(), term.BytesOut())
}

// finish tells the page how the session ended and returns the outcome.
func (s *Server) finish(ctx context.Context, page *pageConn, err error) string {
	if reason := page.endedBy(); reason != "" {
		return reason
	}
	var exitErr utilexec.ExitError
	switch {
	case err == nil:
		code := 0
		page.endWith(closeNormal, wire.Status{Reason: "Exited", Message: "The session ended.", ExitCode: &code})
		return "Exited"
	case errors.As(err, &exitErr):
		code := exitErr.ExitStatus()
		page.endWith(closeNormal, wire.Status{Reason: "Exited", Message: fmt.Sprintf("The session ended with exit code %d.", code), ExitCode: &code})
		return "Exited"
	case errors.Is(err, errSessionLeaseLost):
		page.end(closeServerError, access.ReasonUnavailable, "The share server lost track of this session's ownership. Reconnect to go on.")
		return access.ReasonUnavailable
	case !s.resolver.PodExists(ctx, page.grant.Agent.Namespace, page.pod):
		page.end(closeServerError, "PodGone", "The Agent's pod went away. Reconnect to reach its replacement.")
		return "PodGone"
	case clusterUnreachable(err):
		page.end(closeServerError, access.ReasonUnavailable, "The share server cannot reach the cluster right now. Try again shortly.")
		return access.ReasonUnavailable
	case errors.Is(err, context.Canceled), closedByPage(page):
		page.end(closeNormal, "Closed", "The session was closed.")
		return "Closed"
	default:
		page.end(closeServerError, "Error", "The terminal connection to the Agent failed.")
		return "Error"
	}
}

func closedByPage(page *pageConn) bool {
	select {
	case <-page.term.Done():
		return true
	default:
		return false
	}
}

// watchLink re-checks the link whenever the Agent, its Secret or its pods
// change, when the caches stop following the cluster, and at the expiry, and
// ends the session the moment the link no longer gives access: disabled,
// rotated, expired, address no longer allowed, Agent not ready, the pod gone,
// or no way to know (Unavailable). It returns once the session is ending:
// ctx is done, the page went, or the command ended (done).
func (s *Server) watchLink(ctx context.Context, page *pageConn, changes <-chan struct{}, done <-chan struct{}) {
	expiresAt := page.grant.ExpiresAt
	var timer clock.Timer
	var expiry <-chan time.Time
	setExpiry := func() {
		if timer != nil {
			timer.Stop()
			timer, expiry = nil, nil
		}
		if !expiresAt.IsZero() {
			timer = s.clock.NewTimer(expiresAt.Sub(s.clock.Now()))
			expiry = timer.C()
		}
	}
	setExpiry()
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-page.term.Done():
			return
		case <-done:
			return
		case <-expiry:
			page.end(closePolicy, share.ReasonExpired, "This share link has expired.")
			return
		case <-changes:
		}
		grant, refusal := s.resolver.Resolve(ctx, page.token, page.client)
		switch {
		case refusal != nil && refusal.Reason == share.ReasonUsedUp:
			// A used-up link opens no new terminal; the ones it opened go on.
			continue
		case refusal != nil:
			code, reason, message := closePolicy, refusal.Reason, refusal.Message
			switch reason {
			case access.ReasonNotFound:
				reason, message = "Revoked", "This share link was disabled or replaced."
			case access.ReasonUnavailable:
				// The caches lost the cluster: the link may have been
				// revoked unseen, so the session fails closed.
				code, message = closeServerError, "The share server cannot reach the cluster right now. Try again shortly."
			}
			page.end(code, reason, message)
			return
		case grant.AgentUID != page.grant.AgentUID:
			page.end(closePolicy, "Revoked", "This share link was disabled or replaced.")
			return
		case grant.ReadOnly != page.grant.ReadOnly:
			// A page joins its session as an editor or a watcher; a link
			// switched to view must stop typing at once.
			page.end(closePolicy, wire.ReasonModeChanged, "This link was switched between read-only and read-write. Reconnect to go on.")
			return
		case !s.resolver.PodExists(ctx, page.grant.Agent.Namespace, page.pod):
			page.end(closeServerError, "PodGone", "The Agent's pod went away. Reconnect to reach its replacement.")
			return
		}
		if !grant.ExpiresAt.Equal(expiresAt) {
			expiresAt = grant.ExpiresAt
			setExpiry()
		}
	}
}

// clusterUnreachable reports whether an exec failed because the API server
// could not be reached or could not serve, rather than because of the pod. A
// stream that broke off without a close, as when the API server's process
// dies, is one: the API server closes the stream properly when the pod or
// its node fails.
func clusterUnreachable(err error) bool {
	var netErr net.Error
	var closeErr *websocket.CloseError
	return errors.As(err, &netErr) || apierrors.IsServiceUnavailable(err) || apierrors.IsTimeout(err) ||
		apierrors.IsServerTimeout(err) || apierrors.IsTooManyRequests(err) || apierrors.IsInternalError(err) ||
		(errors.As(err, &closeErr) && closeErr.Code == websocket.CloseAbnormalClosure) || errors.Is(err, io.ErrUnexpectedEOF)
}

// runSession runs the command of a shared session until it ends or every
// page has left.
//
// With several replicas, it runs under the claim on the session's Lease,
// which it releases once the session has left the registry, so that no
// page joins a session whose Lease is gone; a Lease this replica can no
// longer renew ends the command, for another replica may start one.
func (s *Server) runSession(shared *session.Session, grant *access.Grant, pod string, claim *replica.Claim) {
	release := func() {}
	shared.Run(func(ctx context.Context, opts remotecommand.StreamOptions) error {
		ctx, release = underClaim(ctx, claim)
		err := s.exec.Exec(ctx, grant.Agent.Namespace, pod, podexec.AgentContainer, grant.Command, opts)
		if errors.Is(context.Cause(ctx), errSessionLeaseLost) {
			klog.InfoS("Ending a shared session whose Lease this replica lost", "agent", grant.Agent)
			err = errSessionLeaseLost
		}
		return err
	})
	release()
}

// pageInput is where a page's typed input goes: it waits for the page to
// join its session, then goes where the session says (Session.Input). The
// page's connection is not read while it waits, nor while the command's
// input is full.
type pageInput struct {
	once      sync.Once
	connected chan struct{}
	to        io.Writer
}

func newPageInput() *pageInput { return &pageInput{connected: make(chan struct{})} }

func (p *pageInput) Write(b []byte) (int, error) {
	<-p.connected
	return p.to.Write(b)
}

// connect sends the input to w from now on. Only the first call counts: a
// page that never joins is connected to io.Discard when its session ends.
func (p *pageInput) connect(w io.Writer) {
	p.once.Do(func() {
		p.to = w
		close(p.connected)
	})
}
