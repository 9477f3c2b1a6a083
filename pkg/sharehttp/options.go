package sharehttp

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/spf13/pflag"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/validation"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/sharehttp/replica"
	"github.com/kubeopencode/share/pkg/sharehttp/session"
)

// Options configures the public share listener.
type Options struct {
	// BindAddress and Port are where the listener serves. Port 0 disables it.
	BindAddress string
	Port        int
	// TLSCertFile and TLSKeyFile make the listener serve HTTPS; without them
	// it serves plain HTTP for an Ingress or load balancer to terminate TLS.
	TLSCertFile string
	TLSKeyFile  string
	// PublicURL is the address users reach the listener at, an allowed
	// WebSocket origin besides the request's own host. The API server sets
	// it from its --public-url.
	PublicURL string
	// Listener, when set, is served instead of BindAddress:Port.
	Listener net.Listener
	// TrustedProxies are CIDRs of proxies whose X-Forwarded-For is believed.
	TrustedProxies []string

	RequestsPerSecond   float64
	RequestBurst        int
	MaxTrackedClients   int
	MaxSessions         int
	MaxSessionsPerAgent int
	// IdleTimeout ends a session with no input or output for this long.
	IdleTimeout time.Duration
	// PingInterval is how often the server pings the browser; a pong must
	// come within twice the interval.
	PingInterval time.Duration
	// FlowWindow is how many bytes of output may be unacknowledged by the page.
	FlowWindow int
	// SessionTuning sizes and times the shared sessions. It has no flags:
	// its defaults are what the listener is measured with.
	SessionTuning session.Tuning
	// Replicas, when enabled, makes the listener's replicas run one shared
	// session per Agent between them; the API server sets it from its
	// flags, which it validates.
	Replicas *replica.Options
}

// NewOptions returns Options with defaults.
func NewOptions() *Options {
	return &Options{
		BindAddress:         "0.0.0.0",
		Port:                8080,
		RequestsPerSecond:   5,
		RequestBurst:        20,
		MaxTrackedClients:   10000,
		MaxSessions:         1000,
		MaxSessionsPerAgent: 20,
		IdleTimeout:         time.Hour,
		PingInterval:        20 * time.Second,
		FlowWindow:          256 << 10,
		SessionTuning:       session.DefaultTuning(),
	}
}

// AddFlags adds the listener's flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.BindAddress, "share-bind-address", o.BindAddress, "Address of the public share listener.")
	fs.IntVar(&o.Port, "share-port", o.Port, "Port of the public share listener; 0 disables it.")
	fs.StringVar(&o.TLSCertFile, "share-tls-cert-file", o.TLSCertFile, "Certificate of the share listener; without one it serves plain HTTP behind a TLS-terminating proxy.")
	fs.StringVar(&o.TLSKeyFile, "share-tls-private-key-file", o.TLSKeyFile, "Private key of the share listener's certificate.")
	fs.StringSliceVar(&o.TrustedProxies, "trusted-proxies", o.TrustedProxies, "CIDRs of proxies whose X-Forwarded-For header is believed; empty trusts none.")
	fs.Float64Var(&o.RequestsPerSecond, "share-requests-per-second", o.RequestsPerSecond, "Requests per second allowed from one client address (IPv6 by /64); 0 disables the limit.")
	fs.IntVar(&o.RequestBurst, "share-request-burst", o.RequestBurst, "Burst of requests allowed from one client address.")
	fs.IntVar(&o.MaxTrackedClients, "share-max-tracked-clients", o.MaxTrackedClients, "Client addresses whose request rate is remembered; bounds the limiter's memory.")
	fs.IntVar(&o.MaxSessions, "share-max-sessions", o.MaxSessions, "Concurrent terminal sessions in total.")
	fs.IntVar(&o.MaxSessionsPerAgent, "share-max-sessions-per-agent", o.MaxSessionsPerAgent, "Concurrent terminal sessions per Agent.")
	fs.DurationVar(&o.IdleTimeout, "share-idle-timeout", o.IdleTimeout, "A session with no input or output for this long is ended.")
	fs.DurationVar(&o.PingInterval, "share-ping-interval", o.PingInterval, "How often the server pings a browser to keep proxies from closing idle sessions.")
	fs.IntVar(&o.FlowWindow, "share-flow-window", o.FlowWindow, "Bytes of terminal output a page may leave unacknowledged before the server stops reading more.")
}

// Validate checks the options.
func (o *Options) Validate() []error {
	var errs []error
	if o.Port < 0 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("--share-port %d must be between 0 and 65535", o.Port))
	}
	if o.Port != 0 && net.ParseIP(o.BindAddress) == nil {
		errs = append(errs, fmt.Errorf("--share-bind-address %q is not an IP address", o.BindAddress))
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		errs = append(errs, fmt.Errorf("--share-tls-cert-file and --share-tls-private-key-file go together"))
	}
	if o.PublicURL != "" {
		if err := share.ValidateBaseURL(o.PublicURL); err != nil {
			errs = append(errs, fmt.Errorf("--public-url: %w", err))
		}
	}
	if _, err := o.trustedProxies(); err != nil {
		errs = append(errs, err)
	}
	if o.RequestsPerSecond < 0 || o.RequestBurst < 1 || o.MaxTrackedClients < 1 {
		errs = append(errs, fmt.Errorf("--share-requests-per-second must be >= 0, --share-request-burst and --share-max-tracked-clients >= 1"))
	}
	if o.MaxSessions < 1 || o.MaxSessionsPerAgent < 1 {
		errs = append(errs, fmt.Errorf("--share-max-sessions and --share-max-sessions-per-agent must be at least 1"))
	}
	if o.IdleTimeout <= 0 || o.PingInterval <= 0 {
		errs = append(errs, fmt.Errorf("--share-idle-timeout and --share-ping-interval must be positive"))
	}
	if o.FlowWindow < 4096 {
		errs = append(errs, fmt.Errorf("--share-flow-window must be at least 4096 bytes"))
	}
	return errs
}

func (o *Options) trustedProxies() ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(o.TrustedProxies))
	for _, s := range o.TrustedProxies {
		p, err := validation.ParseIPOrCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("--trusted-proxies: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}

// port is the port the listener serves on, for its peers.
func (o *Options) port() int {
	if o.Listener != nil {
		if addr, ok := o.Listener.Addr().(*net.TCPAddr); ok {
			return addr.Port
		}
	}
	return o.Port
}
