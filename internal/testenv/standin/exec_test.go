package standin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// buffer is a concurrency-safe output stream for the executor.
type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) Close() error { return nil }

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newExecutor(t *testing.T, stop context.Context) *processExecutor {
	t.Helper()
	return &processExecutor{stop: stop, dir: filepath.Join(t.TempDir(), "ns", "pod"), env: []string{"PATH=" + os.Getenv("PATH"), "GREETING=hi there"}}
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var exitErr utilexec.ExitError
	if !errors.As(err, &exitErr) {
		t.Fatalf("error %v (%T) is not an exit error", err, err)
	}
	return exitErr.ExitStatus()
}

func TestExecWithoutTTY(t *testing.T) {
	tests := []struct {
		name       string
		cmd        []string
		stdin      io.Reader
		wantStdout string
		wantStderr string
		wantCode   int
	}{
		{name: "exit code", cmd: []string{"sh", "-c", "echo hi; exit 3"}, wantStdout: "hi\n", wantCode: 3},
		{name: "stderr", cmd: []string{"sh", "-c", "echo oops >&2"}, wantStderr: "oops\n"},
		{name: "stdin", cmd: []string{"cat"}, stdin: strings.NewReader("a\nb\n"), wantStdout: "a\nb\n"},
		{name: "env and working folder", cmd: []string{"sh", "-c", `echo "$GREETING"; [ "$PWD" = "$HOME" ] && basename "$PWD"; [ -z "$TERM" ] && echo no-term`}, wantStdout: "hi there\npod\nno-term\n"},
		{name: "killed by a signal", cmd: []string{"sh", "-c", "kill -TERM $$"}, wantCode: 128 + 15},
		// A command that exits while its client keeps stdin open ends at
		// once rather than waiting for stdin.
		{name: "open stdin", cmd: []string{"true"}, stdin: blockingReader{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr buffer
			start := time.Now()
			err := newExecutor(t, t.Context()).ExecInContainer(t.Context(), "pod", "", "main", tc.cmd, tc.stdin, &stdout, &stderr, false, nil, 0)
			if got := exitCode(t, err); got != tc.wantCode {
				t.Errorf("exit code %d, want %d", got, tc.wantCode)
			}
			if stdout.String() != tc.wantStdout || stderr.String() != tc.wantStderr {
				t.Errorf("stdout %q, stderr %q; want %q, %q", stdout.String(), stderr.String(), tc.wantStdout, tc.wantStderr)
			}
			if d := time.Since(start); d > outputDrainWait {
				t.Errorf("took %s", d)
			}
		})
	}
}

// blockingReader never returns, as a client that never closes stdin.
type blockingReader struct{}

func (blockingReader) Read([]byte) (int, error) { select {} }

func TestExecUnknownCommandIsNotAnExitCode(t *testing.T) {
	err := newExecutor(t, t.Context()).ExecInContainer(t.Context(), "pod", "", "main", []string{"no-such-command"}, nil, &buffer{}, &buffer{}, false, nil, 0)
	var exitErr utilexec.ExitError
	if err == nil || errors.As(err, &exitErr) {
		t.Fatalf("got %v, want a plain error", err)
	}
}

func TestExecWithTTY(t *testing.T) {
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	resize := make(chan remotecommand.TerminalSize, 2)
	resize <- remotecommand.TerminalSize{Width: 100, Height: 30}
	var out buffer
	done := make(chan error, 1)
	go func() {
		done <- newExecutor(t, t.Context()).ExecInContainer(t.Context(), "pod", "", "main", []string{"sh"}, stdinR, &out, nil, true, resize, 0)
	}()
	waitFor := func(want string, poke string) {
		t.Helper()
		err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
			if poke != "" {
				_, _ = io.WriteString(stdinW, poke)
			}
			return strings.Contains(out.String(), want), nil
		})
		if err != nil {
			t.Fatalf("%q never appeared: %v\n%s", want, err, out.String())
		}
	}
	_, _ = io.WriteString(stdinW, "echo $TERM; stty size\n")
	// The first size is the terminal's from the start.
	waitFor("xterm-256color", "")
	waitFor("30 100", "")
	resize <- remotecommand.TerminalSize{Width: 132, Height: 43}
	waitFor("43 132", "stty size\n")
	_, _ = io.WriteString(stdinW, "exit 4\n")
	select {
	case err := <-done:
		if got := exitCode(t, err); got != 4 {
			t.Errorf("exit code %d, want 4", got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("shell did not exit")
	}
}

func TestExecEnds(t *testing.T) {
	tests := []struct {
		name string
		// end ends the session of a shell on a TTY.
		end      func(stdin io.Closer, stop context.CancelFunc)
		wantCode int
	}{
		{name: "client closes stdin: hang-up", end: func(stdin io.Closer, _ context.CancelFunc) { _ = stdin.Close() }, wantCode: hangupExitCode(t)},
		{name: "kubelet stops: kill", end: func(_ io.Closer, stop context.CancelFunc) { stop() }, wantCode: 128 + 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stop, cancel := context.WithCancel(t.Context())
			defer cancel()
			stdinR, stdinW := io.Pipe()
			var out buffer
			done := make(chan error, 1)
			go func() {
				done <- newExecutor(t, stop).ExecInContainer(t.Context(), "pod", "", "main", []string{"sh", "-c", "echo started; sleep 600"}, stdinR, &out, nil, true, nil, 0)
			}()
			err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
				return strings.Contains(out.String(), "started"), nil
			})
			if err != nil {
				t.Fatalf("command did not start: %v", err)
			}
			tc.end(stdinW, cancel)
			select {
			case err := <-done:
				if got := exitCode(t, err); got != tc.wantCode {
					t.Errorf("exit code %d, want %d", got, tc.wantCode)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("session did not end")
			}
		})
	}
}

