// Package terminal bridges a browser terminal, speaking the protocol of
// package wire over a message connection, to the streams of a remote
// command. A Session gives client-go's remotecommand.StreamOptions what it
// takes: Stdin (an io.Reader of what the person types), Stdout (an
// io.Writer of the command's output; with a TTY, stderr is merged into it)
// and itself as the remotecommand.TerminalSizeQueue.
//
// The Session holds the parts of the protocol that do not depend on the
// transport: the handshake (the page's first message carries the terminal
// size, and WaitForSize returns it before the command starts), flow control
// (Stdout blocks while the page has a window of output unacknowledged), the
// idle timeout, and the end of a session (a status, then a close the page
// answers). It is tested over an in-memory Conn as well as a real
// WebSocket. WebSocketConn adapts a gorilla/websocket connection: binary
// messages only, a read limit, a deadline on every write, and pings with a
// pong deadline so idle proxies keep the connection and dead peers are
// noticed.
package terminal
