package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// child is a program the benchmark runs as a process of its own, so that its
// resident set can be read from /proc.
type child struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
	// stdin and stdout are set for children driven line by line.
	stdin  io.WriteCloser
	stdout *bufio.Reader
}

// startChild runs bin with args, its output in logDir/name.log. The child dies
// with the benchmark (Pdeathsig) and has a process group of its own.
func startChild(logDir, name, bin string, args ...string) (*child, error) {
	return startChildWith(logDir, name, false, bin, args...)
}

// startChildWith starts a child; interactive children have their stdin and
// stdout connected to the benchmark, and only stderr goes to the log.
func startChildWith(logDir, name string, interactive bool, bin string, args ...string) (*child, error) {
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logFile
	c := &child{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	if interactive {
		if c.stdin, err = cmd.StdinPipe(); err != nil {
			logFile.Close()
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			logFile.Close()
			return nil, err
		}
		c.stdout = bufio.NewReader(out)
	} else {
		cmd.Stdout = logFile
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		c.err = cmd.Wait()
		logFile.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop ends the child's process group: SIGTERM, then SIGKILL after 10s.
func (c *child) stop() {
	if c == nil || c.exited() {
		return
	}
	_ = syscall.Kill(-c.pid(), syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
		<-c.done
	}
}

// send writes a line to an interactive child.
func (c *child) send(line string) error {
	_, err := io.WriteString(c.stdin, line+"\n")
	return err
}

// expect reads lines from an interactive child until one equals want.
func (c *child) expect(want string, timeout time.Duration) error {
	lines := make(chan string)
	errs := make(chan error, 1)
	go func() {
		for {
			l, err := c.stdout.ReadString('\n')
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
				return fmt.Errorf("%s: %s", c.name, l)
			}
		case err := <-errs:
			return fmt.Errorf("%s: waiting for %q: %w (log %s)", c.name, want, err, c.log)
		case <-deadline:
			return fmt.Errorf("%s: no %q within %s (log %s)", c.name, want, timeout, c.log)
		}
	}
}

// readLine reads lines from an interactive child until one starts with
// prefix, and returns it.
func (c *child) readLine(prefix string, timeout time.Duration) (string, error) {
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		for {
			l, err := c.stdout.ReadString('\n')
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
		return "", fmt.Errorf("%s: no %q line within %s (log %s)", c.name, prefix, timeout, c.log)
	}
}

// rssBytes returns the resident set of a process, from /proc/<pid>/status.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// settledRSS waits for a process to settle, then returns the median of a few
// samples of its resident set.
func settledRSS(pid int, settle time.Duration) (int64, error) {
	time.Sleep(settle)
	var samples []float64
	for range 5 {
		r, err := rssBytes(pid)
		if err != nil {
			return 0, err
		}
		samples = append(samples, float64(r))
		time.Sleep(200 * time.Millisecond)
	}
	return int64(median(samples)), nil
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat times;
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuSeconds returns the user and system CPU time a process has used.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count from
	// after its closing parenthesis, where field 3 (state) comes first.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	return float64(utime+stime) / clockTicks, nil
}

// findProcess returns the pid of a running program named name whose command
// line contains marker, such as the kube-apiserver of a control plane whose
// folder is marker.
func findProcess(name, marker string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if filepath.Base(args[0]) == name && strings.Contains(string(b), marker) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no %s process with %q in its command line", name, marker)
}

// machineBusy returns the share of the machine's CPU time that was busy over
// window, from /proc/stat.
func machineBusy(window time.Duration) (float64, error) {
	read := func() (busy, total float64, err error) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return 0, 0, err
		}
		f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
		if len(f) < 5 || f[0] != "cpu" {
			return 0, 0, fmt.Errorf("unexpected /proc/stat")
		}
		for i, v := range f[1:] {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, 0, err
			}
			total += x
			if i != 3 && i != 4 { // idle and iowait
				busy += x
			}
		}
		return busy, total, nil
	}
	b0, t0, err := read()
	if err != nil {
		return 0, err
	}
	time.Sleep(window)
	b1, t1, err := read()
	if err != nil {
		return 0, err
	}
	if t1 == t0 {
		return 0, nil
	}
	return (b1 - b0) / (t1 - t0), nil
}

// quiesce waits, up to limit, until the machine is nearly idle, so that a
// figure does not share the cores with work left over from the one before
// (a control plane digesting thousands of new objects, processes ending).
func quiesce(limit time.Duration) {
	start := time.Now()
	var busy float64
	for time.Since(start) < limit {
		var err error
		if busy, err = machineBusy(500 * time.Millisecond); err != nil || busy < 0.15 {
			return
		}
	}
	step("  the machine is still %.0f%% busy after %s; measuring anyway", busy*100, limit)
}
