// Package apiserver assembles the aggregated API server of the
// subresources.kubeopencode.io group: its scheme and codecs, its Config →
// Complete → New construction on k8s.io/apiserver without etcd, and the
// registration of the agents and agents/share storage.
package apiserver
