package integration

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kubeopencode/share/internal/testenv"
	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
)

// runProgram runs bin with args in env and returns stdout, stderr and the
// exit code, logging them as a terminal would show them under name.
func runProgram(t *testing.T, env []string, name, bin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	code := 0
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	default:
		t.Fatalf("running %s: %v", name, err)
	}
	t.Logf("$ %s %s  # exit %d\n%s%s", name, strings.Join(args, " "), code, out.String(), errOut.String())
	return out.String(), errOut.String(), code
}

// completions splits the output of cobra's __complete into the candidates
// (without descriptions) and the directive line.
func completions(t *testing.T, out string) ([]string, string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], ":") {
		t.Fatalf("no directive line in completion output %q", out)
	}
	var comps []string
	for _, l := range lines[:len(lines)-1] {
		comps = append(comps, strings.SplitN(l, "\t", 2)[0])
	}
	return comps, lines[len(lines)-1]
}

// allowListNamespaces lets user list namespaces, which completing -n needs;
// the test's users may not by default, as most users of a shared cluster.
func allowListNamespaces(t *testing.T, s *system, user string) {
	t.Helper()
	name := "kubeoc-completion-" + user
	role := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "rbac.authorization.k8s.io/v1",
		"kind":       "ClusterRole",
		"metadata":   map[string]interface{}{"name": name},
		"rules": []interface{}{map[string]interface{}{
			"apiGroups": []interface{}{""}, "resources": []interface{}{"namespaces"}, "verbs": []interface{}{"list"},
		}},
	}}
	binding := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "rbac.authorization.k8s.io/v1",
		"kind":       "ClusterRoleBinding",
		"metadata":   map[string]interface{}{"name": name},
		"roleRef":    map[string]interface{}{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
		"subjects":   []interface{}{map[string]interface{}{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}},
	}}
	for _, obj := range []*unstructured.Unstructured{role, binding} {
		if err := s.admin.Create(t.Context(), obj); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.admin.Delete(context.Background(), obj) })
	}
}

// TestKubeocCompletion asks kubeoc for completions as a shell does (cobra's
// __complete) against the real API: Agent names, namespaces, link names and
// output formats, each with the directive that turns off file completion.
func TestKubeocCompletion(t *testing.T) {
	s := startSystem(t)
	agent := s.readyAgent(t, "complete-me")
	ns := agent.Namespace
	other := &kubeopencodev1alpha1.Agent{}
	other.Namespace, other.Name = ns, "complete-other"
	other.Spec.Image = "example/agent:1.0"
	if err := s.admin.Create(t.Context(), other); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "KUBECONFIG="+s.userKubeconfig(t))
	kubeoc := func(t *testing.T, env []string, args ...string) ([]string, string) {
		t.Helper()
		out, stderr, code := runProgram(t, env, "kubeoc", buildKubeoc(t), args...)
		if code != 0 {
			t.Fatalf("kubeoc %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
		}
		return completions(t, out)
	}
	for _, link := range []string{"qa", "demo"} {
		if _, stderr, code := runKubeocEnv(t, env, "agent", "share", "complete-me", "-n", ns, "--link", link); code != 0 {
			t.Fatalf("sharing link %s: %s", link, stderr)
		}
	}

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"Agent names for share", []string{"__complete", "agent", "share", "-n", ns, ""}, []string{"complete-me", "complete-other"}},
		{"Agent names by prefix", []string{"__complete", "agent", "share", "-n", ns, "complete-o"}, []string{"complete-other"}},
		{"Agent names for unshare", []string{"__complete", "agent", "unshare", "--namespace=" + ns, ""}, []string{"complete-me", "complete-other"}},
		{"nothing after the Agent", []string{"__complete", "agent", "share", "-n", ns, "complete-me", ""}, nil},
		{"links of the Agent", []string{"__complete", "agent", "share", "complete-me", "-n", ns, "--link", ""}, []string{"demo", "qa"}},
		{"links for unshare, by prefix", []string{"__complete", "agent", "unshare", "complete-me", "-n", ns, "--link", "q"}, []string{"qa"}},
		{"links of an Agent without", []string{"__complete", "agent", "share", "complete-other", "-n", ns, "--link", ""}, nil},
		{"-o of list", []string{"__complete", "agent", "list", "-o", ""}, []string{"wide", "json", "yaml", "kyaml", "name", "go-template", "go-template-file", "template", "templatefile", "jsonpath", "jsonpath-as-json", "jsonpath-file"}},
		{"-o of share", []string{"__complete", "agent", "share", "complete-me", "-o", "j"}, []string{"json", "jsonpath", "jsonpath-as-json", "jsonpath-file"}},
		// The sharer may not list namespaces: nothing to offer, as kubectl.
		{"-n without list on namespaces", []string{"__complete", "agent", "list", "-n", ""}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			comps, directive := kubeoc(t, env, tc.args...)
			if !slices.Equal(comps, tc.want) || directive != ":4" {
				t.Errorf("completions %q %s, want %q :4", comps, directive, tc.want)
			}
		})
	}

	t.Run("namespaces, for a user who may list them", func(t *testing.T) {
		cfg, err := s.cp.UserConfig("completer", "system:authenticated")
		if err != nil {
			t.Fatal(err)
		}
		kubeconfig := filepath.Join(t.TempDir(), "completer.kubeconfig")
		if err := testenv.WriteKubeconfig(kubeconfig, cfg, ""); err != nil {
			t.Fatal(err)
		}
		allowListNamespaces(t, s, "completer")
		env := append(os.Environ(), "KUBECONFIG="+kubeconfig)
		comps, directive := kubeoc(t, env, "__complete", "agent", "list", "-n", "")
		if !slices.Contains(comps, ns) || !slices.Contains(comps, "default") || directive != ":4" {
			t.Errorf("-n completes %q %s; want %s and default among them, and :4", comps, directive, ns)
		}
		comps, directive = kubeoc(t, env, "__complete", "agent", "share", "--namespace", ns[:len(ns)-2])
		if !slices.Equal(comps, []string{ns}) || directive != ":4" {
			t.Errorf("--namespace %s completes %q %s, want %s :4", ns[:len(ns)-2], comps, directive, ns)
		}
	})
}

