// Package agentshare holds the REST storage of the subresources.kubeopencode.io
// group: agents, a parent with no verbs of its own that k8s.io/apiserver needs
// before it serves a subresource, and agents/share, through which a user with
// RBAC on the subresource enables (create), shows (get) and disables (delete)
// an Agent's share link.
//
// The storage keeps no state of its own. The Agent's spec.share and the share
// Secret in the Agent's namespace are the state; the storage reads and writes
// them with the server's own identity, so a user needs no access to Secrets.
// Creating returns only when the Secret holds the token, and deleting returns
// only when the Secret is gone.
package agentshare
