// Package wire is the codec of the share terminal protocol: the binary
// WebSocket messages that the share page and the share listener exchange.
// Each message is one opcode byte followed by its payload:
//
//	0x00 data    both ways       raw terminal bytes
//	0x01 resize  page → server  {"cols":N,"rows":N}, 1 ≤ N ≤ MaxDimension
//	0x02 status  server → page  {"reason":…,"message":…,"exitCode":N}, then the close
//	0x03 ack     page → server  uint32 big-endian count of rendered output bytes
//
// DecodeClient and DecodeServer validate strictly and never panic; the
// Append* and Encode* functions build messages. The protocol, its limits,
// flow control and close codes are specified in docs/wire-protocol.md.
package wire
