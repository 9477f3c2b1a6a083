package testenv

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSplitRule(t *testing.T) {
	for _, tc := range []struct {
		rule string
		want []string
	}{
		{`-A POSTROUTING -j KUBEOPENCODE-EGRESS`, []string{"-A", "POSTROUTING", "-j", "KUBEOPENCODE-EGRESS"}},
		{`-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
			[]string{"-A", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"}},
		{`-A X -m comment --comment "a \"quoted\" word" -j CNI-1`, []string{"-A", "X", "-m", "comment", "--comment", `a "quoted" word`, "-j", "CNI-1"}},
	} {
		if got := splitRule(tc.rule); strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("splitRule(%q) = %q, want %q", tc.rule, got, tc.want)
		}
	}
}

// TestNodeNetworkCleanUp makes the real node's network and removes it, as
// a stop or the start after a killed run does: no route, link or chain of
// the node may remain, and the sysctls are as they were.
func TestNodeNetworkCleanUp(t *testing.T) {
	if err := CheckRealNodeHost(); err != nil {
		t.Skip(err)
	}
	lock, err := acquireNodeLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer lock.release()
	forward, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err := setUpNodeNetwork(); err != nil {
		cleanUpNode()
		t.Fatal(err)
	}
	if routes := output(t, "ip", "route", "show", "table", "main"); !strings.Contains(routes, "blackhole "+PodCIDR) || !strings.Contains(routes, "blackhole "+ServiceCIDR) {
		t.Errorf("no blackhole routes for the node's ranges:\n%s", routes)
	}
	if n, err := EgressPackets(); err != nil || n != 0 {
		t.Errorf("EgressPackets() = %d, %v; want 0", n, err)
	}
	// What a kubelet and kube-proxy would add, with rules that jump to it.
	for _, args := range [][]string{
		{"-t", "nat", "-N", "KUBE-SERVICES"},
		{"-t", "nat", "-I", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"},
	} {
		if err := run("iptables", append([]string{"-w"}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The check that follows the clean-up sees all of that.
	if left := strings.Join(nodeLeftovers(), "\n"); !strings.Contains(left, "link: ") || !strings.Contains(left, "blackhole "+PodCIDR) ||
		!strings.Contains(left, "KUBE-SERVICES") || !strings.Contains(left, egressChain) || !strings.Contains(left, "folder: "+nodeStateDir) {
		t.Errorf("nodeLeftovers() misses parts of the node's network:\n%s", left)
	}

	cleanUpNode()

	if left := nodeLeftovers(); len(left) > 0 {
		t.Errorf("the clean-up left:\n%s", strings.Join(left, "\n"))
	}
	if now, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); string(now) != string(forward) {
		t.Errorf("ip_forward is %q after the clean-up, was %q", now, forward)
	}
}

// TestNodeLock: a second taker of the machine's real-node lock waits for
// the first, and the lock's file is gone once the last one releases it,
// even though the first removed the file the second had opened.
func TestNodeLock(t *testing.T) {
	if err := CheckRealNodeHost(); err != nil {
		t.Skip(err)
	}
	first, err := acquireNodeLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(nodeLockPath); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("the lock's file holds %q (%v), want this process's PID", b, err)
	}
	second := make(chan *nodeLock)
	go func() {
		l, err := acquireNodeLock(t.Context())
		if err != nil {
			t.Error(err)
		}
		second <- l
	}()
	select {
	case <-second:
		t.Fatal("a second taker got the lock while the first held it")
	case <-time.After(time.Second):
	}
	first.release()
	first.release() // does nothing
	var l *nodeLock
	select {
	case l = <-second:
	case <-time.After(time.Minute):
		t.Fatal("the second taker did not get the lock within a minute of its release")
	}
	if l == nil {
		return
	}
	held, _ := l.f.Stat()
	if now, err := os.Stat(nodeLockPath); err != nil || !os.SameFile(held, now) {
		t.Errorf("the second taker holds a file that is not the lock's (%v)", err)
	}
	l.release()
	// Another process (another package's test) may be waiting and make the
	// file again; it then holds its own PID.
	if b, err := os.ReadFile(nodeLockPath); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		t.Errorf("the lock's file remains after its release")
	}
}

func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
