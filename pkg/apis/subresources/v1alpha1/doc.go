// Package v1alpha1 holds the subresources.kubeopencode.io/v1alpha1 API:
// AgentShare, the request and response of the agents/share subresource.
//
// +k8s:deepcopy-gen=package
// +k8s:openapi-gen=true
// +k8s:openapi-model-package=io.kubeopencode.subresources.v1alpha1
// +groupName=subresources.kubeopencode.io
package v1alpha1
