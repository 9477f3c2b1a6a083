// Package replica lets the replicas of the share listener run one shared
// session per Agent between them, as Teleport's proxy peering does: the
// replica that starts an Agent's session records itself as its owner in a
// coordination.k8s.io/v1 Lease (Leases), and a replica that receives a page
// for a session another live replica owns forwards the page's WebSocket to
// it over the pod network (Forwarder), so that every page of the Agent
// shares the one command, its output, its viewer count and its limits.
//
// Forwarding adds no trust: the owner checks the token, the link's policy
// and its limits exactly as for a page that reached it directly. The only
// thing it takes from the forwarding replica is the page's client address,
// which travels in a header that an HMAC under a key only the replicas read
// (PeerAuth) proves, bound to the request and a short time window; a
// request that carries the header without a valid proof is refused.
package replica