// running reports whether a process with this exact command line runs.
func running(t *testing.T, cmdline string) bool {
	t.Helper()
	files, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ") == cmdline {
			return true
		}
	}
	return false
}

func TestExecEndsBackgroundChildren(t *testing.T) {
	tests := []struct {
		name     string
		tty      bool
		script   string
		orphan   string
		wantOut  string
		wantCode int
	}{
		// The child keeps the output pipe open.
		{name: "pipes", script: "sleep 6001 & echo hi; exit 2", orphan: "sleep 6001", wantOut: "hi\n", wantCode: 2},
		// The child ignores the hang-up and keeps the terminal open.
		{name: "tty", tty: true, script: `trap "" HUP; sleep 6002 & echo hi`, orphan: "sleep 6002", wantOut: "hi\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out buffer
			start := time.Now()
			err := newExecutor(t, t.Context()).ExecInContainer(t.Context(), "pod", "", "main", []string{"sh", "-c", tc.script}, nil, &out, &buffer{}, tc.tty, nil, 0)
			if got := exitCode(t, err); got != tc.wantCode {
				t.Errorf("exit code %d, want %d", got, tc.wantCode)
			}
			if out.String() != tc.wantOut {
				t.Errorf("output %q, want %q", out.String(), tc.wantOut)
			}
			if d := time.Since(start); d > outputDrainWait+5*time.Second {
				t.Errorf("session took %s to end", d)
			}
			if running(t, tc.orphan) {
				t.Errorf("%q still runs after the session", tc.orphan)
			}
		})
	}
}

// TestEndGroup checks endGroup's contract on its own: when it returns, no
// process of the group runs, whether the group's leader still runs, has
// exited unreaped, or has been reaped, and it does not wait for the
// reaping of what it killed, which is up to the orphans' new parent.
func TestEndGroup(t *testing.T) {
	tests := []struct {
		name   string
		script string
		// orphans are the command lines of the group's background
		// processes.
		orphans []string
		// reap waits for the leader before endGroup, as runWithPipes does;
		// otherwise the leader runs until endGroup kills it.
		reap bool
	}{
		{name: "leader running", script: "sleep 6003 & sleep 6004 & wait", orphans: []string{"sleep 6003", "sleep 6004"}},
		{name: "leader reaped", script: "sleep 6005 & sleep 6006 & exit 0", orphans: []string{"sleep 6005", "sleep 6006"}, reap: true},
		{name: "nothing left", script: "exit 0", reap: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := exec.Command("sh", "-c", tc.script)
			c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			err := wait.PollUntilContextTimeout(t.Context(), 10*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
				for _, o := range tc.orphans {
					if !running(t, o) {
						return false, nil
					}
				}
				return true, nil
			})
			if err != nil {
				_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
				t.Fatalf("the background processes did not start: %v", err)
			}
			if tc.reap {
				_ = c.Wait()
			}
			start := time.Now()
			endGroup(c.Process.Pid)
			if d := time.Since(start); d > groupExitWait/2 {
				t.Errorf("endGroup took %s", d)
			}
			for _, o := range tc.orphans {
				if running(t, o) {
					t.Errorf("%q still runs after endGroup", o)
				}
			}
			if !tc.reap {
				_ = c.Wait()
			}
		})
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		stat  string
		state string
		pgrp  int
		ok    bool
	}{
		{stat: "4242 (sleep) S 1 4200 4200 0 -1 4194304 96 0", state: "S", pgrp: 4200, ok: true},
		{stat: "4242 (sleep) Z 1 4200 4200 0 -1", state: "Z", pgrp: 4200, ok: true},
		// comm is the file name, which may hold spaces and parentheses.
		{stat: "4242 (a) b (c) R 1 77 77 0", state: "R", pgrp: 77, ok: true},
		{stat: "4242 (sleep) S 1"},
		{stat: "4242 sleep S 1 4200"},
		{stat: "4242 (sleep) S 1 x 4200"},
	}
	for _, tc := range tests {
		state, pgrp, ok := parseStat(tc.stat)
		if state != tc.state || pgrp != tc.pgrp || ok != tc.ok {
			t.Errorf("parseStat(%q) = %q, %d, %v; want %q, %d, %v", tc.stat, state, pgrp, ok, tc.state, tc.pgrp, tc.ok)
		}
	}
}

// hangupExitCode is the exit code of a shell whose terminal hangs up: 129
// (SIGHUP), or 137 (SIGKILL after the grace period) when this process, and so
// every process it starts, ignores SIGHUP, as under nohup.
func hangupExitCode(t *testing.T) int {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^SigIgn:\s*([0-9a-f]+)$`).FindSubmatch(status)
	if m == nil {
		t.Fatal("no SigIgn in /proc/self/status")
	}
	ignored, err := strconv.ParseUint(string(m[1]), 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	if ignored&(1<<(uint(syscall.SIGHUP)-1)) != 0 {
		return 128 + int(syscall.SIGKILL)
	}
	return 128 + int(syscall.SIGHUP)
}
