package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
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
	defer lock.Close()
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

	cleanUpNode()

	if routes := output(t, "ip", "route", "show", "table", "main"); strings.Contains(routes, PodCIDR) || strings.Contains(routes, ServiceCIDR) {
		t.Errorf("routes of the node's ranges remain:\n%s", routes)
	}
	if links := output(t, "ip", "-o", "link", "show"); strings.Contains(links, nodeBridge) {
		t.Errorf("the bridge %s remains", nodeBridge)
	}
	for _, table := range []string{"nat", "filter", "mangle"} {
		if rules := output(t, "iptables-save", "-t", table); strings.Contains(rules, "KUBE-") || strings.Contains(rules, egressChain) {
			t.Errorf("chains of the node remain in table %s:\n%s", table, rules)
		}
	}
	if now, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); string(now) != string(forward) {
		t.Errorf("ip_forward is %q after the clean-up, was %q", now, forward)
	}
	for _, dir := range []string{nodeStateDir, nodeRunDir} {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s remains (%v)", dir, err)
		}
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
