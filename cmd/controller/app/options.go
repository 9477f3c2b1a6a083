package app

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	cliflag "k8s.io/component-base/cli/flag"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	// The JSON log format, for --logging-format=json.
	_ "k8s.io/component-base/logs/json/register"

	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	"github.com/kubeopencode/share/pkg/controller"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/signingkey"
)

// LeaderElectionID is the name of the Lease that elects the active
// controller replica.
const LeaderElectionID = "kubeopencode-controller"

// Options are the settings of the controller, filled from flags.
type Options struct {
	// Kubeconfig is the path of a kubeconfig file. Empty means the in-cluster
	// configuration.
	Kubeconfig string
	// LeaderElect makes replicas elect one active controller through a Lease.
	LeaderElect bool
	// LeaderElectionNamespace is the namespace of the Lease. Empty means the
	// controller's own namespace when it runs in a cluster.
	LeaderElectionNamespace string
	// MetricsBindAddress is where metrics are served; "0" turns them off.
	MetricsBindAddress string
	// MetricsSecure serves metrics over HTTPS, to clients the API server
	// authenticates and authorizes (get on the /metrics path).
	MetricsSecure bool
	// HealthProbeBindAddress is where /healthz and /readyz are served; "0"
	// turns them off.
	HealthProbeBindAddress string
	// PublicURL is the base URL of the share listener, reported in each
	// Agent's status.share.url.
	PublicURL string
	// KubeAPIQPS and KubeAPIBurst limit the requests to the kube-apiserver
	// on the client side, per resource type: controller-runtime gives each
	// type its own limiter. They are a backstop against a controller gone
	// wrong (a reconcile looping without backoff), not the server's
	// protection, which is API Priority and Fairness. A new Agent costs one
	// request of each type (see docs/controller.md), so a cold start of
	// N Agents sends about N requests per type; the defaults let 1,000 new
	// Agents through at the speed of the API server and hold 10,000 to
	// about 200 per second of each type.
	KubeAPIQPS   float32
	KubeAPIBurst int
	// Workers is how many Agents are reconciled at once.
	Workers int
	// Logs configures logging.
	Logs *logsapi.LoggingConfiguration
	// SigningKey locates the share signing keys.
	SigningKey *signingkey.Options

	// SkipControllerNameValidation lets one process start the controller
	// more than once, as the integration tests do when they restart it. It
	// is not a flag.
	SkipControllerNameValidation bool

	// restConfig is set by Complete.
	restConfig *rest.Config
}

// NewOptions returns the default options.
func NewOptions() *Options {
	return &Options{
		LeaderElect:            true,
		MetricsBindAddress:     ":8443",
		MetricsSecure:          true,
		HealthProbeBindAddress: ":8081",
		KubeAPIQPS:             200,
		KubeAPIBurst:           400,
		Workers:                4,
		Logs:                   logsapi.NewLoggingConfiguration(),
		SigningKey:             signingkey.NewOptions(),
	}
}

// AddFlags adds the options' flags to named flag sets.
func (o *Options) AddFlags(fss *cliflag.NamedFlagSets) {
	fs := fss.FlagSet("generic")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Path to a kubeconfig file. Empty means the in-cluster configuration.")
	fs.StringVar(&o.PublicURL, "public-url", o.PublicURL, "Base URL of the share listener, such as https://share.example.com, reported in each Agent's status.share.url. Empty leaves it out.")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", o.MetricsBindAddress, "Address of the metrics endpoint, such as :8443. \"0\" turns it off.")
	fs.BoolVar(&o.MetricsSecure, "metrics-secure", o.MetricsSecure, "Serve metrics over HTTPS to clients authorized to get /metrics, checked with TokenReviews and SubjectAccessReviews. False serves plain HTTP to anyone who can reach the address.")
	fs.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", o.HealthProbeBindAddress, "Address of the /healthz and /readyz endpoints, such as :8081. \"0\" turns them off.")
	fs.Float32Var(&o.KubeAPIQPS, "kube-api-qps", o.KubeAPIQPS, "Requests per second to the kube-apiserver, per resource type; API Priority and Fairness is the server's guard.")
	fs.IntVar(&o.KubeAPIBurst, "kube-api-burst", o.KubeAPIBurst, "Burst of requests to the kube-apiserver, per resource type.")
	fs.IntVar(&o.Workers, "workers", o.Workers, "Agents reconciled at once.")
	o.SigningKey.AddFlags(fss.FlagSet("share signing key"))

	le := fss.FlagSet("leader election")
	le.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "Elect one active replica through a Lease before reconciling.")
	le.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", o.LeaderElectionNamespace, "Namespace of the leader election Lease. Empty means the controller's own namespace when it runs in a cluster.")

	logsapi.AddFlags(o.Logs, fss.FlagSet("logs"))
}

