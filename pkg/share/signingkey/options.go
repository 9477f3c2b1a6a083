package signingkey

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Options locate the key Secret. The controller and the aggregated API
// server must name the same one.
type Options struct {
	Namespace string
	Name      string
}

// NewOptions returns the location of a default install.
func NewOptions() *Options {
	return &Options{Namespace: DefaultNamespace, Name: DefaultName}
}

// AddFlags adds the flags of the options.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Namespace, "share-signing-key-namespace", o.Namespace,
		"Namespace of the Secret that holds the keys proving that this system minted a share token. Only the system's ServiceAccounts may read it.")
	fs.StringVar(&o.Name, "share-signing-key-name", o.Name,
		"Name of the Secret that holds the share signing keys. It is made with one key when missing.")
}

// Validate checks the options.
func (o *Options) Validate() []error {
	var errs []error
	for flag, v := range map[string]string{"--share-signing-key-namespace": o.Namespace, "--share-signing-key-name": o.Name} {
		if msgs := validation.IsDNS1123Subdomain(v); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("%s %q: %v", flag, v, msgs))
		}
	}
	return errs
}

// NewStore returns a Store of the key Secret, not yet following it: call
// its Run.
func (o *Options) NewStore(config *rest.Config) (*Store, error) {
	cs, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, err
	}
	return New(cs, o.Namespace, o.Name), nil
}

// Start returns a Store of the key Secret that follows it until ctx ends,
// once it holds a usable key: it makes the key when there is none, so that
// an install needs no manual step.
func (o *Options) Start(ctx context.Context, config *rest.Config) (*Store, error) {
	s, err := o.NewStore(config)
	if err != nil {
		return nil, err
	}
	go s.Run(ctx)
	if !s.WaitForSync(ctx) {
		return nil, fmt.Errorf("share signing key Secret %s/%s: not listed before the server stopped", o.Namespace, o.Name)
	}
	if _, err := s.Refresh(ctx); err != nil {
		return nil, err
	}
	return s, nil
}
