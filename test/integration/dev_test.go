package integration

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
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

	"github.com/kubeopencode/share/internal/testenv"
)

// TestMakeDev runs the entry point of `make dev` as a user would, follows
// the link it prints to the page and a terminal session, then stops it with
// Ctrl-C and checks that nothing it started is left serving.
func TestMakeDev(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "dev")
	build := exec.Command("go", "build", "-o", bin, "./hack/dev")
	build.Dir = shared.root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building hack/dev: %v\n%s", err, out)
	}
	stateDir := t.TempDir()
	cmd := exec.Command(bin, "--state-dir", stateDir, "--share-port", "0")
	cmd.Dir = shared.root
	printed, stderr, exited := startDev(t, cmd, devReadyWithin(t, 5*time.Minute))
	var link, token string
	if m := regexp.MustCompile(`(?m)^Share link: (http://\S+/s/(\S+))$`).FindStringSubmatch(strings.Join(printed, "\n")); m != nil {
		link, token = m[1], m[2]
	}
	if link == "" {
		t.Fatalf("no link printed:\n%s", strings.Join(printed, "\n"))
	}
	out := strings.Join(printed, "\n")
	if !strings.Contains(out, "Share link enabled for agent demo/team-agent") || !regexp.MustCompile(`export KUBECONFIG=\S+`).MatchString(out) {
		t.Errorf("make dev printed:\n%s", out)
	}
	for _, progress := range []string{"building", "starting etcd", "starting the controller", "enabling its share link"} {
		if !strings.Contains(stderr.String(), progress) {
			t.Errorf("no progress line %q in:\n%s", progress, stderr.String())
		}
	}

	// The printed link serves the page and a terminal that echoes input.
	resp, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "xterm.js") {
		t.Fatalf("GET %s: %d", link, resp.StatusCode)
	}
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	c, code := dialTerminal(t, u.Host, token, nil)
	if c == nil {
		t.Fatalf("terminal refused: %d", code)
	}
	c.resize(80, 24)
	c.typeText("echo from-make''-dev\r")
	c.waitForOutput("from-make-dev")
	checkDevNode(t, c, stateDir, out, stderr.String())

	// Ctrl-C stops everything.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("make dev exited with %v after Ctrl-C:\n%s", err, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("make dev did not stop within a minute of Ctrl-C")
	}
	if conn, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		conn.Close()
		t.Errorf("the share listener %s still answers after Ctrl-C", u.Host)
	}
	kubeconfig, err := os.ReadFile(filepath.Join(stateDir, "controlplane", "admin.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	server := regexp.MustCompile(`server: https://(\S+)`).FindSubmatch(kubeconfig)
	if server == nil {
		t.Fatalf("no server in the admin kubeconfig")
	}
	if conn, err := net.DialTimeout("tcp", string(server[1]), time.Second); err == nil {
		conn.Close()
		t.Errorf("the kube-apiserver %s still answers after Ctrl-C", server[1])
	}
	checkNoRealNodeLeft(t)
}

// devReadyWithin is how long make dev may take to be ready: want, plus,
// where it runs a real node, the image archives, the node's start and the
// wait for another process's real node (another package's test holds the
// machine's real-node lock meanwhile), within the test's deadline.
func devReadyWithin(t *testing.T, want time.Duration) time.Duration {
	if devRealNodeReason() == nil {
		want += 5 * time.Minute
	}
	if deadline, ok := t.Deadline(); ok {
		// Time left to stop make dev and report, rather than a panic that
		// skips the cleanups.
		want = min(want, max(time.Until(deadline)-2*time.Minute, time.Minute))
	}
	return want
}

// devRealNodeReason says why make dev's --node=auto does not choose a real
// node on this machine, as it asks: the node's needs and the static busybox
// of the demo Agent's image.
func devRealNodeReason() error {
	if err := testenv.CheckRealNodeHost(); err != nil {
		return err
	}
	return testenv.CheckStaticBusybox()
}

// checkDevNode checks, through the link's terminal, the node make dev
// chose: where this machine allows a real node (devRealNodeReason), the terminal is a shell in the demo
// Agent's container, whose hostname is its pod's name; elsewhere make dev
// said why it fell back to the stand-in, whose terminal is a shell on this
// machine. HOSTNAME does not tell them apart (the stand-in sets it to the
// pod's name); the hostname command does.
func checkDevNode(t *testing.T, c *terminalClient, stateDir, printed, progress string) {
	t.Helper()
	c.typeText("echo \"host:$(hostname):end\"\r")
	hostname := c.waitForMatch(regexp.MustCompile(`host:([a-z0-9][a-z0-9.-]*):end`))[1]
	machine, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	reason := devRealNodeReason()
	if reason != nil {
		fallback := "the demo Agent runs on the stand-in node: the link's terminal is a shell on this machine, run as you, not a container; no real node because " + reason.Error()
		if !strings.Contains(progress, fallback) {
			t.Errorf("this machine cannot run a real node (%v), and make dev did not say it falls back to the stand-in (%q):\n%s", reason, fallback, progress)
		}
		if hostname != machine {
			t.Errorf("the stand-in's terminal says its hostname is %q, want this machine's, %q", hostname, machine)
		}
		if !strings.Contains(printed, "Its terminal is a shell on this machine") {
			t.Errorf("make dev did not say the link's terminal is a shell on this machine:\n%s", printed)
		}
		return
	}
	if !strings.Contains(progress, "the demo Agent runs in a busybox container on a real node") {
		t.Errorf("make dev did not say the Agent runs in a container on a real node:\n%s", progress)
	}
	admin := filepath.Join(stateDir, "controlplane", "admin.kubeconfig")
	pods, errOut, err := shared.cp.Kubectl(t.Context(), admin, nil, "-n", "demo", "get", "pods", "-l", "kubeopencode.io/agent=team-agent",
		"--field-selector=status.phase=Running", "-o", `jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}{"\n"}{end}`)
	if err != nil {
		t.Fatalf("listing the demo Agent's pods: %v\n%s", err, errOut)
	}
	var pod, node string
	for _, l := range strings.Split(strings.TrimSpace(pods), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == hostname {
			pod, node = f[0], f[1]
		}
	}
	if pod == "" || node != testenv.RealNodeName || hostname == machine {
		t.Errorf("the terminal's hostname is %q (this machine's is %q); the demo Agent's running pods and nodes:\n%s\nwant the terminal in the pod's container on %s", hostname, machine, pods, testenv.RealNodeName)
	}
	if want := "Its terminal is a busybox shell in the Agent's container (pod " + hostname + ") on the real node " + testenv.RealNodeName; !strings.Contains(printed, want) {
		t.Errorf("make dev did not print %q:\n%s", want, printed)
	}
}

// waitForMatch waits for the terminal's output to match re and returns the
// match's groups.
func (c *terminalClient) waitForMatch(re *regexp.Regexp) []string {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		m := re.FindStringSubmatch(c.output.String())
		c.mu.Unlock()
		if m != nil {
			return m
		}
		select {
		case <-c.closed:
			c.t.Fatalf("session closed (%d, %+v) before output matching %s; output:\n%s", c.code, c.status, re, c.output.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	c.t.Fatalf("timed out waiting for output matching %s; output:\n%s", re, c.output.String())
	return nil
}

// checkNoRealNodeLeft checks, where this machine can run a real node, that
// none left anything behind: make dev's real node, which has stopped, and
// any other process's, which the check waits for (it takes the machine's
// real-node lock).
func checkNoRealNodeLeft(t *testing.T) {
	t.Helper()
	wait := 5 * time.Minute
	if deadline, ok := t.Deadline(); ok {
		wait = min(wait, max(time.Until(deadline)-time.Minute, time.Second))
	}
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	left, err := testenv.RealNodeLeftovers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("the real node left behind:\n%s", strings.Join(left, "\n"))
	}
}

// syncBuilder is a strings.Builder that a process writes while the test
// reads it.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestMakeDevStopsWithMake runs `make dev` as a supervisor or a script
// would, checks the view-only kubeconfig it prints, then sends SIGTERM to
// the make process alone, not its group, and checks that nothing make dev
// started is left running.
func TestMakeDevStopsWithMake(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	stateDir := t.TempDir()
	cmd := exec.Command("make", "--no-print-directory", "dev", "DEV_FLAGS=--state-dir="+stateDir+" --share-port=0")
	cmd.Dir = shared.root
	// A group of its own, so that the SIGTERM below reaches make alone and
	// the cleanup can still reach whatever it left.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	printed, stderr, exited := startDev(t, cmd, devReadyWithin(t, 8*time.Minute))
	out := strings.Join(printed, "\n")
	link := regexp.MustCompile(`(?m)^Share link: http://(\S+)/s/(\S+)$`).FindStringSubmatch(out)
	viewerConfig := regexp.MustCompile(`(?m)^  export KUBECONFIG=(\S+viewer\.kubeconfig)$`).FindStringSubmatch(out)
	if link == nil || viewerConfig == nil {
		t.Fatalf("make dev printed no link or no view-only kubeconfig:\n%s", out)
	}
	if strings.Contains(stderr.String(), "SetLogger") {
		t.Errorf("make dev printed controller-runtime's warning about its logger:\n%s", stderr.String())
	}
	if n := strings.Count(out+stderr.String(), ">>> etcd:"); n != 1 {
		t.Errorf("the control plane's build script ran %d times, want once", n)
	}

	// The node make dev chose, as its link's terminal shows it.
	c, code := dialTerminal(t, link[1], link[2], nil)
	if c == nil {
		t.Fatalf("terminal refused: %d", code)
	}
	c.resize(80, 24)
	checkDevNode(t, c, stateDir, out, stderr.String())

	// The view-only user sees the Agent, never its token.
	kubeoc := filepath.Join(shared.root, "bin", "kubeoc")
	view := func(args ...string) (string, error) {
		c := exec.Command(kubeoc, append([]string{"--kubeconfig", viewerConfig[1]}, args...)...)
		b, err := c.CombinedOutput()
		return string(b), err
	}
	if got, err := view("agent", "list"); err != nil || !strings.Contains(got, "team-agent") {
		t.Errorf("the viewer's agent list: %v\n%s", err, got)
	}
	if got, err := view("agent", "share", "team-agent", "--show"); err == nil || !strings.Contains(got, "forbidden") {
		t.Errorf("the viewer's share --show: %v\n%s", err, got)
	}

	admin, err := os.ReadFile(filepath.Join(stateDir, "controlplane", "admin.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	apiServer := regexp.MustCompile(`server: https://(\S+)`).FindSubmatch(admin)
	if apiServer == nil {
		t.Fatal("no server in the admin kubeconfig")
	}

	// SIGTERM to make alone, as a supervisor or `kill PID` sends it.
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		// make's own exit status after a SIGTERM is make's business; what
		// this test holds it to is that nothing it started outlives it.
		t.Logf("make exited after SIGTERM: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("make did not end within a minute of SIGTERM")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := processesUnder(stateDir)
		listening := answers(link[1]) || answers(string(apiServer[1]))
		if len(left) == 0 && !listening {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after make got SIGTERM: processes %v, listening %v", left, listening)
		}
		time.Sleep(200 * time.Millisecond)
	}
	checkNoRealNodeLeft(t)
}

// startDev starts a make dev command and reads what it prints until it is
// ready (the line "Press Ctrl-C"); it fails the test if the command ends or
// is not ready within the time. It returns the lines printed, the command's
// standard error as it goes on, and its end.
func startDev(t *testing.T, cmd *exec.Cmd, within time.Duration) ([]string, *syncBuilder, <-chan error) {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuilder{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.SysProcAttr != nil && cmd.SysProcAttr.Setpgid {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			return
		}
		_ = cmd.Process.Kill()
	})
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	lines := make(chan string)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	var printed []string
	timeout := time.After(within)
	for ready := false; !ready; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("make dev ended before it was ready:\n%s\n%s", strings.Join(printed, "\n"), stderr.String())
			}
			printed = append(printed, line)
			ready = strings.HasPrefix(line, "Press Ctrl-C")
		case <-timeout:
			t.Fatalf("make dev not ready after %s:\n%s\n%s", within, strings.Join(printed, "\n"), stderr.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	return printed, stderr, exited
}

// processesUnder returns the command lines of running processes that name
// dir, as everything make dev starts does through its state folder.
func processesUnder(dir string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), dir) {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && strings.HasPrefix(string(stat[i+1:]), " Z") {
			continue // a zombie has ended
		}
		out = append(out, strings.ReplaceAll(string(b), "\x00", " "))
	}
	return out
}

func answers(hostPort string) bool {
	conn, err := net.DialTimeout("tcp", hostPort, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}
