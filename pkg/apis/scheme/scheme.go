// Package scheme holds the one scheme of the project's clients: the
// controller, the share listener, the aggregated API server's own client and
// kubeoc. It knows the built-in kinds, the Agent of kubeopencode.io and the
// AgentShare of subresources.kubeopencode.io, as client-go's
// kubernetes/scheme knows the built-in kinds alone.
//
// The aggregated API server serves with a scheme of its own
// (pkg/apiserver), which also holds the internal version of its group.
package scheme

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
)

var (
	// Scheme holds the kinds the project's clients read and write. It is
	// filled once, at init, and only read after.
	Scheme = runtime.NewScheme()
	// Codecs are the serializers of Scheme.
	Codecs        = serializer.NewCodecFactory(Scheme)
	schemeBuilder = runtime.NewSchemeBuilder(
		clientgoscheme.AddToScheme,
		kubeopencodev1alpha1.AddToScheme,
		subresourcesv1alpha1.AddToScheme,
		// Table and PartialObjectMetadata, which kubectl-like printers ask for.
		metav1.AddMetaToScheme,
	)
	// AddToScheme adds the kinds of Scheme to another scheme.
	AddToScheme = schemeBuilder.AddToScheme
)

func init() {
	// The unversioned meta kinds (Status, WatchEvent, the options) that
	// every API server answers with, as in client-go's kubernetes/scheme.
	metav1.AddToGroupVersion(Scheme, schema.GroupVersion{Version: "v1"})
	utilruntime.Must(AddToScheme(Scheme))
}
