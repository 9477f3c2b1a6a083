package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/logs"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	"github.com/kubeopencode/share/pkg/apiserver"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/signingkey"
	"github.com/kubeopencode/share/pkg/sharehttp"
	"github.com/kubeopencode/share/pkg/sharehttp/replica"
)

func init() {
	// The logging options are gated by features that must be known to the
	// gate before flags are parsed; Kubernetes components register them here.
	utilruntime.Must(logsapi.AddFeatureGates(utilfeature.DefaultMutableFeatureGate))
}

// DefaultSecurePort is the port of the API when --secure-port is not given.
const DefaultSecurePort = 8443

// Runnable is a long-running part of the server process, such as the share
// listener on its own port. It runs until ctx is done and then returns nil,
// or returns an error when it cannot go on.
type Runnable func(ctx context.Context) error

// Options are the options of the aggregated API server. The generic groups
// are those of k8s.io/apiserver without etcd and admission, as in
// metrics-server: the server keeps no state of its own.
type Options struct {
	SecureServing  *genericoptions.SecureServingOptionsWithLoopback
	Authentication *genericoptions.DelegatingAuthenticationOptions
	Authorization  *genericoptions.DelegatingAuthorizationOptions
	Audit          *genericoptions.AuditOptions
	Logs           *logs.Options

	// Kubeconfig is the kubeconfig of the server's own client, which reads
	// and writes Agents and share Secrets; empty means the in-cluster
	// ServiceAccount.
	Kubeconfig string
	// PublicURL is the base URL under which share links are served, such as
	// https://share.example.com; empty when not known.
	PublicURL string
	// MaxShareDuration, when positive, caps how long a share link lives.
	MaxShareDuration time.Duration
	// Share configures the public share listener that runs in this process
	// on its own port; port 0 turns it off.
	Share *sharehttp.Options
	// SigningKey locates the share signing keys, which the API mints tokens
	// with and the listener proves them with.
	SigningKey *signingkey.Options
	// Replicas configures how the share listener's replicas run one shared
	// session per Agent between them.
	Replicas *replica.Options

	// Runnables run in the server process next to the API server, each in
	// its own goroutine, once the API server is configured. The context they
	// get ends when the process is told to stop or when the API server or any
	// Runnable fails; Run returns the first failure. A part that has flags of
	// its own registers them in Flags and its Runnable before Run.
	Runnables []Runnable
}

// NewOptions returns the default options.
func NewOptions() *Options {
	o := &Options{
		SecureServing:  genericoptions.NewSecureServingOptions().WithLoopback(),
		Authentication: genericoptions.NewDelegatingAuthenticationOptions(),
		Authorization:  genericoptions.NewDelegatingAuthorizationOptions(),
		Audit:          genericoptions.NewAuditOptions(),
		Logs:           logs.NewOptions(),
		Share:          sharehttp.NewOptions(),
		SigningKey:     signingkey.NewOptions(),
		Replicas:       replica.NewOptions(),
	}
	o.SecureServing.BindPort = DefaultSecurePort
	// Without --tls-cert-file a self-signed certificate is made in memory
	// rather than written to the working directory.
	o.SecureServing.ServerCert.CertDirectory = ""
	return o
}

// Flags returns the flags of the options in named sections.
func (o *Options) Flags() cliflag.NamedFlagSets {
	var fss cliflag.NamedFlagSets
	o.SecureServing.AddFlags(fss.FlagSet("secure serving"))
	o.Authentication.AddFlags(fss.FlagSet("authentication"))
	o.Authorization.AddFlags(fss.FlagSet("authorization"))
	o.Audit.AddFlags(fss.FlagSet("auditing"))
	logsapi.AddFlags(o.Logs, fss.FlagSet("logs"))

	fs := fss.FlagSet("share")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig,
		"The kubeconfig of the server's own client, which reads and writes Agents and their share Secrets. Empty means the in-cluster ServiceAccount.")
	fs.StringVar(&o.PublicURL, "public-url", o.PublicURL,
		"The base URL under which share links are served, such as https://share.example.com. When set, the share subresource returns full links.")
	fs.DurationVar(&o.MaxShareDuration, "max-share-duration", o.MaxShareDuration,
		"The longest a share link may live, such as 168h. A link requested without an expiry then expires after this long. 0 means no cap.")
	o.SigningKey.AddFlags(fs)
	o.Share.AddFlags(fss.FlagSet("share listener"))
	o.Replicas.AddFlags(fss.FlagSet("share listener"))
	return fss
}

// Complete fills in what the flags leave open: a self-signed serving
// certificate for localhost when none is given.
func (o *Options) Complete() error {
	if err := o.SecureServing.MaybeDefaultWithSelfSignedCerts("localhost", nil, []net.IP{net.ParseIP("127.0.0.1")}); err != nil {
		return fmt.Errorf("creating a self-signed serving certificate: %w", err)
	}
	o.Share.PublicURL = o.PublicURL
	o.Share.Replicas = o.Replicas
	return nil
}

