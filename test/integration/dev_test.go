package integration

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuilder{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})

	// Read what make dev prints until the link.
	linkRE := regexp.MustCompile(`^Share link: (http://\S+/s/(\S+))$`)
	lines := make(chan string)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	var link, token string
	var printed []string
	timeout := time.After(5 * time.Minute)
	for ready := false; !ready; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("make dev ended without a link:\n%s\n%s", strings.Join(printed, "\n"), stderr.String())
			}
			printed = append(printed, line)
			if m := linkRE.FindStringSubmatch(line); m != nil {
				link, token = m[1], m[2]
			}
			ready = strings.HasPrefix(line, "Press Ctrl-C")
		case <-timeout:
			t.Fatalf("no link after 5 minutes:\n%s\n%s", strings.Join(printed, "\n"), stderr.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
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
