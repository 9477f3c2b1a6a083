// Package v1alpha1 holds the kubeopencode.io/v1alpha1 API: the Agent custom
// resource, which runs a coding assistant as a Deployment and carries the
// settings of its share link.
//
// +k8s:deepcopy-gen=package
// +groupName=kubeopencode.io
package v1alpha1
