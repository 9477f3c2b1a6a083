package sharehttp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/kubeopencode/share/pkg/sharehttp/access"
	"github.com/kubeopencode/share/pkg/sharehttp/replica"
)

// errSessionLeaseLost ends a session whose owner could no longer renew its
// Lease: another replica may start the Agent's session now, and two must
// never run.
var errSessionLeaseLost = errors.New("this replica lost the Lease of the session")

// newReplicas returns the parts with which the listener shares sessions
// with its other replicas, or nil when it runs alone.
func newReplicas(opts *Options, config *rest.Config) (*replica.Replicas, error) {
	if opts.Replicas == nil || !opts.Replicas.Enabled() {
		return nil, nil
	}
	var forwarding replica.ForwarderOptions
	if opts.TLSCertFile != "" {
		var err error
		if forwarding.TLS, err = peerTLS(opts.TLSCertFile, opts.PublicURL); err != nil {
			return nil, err
		}
	}
	return opts.Replicas.New(config, opts.port(), forwarding)
}

// peerTLS is how a replica that serves HTTPS reaches its peers: at their
// pod IPs, where they present the listener's certificate, which names the
// public host. It is trusted as the system's roots trust it, or as the
// certificate this replica serves itself, so that one of a private CA, or
// a self-signed one, works between the replicas too.
func peerTLS(certFile, publicURL string) (*tls.Config, error) {
	pemData, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("reading the share listener's certificate for its peers: %w", err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if !roots.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("%s holds no PEM certificate", certFile)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	if u, err := url.Parse(publicURL); err == nil && publicURL != "" {
		c.ServerName = u.Hostname()
	}
	return c, nil
}

// clientAddress returns the address of the client behind r: the one
// another replica forwarded with a proof that holds, or the one the
// ClientIPResolver makes out of the connection. A request that carries a
// forwarded address without such a proof is refused, and counted: it did
// not come from a replica. On refusal it has written the answer.
func (s *Server) clientAddress(w http.ResponseWriter, r *http.Request, asJSON bool) (client netip.Addr, forwarded, ok bool) {
	if s.replicas != nil {
		client, forwarded, err := s.replicas.Auth.Verify(r)
		if err == nil && forwarded {
			return client, true, true
		}
		if err != nil {
			s.refuseForwarded(w, r, replica.RefusalReason(err), asJSON)
			return netip.Addr{}, true, false
		}
	} else if r.Header.Get(replica.HeaderClient) != "" || r.Header.Get(replica.HeaderProof) != "" {
		// A listener on its own has no peers to believe.
		s.refuseForwarded(w, r, "nopeers", asJSON)
		return netip.Addr{}, true, false
	}
	client, ok = s.clientIP.ClientIP(r)
	if !ok {
		writeRefusal(w, &access.Refusal{Reason: "BadRequest", Code: http.StatusBadRequest, Message: "Bad request."}, asJSON)
	}
	return client, false, ok
}

func (s *Server) refuseForwarded(w http.ResponseWriter, r *http.Request, reason string, asJSON bool) {
	replica.ForwardedRefusalsTotal.WithLabelValues(reason).Inc()
	// Audited under the address that sent it, not the one it claims.
	peer, _ := access.ClientIPResolver{}.ClientIP(r)
	s.audit.refused(nil, peer.String(), "ForgedForwardedClient")
	writeRefusal(w, &access.Refusal{Reason: "Forbidden", Code: http.StatusForbidden, Message: "Access refused."}, asJSON)
}

// routeToOwner finds which replica runs the session of the grant's Agent.
// When it is this one (already, or from now on), it returns the claim on
// the session's Lease that the page holds while it is let in. When another
// live replica owns it, the page is forwarded there and handled is true;
// so it is when no owner can be settled, with a refusal the page retries.
// A page that was itself forwarded is never forwarded again: the owner it
// was sent to no longer owns the session, and the page tries anew.
func (s *Server) routeToOwner(w http.ResponseWriter, r *http.Request, grant *access.Grant, client netip.Addr, forwarded bool) (claim *replica.Claim, handled bool) {
	claim, owner, err := s.replicas.Leases.Claim(r.Context(), grant.Agent, grant.AgentUID)
	switch {
	case err != nil:
		klog.V(2).InfoS("Could not settle the owner of a shared session", "agent", grant.Agent, "err", err)
		s.audit.refused(&grant.Agent, client.String(), access.ReasonUnavailable)
		w.Header().Set("Retry-After", "2")
		writeRefusal(w, &access.Refusal{Reason: access.ReasonUnavailable, Code: http.StatusServiceUnavailable,
			Message: "The share server cannot reach the cluster right now. Try again shortly."}, true)
		return nil, true
	case owner != nil && forwarded:
		s.audit.refused(&grant.Agent, client.String(), access.ReasonUnavailable)
		w.Header().Set("Retry-After", "2")
		writeRefusal(w, &access.Refusal{Reason: access.ReasonUnavailable, Code: http.StatusServiceUnavailable,
			Message: "The session is moving between share servers. Try again in a moment."}, true)
		return nil, true
	case owner != nil:
		s.replicas.Forwarder.Forward(w, r, *owner, client)
		return nil, true
	}
	return claim, false
}

// underClaim returns a context that ends, with errSessionLeaseLost as its
// cause, when the claim on the session's Lease is lost, and the function
// that releases the claim once the session has ended. A nil claim (a
// listener on its own) gives ctx.
func underClaim(ctx context.Context, claim *replica.Claim) (context.Context, func()) {
	if claim == nil {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-claim.Lost():
			cancel(errSessionLeaseLost)
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		cancel(nil)
		claim.Release()
	}
}
