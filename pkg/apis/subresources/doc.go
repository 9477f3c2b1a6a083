// Package subresources holds the subresources.kubeopencode.io API group, served
// by the aggregated API server: the agents/share subresource through which
// users enable, show and disable an Agent's share link under RBAC.
package subresources
