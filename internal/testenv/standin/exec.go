package standin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/creack/pty"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/klog/v2"
	utilexec "k8s.io/utils/exec"
)

const (
	// streamIdleTimeout ends an exec session without traffic, like the
	// kubelet's --streaming-connection-idle-timeout.
	streamIdleTimeout = 4 * time.Hour
	// streamCreationTimeout bounds the client's opening of its streams.
	streamCreationTimeout = 30 * time.Second
	// firstSizeWait is how long a TTY session waits for the client's
	// terminal size before starting the command at 80x24.
	firstSizeWait = 500 * time.Millisecond
	// outputDrainWait is how long output is still copied once the command
	// has exited, for background children that hold the terminal or pipes.
	outputDrainWait = 2 * time.Second
	// hangupGrace is how long a hung-up session may take to end before its
	// processes are killed.
	hangupGrace = 2 * time.Second
	// groupExitWait bounds how long a session that has ended waits for the
	// processes left in its group to exit once they are killed. A killed
	// process exits as soon as it is scheduled; only one stuck in the
	// kernel (uninterruptible sleep) could take longer.
	groupExitWait = 10 * time.Second
	// defaultPath is PATH when the test process has none.
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// serveExec serves the kubelet's exec endpoint for a pod bound to the node:
// it checks the pod and container exist, then speaks the streaming protocol
// (SPDY, or WebSocket as the API server translates) and runs the command as
// a local process in the pod's working folder.
func (k *Kubelet) serveExec(w http.ResponseWriter, req *http.Request) {
	namespace, name, uid, container := req.PathValue("namespace"), req.PathValue("pod"), req.PathValue("uid"), req.PathValue("container")
	streamOpts, err := remotecommand.NewOptions(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	pod, err := k.pods.Pods(namespace).Get(name)
	if err != nil || (uid != "" && string(pod.UID) != uid) {
		http.Error(w, fmt.Sprintf("pod %s/%s not found on node %s", namespace, name, k.opts.NodeName), http.StatusNotFound)
		return
	}
	c := findContainer(pod, container)
	if c == nil {
		http.Error(w, fmt.Sprintf("container %q not found in pod %s/%s", container, namespace, name), http.StatusNotFound)
		return
	}
	cmd := req.URL.Query()[corev1.ExecCommandParam]
	klog.V(2).InfoS("Stand-in exec", "pod", klog.KObj(pod), "container", container, "tty", streamOpts.TTY, "stdin", streamOpts.Stdin)
	executor := &processExecutor{stop: k.ctx, dir: k.podDir(namespace, name), env: containerEnv(pod, c)}
	remotecommand.ServeExec(w, req, executor, name, uid, container, cmd, streamOpts,
		streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func findContainer(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	return nil
}

// containerEnv is the environment of commands exec'd in container c: a
// minimal base, then the container's env entries that have a literal value
// (valueFrom and $(VAR) references are not resolved). TERM comes with a TTY.
func containerEnv(pod *corev1.Pod, c *corev1.Container) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = defaultPath
	}
	env := []string{"PATH=" + path, "HOSTNAME=" + pod.Name, "LANG=C.UTF-8"}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env = append(env, e.Name+"="+e.Value)
		}
	}
	return env
}

// processExecutor runs exec requests as local processes.
type processExecutor struct {
	// stop ends every process when the kubelet stops.
	stop context.Context
	// dir is the pod's working folder, and HOME.
	dir string
	// env is the container's environment.
	env []string
}

var _ remotecommand.Executor = &processExecutor{}