// Complete fills in what the flags leave to be worked out: the client
// configuration.
func (o *Options) Complete() error {
	cfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("loading the client configuration: %w", err)
	}
	cfg.UserAgent = controller.Name
	cfg.QPS, cfg.Burst = o.KubeAPIQPS, o.KubeAPIBurst
	o.restConfig = cfg
	return nil
}

// Validate checks the options.
func (o *Options) Validate() error {
	var errs []error
	if o.PublicURL != "" {
		if err := share.ValidateBaseURL(o.PublicURL); err != nil {
			errs = append(errs, fmt.Errorf("--public-url: %w", err))
		}
	}
	if o.MetricsBindAddress == "" {
		errs = append(errs, errors.New("--metrics-bind-address must not be empty; use \"0\" to turn metrics off"))
	}
	if o.HealthProbeBindAddress == "" {
		errs = append(errs, errors.New("--health-probe-bind-address must not be empty; use \"0\" to turn probes off"))
	}
	if o.KubeAPIQPS <= 0 || o.KubeAPIBurst < 1 {
		errs = append(errs, errors.New("--kube-api-qps and --kube-api-burst must be positive"))
	}
	if o.Workers < 1 {
		errs = append(errs, errors.New("--workers must be at least 1"))
	}
	errs = append(errs, o.SigningKey.Validate()...)
	if o.restConfig == nil {
		errs = append(errs, errors.New("options are not complete"))
	}
	return utilerrors.NewAggregate(errs)
}

// Run runs the controller until ctx is done.
func (o *Options) Run(ctx context.Context) error {
	ctrl.SetLogger(klog.Background())
	logger := klog.FromContext(ctx)

	scheme := clientscheme.Scheme
	metrics := metricsserver.Options{BindAddress: o.MetricsBindAddress, SecureServing: o.MetricsSecure}
	if o.MetricsSecure {
		metrics.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	mgr, err := ctrl.NewManager(o.restConfig, manager.Options{
		Scheme:                  scheme,
		Cache:                   controller.CacheOptions(),
		Metrics:                 metrics,
		HealthProbeBindAddress:  o.HealthProbeBindAddress,
		LeaderElection:          o.LeaderElect,
		LeaderElectionID:        LeaderElectionID,
		LeaderElectionNamespace: o.LeaderElectionNamespace,
		// Run returns once ctx is done and the manager stopped, so the Lease
		// can be handed over at once instead of after it expires.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	// Every replica follows the keys, so that the one elected starts with
	// them; the first replica of an install makes them.
	keys, err := o.SigningKey.Start(ctx, o.restConfig)
	if err != nil {
		return err
	}
	if err := controller.SetupWithManager(mgr, controller.Config{
		Keys:               keys,
		PublicURL:          o.PublicURL,
		Workers:            o.Workers,
		SkipNameValidation: o.SkipControllerNameValidation,
	}); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("adding the health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("caches", cachesSynced(mgr)); err != nil {
		return fmt.Errorf("adding the readiness check: %w", err)
	}

	logger.Info("Starting the controller", "leaderElect", o.LeaderElect, "publicURL", o.PublicURL)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("running the manager: %w", err)
	}
	return nil
}

// cachesSynced is a readiness check that passes once the informer caches are
// filled.
func cachesSynced(mgr manager.Manager) healthz.Checker {
	return func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("informer caches are not synced")
		}
		return nil
	}
}

// flagSets returns the options' flags.
func (o *Options) flagSets() cliflag.NamedFlagSets {
	var fss cliflag.NamedFlagSets
	o.AddFlags(&fss)
	return fss
}
