// Package terminal bridges a browser terminal, speaking the protocol of
// package wire over a message connection, to the streams of a remote
// command: stdin, stdout and the terminal size queue that client-go's
// remotecommand takes. It holds the handshake (the first message carries the
// size), flow control (output waits while the page has not rendered enough of
// it) and the idle timeout, apart from any transport, so that it is tested
// over an in-memory connection as well as a real WebSocket.
package terminal
