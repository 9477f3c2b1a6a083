// Package controller holds the reconcilers of the Agent resource.
//
// One controller watches Agents and the Deployments and share Secrets they
// own. Each reconcile of an Agent runs two small phases in order, each for one
// concern, and then writes the Agent's status once:
//
//   - the workload phase keeps a Deployment named after the Agent and sets the
//     Ready condition from its availability;
//   - the share phase keeps the share Secret ({agent}-share) while the share
//     is enabled and deletes it when it is not, sets the ShareReady condition
//     and status.share, and asks to be called again when the link expires.
//
// The controller owns the whole status of an Agent: no other writer touches
// it, so the phases never fight over it, and ShareReady is computed from the
// Ready condition of the same pass. The status is sent as one merge patch,
// and only when it changed.
//
// Everything is level-triggered: a reconcile reads what is there and makes
// the rest follow. The token lives only in the Secret. A Secret is created
// only after a read from the API server (not the cache) found none, and a
// lost create race reads the winner's Secret, so a restart, a conflict or an
// unavailable API server never mints a second token.
//
// Events on the Agent report the share's history. Transitions of ShareReady
// (ShareDisabled, ShareExpired, SecretConflict) are emitted once the status
// recording them is written. A new or rotated token (ShareEnabled,
// ShareRotated) is detected by comparing the token with a fingerprint that the
// controller keeps in an annotation of the Secret itself: the state survives
// restarts, no token or hash is ever written to the Agent, and the token is
// never logged.
package controller
