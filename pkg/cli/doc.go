// Package cli holds the commands of kubeoc, the KubeOpenCode command-line
// client. Share links are managed through the agents/share subresource of the
// aggregated API, so RBAC governs kubeoc exactly as it governs
// `kubectl create --raw` on that subresource.
package cli
