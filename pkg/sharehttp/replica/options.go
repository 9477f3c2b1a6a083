package replica

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/pkg/share/signingkey"
)

// DefaultNamespace is the listener's namespace in a default install.
const DefaultNamespace = signingkey.DefaultNamespace

// Options configure how the listener's replicas share sessions. Sharing is
// on when AdvertiseAddress is set, as the shipped manifests set it from the
// downward API; without it the listener runs every session it receives
// itself, which is right for one replica only.
type Options struct {
	// Name names this replica in session Leases: its pod's name.
	Name string
	// AdvertiseAddress is the IP address peers reach this replica's share
	// listener at: its pod IP. The share port goes with it.
	AdvertiseAddress string
	// Namespace holds the session Leases and the peer key Secret: the
	// listener's own.
	Namespace string
	// LeaseDuration is how long a session's Lease outlives its owner.
	LeaseDuration time.Duration
	// PeerKeyName is the Secret of the keys that prove forwarded client
	// addresses; the first replica to start makes it.
	PeerKeyName string
}

// NewOptions returns the defaults: sharing off, the Leases and key in the
// default namespace.
func NewOptions() *Options {
	host, _ := os.Hostname()
	return &Options{Name: host, Namespace: DefaultNamespace, LeaseDuration: DefaultLeaseDuration, PeerKeyName: DefaultPeerKeyName}
}

// AddFlags adds the options' flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Name, "share-replica-name", o.Name,
		"Name of this replica of the share listener in session Leases: its pod's name (the downward API's metadata.name). Defaults to the host name.")
	fs.StringVar(&o.AdvertiseAddress, "share-advertise-address", o.AdvertiseAddress,
		"IP address at which the other replicas reach this one's share listener (the downward API's status.podIP). "+
			"When set, the replicas run one shared session per Agent between them and forward pages to its owner; leave empty for a single replica.")
	fs.StringVar(&o.Namespace, "share-lease-namespace", o.Namespace,
		"Namespace of the listener's session Leases and peer key Secret: its own (the downward API's metadata.namespace).")
	fs.DurationVar(&o.LeaseDuration, "share-lease-duration", o.LeaseDuration,
		"How long the Lease of a shared session outlives its owner's last renewal; renewals come every third of it. "+
			"After a replica dies, its pages reach a new session on another replica within this time.")
	fs.StringVar(&o.PeerKeyName, "share-peer-key-name", o.PeerKeyName,
		"Name of the Secret, in the lease namespace, of the keys with which replicas prove the client address of a page they forward. It is made with one key when missing.")
}

// Enabled reports whether the replicas share sessions.
func (o *Options) Enabled() bool { return o.AdvertiseAddress != "" }

// Validate checks the options.
func (o *Options) Validate() []error {
	if !o.Enabled() {
		return nil
	}
	var errs []error
	if net.ParseIP(o.AdvertiseAddress) == nil {
		errs = append(errs, fmt.Errorf("--share-advertise-address %q is not an IP address", o.AdvertiseAddress))
	}
	if o.Name == "" {
		errs = append(errs, fmt.Errorf("--share-replica-name is required with --share-advertise-address"))
	}
	for flag, v := range map[string]string{"--share-lease-namespace": o.Namespace, "--share-peer-key-name": o.PeerKeyName} {
		if msgs := validation.IsDNS1123Subdomain(v); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("%s %q: %v", flag, v, msgs))
		}
	}
	if o.LeaseDuration < 3*time.Second || o.LeaseDuration%time.Second != 0 {
		errs = append(errs, fmt.Errorf("--share-lease-duration %s must be whole seconds, at least 3s", o.LeaseDuration))
	}
	return errs
}

// Identity is this replica as its peers reach it on the share port.
func (o *Options) Identity(port int) Identity {
	return Identity{Name: o.Name, Address: net.JoinHostPort(o.AdvertiseAddress, strconv.Itoa(port))}
}

// Replicas are the parts a listener needs to share sessions with its peers.
type Replicas struct {
	Leases    *Leases
	Auth      *PeerAuth
	Forwarder *Forwarder
	peerKeys  *signingkey.Store
}

// New builds the parts from the options, for a listener on port, with the
// listener's own identity (config). Run starts following the peer key.
func (o *Options) New(config *rest.Config, port int, forwarding ForwarderOptions) (*Replicas, error) {
	// The kind is known, so the client needs no discovery: the listener
	// can be built while the API server is away.
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(coordinationv1.SchemeGroupVersion.WithKind("Lease"), meta.RESTScopeNamespace)
	c, err := client.New(config, client.Options{Mapper: mapper})
	if err != nil {
		return nil, fmt.Errorf("the client of session Leases: %w", err)
	}
	keys, err := (&signingkey.Options{Namespace: o.Namespace, Name: o.PeerKeyName}).NewStore(config)
	if err != nil {
		return nil, err
	}
	auth := NewPeerAuth(keys, clock.RealClock{})
	RegisterMetrics()
	return &Replicas{
		Leases:    NewLeases(c, o.Namespace, o.Identity(port), o.LeaseDuration, clock.RealClock{}),
		Auth:      auth,
		Forwarder: NewForwarder(auth, forwarding),
		peerKeys:  keys,
	}, nil
}

// Start follows the peer key Secret until ctx ends, once it holds a key: it
// makes the Secret when there is none.
func (r *Replicas) Start(ctx context.Context) error {
	go r.peerKeys.Run(ctx)
	if !r.peerKeys.WaitForSync(ctx) {
		return fmt.Errorf("the share peer key Secret: not listed before the server stopped")
	}
	if _, err := r.peerKeys.Refresh(ctx); err != nil {
		return fmt.Errorf("the share peer key: %w", err)
	}
	return nil
}
