// Package secrets writes share Secrets: it mints tokens into them, replaces
// the ones the system did not mint, rotates and deletes them, and counts a
// limited link's uses on them. The rules it applies (names, tokens, proofs,
// evaluation) are package share's; this is the part that needs a client.
package secrets
