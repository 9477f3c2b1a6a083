package apiserver

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/util/compatibility"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	generatedopenapi "github.com/kubeopencode/share/pkg/generated/openapi"
	"github.com/kubeopencode/share/pkg/registry/agentshare"
	"github.com/kubeopencode/share/pkg/share"
)

// Name is the name of the server in its logs, OpenAPI document and metrics.
const Name = "kubeopencode-apiserver"

// AnonymousPaths are the only paths an unauthenticated request may reach:
// the health checks that kubelet probes call without credentials. Anywhere
// else such a request is answered 401 Unauthorized.
var AnonymousPaths = []string{"/healthz", "/livez", "/readyz"}

// Config is the configuration of the aggregated API server.
type Config struct {
	// GenericConfig is the k8s.io/apiserver configuration: serving, delegated
	// authentication and authorization, audit. Build it with
	// NewGenericConfig and apply the options to it.
	GenericConfig *genericapiserver.Config
	// Extra is what this server adds.
	Extra ExtraConfig
}

// ExtraConfig is the configuration of the agents/share storage.
type ExtraConfig struct {
	// Client reads and writes Agents and share Secrets as the server's own
	// ServiceAccount. It must not be cached.
	Client client.Client
	// PublicURL is the base URL of the share listener, such as
	// https://share.example.com, or empty when it is not known.
	PublicURL string
	// MaxShareDuration, when positive, caps how long a share link may live.
	MaxShareDuration time.Duration
	// Clock tells the time; nil means the real clock.
	Clock clock.PassiveClock
	// Keys are the share signing keys, which mint and prove tokens.
	Keys share.Keys
	// Recorder records Warning Events about rejected share Secrets; nil
	// records none.
	Recorder record.EventRecorder
}

type completedConfig struct {
	generic genericapiserver.CompletedConfig
	extra   *ExtraConfig
}

// CompletedConfig is a Config whose defaults are filled in. Only Complete
// makes one, so that New never runs on an incomplete configuration.
type CompletedConfig struct {
	*completedConfig
}

// Server is the aggregated API server.
type Server struct {
	// GenericAPIServer serves the API; run it with
	// GenericAPIServer.PrepareRun().RunWithContext.
	GenericAPIServer *genericapiserver.GenericAPIServer
}

// NewGenericConfig returns the k8s.io/apiserver configuration of this server
// before options are applied to it: the codecs of Scheme, OpenAPI v2 and v3
// documents of the group, and a handler chain in which requests that write
// reject unknown fields unless they ask otherwise, in which the link query
// parameter of a DELETE on agents/share reaches the storage
// (agentshare.WithLinkParameter), and in which a request that asks to
// upgrade its connection is refused before any storage runs
// (WithUpgradeRefusal). Its EffectiveVersion is that of the k8s.io/apiserver
// library the binary is built with.
func NewGenericConfig() *genericapiserver.Config {
	c := genericapiserver.NewConfig(Codecs)
	c.EffectiveVersion = compatibility.DefaultBuildEffectiveVersion()
	namer := openapinamer.NewDefinitionNamer(Scheme)
	c.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(generatedopenapi.GetOpenAPIDefinitions, namer)
	c.OpenAPIConfig.Info.Title = "KubeOpenCode share"
	c.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(generatedopenapi.GetOpenAPIDefinitions, namer)
	c.OpenAPIV3Config.Info.Title = "KubeOpenCode share"
	c.BuildHandlerChainFunc = func(apiHandler http.Handler, c *genericapiserver.Config) http.Handler {
		// Wrapped from the inside out: after authentication and
		// authorization a request meets WithUpgradeRefusal first, so that
		// nothing of ours acts on a request it refuses.
		h := agentshare.WithLinkParameter(apiHandler)
		h = WithStrictFieldValidation(h)
		h = WithUpgradeRefusal(h, c.Serializer)
		return genericapiserver.DefaultBuildHandlerChain(h, c)
	}
	return c
}