// buildPlugin builds kubectl-agent into a new folder, with the completion
// name kubectl looks for beside it, and returns the folder.
func buildPlugin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "kubectl-agent"), "./cmd/kubectl-agent")
	cmd.Dir = shared.root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building kubectl-agent: %v\n%s", err, out)
	}
	if err := os.Symlink("kubectl-agent", filepath.Join(dir, "kubectl_complete-agent")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestKubectlPlugin installs kubectl-agent first on PATH and runs the real
// kubectl: it lists the plugin, `kubectl agent …` does what `kubeoc agent …`
// does against the real control plane, kubectl completes through the
// plugin, and `kubectl get … --subresource share` fails as the user guide
// says.
func TestKubectlPlugin(t *testing.T) {
	s := startSystem(t)
	agent := s.readyAgent(t, "plugin-agent")
	ns := agent.Namespace
	pluginDir := buildPlugin(t)
	kubectlBin := filepath.Join(s.cp.BinDir(), "kubectl")
	env := append(os.Environ(), "KUBECONFIG="+s.userKubeconfig(t), "PATH="+pluginDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	kubectl := func(t *testing.T, args ...string) (string, string, int) {
		t.Helper()
		return runProgram(t, env, "kubectl", kubectlBin, args...)
	}
	kubeoc := func(t *testing.T, args ...string) (string, string, int) {
		t.Helper()
		return runProgram(t, env, "kubeoc", buildKubeoc(t), args...)
	}

	t.Run("kubectl plugin list shows it", func(t *testing.T) {
		out, _, _ := kubectl(t, "plugin", "list")
		if !strings.Contains(out, filepath.Join(pluginDir, "kubectl-agent")+"\n") {
			t.Errorf("kubectl plugin list does not list %s:\n%s", filepath.Join(pluginDir, "kubectl-agent"), out)
		}
	})

	for _, args := range [][]string{
		{"agent", "share", "plugin-agent", "-n", ns},
		{"agent", "share", "plugin-agent", "-n", ns, "--link", "demo", "--read-only"},
	} {
		if _, stderr, code := kubectl(t, args...); code != 0 {
			t.Fatalf("kubectl %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
		}
	}
	// Each command, through kubectl and through kubeoc: same output on
	// stdout and stderr, same exit code.
	for _, args := range [][]string{
		{"agent", "share", "plugin-agent", "-n", ns},
		{"agent", "share", "plugin-agent", "-n", ns, "--show"},
		{"agent", "share", "plugin-agent", "-n", ns, "--link", "demo", "--show", "-o", "jsonpath={.status.mode}"},
		{"agent", "list", "-n", ns, "-o", "name"},
		{"agent", "list", "-n", ns, "-o", "jsonpath={.items[*].status.share.links[*].name}"},
		{"agent", "share", "no-such-agent", "-n", ns, "--show"},
		{"agent", "unshare", "plugin-agent", "-n", ns, "--link", "nope"},
		{"agent", "list", "-A"},
		{"agent", "share", "plugin-agent", "-n", ns, "--expires-in", "-1h"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			kOut, kErr, kCode := kubectl(t, args...)
			oOut, oErr, oCode := kubeoc(t, args...)
			if kOut != oOut || kErr != oErr || kCode != oCode {
				t.Errorf("kubectl %s: exit %d\n%s%s\nkubeoc: exit %d\n%s%s", strings.Join(args, " "), kCode, kOut, kErr, oCode, oOut, oErr)
			}
		})
	}

	t.Run("help and errors name kubectl agent", func(t *testing.T) {
		out, _, code := kubectl(t, "agent", "share", "--help")
		if code != 0 || !strings.Contains(out, "\n  kubectl agent share NAME [--link LINK]") || strings.Contains(out, "kubeoc agent") {
			t.Errorf("kubectl agent share --help, exit %d:\n%s", code, out)
		}
		_, stderr, code := kubectl(t, "agent", "frob")
		want := "error: unknown command \"frob\" for \"kubectl agent\"\nSee 'kubectl agent -h' for help and examples\n"
		if code != 1 || stderr != want {
			t.Errorf("kubectl agent frob: exit %d, stderr %q; want exit 1, %q", code, stderr, want)
		}
	})

	t.Run("kubectl completes through the plugin", func(t *testing.T) {
		out, _, code := kubectl(t, "__complete", "agent", "share", "-n", ns, "")
		comps, directive := completions(t, out)
		if code != 0 || !slices.Equal(comps, []string{"plugin-agent"}) || directive != ":4" {
			t.Errorf("kubectl __complete agent share: exit %d, %q %s; want plugin-agent :4", code, comps, directive)
		}
		out, _, _ = kubectl(t, "__complete", "agent", "unshare", "plugin-agent", "-n", ns, "--link", "")
		if comps, directive := completions(t, out); !slices.Equal(comps, []string{"demo"}) || directive != ":4" {
			t.Errorf("kubectl __complete agent unshare --link: %q %s; want demo :4", comps, directive)
		}
	})

	t.Run("kubectl get --subresource share cannot work", func(t *testing.T) {
		_, stderr, code := kubectl(t, "get", "agent", "plugin-agent", "-n", ns, "--subresource", "share")
		if code == 0 || stderr == "" {
			t.Errorf("kubectl get --subresource share: exit %d; want an error", code)
		}
		// An admin, whom RBAC lets through, learns that the Agent CRD
		// has no such subresource.
		admin := append(slices.Clone(env), "KUBECONFIG="+s.cp.KubeconfigPath())
		_, stderr, code = runProgram(t, admin, "kubectl", kubectlBin, "get", "agent", "plugin-agent", "-n", ns, "--subresource", "share")
		if code == 0 || !strings.Contains(stderr, "NotFound") {
			t.Errorf("kubectl get --subresource share as admin: exit %d, %q; want NotFound", code, stderr)
		}
		// What to type instead.
		out, _, code := kubectl(t, "get", "--raw", "/apis/subresources.kubeopencode.io/v1alpha1/namespaces/"+ns+"/agents/plugin-agent/share?link=demo")
		if code != 0 || !strings.Contains(out, `"kind":"AgentShare"`) {
			t.Errorf("kubectl get --raw …/share: exit %d\n%s", code, out)
		}
	})
}
