package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeopencode/share/internal/testenv"
	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/cli"
)

// runKubeocEnv runs kubeoc with args and, in place of the test's own
// environment, env; it returns stdout, stderr and the exit code.
func runKubeocEnv(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	return runProgram(t, env, "kubeoc", buildKubeoc(t), args...)
}

// TestKubeocCLI drives kubeoc against the whole system (controller,
// aggregated API server, real control plane) the way a user at a terminal
// does: re-running share, listing and watching, unsharing twice.
func TestKubeocCLI(t *testing.T) {
	s := startSystem(t)
	userKubeconfig := s.userKubeconfig(t)
	adminKubeconfig := filepath.Join(t.TempDir(), "admin.kubeconfig")
	if err := testenv.WriteKubeconfig(adminKubeconfig, s.cp.Config(), ""); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "KUBECONFIG="+userKubeconfig)
	kubeoc := func(t *testing.T, args ...string) (string, string, int) {
		t.Helper()
		return runKubeocEnv(t, env, args...)
	}
	ok := func(t *testing.T, args ...string) string {
		t.Helper()
		out, stderr, code := kubeoc(t, args...)
		if code != 0 {
			t.Fatalf("kubeoc %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
		}
		return out
	}

	agent := s.readyAgent(t, "cli-agent")
	ns := agent.Namespace
	// A second Agent with a label, for -l; it need not be Ready.
	labelled := &kubeopencodev1alpha1.Agent{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "labelled", Labels: map[string]string{"kubeoc-cli-test": ns}},
		Spec:       kubeopencodev1alpha1.AgentSpec{Image: "example/agent:1.0"},
	}
	if err := s.admin.Create(t.Context(), labelled); err != nil {
		t.Fatal(err)
	}
	spec := func(t *testing.T) *kubeopencodev1alpha1.ShareSpec {
		t.Helper()
		a := &kubeopencodev1alpha1.Agent{}
		if err := s.admin.Get(t.Context(), agent, a); err != nil {
			t.Fatal(err)
		}
		if a.Spec.Share == nil {
			return &kubeopencodev1alpha1.ShareSpec{}
		}
		return a.Spec.Share
	}
	heading := func(out string) (string, []string) {
		head, _, _ := strings.Cut(out, "\n\n")
		lines := strings.Split(head, "\n")
		return lines[0], lines[1:]
	}

	t.Run("share on an existing link changes only what it is told", func(t *testing.T) {
		out := ok(t, "agent", "share", "cli-agent", "-n", ns, "--allowed-ips", "10.0.0.0/8")
		token := tokenFrom(t, out)
		if h, changes := heading(out); h != "Share link enabled for agent "+ns+"/cli-agent" || len(changes) != 0 {
			t.Errorf("first share printed %q %q", h, changes)
		}

		out = ok(t, "agent", "share", "cli-agent", "-n", ns, "--expires-in", "2h")
		h, changes := heading(out)
		if h != "Share link updated for agent "+ns+"/cli-agent" || len(changes) != 1 || !regexp.MustCompile(`^  Expires: \S+ -> \S+$`).MatchString(changes[0]) {
			t.Errorf("--expires-in printed heading %q and changes %q; want one change, of the expiry", h, changes)
		}
		if !strings.Contains(out, "\nAllowed IPs: 10.0.0.0/8\n") || tokenFrom(t, out) != token {
			t.Errorf("--expires-in lost the allowed IPs or the token:\n%s", out)
		}
		sp := spec(t)
		if len(sp.AllowedIPs) != 1 || sp.AllowedIPs[0] != "10.0.0.0/8" || sp.ExpiresAt == nil || time.Until(sp.ExpiresAt.Time) > 2*time.Hour {
			t.Fatalf("Agent spec.share after --expires-in: %+v", sp)
		}
		expiry := sp.ExpiresAt.Time

		out = ok(t, "agent", "share", "cli-agent", "-n", ns)
		if h, changes := heading(out); h != "Share link unchanged for agent "+ns+"/cli-agent" || len(changes) != 0 {
			t.Errorf("bare re-run printed %q %q; want unchanged", h, changes)
		}
		if sp := spec(t); sp.ExpiresAt == nil || !sp.ExpiresAt.Time.Equal(expiry) || len(sp.AllowedIPs) != 1 {
			t.Errorf("bare re-run changed the link: %+v", sp)
		}

		out = ok(t, "agent", "share", "cli-agent", "-n", ns, "--allowed-ips=")
		if _, changes := heading(out); len(changes) != 1 || changes[0] != "  Allowed IPs: 10.0.0.0/8 -> any" {
			t.Errorf(`--allowed-ips="" printed changes %q`, changes)
		}
		if sp := spec(t); len(sp.AllowedIPs) != 0 || sp.ExpiresAt == nil || !sp.ExpiresAt.Time.Equal(expiry) {
			t.Errorf(`--allowed-ips="" left %+v`, sp)
		}

		out = ok(t, "agent", "share", "cli-agent", "-n", ns, "--max-viewers", "5")
		if _, changes := heading(out); len(changes) != 1 || changes[0] != "  Max viewers: none -> 5" {
			t.Errorf("--max-viewers printed changes %q", changes)
		}
		out = ok(t, "agent", "share", "cli-agent", "-n", ns, "--reset", "--expires-in", "1h")
		if _, changes := heading(out); !hasLine(changes, "  Max viewers: 5 -> none") {
			t.Errorf("--reset printed changes %q; want max viewers cleared", changes)
		}
		if sp := spec(t); sp.MaxViewers != nil || sp.ExpiresAt == nil || time.Until(sp.ExpiresAt.Time) > time.Hour {
			t.Errorf("--reset left %+v", sp)
		}
		if tokenFrom(t, out) != token {
			t.Errorf("--reset replaced the token")
		}

		// A named link keeps its own settings the same way.
		ok(t, "agent", "share", "cli-agent", "-n", ns, "--link", "qa", "--allowed-ips", "192.168.1.7")
		out = ok(t, "agent", "share", "cli-agent", "-n", ns, "--link", "qa", "--read-only")
		if h, changes := heading(out); h != `Share link "qa" updated for agent `+ns+"/cli-agent" || len(changes) != 1 || changes[0] != "  Mode: edit -> view" {
			t.Errorf("--link qa --read-only printed %q %q", h, changes)
		}
		if !strings.Contains(out, "\nAllowed IPs: 192.168.1.7") {
			t.Errorf("the qa link lost its allowed IPs:\n%s", out)
		}
	})

	t.Run("list prints names, wide tables, json, selected and all namespaces", func(t *testing.T) {
		if out := ok(t, "agent", "list", "-n", ns, "-o", "name"); out != "agent.kubeopencode.io/cli-agent\nagent.kubeopencode.io/labelled\n" {
			t.Errorf("-o name printed %q", out)
		}
		out := ok(t, "agent", "list", "-n", ns, "-o", "wide")
		if !regexp.MustCompile(`(?m)^NAME\s+READY\s+SHARE\s+EXPIRES\s+AGE\s+MODE\s+VIEWERS\s+ALLOWED IPS\s+LINKS$`).MatchString(out) ||
			!regexp.MustCompile(`(?m)^cli-agent\s+True\s+true\s+\S+\s+\S+\s+edit\s+0\s+<none>\s+qa$`).MatchString(out) {
			t.Errorf("-o wide printed:\n%s", out)
		}
		var list kubeopencodev1alpha1.AgentList
		if err := json.Unmarshal([]byte(ok(t, "agent", "list", "-n", ns, "-o", "json")), &list); err != nil || len(list.Items) != 2 || list.Kind != "AgentList" {
			t.Errorf("-o json: %v, %d items, kind %q", err, len(list.Items), list.Kind)
		}
		if out := ok(t, "agent", "list", "-n", ns, "-l", "kubeoc-cli-test="+ns, "-o", "name"); out != "agent.kubeopencode.io/labelled\n" {
			t.Errorf("-l printed %q", out)
		}
		out = ok(t, "agent", "list", "-n", ns, "--no-headers")
		if strings.Contains(out, "NAME") || !regexp.MustCompile(`(?m)^cli-agent\s+True\s+true`).MatchString(out) || strings.Count(out, "\n") != 2 {
			t.Errorf("--no-headers printed:\n%s", out)
		}
		// Every namespace needs a cluster-wide list: the admin's.
		out, _, _ = runKubeocEnv(t, append(os.Environ(), "KUBECONFIG="+adminKubeconfig), "agent", "list", "-A", "-l", "kubeoc-cli-test="+ns)
		if !regexp.MustCompile(`(?m)^NAMESPACE\s+NAME\s+READY`).MatchString(out) || !regexp.MustCompile(`(?m)^`+ns+`\s+labelled\s`).MatchString(out) || strings.Count(out, "\n") != 2 {
			t.Errorf("-A -l printed:\n%s", out)
		}
		// A user who may not list everywhere is told so.
		if _, stderr, code := kubeoc(t, "agent", "list", "-A"); code != 1 || !strings.Contains(stderr, "may not list agents") {
			t.Errorf("-A as the user: exit %d, %q", code, stderr)
		}
	})

	t.Run("list -w prints a change as it happens", func(t *testing.T) {
		ok(t, "agent", "unshare", "cli-agent", "-n", ns)
		s.waitFor(t, "the share to be inactive", func(ctx context.Context) (bool, error) {
			a := &kubeopencodev1alpha1.Agent{}
			return s.admin.Get(ctx, agent, a) == nil && (a.Status.Share == nil || !a.Status.Share.Active), nil
		})
		ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, buildKubeoc(t), "agent", "list", "-n", ns, "-w", "-l", "!kubeoc-cli-test")
		cmd.Env = env
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		next := func(what string) string {
			select {
			case l, open := <-lines:
				if !open {
					t.Fatalf("kubeoc list -w ended before %s", what)
				}
				t.Logf("list -w: %s", l)
				return l
			case <-ctx.Done():
				t.Fatalf("no %s from kubeoc list -w within the time", what)
			}
			return ""
		}
		if l := next("header"); !strings.HasPrefix(l, "NAME") {
			t.Fatalf("first line %q", l)
		}
		if l := next("row"); !regexp.MustCompile(`^cli-agent\s+True\s+false`).MatchString(l) {
			t.Fatalf("first row %q", l)
		}
		ok(t, "agent", "share", "cli-agent", "-n", ns)
		for {
			if l := next("the shared row"); regexp.MustCompile(`^cli-agent\s+True\s+true`).MatchString(l) {
				break
			}
		}
	})

	t.Run("unshare twice, with and without --ignore-not-found", func(t *testing.T) {
		for _, link := range []string{"", "qa"} {
			args := []string{"agent", "unshare", "cli-agent", "-n", ns}
			want := "agent " + ns + "/cli-agent has no enabled share link"
			if link != "" {
				args = append(args, "--link", link)
				want = "agent " + ns + `/cli-agent has no share link named "qa"`
			}
			ok(t, args...)
			if out, stderr, code := kubeoc(t, args...); code != 1 || out != "" || strings.TrimSpace(stderr) != "error: "+want {
				t.Errorf("second unshare of link %q: exit %d, stdout %q, stderr %q; want exit 1 and %q", link, code, out, stderr, want)
			}
			if out, stderr, code := kubeoc(t, append(args, "--ignore-not-found")...); code != 0 || out != "" || stderr != "" {
				t.Errorf("unshare --ignore-not-found of link %q: exit %d, %q %q", link, code, out, stderr)
			}
		}
		if _, _, code := kubeoc(t, "agent", "unshare", "no-such-agent", "-n", ns, "--ignore-not-found"); code != 0 {
			t.Errorf("unshare --ignore-not-found of a missing Agent exits %d", code)
		}
	})

	t.Run("version, unknown subcommands and a missing kubeconfig", func(t *testing.T) {
		var v cli.Version
		if err := json.Unmarshal([]byte(ok(t, "version", "-o", "json")), &v); err != nil || v.ClientVersion == nil || v.ClientVersion.GitVersion == "" {
			t.Errorf("version -o json: %v %+v", err, v)
		}
		if out, stderr, code := kubeoc(t, "agent", "frob"); code != 1 || out != "" || !strings.HasPrefix(stderr, `error: unknown command "frob" for "kubeoc agent"`) {
			t.Errorf("kubeoc agent frob: exit %d, %q %q", code, out, stderr)
		}
		if _, stderr, code := kubeoc(t, "agent"); code != 1 || !strings.Contains(stderr, "Available Commands:") {
			t.Errorf("kubeoc agent: exit %d, %q", code, stderr)
		}
		home := t.TempDir()
		noConfig := []string{"HOME=" + home, "KUBECONFIG=" + filepath.Join(home, "missing"), "PATH=" + os.Getenv("PATH")}
		_, stderr, code := runKubeocEnv(t, noConfig, "agent", "list")
		if code != 1 || !strings.Contains(stderr, "set KUBECONFIG") || strings.Contains(stderr, "localhost:8080") {
			t.Errorf("no kubeconfig: exit %d, %q", code, stderr)
		}
	})
}

func hasLine(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}
