package main

import (
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/gorilla/websocket"

	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// floorServer is the least any web terminal does: a WebSocket bridged to a
// local process on a PTY, nothing else (no Kubernetes, no flow control, no
// checks). It speaks the share wire protocol's data and resize messages so
// that the same client measures it. /echo runs the echo command, /cat the
// payload command.
type floorServer struct {
	payload  string
	echoK    int
	upgrader websocket.Upgrader
	srv      *http.Server
	addr     string
}

func startFloor(payload string, echoK int) (*floorServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &floorServer{payload: payload, echoK: echoK, addr: ln.Addr().String(),
		upgrader: websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 16384}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /echo", func(w http.ResponseWriter, r *http.Request) { f.serve(w, r, echoCommand(f.echoK)) })
	mux.HandleFunc("GET /cat", func(w http.ResponseWriter, r *http.Request) { f.serve(w, r, catCommand(f.payload)) })
	f.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = f.srv.Serve(ln) }()
	return f, nil
}

func (f *floorServer) stop() { _ = f.srv.Close() }

func (f *floorServer) serve(w http.ResponseWriter, r *http.Request, command []string) {
	conn, err := f.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	// The first message is the terminal size.
	_, first, err := conn.ReadMessage()
	if err != nil {
		return
	}
	size := &pty.Winsize{Cols: 80, Rows: 24}
	if m, err := wire.DecodeClient(first); err == nil && m.Op == wire.OpResize {
		size = &pty.Winsize{Cols: m.Size.Cols, Rows: m.Size.Rows}
	}
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Env = append(os.Environ(), "TERM=xterm-256color")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	tty, err := pty.StartWithSize(cmd, size)
	if err != nil {
		return
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = tty.Close()
	}()
	go func() {
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				_ = cmd.Process.Kill()
				return
			}
			if m, err := wire.DecodeClient(b); err == nil && m.Op == wire.OpData {
				if _, err := tty.Write(m.Data); err != nil {
					return
				}
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := tty.Read(buf[1:])
		if n > 0 {
			buf[0] = wire.OpData
			if werr := conn.WriteMessage(websocket.BinaryMessage, buf[:1+n]); werr != nil {
				return
			}
		}
		if err != nil {
			// EIO once the process has exited and closed the terminal.
			if !errors.Is(err, syscall.EIO) {
				return
			}
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			return
		}
	}
}
