package podexec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	gwebsocket "github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/rest"
	clientremotecommand "k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/websocket"
	"k8s.io/client-go/util/exec"
)

// The exec stream speaks the WebSocket remote command protocol, version 5,
// as client-go's WebSocket executor does, but reads it in one goroutine that
// hands the command's output to the session as each message comes. client-go
// passes every message through a pipe to a goroutine of each stream, and a
// session then pays two goroutine hand-offs, often thread wake-ups, for every
// piece of output its PTY delivers.
const (
	// wsExecPingPeriod and wsExecReadDeadline are client-go's: a ping every
	// 5 s, and the connection given up after 12 missed pongs.
	wsExecPingPeriod   = 5 * time.Second
	wsExecReadDeadline = 12*wsExecPingPeriod + time.Second
	wsExecWriteTimeout = 60 * time.Second
	// wsExecReadBytes is the buffer a stream's messages are read into: a
	// PTY's pieces are at most 4 KiB, and an idle stream holds no more.
	wsExecReadBytes = 4 << 10
)

// wsExec is one exec stream over a negotiated WebSocket connection.
type wsExec struct {
	conn *gwebsocket.Conn
	// writeMu orders data messages; pings and the close go through
	// WriteControl, which gorilla allows at any time.
	writeMu sync.Mutex
}

// streamWebSocket runs opts over the exec subresource at url. An error for
// which httpstream.IsUpgradeFailure holds means the connection was never
// upgraded, so another protocol may be tried.
func streamWebSocket(ctx context.Context, config *rest.Config, url string, opts clientremotecommand.StreamOptions) error {
	rt, holder, err := websocket.RoundTripperFor(config)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	conn, err := websocket.Negotiate(rt, holder, req, remotecommand.StreamProtocolV5Name)
	if err != nil {
		return err
	}
	defer conn.Close()
	if p := conn.Subprotocol(); p != remotecommand.StreamProtocolV5Name {
		return fmt.Errorf("exec: the server chose protocol %q, not %q", p, remotecommand.StreamProtocolV5Name)
	}
	e := &wsExec{conn: conn}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	done := make(chan struct{})
	defer close(done)
	go e.heartbeat(done)
	if opts.Stdin != nil {
		go e.copyStdin(opts.Stdin)
	}
	if opts.TerminalSizeQueue != nil {
		go e.sendSizes(opts.TerminalSizeQueue)
	}
	err = e.read(opts.Stdout, opts.Stderr)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// read demultiplexes the server's messages until it closes the stream, and
// returns how the command ended.
func (e *wsExec) read(stdout, stderr io.Writer) error {
	if err := e.conn.SetReadDeadline(time.Now().Add(wsExecReadDeadline)); err != nil {
		return err
	}
	e.conn.SetPongHandler(func(string) error {
		return e.conn.SetReadDeadline(time.Now().Add(wsExecReadDeadline))
	})
	buf := make([]byte, wsExecReadBytes)
	var status []byte
	for {
		kind, r, err := e.conn.NextReader()
		if err != nil {
			var closed *gwebsocket.CloseError
			if errors.As(err, &closed) && closed.Code == gwebsocket.CloseNormalClosure {
				return decodeExecStatus(status)
			}
			return fmt.Errorf("exec stream: %w", err)
		}
		if kind != gwebsocket.BinaryMessage {
			return fmt.Errorf("exec stream: unexpected message type %d", kind)
		}
		if _, err := io.ReadFull(r, buf[:1]); err != nil {
			return fmt.Errorf("exec stream: reading the stream id: %w", err)
		}
		var w io.Writer
		switch buf[0] {
		case remotecommand.StreamStdOut:
			w = stdout
		case remotecommand.StreamStdErr:
			w = stderr
		case remotecommand.StreamErr:
			w = (*statusBuffer)(&status)
		}
		if w == nil {
			w = io.Discard
		}
		for {
			n, err := r.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return werr
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("exec stream: %w", err)
			}
		}
	}
}