// Validate checks the options and returns all that is wrong with them.
func (o *Options) Validate() error {
	var errs []error
	errs = append(errs, o.SecureServing.Validate()...)
	errs = append(errs, o.Authentication.Validate()...)
	errs = append(errs, o.Authorization.Validate()...)
	errs = append(errs, o.Audit.Validate()...)
	if o.Share.Port != 0 || o.Share.Listener != nil {
		errs = append(errs, o.Share.Validate()...)
		errs = append(errs, o.Replicas.Validate()...)
	}
	errs = append(errs, o.SigningKey.Validate()...)
	if o.MaxShareDuration < 0 {
		errs = append(errs, fmt.Errorf("--max-share-duration %s must not be negative", o.MaxShareDuration))
	}
	if o.PublicURL != "" {
		if err := share.ValidateBaseURL(o.PublicURL); err != nil {
			errs = append(errs, fmt.Errorf("--public-url: %w", err))
		}
	}
	return utilerrors.NewAggregate(errs)
}

// ClientConfig returns the configuration of the server's own client: the
// --kubeconfig file, or the in-cluster ServiceAccount.
func (o *Options) ClientConfig() (*rest.Config, error) {
	var (
		config *rest.Config
		err    error
	)
	if o.Kubeconfig != "" {
		rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: o.Kubeconfig}
		config, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	} else {
		config, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("loading the server's client configuration: %w", err)
	}
	config = rest.CopyConfig(config)
	config.UserAgent = apiserver.Name
	// A create makes a handful of requests; do not queue behind the
	// client-go defaults under a burst of them.
	config.QPS, config.Burst = 50, 100
	return config, nil
}

// Config builds the server's configuration from the options. keys are the
// share signing keys; recorder records the Warning Events of the share
// subresource.
func (o *Options) Config(keys share.Keys, recorder record.EventRecorder) (*apiserver.Config, error) {
	generic := apiserver.NewGenericConfig()
	if err := o.SecureServing.ApplyTo(&generic.SecureServing, &generic.LoopbackClientConfig); err != nil {
		return nil, fmt.Errorf("applying the serving options: %w", err)
	}
	if err := o.Authentication.ApplyTo(&generic.Authentication, generic.SecureServing, generic.OpenAPIConfig); err != nil {
		return nil, fmt.Errorf("applying the authentication options: %w", err)
	}
	if err := o.Authorization.ApplyTo(&generic.Authorization); err != nil {
		return nil, fmt.Errorf("applying the authorization options: %w", err)
	}
	if err := o.Audit.ApplyTo(generic); err != nil {
		return nil, fmt.Errorf("applying the audit options: %w", err)
	}

	restConfig, err := o.ClientConfig()
	if err != nil {
		return nil, err
	}
	c, err := client.New(restConfig, client.Options{Scheme: clientscheme.Scheme})
	if err != nil {
		return nil, fmt.Errorf("creating the server's client: %w", err)
	}
	return &apiserver.Config{
		GenericConfig: generic,
		Extra: apiserver.ExtraConfig{
			Client:           c,
			PublicURL:        o.PublicURL,
			MaxShareDuration: o.MaxShareDuration,
			Keys:             keys,
			Recorder:         recorder,
		},
	}, nil
}

// Run serves the API and runs the Runnables until ctx ends or one of them
// fails.
func (o *Options) Run(ctx context.Context) error {
	restConfig, err := o.ClientConfig()
	if err != nil {
		return err
	}
	// The keys are followed next to the API, not waited for: enabling a
	// link reads them (making the first key) when it mints, and the share
	// listener serves once it has them.
	keys, err := o.SigningKey.NewStore(restConfig)
	if err != nil {
		return err
	}
	events, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return err
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: events.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(clientscheme.Scheme, corev1.EventSource{Component: apiserver.Name})
	config, err := o.Config(keys, recorder)
	if err != nil {
		return err
	}
	server, err := config.Complete().New()
	if err != nil {
		return err
	}
	prepared := server.GenericAPIServer.PrepareRun()

	runnables := append([]Runnable{func(ctx context.Context) error { keys.Run(ctx); return nil }}, o.Runnables...)
	if o.Share.Port != 0 || o.Share.Listener != nil {
		// Terminal sessions are long-lived streams; the client-side rate
		// limit is for API calls, not for them.
		listener, err := sharehttp.NewServer(o.Share, restConfig, keys, clock.RealClock{})
		if err != nil {
			return fmt.Errorf("share listener: %w", err)
		}
		runnables = append(runnables, listener.Run)
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := prepared.RunWithContext(ctx); err != nil {
			return fmt.Errorf("serving the API: %w", err)
		}
		return nil
	})
	for _, run := range runnables {
		g.Go(func() error { return run(ctx) })
	}
	err = g.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		klog.FromContext(ctx).Error(err, "Server stopped")
	}
	return err
}