// ExecInContainer runs cmd in the pod's working folder, in a process group
// of its own that is killed when the client goes away or the kubelet stops.
// A non-zero exit is returned as a utilexec.CodeExitError, which the
// streaming server turns into the exit code the client sees.
//
// It returns, and so the client is told the command's exit, only once no
// process of the group runs any more: background children the command left
// are killed and waited for (endGroup), as a container's are when its main
// process exits.
func (e *processExecutor) ExecInContainer(ctx context.Context, podName, uid, container string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, timeout time.Duration) error {
	if len(cmd) == 0 {
		return errors.New("no command given")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(e.stop, cancel)()
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		return fmt.Errorf("pod working folder: %w", err)
	}
	// HOME first so that the container's env may override it; with
	// duplicates the last entry wins.
	env := append([]string{"HOME=" + e.dir}, e.env...)
	if tty {
		env = append([]string{"TERM=xterm-256color"}, env...)
	}
	c := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
	c.Dir = e.dir
	c.Env = env
	// The process dies with the test process, and Cancel ends its whole
	// group, background children included.
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = outputDrainWait

	var err error
	if tty {
		err = runWithPTY(ctx, c, in, out, resize)
	} else {
		err = runWithPipes(c, in, out, errOut)
	}
	return exitError(err)
}

// exitError maps the end of a process to what the streaming server reports:
// nil for success, CodeExitError for a non-zero exit (128+n for a signal),
// any other error as an internal error.
func exitError(err error) error {
	if err == nil || errors.Is(err, exec.ErrWaitDelay) {
		// ErrWaitDelay: the command succeeded, but a child kept its
		// output open past the drain wait.
		return nil
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		return err
	}
	code := exitErr.ExitCode()
	if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	return utilexec.CodeExitError{Err: err, Code: code}
}

// runWithPipes runs c with its output going to out and errOut (either may
// be nil) and in copied to its stdin. Stdin goes through an explicit pipe
// that closes when c exits: a client need not close stdin for the command's
// end to be reported.
func runWithPipes(c *exec.Cmd, in io.Reader, out, errOut io.Writer) error {
	c.SysProcAttr.Setpgid = true
	c.Stdout, c.Stderr = out, errOut
	var stdin io.WriteCloser
	if in != nil {
		var err error
		if stdin, err = c.StdinPipe(); err != nil {
			return fmt.Errorf("stdin of %s: %w", c.Path, err)
		}
	}
	if err := c.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", c.Path, err)
	}
	if stdin != nil {
		go func() {
			_, _ = io.Copy(stdin, in)
			_ = stdin.Close()
		}()
	}
	err := c.Wait()
	// Background children outlive the command only until it has ended.
	endGroup(c.Process.Pid)
	return err
}

// runWithPTY runs c on a new PTY, in a session of its own, sized from the
// client's first terminal size, copying in to it and its output to out, and
// applying resizes until the process ends.
func runWithPTY(ctx context.Context, c *exec.Cmd, in io.Reader, out io.Writer, resize <-chan remotecommand.TerminalSize) error {
	size := &pty.Winsize{Cols: 80, Rows: 24}
	if resize != nil {
		// The client sends its size right after opening the streams; the
		// command starts with it rather than changing size at once.
		timer := time.NewTimer(firstSizeWait)
		select {
		case s, ok := <-resize:
			if ok && s.Width > 0 && s.Height > 0 {
				size = &pty.Winsize{Cols: s.Width, Rows: s.Height}
			}
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
	}
	started, err := pty.StartWithSize(c, size)
	if err != nil {
		return fmt.Errorf("starting %s on a pty: %w", c.Path, err)
	}
	terminal, err := pollable(started)
	if err != nil {
		endGroup(c.Process.Pid)
		_ = c.Wait()
		return fmt.Errorf("pty of %s: %w", c.Path, err)
	}

	resizeDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-resizeDone:
				return
			case s, ok := <-resize:
				if !ok {
					return
				}
				if err := setSize(terminal, s.Width, s.Height); err != nil {
					klog.V(2).InfoS("Stand-in pty resize failed", "err", err)
				}
			}
		}
	}()
	exited := make(chan struct{})
	if in != nil {
		// Stdin is copied until the client closes it or goes away, which
		// hangs up the terminal as a dropped SSH connection does; nothing
		// waits for this copy, since a client may never close stdin.
		go func() {
			_, _ = io.Copy(terminal, in)
			select {
			case <-exited:
				return
			default:
				_ = syscall.Kill(-c.Process.Pid, syscall.SIGHUP)
			}
			// A process that ignores SIGHUP, as every child of a process
			// started under nohup does, is killed after a grace period.
			timer := time.NewTimer(hangupGrace)
			defer timer.Stop()
			select {
			case <-exited:
			case <-timer.C:
				_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			}
		}()
	}
	if out == nil {
		out = io.Discard
	}
	outputDone := make(chan struct{})
	go func() {
		defer close(outputDone)
		_, _ = io.Copy(out, terminal)
	}()
	err = c.Wait()
	close(exited)
	// The output ends (EIO) once every process has closed the terminal;
	// give background children a moment to finish writing, then end them
	// and the copy.
	timer := time.NewTimer(outputDrainWait)
	select {
	case <-outputDone:
	case <-timer.C:
	}
	timer.Stop()
	endGroup(c.Process.Pid)
	close(resizeDone)
	wg.Wait()
	_ = terminal.Close()
	<-outputDone
	return err
}

