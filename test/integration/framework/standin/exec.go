package standin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/creack/pty"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// processExecutor runs exec requests as local processes.
type processExecutor struct {
	workDir string
}

var _ remotecommand.Executor = &processExecutor{}

// ExecInContainer runs cmd in the pod's working folder. Exit codes are
// returned as CodeExitError so that they reach the client.
func (e *processExecutor) ExecInContainer(ctx context.Context, podName, uid, container string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, timeout time.Duration) error {
	if len(cmd) == 0 {
		return errors.New("no command")
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	dir := filepath.Join(e.workDir, podName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	c := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
	c.Dir = dir
	c.Env = append(os.Environ(), "TERM=xterm-256color", "HOME="+dir, "KUBEOPENCODE_POD="+podName, "KUBEOPENCODE_CONTAINER="+container)
	c.WaitDelay = 2 * time.Second

	var err error
	if tty {
		err = runWithPTY(c, in, out, resize)
	} else {
		c.Stdin, c.Stdout, c.Stderr = in, out, errOut
		err = c.Run()
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		code := exitErr.ExitCode()
		if code < 0 {
			code = 128 + 9
		}
		return utilexec.CodeExitError{Err: err, Code: code}
	}
	return err
}

// runWithPTY runs c on a new PTY, copying in to it and its output to out,
// and applying terminal resizes until the process ends.
func runWithPTY(c *exec.Cmd, in io.Reader, out io.Writer, resize <-chan remotecommand.TerminalSize) error {
	ptmx, err := pty.StartWithSize(c, &pty.Winsize{Cols: 80, Rows: 24})
	if err != nil {
		return fmt.Errorf("starting %s on a pty: %w", c.Path, err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case size, ok := <-resize:
				if !ok {
					return
				}
				_ = pty.Setsize(ptmx, &pty.Winsize{Cols: size.Width, Rows: size.Height})
			}
		}
	}()
	if in != nil {
		// Stdin is copied until the client closes it or the pty goes away;
		// nothing waits for this copy, since a client may never close stdin.
		go func() { _, _ = io.Copy(ptmx, in) }()
	}
	outputDone := make(chan struct{})
	go func() {
		defer close(outputDone)
		if out != nil {
			_, _ = io.Copy(out, ptmx)
		} else {
			_, _ = io.Copy(io.Discard, ptmx)
		}
	}()
	err = c.Wait()
	// The output ends with EIO once the process and its children have closed
	// the terminal; give stragglers a moment, then close it ourselves.
	select {
	case <-outputDone:
	case <-time.After(2 * time.Second):
	}
	_ = ptmx.Close()
	<-outputDone
	close(done)
	wg.Wait()
	return err
}