// statusBuffer collects the error stream, which carries the command's
// status once, as JSON; it is bounded so that a server cannot grow it.
type statusBuffer []byte

func (b *statusBuffer) Write(p []byte) (int, error) {
	if len(*b)+len(p) > 64<<10 {
		return 0, errors.New("exec stream: the status is over 64 KiB")
	}
	*b = append(*b, p...)
	return len(p), nil
}

// decodeExecStatus turns the error stream's status into the command's
// result, as client-go's executor does: nil for success, an
// exec.CodeExitError for a non-zero exit code.
func decodeExecStatus(message []byte) error {
	if message == nil {
		return nil
	}
	var status metav1.Status
	if err := json.Unmarshal(message, &status); err != nil {
		return fmt.Errorf("error stream protocol error: %v in %q", err, string(message))
	}
	switch status.Status {
	case metav1.StatusSuccess:
		return nil
	case metav1.StatusFailure:
		if status.Reason != remotecommand.NonZeroExitCodeReason {
			return errors.New(status.Message)
		}
		if status.Details == nil {
			return errors.New("error stream protocol error: details must be set")
		}
		for _, c := range status.Details.Causes {
			if c.Type != remotecommand.ExitCodeCauseType {
				continue
			}
			rc, err := strconv.ParseUint(c.Message, 10, 8)
			if err != nil {
				return fmt.Errorf("error stream protocol error: invalid exit code value %q", c.Message)
			}
			return exec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", rc), Code: int(rc)}
		}
		return fmt.Errorf("error stream protocol error: no %s cause given", remotecommand.ExitCodeCauseType)
	default:
		return errors.New("error stream protocol error: unknown error")
	}
}

// send writes one message to a stream.
func (e *wsExec) send(stream byte, p []byte) error {
	e.writeMu.Lock()
	defer e.writeMu.Unlock()
	if err := e.conn.SetWriteDeadline(time.Now().Add(wsExecWriteTimeout)); err != nil {
		return err
	}
	w, err := e.conn.NextWriter(gwebsocket.BinaryMessage)
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte{stream}); err != nil {
		return err
	}
	if _, err := w.Write(p); err != nil {
		return err
	}
	return w.Close()
}

// stdinWriter sends what it is given as messages of the stdin stream.
type stdinWriter struct{ e *wsExec }

func (w stdinWriter) Write(p []byte) (int, error) {
	if err := w.e.send(remotecommand.StreamStdIn, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// copyStdin sends the command its input, and once the input ends, closes
// the command's stdin (version 5's close message) so that it sees the end.
func (e *wsExec) copyStdin(stdin io.Reader) {
	if _, err := io.Copy(stdinWriter{e}, stdin); err != nil {
		return
	}
	e.writeMu.Lock()
	defer e.writeMu.Unlock()
	_ = e.conn.SetWriteDeadline(time.Now().Add(wsExecWriteTimeout))
	_ = e.conn.WriteMessage(gwebsocket.BinaryMessage, []byte{remotecommand.StreamClose, remotecommand.StreamStdIn})
}

// sendSizes sends each terminal size of queue until it ends.
func (e *wsExec) sendSizes(queue clientremotecommand.TerminalSizeQueue) {
	for {
		size := queue.Next()
		if size == nil {
			return
		}
		b, err := json.Marshal(size)
		if err != nil {
			return
		}
		if err := e.send(remotecommand.StreamResize, b); err != nil {
			return
		}
	}
}

// heartbeat pings the server until done is closed, so that a connection
// that stopped answering is noticed by the read deadline.
func (e *wsExec) heartbeat(done <-chan struct{}) {
	t := time.NewTicker(wsExecPingPeriod)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			if err := e.conn.WriteControl(gwebsocket.PingMessage, nil, time.Now().Add(wsExecPingPeriod)); err != nil {
				return
			}
		}
	}
}
