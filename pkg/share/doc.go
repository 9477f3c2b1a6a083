// Package share holds the rules of share links that the controller, the
// aggregated API server and the share listener all apply: how a token is made,
// hashed and compared, the shape of the Secret that stores it, and when a link
// gives access (enabled, not expired, client address allowed, Agent ready).
package share