// endGroup kills every process of the process group pgid and returns once
// none of them runs, or after groupExitWait.
//
// kill(2) only queues SIGKILL: the process exits when it is next scheduled,
// which on a busy machine can be tens of milliseconds later. Returning
// before then would report the session's end while its background children
// still run, and a client that looks finds them. The signal is sent again on
// every look, for a child forked while the previous one was on its way.
func endGroup(pgid int) {
	deadline := time.Now().Add(groupExitWait)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		if err := syscall.Kill(-pgid, syscall.SIGKILL); errors.Is(err, syscall.ESRCH) {
			// No process is in the group, not even an unreaped one.
			return
		}
		if !groupRuns(pgid) {
			return
		}
		if time.Now().After(deadline) {
			klog.InfoS("Stand-in exec: processes of an ended session are still running", "pgid", pgid, "waited", groupExitWait)
			return
		}
		time.Sleep(delay)
	}
}

// groupRuns reports whether a process of the group pgid has yet to exit. A
// process that has exited but that its parent has not reaped, a zombie, is
// still in the group but runs nothing: background children are reparented
// when the command exits, and their new parent reaps them in its own time,
// so kill(-pgid, 0) alone would wait on that parent. When /proc cannot be
// read, it reports false: the group has been sent SIGKILL, and waiting the
// whole groupExitWait would not tell more.
func groupRuns(pgid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		klog.V(2).InfoS("Stand-in exec: cannot list processes", "err", err)
		return false
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		// The process may be gone by now; then it does not run.
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if state, group, ok := parseStat(string(stat)); ok && group == pgid && state != "Z" && state != "X" {
			return true
		}
	}
	return false
}

// parseStat returns the state and the process group of a /proc/<pid>/stat
// line: "pid (comm) state ppid pgrp ...". comm may hold spaces and
// parentheses, so the fields are counted after its last ")".
func parseStat(stat string) (state string, pgrp int, ok bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return "", 0, false
	}
	fields := strings.Fields(stat[i+1:])
	if len(fields) < 3 {
		return "", 0, false
	}
	pgrp, err := strconv.Atoi(fields[2])
	if err != nil {
		return "", 0, false
	}
	return fields[0], pgrp, true
}

// pollable returns f as a non-blocking file in the runtime's poller, and
// closes f. creack/pty leaves the PTY master in blocking mode, whose Read
// a Close does not interrupt; a pollable one ends a pending Read on Close,
// so no session hangs on a process that keeps the terminal open.
func pollable(f *os.File) (*os.File, error) {
	defer f.Close()
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		return nil, fmt.Errorf("dup: %w", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("non-blocking: %w", err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// setSize sets the terminal size of the PTY master f, without f.Fd(),
// which would put it back in blocking mode.
func setSize(f *os.File, cols, rows uint16) error {
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	ws := struct{ Row, Col, X, Y uint16 }{Row: rows, Col: cols}
	var errno syscall.Errno
	if err := conn.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCSWINSZ, uintptr(unsafe.Pointer(&ws)))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}
