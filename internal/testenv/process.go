package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is a program running as a child of this one: a control-plane
// component, one of the project's servers started by `make dev` or the
// bench, or a peer the bench measures.
type Process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
	// stdin and stdout are set for interactive processes.
	stdin  io.WriteCloser
	stdout *bufio.Reader
}

// StartProcess runs bin with args in a process group of its own, its
// output going to dir/name.log after a first line with the command. The
// kernel kills the child when this process dies (Pdeathsig), so nothing
// outlives a crash or a panic; the Go runtime keeps the forking thread alive
// as long as no goroutine locked to it exits.
func StartProcess(dir, name, bin string, args ...string) (*Process, error) {
	return startProcess(dir, name, false, nil, bin, args...)
}

// StartInteractiveProcess is StartProcess for a child driven line by line:
// its stdin and stdout are connected to this process (Send, Expect,
// ReadLine), and only its stderr goes to the log.
func StartInteractiveProcess(dir, name, bin string, args ...string) (*Process, error) {
	return startProcess(dir, name, true, nil, bin, args...)
}

// startProcessEnv is StartProcess with env added to this process's environment.
func startProcessEnv(dir, name string, env []string, bin string, args ...string) (*Process, error) {
	return startProcess(dir, name, false, env, bin, args...)
}

func startProcess(dir, name string, interactive bool, env []string, bin string, args ...string) (*Process, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	fmt.Fprintf(logFile, "$ %s %s\n", bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stderr = logFile
	p := &Process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	if interactive {
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			logFile.Close()
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			logFile.Close()
			return nil, err
		}
		p.stdout = bufio.NewReader(out)
	} else {
		cmd.Stdout = logFile
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Name is the name the process was started with.
func (p *Process) Name() string { return p.name }

// Pid is the process's id, also its process group's.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// LogPath is the file the process's output goes to.
func (p *Process) LogPath() string { return p.logPath }

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the process ended, once Done is closed.
func (p *Process) Err() error { return p.err }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop ends the process group: SIGTERM, then SIGKILL after a grace period.
// A nil Process is stopped already.
func (p *Process) Stop() {
	if p == nil || p.Exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// LogTail returns the last n bytes of the process's log, from a line start.
func (p *Process) LogTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// Send writes a line to an interactive process.
func (p *Process) Send(line string) error {
	_, err := io.WriteString(p.stdin, line+"\n")
	return err
}

// Expect reads lines from an interactive process until one equals want; a
// line starting with "error" ends the wait with that line.
func (p *Process) Expect(want string, timeout time.Duration) error {
	lines := make(chan string)
	errs := make(chan error, 1)
	go func() {
		for {
			l, err := p.stdout.ReadString('\n')
			if err != nil {
				errs <- err
				return
			}
			l = strings.TrimSpace(l)
			lines <- l
			if l == want {
				return
			}
		}
	}()
	deadline := time.After(timeout)
	for {
		select {
		case l := <-lines:
			if l == want {
				return nil
			}
			if strings.HasPrefix(l, "error") {
				return fmt.Errorf("%s: %s", p.name, l)
			}
		case err := <-errs:
			return fmt.Errorf("%s: waiting for %q: %w (log %s)", p.name, want, err, p.logPath)
		case <-deadline:
			return fmt.Errorf("%s: no %q within %s (log %s)", p.name, want, timeout, p.logPath)
		}
	}
}

// ReadLine reads lines from an interactive process until one starts with
// prefix, and returns it.
func (p *Process) ReadLine(prefix string, timeout time.Duration) (string, error) {
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		for {
			l, err := p.stdout.ReadString('\n')
			if err != nil {
				ch <- result{err: err}
				return
			}
			if l = strings.TrimSpace(l); strings.HasPrefix(l, prefix) {
				ch <- result{line: l}
				return
			}
		}
	}()
	select {
	case r := <-ch:
		return r.line, r.err
	case <-time.After(timeout):
		return "", fmt.Errorf("%s: no %q line within %s (log %s)", p.name, prefix, timeout, p.logPath)
	}
}

// FreePort returns a loopback TCP port that was free a moment ago. Callers
// retry a start that fails to bind, since another process may take it.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func itoa(i int) string { return strconv.Itoa(i) }
