// Package install registers the subresources.kubeopencode.io API group with a
// scheme.
package install

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"

	"github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
)

// InternalGroupVersion is the hub version that k8s.io/apiserver decodes
// requests into.
var InternalGroupVersion = schema.GroupVersion{Group: v1alpha1.GroupName, Version: runtime.APIVersionInternal}

// Install registers the API group with the scheme. The group has a single
// version, so the versioned types also stand for the internal version: the
// scheme converts between the two by setting the kind, with no conversion
// functions to generate or keep in step.
func Install(scheme *runtime.Scheme) {
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	scheme.AddKnownTypes(InternalGroupVersion, &v1alpha1.AgentShare{}, &v1alpha1.AgentShareOptions{})
	utilruntime.Must(scheme.SetVersionPriority(v1alpha1.SchemeGroupVersion))
}