// Complete fills in the defaults of the configuration. The generic
// configuration must have had its options applied; in particular its
// authenticator is narrowed here so that anonymous requests reach only
// AnonymousPaths.
func (c *Config) Complete() CompletedConfig {
	if c.GenericConfig.Authentication.Authenticator != nil {
		c.GenericConfig.Authentication.Authenticator = RestrictAnonymous(c.GenericConfig.Authentication.Authenticator, AnonymousPaths...)
	}
	extra := c.Extra
	if extra.Clock == nil {
		extra.Clock = clock.RealClock{}
	}
	return CompletedConfig{&completedConfig{
		generic: c.GenericConfig.Complete(nil),
		extra:   &extra,
	}}
}

// New returns the server, with the subresources.kubeopencode.io group
// installed.
func (c CompletedConfig) New() (*Server, error) {
	if c.extra.Client == nil {
		return nil, errors.New("the server needs a client for Agents and Secrets")
	}
	if c.extra.Keys == nil {
		return nil, errors.New("the server needs the share signing keys")
	}
	if c.extra.PublicURL != "" {
		if err := share.ValidateBaseURL(c.extra.PublicURL); err != nil {
			return nil, err
		}
	}
	generic, err := c.generic.New(Name, genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, fmt.Errorf("creating the generic API server: %w", err)
	}

	group := genericapiserver.NewDefaultAPIGroupInfo(subresourcesv1alpha1.GroupName, Scheme, ParameterCodec, Codecs)
	group.VersionedResourcesStorageMap[subresourcesv1alpha1.SchemeGroupVersion.Version] = c.extra.storage()
	if err := generic.InstallAPIGroup(&group); err != nil {
		return nil, fmt.Errorf("installing %s: %w", subresourcesv1alpha1.SchemeGroupVersion, err)
	}
	return &Server{GenericAPIServer: generic}, nil
}

// WithStrictFieldValidation makes fieldValidation=Strict the default of the
// requests that send a body. k8s.io/apiserver defaults to Warn, which would
// let a misspelt field such as "allowedIps" go by with a warning and enable a
// link open to every address; here an unknown or duplicate field is a 400
// BadRequest unless the client asks for Warn or Ignore.
func WithStrictFieldValidation(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.Method {
		case http.MethodPost, http.MethodPut, http.MethodPatch:
			q := req.URL.Query()
			if q.Get("fieldValidation") == "" {
				q.Set("fieldValidation", metav1.FieldValidationStrict)
				req = req.Clone(req.Context())
				req.URL.RawQuery = q.Encode()
			}
		}
		h.ServeHTTP(w, req)
	})
}

// RestrictAnonymous wraps a delegating authenticator so that the anonymous
// identity it falls back to is granted only on the given paths. A request
// without a valid front-proxy certificate, client certificate or token, for
// instance one that reaches the server directly with forged X-Remote-User
// headers, is then answered 401 Unauthorized instead of being authorized as
// system:anonymous.
func RestrictAnonymous(a authenticator.Request, paths ...string) authenticator.Request {
	allowed := sets.New(paths...)
	return authenticator.RequestFunc(func(req *http.Request) (*authenticator.Response, bool, error) {
		resp, ok, err := a.AuthenticateRequest(req)
		if ok && resp != nil && resp.User != nil && resp.User.GetName() == user.Anonymous && !allowed.Has(req.URL.Path) {
			return nil, false, err
		}
		return resp, ok, err
	})
}

// storage returns the storage of each resource of the group's version, by
// path. None of them may serve a protocol upgrade (rest.Connecter) or a
// watch: WithUpgradeRefusal refuses every upgrade request.
func (e *ExtraConfig) storage() map[string]rest.Storage {
	return map[string]rest.Storage{
		"agents": agentshare.NewAgentREST(),
		"agents/share": agentshare.NewREST(agentshare.Config{
			Client:      e.Client,
			PublicURL:   e.PublicURL,
			MaxDuration: e.MaxShareDuration,
			Clock:       e.Clock,
			Keys:        e.Keys,
			Recorder:    e.Recorder,
		}),
	}
}
